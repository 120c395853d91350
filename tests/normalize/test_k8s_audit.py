"""Specification of the Kubernetes audit normalizer, on Falco's audit trace files and Panther's events.

Policy and redaction have their own specifications (test_k8s_policy.py, test_k8s_redact.py); here
is how the normalizer applies them.
"""

from __future__ import annotations

import base64
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent.normalize import normalizer_for
from agent.normalize.assemble import NormalizeOptions
from agent.normalize.common import SourceContext
from agent.normalize.k8s_audit import make_assembler
from agent.normalize.k8s_policy import parse_policy

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


# ---- outcome from the authorization decision -----------------------------------------------


def test_forbid_decision_makes_outcome_failure() -> None:
    audit = orjson.loads(falco_line("create_secret.json"))
    audit["annotations"]["authorization.k8s.io/decision"] = "forbid"
    audit["responseStatus"] = None  # e.g. a ResponseStarted record without a code yet
    assert checked(orjson.dumps(audit))["event"]["outcome"] == "failure"


def test_allow_decision_leaves_the_outcome_to_the_response_code() -> None:
    assert checked(falco_line("create_secret.json"))["event"]["outcome"] == "success"
    audit = orjson.loads(falco_line("create_secret.json"))
    audit.pop("responseStatus")
    assert checked(orjson.dumps(audit))["event"]["outcome"] == "unknown"


# ---- impersonation and related -------------------------------------------------------------


IMPERSONATED = {"username": "system:serviceaccount:kube-system:deployer", "uid": "u-42",
                "groups": ["system:serviceaccounts", "system:authenticated"], "extra": {"scopes": ["a"]}}


def test_impersonated_user_is_the_effective_user_and_the_requester_stays_user() -> None:
    event = checked(edited("create_secret.json", impersonatedUser=IMPERSONATED))
    assert event["user"]["name"] == "minikube-user"
    assert event["user"]["effective"] == {"name": IMPERSONATED["username"], "id": "u-42",
                                          "group": {"name": IMPERSONATED["groups"]}}
    assert event["related"]["user"] == ["minikube-user", IMPERSONATED["username"]]
    assert event["kubernetes"]["audit"]["impersonatedUser"] == IMPERSONATED


def test_impersonated_user_of_the_wrong_type_is_named_and_ignored() -> None:
    event = checked(edited("create_secret.json", impersonatedUser="admin"))
    assert "effective" not in event["user"]
    assert event["error"]["message"] == "k8s_audit: 'impersonatedUser' is not an object"


def test_related_user_is_the_user_alone_without_impersonation() -> None:
    assert checked(falco_line("create_secret.json"))["related"]["user"] == ["minikube-user"]


def test_source_ip_is_the_first_address_and_all_addresses_are_related() -> None:
    event = checked(edited("create_secret.json", sourceIPs=["10.0.0.7", "192.168.64.1", "10.0.0.7", "proxy"]))
    assert event["source"] == {"ip": "10.0.0.7"}
    assert event["related"]["ip"] == ["10.0.0.7", "192.168.64.1"]


# ---- the assembler: policy and counters ----------------------------------------------------


POLICY_TEXT = """
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: "", resources: [secrets]}]
  - level: Metadata
    resources: [{group: "", resources: [pods]}]
    omitStages: [ResponseStarted]
  - level: RequestResponse
    resources: [{group: "rbac.authorization.k8s.io"}]
"""


def assembler(policy: str | None = POLICY_TEXT, ctx: SourceContext = CTX) -> Any:
    parsed = parse_policy(policy, "test-policy") if policy is not None else None
    return make_assembler(ctx, NormalizeOptions(k8s_policy=parsed))


def test_events_dropped_by_policy_are_counted_per_rule_and_stage() -> None:
    feeder = assembler()
    assert feeder.feed(falco_line("create_secret.json"), 0, RECEIVED) == []
    assert feeder.feed(falco_line("delete_secret.json"), 1, RECEIVED) == []
    assert feeder.feed(edited("create_nginx_pod_privileged.json", stage="ResponseStarted"), 2, RECEIVED) == []
    assert feeder.feed(edited("create_clusterrole.json", stage="RequestReceived"), 3, RECEIVED) == []
    assert feeder.feed(falco_line("create_service.json"), 4, RECEIVED) == []  # no rule matches
    assert feeder.counters() == {
        "dropped_by_policy.rule_0": 2,
        "dropped_by_policy.omit_stage.ResponseStarted": 1,
        "dropped_by_policy.omit_stage.RequestReceived": 1,
        "dropped_by_policy.rule_none": 1,
    }
    assert feeder.held() == [] and feeder.flush(RECEIVED, force=True) == []


