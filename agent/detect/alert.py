"""The alert value: what a rule or a baseline says, ECS-shaped, JSON-serializable, with stable ids. Pure.

Two keys, both SHA-256 and both deterministic (no clock, no randomness):

- `dedup_key` over (rule id, group values, matched event ids): the same firing, seen again (a
  replayed batch, a restart that re-reads events), has the same key and is emitted once by the
  detector.
- `alert_id` over (rule id, group values, window): the `event.id` of the alert document. The window
  is `window` when the producer names one (an anomaly's minute bucket or first-seen value), the
  start of a correlation's window, or the matched event ids of a single-event match. Outputs deliver
  at least once; a receiver dedups on this id.

`to_dict()` is ECS-shaped: `rule.*` (with the Sigma `level`), `event.kind = "alert"`,
`event.severity` (numeric, from the level), `threat.technique.id` from ATT&CK tags,
`related.hosts`, `message`, and an `anomaly` object (`expected`, `observed`, `score`, ...) for
baseline alerts. logseal's own details sit under `logseal.alert` (matched event ids, which resolve
with `logseal query`, matched fields, group values, count, first/last seen, nodes and the
`suppressed_count` an output adds). Every alert carries the rule's author and licence (SigmaHQ rules
are under the Detection Rule License 1.1, which requires that attribution). `from_dict(to_dict(a))
== a`.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from functools import cached_property
from typing import Any

LEVELS = ("informational", "low", "medium", "high", "critical")
"""Sigma levels, lowest first (outputs route by this order)."""
SEVERITY = {"informational": 1, "low": 21, "medium": 47, "high": 73, "critical": 99}
_TECHNIQUE = re.compile(r"^attack\.(t\d{4}(?:\.\d{3})?)$", re.IGNORECASE)
_TACTIC = re.compile(r"^attack\.([a-z][a-z_-]+)$")


def level_rank(level: str) -> int:
    """0 for informational ... 4 for critical; an unknown level ranks as informational."""
    return LEVELS.index(level) if level in LEVELS else 0


def dedup_key(rule_id: str, group: tuple[tuple[str, str], ...], event_ids: tuple[str, ...]) -> str:
    blob = json.dumps([rule_id, [list(g) for g in group], list(event_ids)], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def alert_id(rule_id: str, group: tuple[tuple[str, str], ...], window: str) -> str:
    blob = json.dumps(["alert-v1", rule_id, [list(g) for g in group], window], separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


@dataclass(frozen=True)
class Anomaly:
    """What a baseline expected and what it saw, in words a responder can check."""

    type: str  # "new_combination", "new_source_ip", "new_user_agent", "rate_spike", "new_terms"
    entity: str  # e.g. "user.name=alice"
    expected: str
    observed: str
    score: float  # 0..100; the level follows from it
    baseline: tuple[tuple[str, Any], ...] = ()  # numbers behind `expected` (mean, sigma, known values...)

    def to_dict(self) -> dict[str, Any]:
        return {"type": self.type, "entity": self.entity, "expected": self.expected, "observed": self.observed,
                "score": self.score, "baseline": {k: v for k, v in self.baseline}}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Anomaly:
        return cls(str(data["type"]), str(data["entity"]), str(data["expected"]), str(data["observed"]),
                   float(data["score"]), tuple((str(k), _freeze(v)) for k, v in (data.get("baseline") or {}).items()))


def _freeze(value: Any) -> Any:
    return tuple(_freeze(v) for v in value) if isinstance(value, list) else value


@dataclass(frozen=True)
class Alert:
    rule_id: str
    rule_title: str
    level: str
    author: str
    license: str
    ruleset: str
    tags: tuple[str, ...]
    kind: str  # "match" (one event), the correlation type, or "anomaly"
    event_ids: tuple[str, ...]
    group: tuple[tuple[str, str], ...]
    first_time: str
    last_time: str
    count: int
    nodes: tuple[str, ...]
    matched_fields: tuple[tuple[str, tuple[Any, ...]], ...] = ()
    window: str = ""  # names the window for `alert_id`; "" = derived (see the module doc)
    anomaly: Anomaly | None = None
    suppressed_count: int = 0  # repeats an output held back before this alert (set by the router)

    @cached_property
    def dedup_key(self) -> str:
        return dedup_key(self.rule_id, self.group, self.event_ids)

    @property
    def window_key(self) -> str:
        if self.window:
            return self.window
        if self.kind == "match":
            return "events:" + ",".join(self.event_ids)
        return "from:" + self.first_time

    @cached_property
    def alert_id(self) -> str:
        return alert_id(self.rule_id, self.group, self.window_key)

    @property
    def techniques(self) -> tuple[str, ...]:
        return tuple(m.group(1).upper() for t in self.tags if (m := _TECHNIQUE.match(t)))

    @property
    def tactics(self) -> tuple[str, ...]:
        return tuple(m.group(1).replace("_", "-") for t in self.tags if (m := _TACTIC.match(t.lower()))
                     and not _TECHNIQUE.match(t))

    @property
    def message(self) -> str:
        where = ", ".join(f"{k}={v}" for k, v in self.group)
        text = f"{self.rule_title} [{self.level}]" + (f" {where}" if where else "")
        if self.anomaly is not None:
            text += f": expected {self.anomaly.expected}; observed {self.anomaly.observed}"
        elif self.count > 1:
            text += f": {self.count} events"
        return text

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "@timestamp": self.last_time,
            "message": self.message,
            "event": {"kind": "alert", "id": self.alert_id, "severity": SEVERITY.get(self.level, 1),
                      "dataset": "logseal.alert", "start": self.first_time, "end": self.last_time},
            "rule": {"id": self.rule_id, "name": self.rule_title, "author": self.author, "license": self.license,
                     "ruleset": self.ruleset, "level": self.level},
            "logseal": {"alert": {
                "kind": self.kind, "dedup_key": self.dedup_key, "window": self.window_key,
                "event_ids": list(self.event_ids), "group": {k: v for k, v in self.group}, "count": self.count,
                "first_seen": self.first_time, "last_seen": self.last_time, "nodes": list(self.nodes),
                "matched_fields": {k: list(v) for k, v in self.matched_fields},
                "suppressed_count": self.suppressed_count}},
            "tags": list(self.tags),
        }
        if self.nodes:
            out["related"] = {"hosts": list(self.nodes)}
        if self.techniques or self.tactics:
            threat: dict[str, Any] = {"framework": "MITRE ATT&CK"}
            if self.techniques:
                threat["technique"] = {"id": list(self.techniques)}
            if self.tactics:
                threat["tactic"] = {"name": list(self.tactics)}
            out["threat"] = threat
        if self.anomaly is not None:
            out["anomaly"] = self.anomaly.to_dict()
        return out

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), separators=(",", ":"), ensure_ascii=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Alert:
        rule, detail = data["rule"], data["logseal"]["alert"]
        anomaly = data.get("anomaly")
        return cls(rule["id"], rule["name"], rule["level"], rule["author"], rule["license"], rule["ruleset"],
                   tuple(data.get("tags", ())), detail["kind"], tuple(detail["event_ids"]),
                   tuple((str(k), str(v)) for k, v in detail["group"].items()), detail["first_seen"],
                   detail["last_seen"], int(detail["count"]), tuple(detail["nodes"]),
                   tuple((k, tuple(v)) for k, v in detail.get("matched_fields", {}).items()),
                   _explicit_window(detail), Anomaly.from_dict(anomaly) if isinstance(anomaly, dict) else None,
                   int(detail.get("suppressed_count", 0)))


def _explicit_window(detail: dict[str, Any]) -> str:
    """The `window` field back from a document: empty when it was the derived default."""
    window = str(detail.get("window", ""))
    kind = detail["kind"]
    derived = ("events:" + ",".join(detail["event_ids"])) if kind == "match" else "from:" + str(detail["first_seen"])
    return "" if window == derived else window
