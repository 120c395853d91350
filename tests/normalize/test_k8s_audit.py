"""Specification of the Kubernetes audit normalizer, on Falco's audit trace files and Panther's events."""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest

from agent.normalize import normalizer_for
from agent.normalize.common import SourceContext

from .helpers import DATA, RECEIVED, SAMPLES, assert_valid_event, field, lines_of

HOST = "node-7"
PATH = "/var/log/kubernetes/audit/audit.log"
FALCO = DATA / "falco"
CTX = SourceContext(host_name=HOST, path=PATH)


def normalize(line: bytes, offset: int = 0, received: str = RECEIVED, ctx: SourceContext = CTX) -> dict[str, Any]:
    return normalizer_for("k8s_audit", ctx)(line, offset, received)


def falco_line(name: str, index: int = 0) -> bytes:
    return lines_of(FALCO / name)[index][1]


def checked(line: bytes, offset: int = 0) -> dict[str, Any]:
    """The event as stored: checked, then through JSON (the verbatim audit record becomes a dict)."""
    event = normalize(line, offset)
    assert_valid_event(event, line, offset, host=HOST, path=PATH)
    stored: dict[str, Any] = orjson.loads(orjson.dumps(event))
    return stored


def edited(name: str, **changes: Any) -> bytes:
    """A Falco event with some top-level fields replaced (None deletes the field)."""
    audit = orjson.loads(falco_line(name))
    for key, value in changes.items():
        if value is None:
            audit.pop(key, None)
        else:
            audit[key] = value
    return orjson.dumps(audit)


ALL_FALCO_LINES = [
    pytest.param(path.name, offset, line, id=f"{path.stem}@{offset}")
    for path in sorted(FALCO.glob("*.json"))
    for offset, line in lines_of(path)
]


@pytest.mark.parametrize(("name", "offset", "line"), ALL_FALCO_LINES)
def test_every_falco_line_produces_an_event_with_every_always_present_field(
    name: str, offset: int, line: bytes
) -> None:
    event = checked(line, offset)
    assert event["event"]["dataset"] == "kubernetes.audit"
    if name != "fal_01_003.json":
        assert "error" not in event
        assert event["event"]["action"] == orjson.loads(line)["verb"]


def test_every_line_of_the_shipped_sample_is_a_parsed_audit_event() -> None:
    lines = lines_of(SAMPLES / "k8s-audit.log")
    assert len(lines) == 35
    for offset, line in lines:
        event = checked(line, offset)
        assert "error" not in event
        assert event["kubernetes"]["audit"]["kind"] == "Event"


def test_create_secret_maps_verb_user_source_agent_and_object() -> None:
    event = checked(falco_line("create_secret.json"))
    assert event["@timestamp"] == "2020-04-21T17:57:05.541358Z"
    assert event["event"]["action"] == "create"
    assert event["event"]["outcome"] == "success"
    assert event["event"]["category"] == ["api"]
    assert event["event"]["type"] == ["creation"]
    assert event["user"] == {
        "name": "minikube-user",
        "group": {"name": ["system:masters", "system:authenticated"]},
    }
    assert event["source"] == {"ip": "192.168.64.1"}
    assert event["user_agent"] == {"original": "kubectl/v1.17.3 (darwin/amd64) kubernetes/06ad960"}
    assert field(event, "kubernetes.audit.verb") == "create"
    assert field(event, "kubernetes.audit.objectRef.resource") == "secrets"
    assert field(event, "kubernetes.audit.objectRef.namespace") == "default"
    assert field(event, "kubernetes.audit.objectRef.name") == "example-secret"
    assert field(event, "kubernetes.audit.responseStatus.code") == 201
    assert field(event, "kubernetes.audit.auditID") == "55a81824-ab56-46c5-8b02-96336f5e78d7"


def test_whole_audit_event_is_kept_under_kubernetes_audit_with_its_own_names() -> None:
    line = falco_line("create_nginx_pod_privileged.json")
    assert checked(line)["kubernetes"]["audit"] == orjson.loads(line)


def test_user_id_comes_from_user_uid() -> None:
    event = checked(falco_line("create_nginx_pod_hostnetwork.json"))
    assert event["user"]["name"] == "system:serviceaccount:kube-system:replicaset-controller"
    assert event["user"]["id"] == "8d5e1349-d30f-11e8-96d9-080027728ac4"
    assert event["source"]["ip"] == "::1"


