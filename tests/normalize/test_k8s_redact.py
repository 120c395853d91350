"""Specification of redaction: secrets never reach the sealed event, and each removal is listed.

Events are real Falco events (tests/data/falco) with the objects a RequestResponse policy would
have recorded added to them.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any

import orjson
import pytest

from agent.normalize.assemble import NormalizeOptions
from agent.normalize.common import SourceContext
from agent.normalize.k8s_audit import make_assembler
from agent.normalize.k8s_redact import Redactor, marker

from .helpers import DATA, RECEIVED, lines_of

KEY = b"test-key"
CTX = SourceContext(host_name="node-7", path="/var/log/kubernetes/audit/audit.log")
SECRET_B64 = "czNjcjN0LXBhc3N3MHJk"  # "s3cr3t-passw0rd"
TOKEN = "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiJzeXN0ZW0ifQ.c2lnbmF0dXJl"


def falco(name: str) -> dict[str, Any]:
    audit: dict[str, Any] = orjson.loads(lines_of(DATA / "falco" / name)[0][1])
    return audit


def secret_object(**extra: Any) -> dict[str, Any]:
    return {"kind": "Secret", "apiVersion": "v1",
            "metadata": {"name": "example-secret", "namespace": "default"},
            "data": {"password": SECRET_B64, "username": "YWRtaW4="}, "type": "Opaque", **extra}


def feed(audit: dict[str, Any], **options: Any) -> dict[str, Any]:
    line = orjson.dumps(audit)
    [event] = make_assembler(CTX, NormalizeOptions(redact_key=KEY, **options)).feed(line, 0, RECEIVED)
    stored: dict[str, Any] = orjson.loads(orjson.dumps(event))
    return stored


def expected_marker(value: str) -> str:
    return "[REDACTED hmac-sha256:" + hmac.new(KEY, value.encode(), hashlib.sha256).hexdigest()[:16] + "]"


def test_marker_is_the_first_16_hex_of_hmac_sha256_of_the_value() -> None:
    assert marker(KEY, SECRET_B64) == expected_marker(SECRET_B64)
    assert marker(KEY, SECRET_B64) != marker(b"other-key", SECRET_B64)


def test_secret_data_in_request_and_response_is_redacted_and_listed() -> None:
    audit = falco("create_secret.json")
    audit["requestObject"] = secret_object(stringData={"token": "plain-text"})
    audit["responseObject"] = secret_object()
    event = feed(audit)
    request = event["kubernetes"]["audit"]["requestObject"]
    assert request["data"] == {"password": expected_marker(SECRET_B64), "username": expected_marker("YWRtaW4=")}
    assert request["stringData"] == {"token": expected_marker("plain-text")}
    assert request["metadata"]["name"] == "example-secret"
    assert event["logseal"]["redacted"] == [
        "requestObject.data.password", "requestObject.data.username", "requestObject.stringData.token",
        "responseObject.data.password", "responseObject.data.username",
    ]


def test_equal_secrets_give_equal_markers() -> None:
    audit = falco("create_secret.json")
    audit["requestObject"] = secret_object()
    audit["responseObject"] = secret_object()
    audit_obj = feed(audit)["kubernetes"]["audit"]
    assert audit_obj["requestObject"]["data"] == audit_obj["responseObject"]["data"]


def test_redacted_event_carries_no_secret_anywhere_not_even_in_original() -> None:
    audit = falco("create_secret.json")
    audit["requestObject"] = secret_object()
    line = orjson.dumps(audit).replace(b"minikube-user", b"minikube-\xff-user")  # invalid UTF-8 too
    ctx = SourceContext(host_name="n", path="/p", keep_original=True)
    [event] = make_assembler(ctx, NormalizeOptions(redact_key=KEY)).feed(line, 0, RECEIVED)
    stored = orjson.dumps(event)
    assert SECRET_B64.encode() not in stored
    assert "original" not in event["event"]
    assert "original_base64" not in event["logseal"]
    assert "withheld" in event["error"]["message"]


def test_secret_list_items_and_list_items_of_kind_secret_are_redacted() -> None:
    audit = falco("create_secret.json")
    audit["verb"] = "list"
    audit["responseObject"] = {"kind": "SecretList", "items": [{"metadata": {"name": "a"}, "data": {"k": "djE="}}]}
    audit["requestObject"] = {"kind": "List", "items": [secret_object(), {"kind": "ConfigMap", "data": {"c": "v"}}]}
    event = feed(audit)
    assert event["logseal"]["redacted"] == [
        "requestObject.items.0.data.password", "requestObject.items.0.data.username", "responseObject.items.0.data.k",
    ]
    assert event["kubernetes"]["audit"]["requestObject"]["items"][1]["data"] == {"c": "v"}


def test_patch_bodies_on_secrets_are_redacted_merge_and_json_patch() -> None:
    audit = falco("create_secret.json")
    audit["verb"] = "patch"
    audit["requestObject"] = {"data": {"password": SECRET_B64}}
    assert feed(audit)["logseal"]["redacted"] == ["requestObject.data.password"]
    audit["requestObject"] = [{"op": "replace", "path": "/data/password", "value": SECRET_B64}]
    assert feed(audit)["logseal"]["redacted"] == ["requestObject.0.value"]


def test_last_applied_configuration_of_a_secret_is_redacted() -> None:
    audit = falco("create_secret.json")
    applied = orjson.dumps(secret_object()).decode()
    audit["requestObject"] = secret_object()
    audit["requestObject"]["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": applied}
    event = feed(audit)
    assert SECRET_B64 not in orjson.dumps(event).decode()


def test_configmap_data_is_not_secret_data() -> None:
    line = lines_of(DATA / "falco" / "create_configmap.json")[0][1]
    [event] = make_assembler(CTX, NormalizeOptions()).feed(line, 0, RECEIVED)
    assert isinstance(event["kubernetes"]["audit"], orjson.Fragment)
    assert "logseal" not in event


def test_token_review_spec_token_and_token_request_status_token_are_redacted() -> None:
    audit = falco("create_secret.json")
    audit["objectRef"] = {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io", "apiVersion": "v1"}
    audit["requestObject"] = {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                              "spec": {"token": TOKEN}}
    event = feed(audit)
    assert event["kubernetes"]["audit"]["requestObject"]["spec"]["token"] == expected_marker(TOKEN)
    audit["objectRef"] = {"resource": "serviceaccounts", "subresource": "token", "namespace": "default"}
    audit["requestObject"] = None
    audit["responseObject"] = {"kind": "TokenRequest", "status": {"token": TOKEN, "expirationTimestamp": "x"}}
    assert feed(audit)["logseal"]["redacted"] == ["responseObject.status.token"]


@pytest.mark.parametrize("value", [f"Bearer {TOKEN}", f"bearer {TOKEN}", "Basic YWRtaW46cGFzcw==", " BASIC eA== "])
def test_credential_string_values_are_redacted_anywhere(value: str) -> None:
    audit = falco("create_nginx_pod_privileged.json")
    audit["annotations"]["webhook.example.com/echo"] = value
    audit["requestObject"]["spec"]["containers"][0]["env"] = [{"name": "AUTH", "value": value}]
    event = feed(audit)
    assert event["logseal"]["redacted"] == ["annotations.webhook.example.com/echo",
                                            "requestObject.spec.containers.0.env.0.value"]
    assert value not in orjson.dumps(event).decode()


def test_credential_inside_a_command_line_is_replaced_and_the_rest_kept() -> None:
    audit = falco("create_nginx_pod_privileged.json")
    command = f"curl -H 'Authorization: Bearer {TOKEN}' https://api.example.com"
    audit["requestObject"]["spec"]["containers"][0]["args"] = [command]
    args = feed(audit)["kubernetes"]["audit"]["requestObject"]["spec"]["containers"][0]["args"]
    assert args == [f"curl -H 'Authorization: {expected_marker('Bearer ' + TOKEN)}' https://api.example.com"]


def test_prose_mentioning_basic_auth_is_not_a_credential() -> None:
    audit = falco("create_secret.json")
    audit["annotations"]["note"] = "Basic auth is disabled on this cluster"
    line = orjson.dumps(audit)
    [event] = make_assembler(CTX, NormalizeOptions()).feed(line, 0, RECEIVED)
    assert isinstance(event["kubernetes"]["audit"], orjson.Fragment)


@pytest.mark.parametrize("key", ["authorization", "Authorization", "AUTHORIZATION"])
def test_values_under_authorization_keys_are_redacted_whatever_their_type(key: str) -> None:
    audit = falco("create_secret.json")
    audit["annotations"][key] = "token abc"
    audit["user"]["extra"] = {key: ["Digest xyz"]}
    event = feed(audit)
    assert event["logseal"]["redacted"] == [f"annotations.{key}", f"user.extra.{key}"]
    assert event["kubernetes"]["audit"]["user"]["extra"][key] == marker(KEY, ["Digest xyz"])
    # The decision annotations are not authorization keys.
    assert event["kubernetes"]["audit"]["annotations"]["authorization.k8s.io/decision"] == "allow"


def test_configured_paths_with_wildcards_are_redacted() -> None:
    audit = falco("create_nginx_pod_privileged.json")
    audit["requestObject"]["spec"]["containers"][0]["env"] = [{"name": "DB_PASSWORD", "value": "hunter2"},
                                                              {"name": "MODE", "value": "prod"}]
    audit["userAgent"] = "kubectl/v1.17.3 (darwin/amd64) kubernetes/06ad960"
    event = feed(audit, redact_paths=("requestObject.spec.containers.*.env.*.value", "userAgent", "no.such.path"))
    assert event["logseal"]["redacted"] == ["requestObject.spec.containers.0.env.0.value",
                                            "requestObject.spec.containers.0.env.1.value", "userAgent"]
    assert event["user_agent"]["original"] == expected_marker(audit["userAgent"])


def test_redaction_is_idempotent() -> None:
    audit = falco("create_secret.json")
    audit["requestObject"] = secret_object()
    redactor = Redactor(KEY)
    assert redactor.redact(audit) != []
    once = orjson.dumps(audit)
    assert redactor.redact(audit) == []
    assert orjson.dumps(audit) == once


def test_events_without_secrets_stay_verbatim_and_unmarked() -> None:
    for name in ("create_secret.json", "create_nginx_pod_privileged.json", "exec_pod.json"):
        line = lines_of(DATA / "falco" / name)[0][1]
        [event] = make_assembler(CTX, NormalizeOptions()).feed(line, 0, RECEIVED)
        assert isinstance(event["kubernetes"]["audit"], orjson.Fragment)
        assert "logseal" not in event


def test_an_unparsable_line_that_may_hold_a_secret_is_withheld_with_its_keyed_hash() -> None:
    from agent.normalize import NormalizeOptions, SourceContext, assembler_for

    cut = (b'{"kind":"Event","verb":"create","objectRef":{"resource":"secrets"},'
           b'"requestObject":{"data":{"pw":"aHVudGVyMg==')
    assembler = assembler_for("k8s_audit", SourceContext(host_name="n", path="/p"),
                              NormalizeOptions(redact_key=b"k" * 16))
    (event,) = assembler.feed(cut, 0, "2026-11-26T10:00:00.000000Z")
    assert b"aHVudGVyMg" not in orjson.dumps(event)
    assert event["event"]["original"].startswith("[REDACTED hmac-sha256:")
    assert event["logseal"]["redacted"] == ["event.original"]
    assert "withheld" in event["error"]["message"]
    assert assembler.counters()["withheld_unparsed_lines"] == 1
    (harmless,) = assembler.feed(b'{"kind":"Event","verb":', 1, "2026-11-26T10:00:00.000000Z")
    assert harmless["event"]["original"] == '{"kind":"Event","verb":'
