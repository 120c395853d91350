"""Every normalizer returns a well-formed event for any bytes at all, and never raises."""

from __future__ import annotations

import random
from typing import Any

import pytest

from agent.normalize import SOURCE_TYPES, normalizer_for
from agent.normalize.common import SourceContext

from .helpers import DATA, RECEIVED, SAMPLES, assert_valid_event, lines_of

HOST = "node-0"
PATH = "/var/log/some.log"
FAMILIES = sorted(SOURCE_TYPES)

FALCO_LINE = lines_of(DATA / "falco" / "create_secret.json")[0][1]
MIB = 1 << 20

HOSTILE = {
    "empty": b"",
    "garbage": b"\xff\xfe garbage",
    "nul bytes": b"\x00" * 64,
    "carriage return": b"\r",
    "blanks": b" \t ",
    "1 MiB of one byte": b"A" * MIB,
    "JSON array": b"[1, 2, 3]",
    "JSON kind 0": b'{"kind": 0}',
    "JSON scalar": b"42",
    "truncated JSON": FALCO_LINE[: len(FALCO_LINE) // 2],
    "deeply nested JSON": b"[" * 100_000,
    "lone surrogate escape": b'{"kind":"Event","verb":"get","user":{"username":"\\ud800"}}',
}


def run(family: str, line: bytes, offset: int = 0) -> dict[str, Any]:
    event = normalizer_for(family, SourceContext(host_name=HOST, path=PATH))(line, offset, RECEIVED)
    assert_valid_event(event, line, offset, host=HOST, path=PATH)
    assert "internal error" not in event.get("error", {}).get("message", "")
    return event


@pytest.mark.parametrize("family", FAMILIES)
@pytest.mark.parametrize("name", sorted(HOSTILE))
def test_hostile_line_is_unparsed_with_error_and_original(family: str, name: str) -> None:
    line = HOSTILE[name]
    event = run(family, line, offset=77)
    assert event["error"]["message"].startswith(f"{family}: ")
    assert event["event"]["action"] == "unparsed"
    assert event["@timestamp"] == RECEIVED
    assert event["event"]["original"] == line.decode("utf-8", "replace")


@pytest.mark.parametrize("family", FAMILIES)
def test_invalid_utf8_garbage_is_kept_exactly(family: str) -> None:
    event = run(family, b"\xff\xfe garbage")
    assert event["event"]["original"] == "\ufffd\ufffd garbage"
    assert event["logseal"]["original_base64"] == "//4gZ2FyYmFnZQ=="


def test_one_mib_audit_event_is_parsed() -> None:
    line = FALCO_LINE.replace(b'"userAgent":"kubectl', b'"userAgent":"' + b"k" * MIB + b"kubectl")
    event = run("k8s_audit", line)
    assert len(event["user_agent"]["original"]) > MIB
    assert "error" not in event


def test_one_mib_auditd_record_is_parsed() -> None:
    line = b"type=SYSCALL msg=audit(1492037291.036:59): " + b"k=v " * (MIB // 4)
    event = run("auditd", line)
    assert event["auditd"]["log"]["k"] == "v"


def test_one_mib_syslog_message_is_parsed() -> None:
    line = b"Mar  3 09:01:17 node-1 app[1]: " + b"m" * MIB
    assert len(run("syslog", line)["message"]) == MIB


def real_lines() -> list[tuple[str, bytes]]:
    return (
        [("k8s_audit", line) for _, line in lines_of(SAMPLES / "k8s-audit.log")[:6]]
        + [("auditd", line) for _, line in lines_of(SAMPLES / "audit.log")[:6]]
        + [("syslog", line) for _, line in lines_of(SAMPLES / "auth.log")[:6]]
    )


@pytest.mark.parametrize("family", FAMILIES)
def test_random_bytes_and_mutated_real_lines_never_raise(family: str) -> None:
    rng = random.Random(20240305)
    candidates = [bytes(rng.randrange(256) for _ in range(rng.randrange(1, 80))) for _ in range(150)]
    for _, line in real_lines():
        for _ in range(12):
            mutated = bytearray(line)
            for _ in range(rng.randrange(1, 4)):
                mutated[rng.randrange(len(mutated))] = rng.randrange(256)
            candidates.append(bytes(mutated))
            candidates.append(line[: rng.randrange(len(line))])
    for offset, line in enumerate(candidates):
        run(family, line, offset)