def test_v1beta1_event_from_anonymous_user_is_parsed() -> None:
    event = checked(falco_line("anonymous_creates_namespace_foo.json"))
    assert field(event, "kubernetes.audit.apiVersion") == "audit.k8s.io/v1beta1"
    assert event["user"]["name"] == "system:anonymous"
    assert event["@timestamp"] == "2018-10-25T13:58:49.730588Z"
    assert field(event, "kubernetes.audit.objectRef.resource") == "namespaces"


def test_delete_verb_is_a_deletion() -> None:
    event = checked(falco_line("delete_secret.json"))
    assert event["event"]["action"] == "delete"
    assert event["event"]["type"] == ["deletion"]
    assert event["event"]["outcome"] == "success"


def test_exec_into_pod_with_response_code_101_is_a_success() -> None:
    event = checked(falco_line("exec_pod.json"))
    assert field(event, "kubernetes.audit.responseStatus.code") == 101
    assert event["event"]["outcome"] == "success"
    assert field(event, "kubernetes.audit.objectRef.subresource") == "exec"


PANTHER = lines_of(DATA / "panther" / "k8s_secret_access_denied.jsonl")


def test_outcome_is_failure_when_response_code_is_403() -> None:
    event = checked(PANTHER[0][1])
    assert event["event"]["outcome"] == "failure"
    assert event["event"]["action"] == "get"
    assert event["event"]["type"] == ["access"]
    assert event["user"]["name"] == "attacker@example.com"
    assert event["source"]["ip"] == "203.0.113.42"
    assert field(event, "kubernetes.audit.objectRef.name") == "db-password"


def test_outcome_is_failure_when_response_code_is_404() -> None:
    assert checked(PANTHER[1][1])["event"]["outcome"] == "failure"


def test_outcome_is_success_when_response_code_is_200() -> None:
    assert checked(PANTHER[2][1])["event"]["outcome"] == "success"


def test_list_is_an_access() -> None:
    assert checked(PANTHER[3][1])["event"]["type"] == ["access"]


def test_timestamp_is_received_when_the_event_has_no_time_of_its_own() -> None:
    assert checked(PANTHER[0][1])["@timestamp"] == RECEIVED


def test_outcome_is_unknown_when_response_status_is_missing() -> None:
    event = checked(edited("create_secret.json", responseStatus=None))
    assert event["event"]["outcome"] == "unknown"
    assert "error" not in event


@pytest.mark.parametrize(
    ("verb", "event_type"),
    [
        ("get", "access"), ("list", "access"), ("watch", "access"), ("create", "creation"),
        ("update", "change"), ("patch", "change"), ("delete", "deletion"),
        ("deletecollection", "deletion"), ("proxy", "info"), ("impersonate", "info"),
    ],
)
def test_event_type_follows_the_verb(verb: str, event_type: str) -> None:
    event = checked(edited("create_secret.json", verb=verb))
    assert event["event"]["action"] == verb
    assert event["event"]["type"] == [event_type]


def test_timestamp_falls_back_to_stage_timestamp() -> None:
    event = checked(edited("create_secret.json", requestReceivedTimestamp=None))
    assert event["@timestamp"] == "2020-04-21T17:57:05.548299Z"


def test_timestamp_falls_back_to_v1beta1_timestamp_and_gets_microseconds() -> None:
    line = edited("delete_namespace_foo.json", requestReceivedTimestamp=None, stageTimestamp=None)
    assert checked(line)["@timestamp"] == "2018-10-26T13:00:25.000000Z"


def test_timestamp_with_an_offset_is_converted_to_utc() -> None:
    line = edited("create_secret.json", requestReceivedTimestamp="2020-04-21T19:57:05.5+02:00")
    assert checked(line)["@timestamp"] == "2020-04-21T17:57:05.500000Z"


@pytest.mark.parametrize(
    "bad",
    ["yesterday", "2020-13-45T99:99:99.999999Z", "2020-W17-2T17:57:05.541358Z", "2020-04-21T17:57:05.54135\u0664Z",
     "0001-01-01T00:00:00+01:00", 17, None],
)
def test_invalid_timestamp_is_skipped_never_copied(bad: object) -> None:
    event = checked(edited("create_secret.json", requestReceivedTimestamp=bad, stageTimestamp=None))
    assert event["@timestamp"] == RECEIVED


def test_fal_01_003_kind_0_is_an_unparsed_event_with_a_clear_error() -> None:
    line = (FALCO / "fal_01_003.json").read_bytes()
    event = checked(line)
    assert event["event"]["action"] == "unparsed"
    assert event["error"]["message"] == "k8s_audit: not an audit Event: missing 'verb'"
    assert event["event"]["original"] == '{"kind": 0}'
    assert event["@timestamp"] == RECEIVED


