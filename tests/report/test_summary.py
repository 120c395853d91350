"""The report's pure core: what counts as an authentication failure or a privileged action, time
buckets, alerts, retention rows, and the renderers' escaping. No store, no files."""

from __future__ import annotations

import ast
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import pytest

import agent.report
from agent.report.render_html import render_html
from agent.report.render_json import summary_to_dict
from agent.report.summary import (
    DETAIL_LIMIT,
    NO_RETENTION,
    SummaryBuilder,
    Verification,
    auth_failure_kind,
    bucket_seconds,
    make_window,
    privileged_kind,
    retention_from,
)
from agent.report.svg import fold_series

NS = 1_000_000_000
DAY = 86400 * NS
T0 = 1_795_651_200 * NS  # 2026-11-26T00:00:00Z
INTACT = Verification(True, "intact", 0, 0, 0, 0, 0, 0, (), ())


def k8s(verb: str, code: int, ref: dict[str, str], outcome: str | None = None, **audit: Any) -> dict[str, Any]:
    return {"event": {"dataset": "kubernetes.audit", "action": verb, "category": ["api"],
                      "outcome": outcome or ("success" if code < 400 else "failure")},
            "user": {"name": "alice"},
            "kubernetes": {"audit": {"verb": verb, "objectRef": ref, "responseStatus": {"code": code}, **audit}}}


def auth(action: str, outcome: str, category: list[str]) -> dict[str, Any]:
    return {"event": {"dataset": "system.auth", "action": action, "outcome": outcome, "category": category},
            "user": {"name": "ops"}}


def executed(name: str, uid: str, euid: str) -> dict[str, Any]:
    return {"event": {"dataset": "auditd.log", "action": "executed", "outcome": "success", "category": ["process"]},
            "user": {"id": uid, "effective": {"id": euid}}, "process": {"name": name}}


@pytest.mark.parametrize(("event", "kind"), [
    (auth("ssh_login", "failure", ["authentication"]), "ssh_login"),
    (auth("sudo", "failure", ["authentication"]), "sudo"),
    (auth("ssh_login", "success", ["authentication", "session"]), None),
    (auth("log", "failure", []), None),
    (k8s("list", 401, {"resource": "pods"}), "k8s-unauthenticated"),
    (k8s("get", 403, {"resource": "secrets"}), "k8s-forbidden"),
    (k8s("get", 200, {"resource": "secrets"}, outcome="failure",
         annotations={"authorization.k8s.io/decision": "forbid"}), "k8s-forbidden"),
    (k8s("get", 404, {"resource": "pods"}), None),
    (k8s("create", 500, {"resource": "pods"}), None),
])
def test_authentication_failures(event: dict[str, Any], kind: str | None) -> None:
    assert auth_failure_kind(event) == kind


PRIVILEGED_POD = {"spec": {"initContainers": [{"name": "i"}],
                           "containers": [{"name": "a"}, {"name": "b", "securityContext": {"privileged": True}}]}}


@pytest.mark.parametrize(("event", "kind"), [
    (auth("sudo", "success", ["process"]), "sudo"),
    (auth("su", "success", ["authentication", "session"]), "su"),
    (auth("sudo", "failure", ["authentication"]), None),
    (executed("sudo", "1000", "0"), "privileged-exec"),
    (executed("passwd", "1000", "0"), "privileged-exec"),
    (executed("pkexec", "0", "0"), "privileged-exec"),
    (executed("grep", "1000", "1000"), None),
    (executed("bash", "0", "0"), None),
    (k8s("create", 201, {"resource": "rolebindings", "apiGroup": "rbac.authorization.k8s.io"}), "rbac-change"),
    (k8s("bind", 200, {"resource": "clusterroles", "apiGroup": "rbac.authorization.k8s.io"}), "rbac-change"),
    (k8s("list", 200, {"resource": "rolebindings", "apiGroup": "rbac.authorization.k8s.io"}), None),
    (k8s("create", 403, {"resource": "rolebindings", "apiGroup": "rbac.authorization.k8s.io"}), None),
    (k8s("create", 101, {"resource": "pods", "subresource": "exec"}), "pod-exec"),
    (k8s("get", 101, {"resource": "pods", "subresource": "attach"}), "pod-attach"),
    (k8s("get", 200, {"resource": "pods", "subresource": "log"}), None),
    (k8s("create", 201, {"resource": "pods"}, requestObject=PRIVILEGED_POD), "privileged-pod"),
    (k8s("create", 201, {"resource": "pods"}, requestObject={"spec": {"containers": [{"name": "a"}]}}), None),
    (k8s("create", 201, {"resource": "pods"}), None),  # no request body recorded: cannot tell
    (k8s("get", 200, {"resource": "secrets"}), "secret-read"),
    (k8s("watch", 200, {"resource": "secrets"}), "secret-read"),
    (k8s("delete", 200, {"resource": "secrets"}), None),
    (k8s("impersonate", 201, {"resource": "users"}), "impersonation"),
    ({"event": {"dataset": "kubernetes.audit", "outcome": "success"}, "kubernetes": {"audit": "not a map"}}, None),
])
def test_privileged_actions(event: dict[str, Any], kind: str | None) -> None:
    assert privileged_kind(event) == kind