def test_metadata_rule_strips_objects_and_says_so() -> None:
    line = falco_line("create_nginx_pod_privileged.json")
    [event] = assembler(ctx=SourceContext(host_name=HOST, path=PATH, keep_original=True)).feed(line, 0, RECEIVED)
    audit = event["kubernetes"]["audit"]
    assert isinstance(audit, dict) and "requestObject" not in audit and "responseObject" not in audit
    assert audit["level"] == "Metadata"
    assert event["logseal"] == {"policy": {"rule": 1, "level": "Metadata",
                                           "removed": ["requestObject", "responseObject"]}}
    assert "original" not in event["event"]  # it would hold what the policy removed
    assert event["event"]["action"] == "create"


def test_event_the_policy_keeps_whole_stays_verbatim() -> None:
    line = falco_line("create_clusterrole.json")
    [event] = assembler().feed(line, 0, RECEIVED)
    assert orjson.dumps(event["kubernetes"]["audit"]) == line
    assert "logseal" not in event


def test_without_policy_nothing_is_dropped_and_nothing_counted() -> None:
    feeder = assembler(None)
    for offset, line in lines_of(SAMPLES / "k8s-audit.log"):
        assert len(feeder.feed(line, offset, RECEIVED)) == 1
    assert feeder.counters() == {}


def test_unparsed_lines_are_never_dropped_by_policy() -> None:
    [event] = assembler().feed(b"{not json", 0, RECEIVED)
    assert event["event"]["action"] == "unparsed"


def test_assembler_refuses_a_policy_that_is_not_parsed() -> None:
    with pytest.raises(TypeError):
        make_assembler(CTX, NormalizeOptions(k8s_policy={"rules": []}))


# ---- oracle: other projects' events agree with what we map ---------------------------------


def source_facts(audit: dict[str, Any]) -> dict[str, Any]:
    ref = audit.get("objectRef") or {}
    return {"user": audit["user"]["username"], "verb": audit["verb"], "ip": (audit.get("sourceIPs") or [None])[0],
            "namespace": ref.get("namespace"), "resource": ref.get("resource"),
            "code": (audit.get("responseStatus") or {}).get("code")}


def ecs_facts(event: dict[str, Any]) -> dict[str, Any]:
    audit = event["kubernetes"]["audit"]
    ref = audit.get("objectRef") or {}
    return {"user": event["user"]["name"], "verb": event["event"]["action"], "ip": event.get("source", {}).get("ip"),
            "namespace": ref.get("namespace"), "resource": ref.get("resource"),
            "code": (audit.get("responseStatus") or {}).get("code")}


ORACLE_LINES = [pytest.param(line, id=f"panther@{offset}") for offset, line in PANTHER] + [
    pytest.param(line, id=f"{path.stem}@{offset}")
    for path in sorted(FALCO.glob("*.json")) if path.name != "fal_01_003.json"
    for offset, line in lines_of(path)
]


@pytest.mark.parametrize("line", ORACLE_LINES)
def test_ecs_fields_agree_with_the_source_events(line: bytes) -> None:
    audit = orjson.loads(line)
    [event] = make_assembler(CTX, NormalizeOptions()).feed(line, 0, RECEIVED)
    stored = orjson.loads(orjson.dumps(event))
    assert ecs_facts(stored) == source_facts(audit)
    code = source_facts(audit)["code"]
    forbidden = (audit.get("annotations") or {}).get("authorization.k8s.io/decision") == "forbid"
    expected = "failure" if forbidden or (code is not None and code >= 400) else \
        "unknown" if code is None else "success"
    assert stored["event"]["outcome"] == expected


# ---- never breaks --------------------------------------------------------------------------

JSON_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.text(max_size=20)
    | st.sampled_from(["Bearer abc", "secrets", "Secret", "ResponseStarted"]),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(
        st.sampled_from(["kind", "data", "items", "user", "objectRef", "resource", "Authorization", "verb",
                         "stage", "requestObject", "metadata", "managedFields", "x"]), inner, max_size=5),
    max_leaves=25,
)


@settings(max_examples=150, deadline=None)
@given(st.binary(max_size=300) | st.dictionaries(
    st.sampled_from(["user", "objectRef", "requestObject", "responseObject", "stage", "annotations", "sourceIPs",
                     "impersonatedUser", "level", "requestURI"]), JSON_VALUES, max_size=6,
).map(lambda fields: orjson.dumps({"kind": "Event", "verb": "get", **fields})))
def test_any_line_through_policy_and_redaction_gives_at_most_one_serializable_event(line: bytes) -> None:
    [event] = assembler(None).feed(line, 0, RECEIVED) or [None]
    assert event is not None
    orjson.dumps(event)
    kept = assembler().feed(line, 0, RECEIVED)
    assert len(kept) <= 1
    for other in kept:
        orjson.dumps(other)


def test_deeply_nested_secret_object_is_unparsed_not_a_crash() -> None:
    line = b'{"kind":"Event","verb":"get","requestObject":' + b"[" * 200_000 + b"]" * 200_000 + b"}"
    [event] = assembler(None).feed(line, 0, RECEIVED)
    assert event["event"]["action"] == "unparsed"
