"""Shared pieces of the normalizer specifications: sample locations and the event invariants."""

from __future__ import annotations

import base64
import datetime as dt
from pathlib import Path
from typing import Any

import orjson

DATA = Path(__file__).resolve().parent.parent / "data"
SAMPLES = Path(__file__).resolve().parent.parent.parent / "agent" / "samples"
RECEIVED = "2024-03-05T10:00:00.000000Z"

ALWAYS_PRESENT = (
    "@timestamp",
    "event.kind",
    "event.category",
    "event.type",
    "event.action",
    "event.outcome",
    "event.dataset",
    "host.name",
    "log.file.path",
    "log.offset",
)


def lines_of(path: Path) -> list[tuple[int, bytes]]:
    """(byte offset, line without its newline) for every non-empty line of a file."""
    out: list[tuple[int, bytes]] = []
    offset = 0
    for raw in path.read_bytes().split(b"\n"):
        if raw.strip():
            out.append((offset, raw))
        offset += len(raw) + 1
    return out


def field(event: dict[str, Any], dotted: str) -> Any:
    node: Any = event
    if dotted in event:
        return event[dotted]
    for part in dotted.split("."):
        assert isinstance(node, dict) and part in node, f"{dotted} missing from {event!r:.300}"
        node = node[part]
    return node


def assert_canonical_timestamp(value: object) -> None:
    assert isinstance(value, str)
    assert len(value) == 27 and value.endswith("Z"), value
    dt.datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%fZ")


def assert_valid_event(event: dict[str, Any], line: bytes, offset: int, *, host: str, path: str) -> None:
    """The schema's invariants, true for every event of every family, parsed or not."""
    for name in ALWAYS_PRESENT:
        field(event, name)
    assert_canonical_timestamp(event["@timestamp"])
    assert event["event"]["kind"] == "event"
    assert isinstance(event["event"]["category"], list)
    assert isinstance(event["event"]["type"], list) and event["event"]["type"]
    assert event["event"]["outcome"] in ("success", "failure", "unknown")
    assert event["host"]["name"] == host
    assert event["log"]["file"]["path"] == path
    assert event["log"]["offset"] == offset
    assert "id" not in event["event"], "event.id belongs to the batcher"
    if "event.original" in ((event.get("logseal") or {}).get("redacted") or []):
        # An unparsable k8s audit line that may hold a credential: withheld on purpose, hash kept.
        assert str(event["event"]["original"]).startswith("[REDACTED hmac-sha256:")
        assert "error" in event
        orjson.dumps(event)
        return
    try:
        text = line.decode("utf-8")
    except UnicodeDecodeError:
        assert base64.b64decode(event["logseal"]["original_base64"]) == line
        assert "error" in event
    else:
        verbatim = (event.get("kubernetes") or {}).get("audit")
        if isinstance(verbatim, orjson.Fragment):
            # The record itself is carried byte for byte; event.original would only repeat it.
            assert orjson.dumps(verbatim) == line
        else:
            assert event["event"]["original"] == text
        assert "logseal" not in event
    # The event must survive serialization (no surrogates, no odd types).
    orjson.dumps(event)
