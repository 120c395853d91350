"""The syslog normalizer against a hand-written golden corpus (tests/data/syslog/, see PROVENANCE.md).

Each line of `corpus.jsonl` is `{"note", "line" | "line_base64", "expect", ["path"], ["received"],
["timezone"]}`: `expect` maps dotted ECS fields to their exact value; `null` means the field is absent.
Defaults: path `/var/log/syslog` (so the dataset follows the program), received `RECEIVED`, zone UTC.
"""

from __future__ import annotations

import base64
import json
from typing import Any

import pytest

from agent.normalize import NormalizeOptions
from agent.normalize.common import SourceContext
from agent.normalize.syslog import make_normalizer

from .helpers import DATA, RECEIVED, assert_valid_event

HOST = "node-9"
DEFAULT_PATH = "/var/log/syslog"
CORPUS = [json.loads(text) for text in (DATA / "syslog" / "corpus.jsonl").read_text("utf-8").splitlines() if text]
_ABSENT = object()


def raw_line(record: dict[str, Any]) -> bytes:
    if "line_base64" in record:
        return base64.b64decode(record["line_base64"])
    line: str = record["line"]
    return line.encode("utf-8")


def lookup(event: dict[str, Any], dotted: str) -> Any:
    if dotted in event:
        return event[dotted]
    node: Any = event
    for part in dotted.split("."):
        if not isinstance(node, dict) or part not in node:
            return _ABSENT
        node = node[part]
    return node


def test_corpus_is_large_enough_and_every_record_expects_something() -> None:
    assert len(CORPUS) >= 100
    assert all(record["expect"] and record["note"] for record in CORPUS)


@pytest.mark.parametrize("record", CORPUS, ids=[record["note"] for record in CORPUS])
def test_corpus_line_gives_every_expected_field(record: dict[str, Any]) -> None:
    line = raw_line(record)
    path = record.get("path", DEFAULT_PATH)
    options = NormalizeOptions(syslog_timezone=record.get("timezone", "UTC"))
    normalize = make_normalizer(SourceContext(host_name=HOST, path=path), options)
    event = normalize(line, 42, record.get("received", RECEIVED))
    assert_valid_event(event, line, 42, host=HOST, path=path)
    wrong = {}
    for dotted, expected in record["expect"].items():
        actual = lookup(event, dotted)
        if (actual is not _ABSENT) if expected is None else actual != expected:
            wrong[dotted] = {"expected": expected, "actual": None if actual is _ABSENT else actual}
    assert not wrong, f"{record['note']}: {wrong}"