def test_missing_verb_is_reported() -> None:
    event = checked(edited("create_secret.json", verb=None))
    assert event["error"]["message"] == "k8s_audit: not an audit Event: missing 'verb'"


def test_kind_other_than_event_is_reported() -> None:
    event = checked(edited("create_secret.json", kind="EventList"))
    assert event["error"]["message"] == "k8s_audit: not an audit Event: 'kind' is 'EventList', expected 'Event'"


def test_verb_of_the_wrong_type_is_reported() -> None:
    event = checked(b'{"kind":"Event","verb":["get"]}')
    assert event["error"]["message"] == "k8s_audit: not an audit Event: 'verb' is ['get'], not a name"


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b"[1, 2, 3]", "k8s_audit: not an audit Event: JSON list, not an object"),
        (b'"Event"', "k8s_audit: not an audit Event: JSON str, not an object"),
        (b"null", "k8s_audit: not an audit Event: JSON NoneType, not an object"),
    ],
)
def test_json_that_is_not_an_object_is_unparsed(line: bytes, message: str) -> None:
    assert checked(line)["error"]["message"] == message


def test_truncated_json_is_unparsed() -> None:
    line = falco_line("create_secret.json")[:300]
    event = checked(line)
    assert event["error"]["message"].startswith("k8s_audit: invalid JSON: ")
    assert event["event"]["original"] == line.decode()


def test_wrongly_typed_optional_fields_are_ignored_and_named() -> None:
    line = edited("create_secret.json", user="x", sourceIPs="10.0.0.1", userAgent=7,
                  responseStatus={"code": "201"})
    event = checked(line)
    assert event["event"]["action"] == "create"
    assert event["event"]["outcome"] == "unknown"
    assert "user" not in event and "source" not in event and "user_agent" not in event
    assert event["error"]["message"] == (
        "k8s_audit: 'responseStatus.code' is not an integer; 'user' is not an object; "
        "'sourceIPs' is not a list; 'userAgent' is not a string"
    )
    assert event["kubernetes"]["audit"]["user"] == "x"


def test_groups_that_are_not_strings_are_left_out() -> None:
    event = checked(edited("create_secret.json", user={"username": "u", "groups": ["a", 1]}))
    assert event["user"] == {"name": "u"}
    assert "'user.groups' is not a list of strings" in event["error"]["message"]


def test_source_ip_that_is_not_an_address_is_left_out() -> None:
    event = checked(edited("create_secret.json", sourceIPs=["not an address"]))
    assert "source" not in event


def test_boolean_response_code_is_not_a_code() -> None:
    event = checked(edited("create_secret.json", responseStatus={"code": True}))
    assert event["event"]["outcome"] == "unknown"


def test_invalid_utf8_inside_an_event_is_parsed_and_its_exact_bytes_kept() -> None:
    line = falco_line("create_secret.json").replace(b"example-secret", b"example-\xff\xfe-secret")
    event = checked(line)
    assert event["event"]["action"] == "create"
    assert field(event, "kubernetes.audit.objectRef.name") == "example-\ufffd\ufffd-secret"
    assert base64.b64decode(event["logseal"]["original_base64"]) == line
    assert "not valid UTF-8" in event["error"]["message"]


def test_valid_json_is_carried_byte_for_byte_and_not_repeated_in_original() -> None:
    line = falco_line("create_secret.json")
    event = normalize(line)
    assert orjson.dumps(event["kubernetes"]["audit"]) == line
    assert "original" not in event["event"]
    assert line in orjson.dumps(event)


def test_original_is_kept_when_the_source_asks_for_it() -> None:
    ctx = SourceContext(host_name=HOST, path=PATH, keep_original=True)
    line = falco_line("create_secret.json")
    assert normalize(line, ctx=ctx)["event"]["original"] == line.decode()


def test_original_is_left_out_when_the_source_says_so() -> None:
    ctx = SourceContext(host_name=HOST, path=PATH, keep_original=False)
    event = normalize(falco_line("create_secret.json"), ctx=ctx)
    assert "original" not in event["event"]
    assert event["event"]["action"] == "create"


def test_offset_and_file_come_from_the_caller() -> None:
    event = checked(falco_line("create_secret.json"), offset=123456)
    assert event["log"] == {"file": {"path": PATH}, "offset": 123456}
    assert event["host"] == {"name": HOST}
