"""The auditd assembler agrees with go-libaudit's aucoalesce on its own golden events.

Each `aucoalesce/*.yaml` holds the raw records of test events; `*.json.golden` what go-libaudit
made of them. All records of a file are fed, as lines in file order, through one assembler (so
the events must be found again among each other), then every field both sides produce that has
an ECS (or `auditd.log`) equivalent is compared. Agreement must be >= 99% of compared fields and
every disagreement must be listed, with its reason, in tests/data/go-libaudit/DISAGREEMENTS.md.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import yaml

from agent.normalize.auditd import make_assembler
from agent.normalize.common import SourceContext, canonical_timestamp, get_field

from .helpers import DATA, RECEIVED

ORACLE = DATA / "go-libaudit" / "aucoalesce"
DISAGREEMENTS = DATA / "go-libaudit" / "DISAGREEMENTS.md"
CTX = SourceContext(host_name="node-1", path="/var/log/audit/audit.log")


def _int(value: Any) -> Any:
    return int(value) if isinstance(value, str) and value.isdigit() else value


def _when(value: Any) -> Any:
    return canonical_timestamp(value.replace("Z", "+00:00")) if isinstance(value, str) else value


_OUTCOME = {"success": "success", "fail": "failure", "unknown": "unknown"}

# go-libaudit field -> (our field, how their value is written in ours)
FIELDS: list[tuple[str, str, Callable[[Any], Any]]] = [
    ("@timestamp", "@timestamp", _when),
    ("sequence", "auditd.log.sequence", _int),
    ("record_type", "auditd.log.record_type", str.upper),
    ("session", "auditd.log.session", str),
    ("result", "event.outcome", lambda value: _OUTCOME.get(value, value)),
    ("summary.action", "event.action", str),
    ("ecs.event.kind", "event.kind", str),
    ("ecs.event.category", "event.category", list),
    ("ecs.event.type", "event.type", list),
    ("tags", "tags", list),
    ("data.syscall", "auditd.log.syscall", str),
    ("data.arch", "auditd.log.arch", str),
    ("process.pid", "process.pid", _int),
    ("process.ppid", "process.parent.pid", _int),
    ("process.name", "process.name", str),
    ("process.exe", "process.executable", str),
    ("process.title", "process.title", str),
    ("process.args", "process.args", list),
    ("process.cwd", "process.working_directory", str),
    ("user.ids.uid", "user.id", str),
    ("user.ids.auid", "user.audit.id", str),
    ("user.ids.euid", "user.effective.id", str),
    ("user.ids.gid", "user.group.id", str),
    ("data.acct", "user.name", str),
    ("ecs.user.target.name", "user.target.name", str),
    ("file.path", "file.path", str),
    ("file.inode", "file.inode", str),
    ("file.mode", "file.mode", str),
    ("file.uid", "file.uid", str),
    ("file.gid", "file.gid", str),
    ("source.ip", "source.ip", str),
    ("source.port", "source.port", _int),
    ("destination.ip", "destination.ip", str),
    ("destination.port", "destination.port", _int),
    ("network.direction", "network.direction", str),
]


def _ours(golden_file: Path) -> list[dict[str, Any]]:
    tests = yaml.safe_load(golden_file.with_name(golden_file.name.replace(".json.golden", ".yaml")).read_text())
    assembler = make_assembler(CTX, None)
    events: list[dict[str, Any]] = []
    offset = 0
    for text in tests["tests"].values():
        for line in text.strip().split("\n"):
            raw = line.strip().encode()
            events.extend(assembler.feed(raw, offset, RECEIVED))
            offset += len(raw) + 1
    events.extend(assembler.flush(RECEIVED, force=True))
    assert assembler.held() == []
    return events


def comparisons() -> list[tuple[str, str, str, Any, Any]]:
    """(case, go-libaudit field, our field, their value, our value) for every field both produce."""
    out = []
    for golden_file in sorted(ORACLE.glob("*.json.golden")):
        ours = _ours(golden_file)
        by_key = {(get_field(event, "auditd.log.sequence"), _when(event["@timestamp"])): event
                  for event in ours if get_field(event, "auditd.log.sequence") is not None}
        for case in json.loads(golden_file.read_text()):
            theirs = case["event"]
            event = by_key[(theirs["sequence"], _when(theirs["@timestamp"]))]
            name = f"{golden_file.name.removesuffix('.json.golden')}: {case['test_name']}"
            for their_field, our_field, convert in FIELDS:
                their_value = get_field(theirs, their_field)
                our_value = get_field(event, our_field)
                if their_value in (None, "", [], {}) or our_value is None:
                    continue
                out.append((name, their_field, our_field, convert(their_value), our_value))
    return out


def listed_disagreements() -> set[tuple[str, str]]:
    """(case, go-libaudit field) of each row of the table in DISAGREEMENTS.md."""
    rows = set()
    for line in DISAGREEMENTS.read_text().splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and len(cells) >= 5 and cells[0] not in ("case", "") and set(cells[0]) != {"-"}:
            rows.add((cells[0], cells[1].strip("`")))
    return rows


def test_every_golden_event_is_assembled_from_the_raw_records_in_file_order() -> None:
    for golden_file in sorted(ORACLE.glob("*.json.golden")):
        ours = [event for event in _ours(golden_file) if event["event"]["action"] != "audit-lost"]
        assert len(ours) == len(json.loads(golden_file.read_text())), golden_file.name


def test_agreement_with_go_libaudit_is_at_least_99_percent_and_every_difference_is_explained() -> None:
    compared = comparisons()
    different = {(case, their_field): (theirs, ours) for case, their_field, _, theirs, ours in compared
                 if theirs != ours}
    ratio = 1 - len(different) / len(compared)
    assert len(compared) > 500
    assert ratio >= 0.99, f"{len(compared) - len(different)}/{len(compared)} agree"
    assert set(different) == listed_disagreements(), different
