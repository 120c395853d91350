"""The built-in packs load, carry attribution, map SigmaHQ's field quirks, and their correlations fire."""

from __future__ import annotations

from pathlib import Path

import pytest

from agent.detect import Detector, RuleError
from agent.detect.load import RULES_DIR

from .helpers import at, auth, detector, k8s


def test_every_sigmahq_rule_in_the_packs_loads() -> None:
    k8s_files = sorted((RULES_DIR / "kubernetes" / "sigmahq").glob("*.yml"))
    linux_files = sorted((RULES_DIR / "linux" / "sigmahq").glob("*.yml"))
    assert (len(k8s_files), len(linux_files)) == (16, 27)
    rules = Detector.load(["builtin:all"]).rules
    sigmahq = {r.source.rsplit("/", 1)[1] for r in rules if r.ruleset == "SigmaHQ"}
    assert sigmahq == {p.name for p in k8s_files + linux_files}
    assert all(r.license == "DRL-1.1" and r.author != "unknown" for r in rules if r.ruleset == "SigmaHQ")


def test_pack_sizes() -> None:
    counts = {p: (len(d.rules), len(d.correlations))
              for p in ("kubernetes", "linux", "logseal") for d in [Detector.load([f"builtin:{p}"])]}
    assert counts == {"kubernetes": (64, 3), "linux": (31, 6), "logseal": (4, 1)}


def test_an_alert_carries_title_id_level_author_and_licence() -> None:
    det = Detector.load(["builtin:kubernetes"])
    event = k8s("create", "pods", eid="n:s:1:0", objectRef={"resource": "pods", "subresource": "exec"})
    alert = next(a for a in det.process(event) if a.ruleset == "SigmaHQ")
    doc = alert.to_dict()
    assert doc["rule"] == {"id": "a1b0ca4e-7835-413e-8471-3ff2b8a66be6",
                           "name": "Potential Remote Command Execution In Pod Container",
                           "author": "Leo Tsaousis (@laripping)", "license": "DRL-1.1", "ruleset": "SigmaHQ",
                           "level": "medium"}
    assert doc["logseal"]["alert"]["event_ids"] == ["n:s:1:0"]


def sigmahq_titles(event: dict[str, object]) -> set[str]:
    return {a.rule_title for a in Detector.load(["builtin:kubernetes"]).process(event) if a.ruleset == "SigmaHQ"}


def test_bare_apiGroup_maps_to_objectRef() -> None:
    event = k8s("patch", "deployments", objectRef={"resource": "deployments", "apiGroup": "apps"})
    assert "Potential Sidecar Injection Into Running Deployment" in sigmahq_titles(event)


def test_hostPath_and_capabilities_live_in_the_request_object() -> None:
    spec = {"volumes": [{"name": "v", "hostPath": {"path": "/etc"}}],
            "containers": [{"image": "x", "securityContext": {"capabilities": {"add": ["SYS_ADMIN"]}}}]}
    titles = sigmahq_titles(k8s("create", "pods", requestObject={"spec": spec}))
    assert {"Container With A hostPath Mount Created", "Privileged Container Deployed"} <= titles
    assert not {"Container With A hostPath Mount Created", "Privileged Container Deployed"} & \
        sigmahq_titles(k8s("create", "pods", requestObject={"spec": {"containers": [{"image": "x"}]}}))


def test_allow_decision_is_read_from_the_annotation() -> None:
    event = k8s("get", "pods", userAgent="trufflehog/3", annotations={"authorization.k8s.io/decision": "allow"})
    assert "Kubernetes Potential Enumeration Activity" in sigmahq_titles(event)


def test_auditd_rules_match_one_record() -> None:
    event = {"@timestamp": "2026-01-01T00:00:00Z", "event": {"dataset": "auditd.log", "id": "a"},
             "process": {"args": ["chattr", "-i", "/etc/passwd"], "executable": "/usr/bin/chattr"},
             "auditd": {"log": {"syscall": "execve"}, "records": [
                 {"record_type": "SYSCALL", "exe": "2F7573722F62696E2F636861747472", "key": "x"},
                 {"record_type": "EXECVE", "argc": "3", "a0": "chattr", "a1": "-i", "a2": "/etc/passwd"}]}}
    titles = {a.rule_title for a in Detector.load(["builtin:linux"]).process(event)}
    assert "Remove Immutable File Attribute - Auditd" in titles


def test_unrouted_logsource_is_refused(tmp_path: Path) -> None:
    rule = tmp_path / "win.yml"
    rule.write_text("title: w\nid: w\nlogsource: {product: windows}\ndetection: {s: {a: 1}, condition: s}\n")
    with pytest.raises(RuleError, match=r"win.yml: rule 'w': logsource product=windows is not routed"):
        Detector.load([str(rule)])


# --- correlations of the packs -----------------------------------------------------------------