def test_buckets_keep_the_time_series_to_at_most_60_bars() -> None:
    assert bucket_seconds(T0, T0 + DAY) == 3600
    assert bucket_seconds(T0, T0 + 30 * DAY) == 43200
    assert bucket_seconds(T0, T0 + 3600 * NS) == 60
    for days in (30, 31, 90, 365, 36500):
        assert make_window(T0 + 1234 * NS, T0 + days * DAY).buckets <= 60
    window = make_window(T0 + 90 * 60 * NS, T0 + DAY)  # starts 01:30: the first bar starts at 01:00
    assert window.start_ns == T0 + 3600 * NS and window.buckets == 23
    assert window.bucket_of(T0 + 2 * 3600 * NS) == 1
    assert window.bucket_of(T0 + DAY - 1) == 22


def test_events_land_in_their_node_and_dataset_series() -> None:
    builder = SummaryBuilder("s", make_window(T0, T0 + DAY), T0 + DAY)
    builder.add_event("n1", T0 + 3600 * NS, auth("ssh_login", "failure", ["authentication"]))
    builder.add_event("n1", T0 + 3600 * NS + 5, auth("sudo", "success", ["process"]))
    builder.add_event("n2", T0 + 5 * 3600 * NS, executed("sudo", "1000", "0"))
    summary = builder.build(INTACT, NO_RETENTION, None, "no alerts file given")
    assert summary.events == 3 and summary.nodes == ("n1", "n2")
    by_node = {s.name: s.counts for s in summary.timeline.by_node}
    assert by_node["n1"][1] == 2 and sum(by_node["n1"]) == 2 and by_node["n2"][5] == 1
    assert summary.auth_failures.by_kind == (("ssh_login", 1),)
    assert summary.privileged.by_kind == (("privileged-exec", 1), ("sudo", 1))
    assert [i.user for i in summary.privileged.items] == ["ops", "uid=1000"]
    assert [(p.name, p.events, p.auth_failures, p.privileged) for p in summary.principals] == [("ops", 2, 1, 1)]


def test_detail_lists_keep_the_first_rows_but_count_all() -> None:
    builder = SummaryBuilder("s", make_window(T0, T0 + DAY), T0 + DAY)
    total = 3 * DETAIL_LIMIT + 7
    for i in reversed(range(total)):
        builder.add_event("n", T0 + i * NS, auth("ssh_login", "failure", ["authentication"]))
    failures = builder.build(INTACT, NO_RETENTION, None, "").auth_failures
    assert failures.total == total and len(failures.items) == DETAIL_LIMIT
    assert failures.items[0].time == "2026-11-26T00:00:00Z"


def alert(rule: str, level: str, when: str, alert_id: str) -> dict[str, Any]:
    return {"@timestamp": when, "event": {"kind": "alert", "id": alert_id}, "rule": {"id": rule, "name": rule.upper(),
                                                                                       "level": level}}


def test_alerts_in_the_window_count_once_each_and_bad_lines_are_counted() -> None:
    builder = SummaryBuilder("s", make_window(T0, T0 + DAY), T0 + DAY)
    builder.add_alert(alert("r1", "high", "2026-11-26T01:00:00Z", "a"))
    builder.add_alert(alert("r1", "high", "2026-11-26T01:00:00Z", "a"))  # delivered twice
    builder.add_alert(alert("r1", "high", "2026-11-26T03:00:00Z", "b"))
    builder.add_alert(alert("r2", "low", "2026-11-26T02:00:00Z", "c"))
    builder.add_alert(alert("r2", "low", "2026-11-25T02:00:00Z", "d"))  # before the window
    builder.add_alert(None)
    builder.add_alert({"rule": "x"})
    builder.add_alert(alert("r3", "low", "not a time", "e"))
    alerts = builder.build(INTACT, NO_RETENTION, "f", "").alerts
    assert alerts.total == 3 and alerts.unreadable_lines == 3
    assert alerts.by_level == (("high", 2), ("low", 1))
    assert [(r.rule_id, r.count, r.last_time) for r in alerts.by_rule] == [("r1", 2, "2026-11-26T03:00:00Z"),
                                                                           ("r2", 1, "2026-11-26T02:00:00Z")]


