"""OCSF mapping of the events the real normalizers make from the packaged samples.

Class, category and activity ids as the OCSF 1.1.0 schema (schema.ocsf.io) defines them: API Activity
6003 in Application Activity (6) with Create 1 / Read 2 / Update 3 / Delete 4; Authentication 3002 in
Identity & Access Management (3) with Logon 1; Process Activity 1007 in System Activity (1) with
Launch 1; type_uid = class_uid * 100 + activity_id.
"""

from __future__ import annotations

import json

from agent.aggregator.forward.ocsf import class_of, epoch_ms, to_ocsf
from tests.aggregator.forward.kit import normalized


def by_action(source: str, action: str) -> dict:  # type: ignore[type-arg]
    return next(e for e in normalized(source) if e["event"]["action"] == action)


def test_kubernetes_audit_is_api_activity_with_the_verb_as_activity() -> None:
    events = normalized("k8s_audit")
    docs = [to_ocsf(e) for e in events]
    assert {d["class_uid"] for d in docs} == {6003}
    assert {d["category_uid"] for d in docs} == {6}
    verbs = {e["kubernetes"]["audit"]["verb"]: d["activity_id"] for e, d in zip(events, docs, strict=True)}
    expected = {"create": 1, "get": 2, "list": 2, "watch": 2, "update": 3, "patch": 3, "delete": 4}
    assert {v: a for v, a in verbs.items() if v in expected} == {v: expected[v] for v in verbs if v in expected}
    assert all(d["type_uid"] == 600300 + d["activity_id"] for d in docs)
    first, doc = events[0], docs[0]
    assert doc["api"]["operation"] == "create"
    assert doc["api"]["request"]["uid"] == first["kubernetes"]["audit"]["auditID"]
    assert doc["api"]["response"]["code"] == 201
    assert doc["actor"]["user"]["name"] == "system:anonymous"
    assert doc["src_endpoint"]["ip"] == "192.168.99.1"
    assert doc["resources"] == [{"type": "namespaces", "name": "foo"}]
    assert doc["status_id"] == 1 and doc["status"] == "Success"
    assert doc["time"] == epoch_ms("2018-10-25T13:58:49.730588Z") == 1540475929730


def test_ssh_logins_are_authentication_logons_with_user_source_and_status() -> None:
    event = by_action("syslog", "ssh_login")
    doc = to_ocsf(event)
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"], doc["type_uid"]) == (3002, 3, 1, 300201)
    assert doc["class_name"] == "Authentication" and doc["activity_name"] == "Logon"
    assert doc["user"]["name"] == "ops"
    assert doc["src_endpoint"] == {"ip": "192.0.2.10", "port": 50312}
    assert doc["auth_protocol"] == "publickey" and doc["is_remote"] is True
    assert doc["status_id"] == 1
    assert doc["raw_data"] == event["event"]["original"]
    failed = [to_ocsf(e) for e in normalized("syslog") if e["event"]["outcome"] == "failure"
              and "authentication" in e["event"]["category"]]
    assert failed and {d["class_uid"] for d in failed} == {3002} and {d["status_id"] for d in failed} == {2}


def test_auditd_execs_are_process_launches_with_the_command_line() -> None:
    execs = [e for e in normalized("auditd") if e["event"]["action"] == "executed"]
    assert execs
    doc = to_ocsf(execs[0])
    assert (doc["class_uid"], doc["category_uid"], doc["activity_id"], doc["type_uid"]) == (1007, 1, 1, 100701)
    assert doc["process"]["pid"] == 13393 and doc["process"]["name"] == "grep"
    assert doc["process"]["cmd_line"] == "grep --color=auto mapping"
    assert doc["process"]["file"]["path"] == "/usr/bin/grep"
    assert doc["process"]["parent_process"] == {"pid": 12041}
    assert doc["actor"]["user"]["uid"] == "1000"
    assert doc["device"]["hostname"] == "node-1"


def test_other_events_are_base_events_that_keep_the_ecs_event() -> None:
    event = by_action("syslog", "logged-on")  # a session event, not an authentication
    assert class_of(event)[0] == 0
    doc = to_ocsf(event)
    assert (doc["class_uid"], doc["activity_id"], doc["type_uid"]) == (0, 99, 99)
    assert doc["unmapped"] == event


def test_every_mapped_event_carries_the_event_id_and_metadata() -> None:
    for source in ("k8s_audit", "syslog", "auditd"):
        for n, event in enumerate(normalized(source)):
            event["event"]["id"] = f"node-1:s:1:{n}"
            doc = to_ocsf(event)
            assert doc["metadata"]["uid"] == f"node-1:s:1:{n}"
            assert doc["metadata"]["version"] == "1.1.0"
            assert doc["metadata"]["product"]["name"] == "logseal"
            assert doc["severity_id"] == 1
            assert json.loads(json.dumps(doc)) == doc  # plain JSON, nothing None or empty
            assert None not in doc.values() and {} not in doc.values()
