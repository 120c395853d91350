"""The agent applies a k8s_audit source's policy and redaction before sealing: the store never
holds a dropped event or a secret value, and drops are counted per rule."""

from __future__ import annotations

import orjson

from agent.localrun import Workspace, wait_for
from tests.conftest import run_cli

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
rules:
  - level: None
    verbs: ["get"]
    resources: [{group: "", resources: ["configmaps"]}]
  - level: Metadata
    resources: [{group: "", resources: ["secrets"]}]
  - level: RequestResponse
"""


def audit_event(i: int, verb: str, resource: str, body: dict[str, object] | None = None) -> bytes:
    event: dict[str, object] = {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse", "auditID": f"a-{i}",
        "stage": "ResponseComplete", "requestURI": f"/api/v1/namespaces/default/{resource}", "verb": verb,
        "user": {"username": "alice", "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.9"],
        "objectRef": {"resource": resource, "namespace": "default", "name": f"obj-{i}", "apiVersion": "v1"},
        "responseStatus": {"code": 200}, "requestReceivedTimestamp": "2026-11-26T10:00:00.000000Z",
        "stageTimestamp": "2026-11-26T10:00:00.000100Z",
    }
    if body is not None:
        event["requestObject"] = body
    return orjson.dumps(event)


def test_policy_and_redaction_apply_before_sealing(workspace: Workspace) -> None:
    policy = workspace.root / "audit-policy.yaml"
    policy.write_text(POLICY)
    log = workspace.root / "audit.log"
    secret = {"kind": "Secret", "apiVersion": "v1", "metadata": {"name": "db"}, "data": {"password": "aHVudGVyMg=="}}
    token = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1", "spec": {"token": "eyJhbGciOi.secret"}}
    lines = [audit_event(0, "get", "configmaps"), audit_event(1, "create", "secrets", secret),
             audit_event(2, "create", "tokenreviews", token), audit_event(3, "get", "configmaps"),
             audit_event(4, "create", "configmaps", {"kind": "ConfigMap", "data": {"a": "b"}})]
    log.write_bytes(b"".join(line + b"\n" for line in lines))
    workspace.enrol("node-1")
    aggregator = workspace.start_aggregator()
    agent = workspace.start_agent(workspace.agent_config(
        "node-1", [("k8s_audit", str(log))], source_extra=f'policy = "{policy}"'))
    wait_for(lambda: workspace.stored_events() >= 3, 60, "the 3 kept events to be stored")
    assert agent.stop() == 0
    assert aggregator.stop() == 0
    (counters,) = agent.logged("stream counters", stream="k8s_audit")
    assert counters["counters"]["dropped_by_policy.rule_0"] == 2

    result = run_cli("query", str(workspace.store), "--json")
    stored = result.stdout.encode()
    assert b"aHVudGVyMg==" not in stored and b"eyJhbGciOi.secret" not in stored
    assert b"aHVudGVyMg==" not in b"".join(p.read_bytes() for p in (workspace.store / "segments").iterdir())
    events = {e["kubernetes"]["audit"]["auditID"]: e for e in map(orjson.loads, result.stdout.splitlines())}
    assert sorted(events) == ["a-1", "a-2", "a-4"]
    assert "requestObject" not in events["a-1"]["kubernetes"]["audit"]  # Metadata level for secrets
    assert events["a-2"]["kubernetes"]["audit"]["requestObject"]["spec"]["token"].startswith("[REDACTED hmac-sha256:")
    assert "kubernetes.audit.requestObject.spec.token" in events["a-2"]["logseal"]["redacted"] or \
        "requestObject.spec.token" in events["a-2"]["logseal"]["redacted"]
    assert events["a-4"]["kubernetes"]["audit"]["requestObject"]["data"] == {"a": "b"}


def test_normalize_command_applies_the_same_policy(workspace: Workspace) -> None:
    policy = workspace.root / "audit-policy.yaml"
    policy.write_text(POLICY)
    log = workspace.root / "audit.log"
    log.write_bytes(audit_event(0, "get", "configmaps") + b"\n" + audit_event(1, "list", "pods") + b"\n")
    result = run_cli("normalize", "--type", "k8s_audit", "--policy", str(policy), str(log))
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(line)["kubernetes"]["audit"]["auditID"] for line in result.stdout.splitlines()] == ["a-1"]
    assert "dropped_by_policy.rule_0=1" in result.stderr


def test_a_bad_policy_stops_the_agent_with_one_line(workspace: Workspace) -> None:
    policy = workspace.root / "bad.yaml"
    policy.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Loud\n")
    result = run_cli("normalize", "--type", "k8s_audit", "--policy", str(policy), "-")
    assert result.returncode == 2
    assert "Loud" in result.stderr and len(result.stderr.strip().splitlines()) == 1