def test_retention_rows_in_the_window_are_listed() -> None:
    rows = [{"id": 1, "time_ns": T0 + NS, "rule": "older than 400d", "segment": "00000001.seg",
             "first_batch_id": 1, "last_batch_id": 40, "first_leaf": 0, "last_leaf": 39, "bytes": 1234,
             "note": "n", "signature": b"\x01" * 64},
            {"id": 2, "time_ns": T0 - NS, "rule": "r", "segment": "x", "signature": None}]
    retention = retention_from(rows, make_window(T0, T0 + DAY))
    (action,) = retention.actions
    assert (action.time, action.batches, action.leaves, action.bytes, action.signed) == (
        "2026-11-26T00:00:01Z", "1..40", "0..39", 1234, True)
    assert retention.outside_window == 1


def test_fold_series_keeps_the_largest_and_sums_the_rest() -> None:
    series = [(f"s{i}", [i, 1]) for i in range(12)]
    folded = fold_series(series, limit=4)
    assert [name for name, _ in folded] == ["s11", "s10", "s9", "other"]
    assert folded[-1][1] == [sum(range(9)), 9]


class _Collect(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.tags: set[str] = set()
        self.text = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.add(tag)

    def handle_data(self, data: str) -> None:
        self.text += data


def test_every_hostile_string_is_escaped_in_tables_and_charts() -> None:
    hostile = '"><img src=x onerror=alert(1)><script>alert(2)</script>'
    builder = SummaryBuilder(hostile, make_window(T0, T0 + DAY), T0 + DAY)
    event = k8s("get", 403, {"resource": hostile, "namespace": hostile})
    event["user"]["name"] = hostile
    event["source"] = {"ip": hostile}
    builder.add_event(hostile, T0, event)
    builder.add_event(hostile, T0, {**auth("sudo", "success", ["process"]), "user": {"name": hostile},
                                    "event": {"dataset": hostile, "action": "sudo", "outcome": "success"}})
    builder.add_alert(alert(hostile, hostile, "2026-11-26T01:00:00Z", hostile))
    retention = retention_from([{"time_ns": T0, "rule": hostile, "note": hostile}], make_window(T0, T0 + DAY))
    summary = builder.build(INTACT, retention, hostile, "")
    page = render_html(summary)
    parser = _Collect()
    parser.feed(page)
    assert "img" not in parser.tags and "script" not in parser.tags
    assert hostile in parser.text
    assert summary_to_dict(summary)["top_principals"][0]["name"] == hostile


PURE = ["summary", "svg", "render_json", "render_html"]
BANNED = {"os", "io", "sys", "time", "socket", "asyncio", "subprocess", "pathlib", "shutil", "threading", "sqlite3",
          "urllib", "http", "grpc", "tempfile"}


@pytest.mark.parametrize("module", PURE)
def test_the_core_and_renderers_do_no_io(module: str) -> None:
    tree = ast.parse((Path(agent.report.__file__).parent / f"{module}.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            assert not {a.name.split(".")[0] for a in node.names} & BANNED, module
        elif isinstance(node, ast.ImportFrom):
            assert (node.module or "").split(".")[0] not in BANNED, f"{module} imports {node.module}"


def test_coverage_is_each_nodes_longest_time_without_a_batch() -> None:
    hour = 3600 * NS
    builder = SummaryBuilder("s", make_window(T0, T0 + DAY), generated_ns=T0 + 20 * hour)
    for at in (1, 2, 7, 8):  # silent 02:00-07:00
        builder.add_receipt("n1", T0 + at * hour)
    builder.add_receipt("n2", T0 + 10 * hour)  # silent from the start until 10:00, then until now (20:00)
    coverage = {c.node: c for c in builder.build(INTACT, NO_RETENTION, None, "").coverage}
    assert (coverage["n1"].batches, coverage["n1"].longest_silence_s, coverage["n1"].silence_from) == (
        4, 12 * 3600, "2026-11-26T08:00:00Z")  # 08:00 until now is longer than 02:00-07:00
    assert (coverage["n2"].longest_silence_s, coverage["n2"].silence_from) == (10 * 3600, "2026-11-26T00:00:00Z")
    builder.add_receipt("n1", T0 + 19 * hour)
    n1 = {c.node: c for c in builder.build(INTACT, NO_RETENTION, None, "").coverage}["n1"]
    assert (n1.longest_silence_s, n1.first, n1.last) == (11 * 3600, "2026-11-26T01:00:00Z", "2026-11-26T19:00:00Z")


def test_a_huge_value_is_clipped_in_the_html_and_whole_in_the_json() -> None:
    builder = SummaryBuilder("s", make_window(T0, T0 + DAY), T0 + DAY)
    name = "x" * 100_000
    builder.add_event("n", T0, {**auth("ssh_login", "failure", ["authentication"]), "user": {"name": name}})
    summary = builder.build(INTACT, NO_RETENTION, None, "")
    assert len(render_html(summary)) < 60_000
    assert summary_to_dict(summary)["authentication_failures"]["items"][0]["user"] == name
