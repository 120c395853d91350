"""The alert value: what a rule firing says, JSON-serializable, with a stable dedup key. Pure.

`dedup_key` is SHA-256 over (rule id, group values, matched event ids): the same firing, seen
again (a replayed batch, a restart that re-reads events), has the same key and is emitted once.
`to_dict()` is ECS-shaped (`rule.*`, `event.*`, `threat.technique.id`), with logseal's own
details under `logseal.alert`. Every alert carries the rule's author and licence (SigmaHQ rules
are under the Detection Rule License 1.1, which requires that attribution).
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any

SEVERITY = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}
_TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)


def dedup_key(rule_id: str, group: tuple[tuple[str, str], ...], event_ids: tuple[str, ...]) -> str:
    blob = json.dumps([rule_id, [list(g) for g in group], list(event_ids)], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Alert:
    rule_id: str
    rule_title: str
    level: str
    author: str
    license: str
    ruleset: str
    tags: tuple[str, ...]
    kind: str  # "match" (one event) or the correlation type
    event_ids: tuple[str, ...]
    group: tuple[tuple[str, str], ...]
    first_time: str
    last_time: str
    count: int
    nodes: tuple[str, ...]
    matched_fields: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    @property
    def dedup_key(self) -> str:
        return dedup_key(self.rule_id, self.group, self.event_ids)

    @property
    def techniques(self) -> tuple[str, ...]:
        return tuple(m.group(1).upper() for t in self.tags if (m := _TECHNIQUE.match(t)))

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@timestamp": self.last_time,
            "event": {"kind": "alert", "id": self.dedup_key, "severity": SEVERITY.get(self.level, 1),
                      "dataset": "logseal.alert", "start": self.first_time, "end": self.last_time},
            "rule": {"id": self.rule_id, "name": self.rule_title, "author": self.author, "license": self.license,
                     "ruleset": self.ruleset, "level": self.level},
            "logseal": {"alert": {
                "kind": self.kind, "dedup_key": self.dedup_key, "event_ids": list(self.event_ids),
                "group": {k: v for k, v in self.group}, "count": self.count, "first_seen": self.first_time,
                "last_seen": self.last_time, "nodes": list(self.nodes),
                "matched_fields": {k: list(v) for k, v in self.matched_fields}}},
            "tags": list(self.tags),
        }
        if self.techniques:
            out["threat"] = {"framework": "MITRE ATT&CK", "technique": {"id": list(self.techniques)}}
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        rule, detail = data["rule"], data["logseal"]["alert"]
        return cls(rule["id"], rule["name"], rule["level"], rule["author"], rule["license"], rule["ruleset"],
                   tuple(data.get("tags", ())), detail["kind"], tuple(detail["event_ids"]),
                   tuple((str(k), str(v)) for k, v in detail["group"].items()), detail["first_seen"],
                   detail["last_seen"], int(detail["count"]), tuple(detail["nodes"]),
                   tuple((k, tuple(v)) for k, v in detail.get("matched_fields", {}).items()))