def test_ssh_brute_force_per_source_and_per_user() -> None:
    det = Detector.load(["builtin:linux"])
    alerts = [a for i in range(10) for a in det.process(auth("ssh_login", "failure", at(i * 10), f"f{i}",
                                                              user=f"u{i % 2}"))]
    assert [a.rule_title for a in alerts] == ["SSH Brute Force From One Source"]
    assert alerts[0].group == (("source.ip", "203.0.113.7"),) and alerts[0].count == 10
    det = Detector.load(["builtin:linux"])
    alerts = [a for i in range(10) for a in det.process(auth("ssh_login", "failure", at(i * 10), f"f{i}",
                                                              ip=f"198.51.100.{i}"))]
    assert [a.rule_title for a in alerts] == ["SSH Brute Force Against One User"]


def test_sudo_brute_force() -> None:
    det = Detector.load(["builtin:linux"])
    alerts = [a for i in range(3) for a in det.process(
        auth("authentication_failure", "failure", at(i), f"s{i}", user="mallory", process="sudo"))]
    assert [(a.rule_title, a.group) for a in alerts] == [("Sudo Brute Force By One User", (("user.name", "mallory"),))]


def test_failed_then_successful_login() -> None:
    det = Detector.load(["builtin:linux"])
    events = [auth("ssh_login", "failure", at(i), f"f{i}") for i in range(3)]
    events.append(auth("ssh_login", "success", at(60), "ok"))
    alerts = [a for e in events for a in det.process(e)]
    assert [a.rule_title for a in alerts] == ["SSH Login Succeeded After Repeated Failures"]
    assert set(alerts[0].event_ids) == {"f0", "f1", "f2", "ok"}
    # success first, failures after: not this pattern
    det = Detector.load(["builtin:linux"])
    events = [auth("ssh_login", "success", at(0), "ok")] + [auth("ssh_login", "failure", at(i + 1), f"f{i}")
                                                            for i in range(3)]
    assert not [a for e in events for a in det.process(e)]


def test_one_user_on_many_nodes() -> None:
    det = Detector.load(["builtin:linux"])
    alerts = [a for i in range(3) for a in det.process(auth("logged-on", "success", at(i * 30), f"l{i}",
                                                              user="ops", host=f"node-{i}"))]
    assert [(a.rule_title, a.nodes) for a in alerts] == [("One User Logged In On Many Nodes",
                                                          ("node-0", "node-1", "node-2"))]


def test_secret_enumeration_across_namespaces() -> None:
    det = Detector.load(["builtin:kubernetes"])
    alerts = [a for i, ns in enumerate(["a", "b", "a", "c"]) for a in det.process(
        k8s("get", "secrets", user="eve", ts=at(i), eid=f"s{i}", objectRef={"resource": "secrets", "namespace": ns}))]
    corr = [a for a in alerts if a.kind != "match"]
    assert [(a.rule_title, a.group) for a in corr] == [("Kubernetes Secret Enumeration Across Namespaces",
                                                        (("user.username", "eve"),))]


def test_rbac_change_then_workload_change_by_the_same_principal() -> None:
    det = Detector.load(["builtin:kubernetes"])
    rbac = k8s("create", "clusterrolebindings", user="eve", ts=at(0), eid="r")
    other = k8s("create", "deployments", user="bob", ts=at(10), eid="w0")
    workload = k8s("create", "deployments", user="eve", ts=at(60), eid="w1")
    alerts = [a for e in (rbac, other, workload) for a in det.process(e) if a.kind == "temporal_ordered"]
    assert [(a.rule_title, a.event_ids) for a in alerts] == [
        ("Kubernetes RBAC Change Followed By Workload Change", ("r", "w1"))]


@pytest.mark.parametrize("action", ["batch_rejected", "chain_break", "node_silent", "key_epoch_misuse"])
def test_pipeline_integrity_events_alert(action: str) -> None:
    det = Detector.load(["builtin:logseal"])
    event = {"@timestamp": at(0), "event": {"dataset": "logseal.security", "action": action, "id": "x"},
             "logseal": {"node": "worker-1", "verdict": "BAD_SIGNATURE"}}
    assert len(det.process(event)) == 1


def test_repeated_rejections_from_one_node_also_correlate() -> None:
    det = Detector.load(["builtin:logseal"])
    alerts = [a for i in range(5) for a in det.process(
        {"@timestamp": at(i), "event": {"dataset": "logseal.security", "action": "batch_rejected", "id": f"x{i}"},
         "logseal": {"node": "worker-1", "verdict": "BAD_SIGNATURE"}})]
    assert [a.kind for a in alerts] == ["match"] * 5 + ["event_count"]


def test_a_rule_id_used_twice_is_refused() -> None:
    with pytest.raises(RuleError, match="also used by"):
        detector("title: a\nid: same\nlogsource: {product: linux}\ndetection: {k: [x], condition: k}\n",
                 "title: b\nid: same\nlogsource: {product: linux}\ndetection: {k: [y], condition: k}\n")
