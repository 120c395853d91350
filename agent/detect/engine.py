"""The detector: rules and correlations over a stream of normalized events. Pure (no I/O, no clock).

    detector = Detector.from_documents(docs)          # or Detector.load(["builtin:kubernetes"]) (reads files)
    alerts = detector.process(event)                  # per event, in arrival order
    blob = detector.snapshot()                        # bytes: correlation state + recent dedup keys
    detector.restore(blob)                            # on a detector loaded with the same rules

Invariants:
- An alert's `dedup_key` is emitted at most once while it is remembered (the last
  `dedup_capacity` keys, saved in the snapshot): a replayed event or a restart never doubles it.
- A rule referenced by a correlation alerts on its own only if the correlation says
  `generate: true` (Sigma correlation specification); a correlation referenced by another
  (chaining) likewise.
"""

from __future__ import annotations

import datetime as dt
import json
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from agent.detect.alert import Alert
from agent.detect.correlation import CorrelationEngine, Firing, Hit, Limits
from agent.detect.errors import RuleError
from agent.detect.fields import Doc, View, get_values
from agent.detect.matcher import RuleIndex
from agent.detect.rules import (
    CorrelationSpec,
    RawDoc,
    SigmaRule,
    apply_filter,
    compile_correlation,
    compile_rule,
    kind_of,
)
from agent.detect.values import text_of

SNAPSHOT_VERSION = 1


def event_time(event: Doc) -> float | None:
    ts = event.get("@timestamp")
    if not isinstance(ts, str):
        return None
    try:
        parsed = dt.datetime.fromisoformat(ts)
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def event_id(event: Doc) -> str:
    """`event.id` (set at sealing); offline, the file and offset the event came from."""
    ev = event.get("event")
    if isinstance(ev, dict) and isinstance(ev.get("id"), str):
        return str(ev["id"])
    host = next(iter(get_values(event, ("host", "name"))), "")
    path = next(iter(get_values(event, ("log", "file", "path"))), "")
    offset = next(iter(get_values(event, ("log", "offset"))), "")
    return f"{host}:{path}:{offset}"


def materialize(event: Doc) -> Doc:
    """The event with verbatim JSON (`orjson.Fragment`, as the Kubernetes normalizer carries
    `kubernetes.audit` before serialization) parsed into values; other events unchanged."""
    kube = event.get("kubernetes")
    if isinstance(kube, dict) and isinstance(kube.get("audit"), orjson.Fragment):
        try:
            audit = orjson.loads(orjson.dumps(kube["audit"]))
        except orjson.JSONDecodeError:
            audit = None
        return {**event, "kubernetes": {**kube, "audit": audit}}
    return event


def _node(event: Doc) -> tuple[str, ...]:
    return tuple(str(v) for v in get_values(event, ("host", "name"))[:1])


def collect_placeholders(docs: Iterable[RawDoc], extra: Mapping[str, Sequence[str]] | None) -> dict[str, list[str]]:
    values: dict[str, list[str]] = {}
    for doc in docs:
        for key, replace in (("placeholders", True), ("placeholders_append", False)):
            block = doc.data.get(key) or {}
            if not isinstance(block, dict):
                raise RuleError(doc.source, doc.name, f"{key} must map names to lists of values")
            for name, vals in block.items():
                if not isinstance(vals, list):
                    raise RuleError(doc.source, doc.name, f"{key}.{name} must be a list")
                items = [str(v) for v in vals]
                values[str(name)] = items if replace else values.get(str(name), []) + items
    for name, vals in (extra or {}).items():
        values[name] = list(vals)
    return values


class Detector:
    def __init__(self, rules: Sequence[SigmaRule], correlations: Sequence[CorrelationSpec],
                 limits: Limits | None = None, dedup_capacity: int = 100_000) -> None:
        self.rules = list(rules)
        self.correlations = list(correlations)
        self.index = RuleIndex(self.rules)
        self.engine = CorrelationEngine(self.correlations, limits)
        self.dedup_capacity = dedup_capacity
        self._emitted: OrderedDict[str, None] = OrderedDict()
        self.counters: dict[str, int] = {"events": 0, "alerts": 0, "duplicates_suppressed": 0}
        refs = {c.id: c for c in self.correlations} | {c.name: c for c in self.correlations if c.name}
        self._chained = {refs[r].id for c in self.correlations for r in c.rules if r in refs}
        # A rule's id and name, as correlations reference it; None when no correlation does.
        self._refs: dict[int, frozenset[str] | None] = {}
        for rule in self.rules:
            names = frozenset(filter(None, (rule.id, rule.name)))
            self._refs[rule.ordinal] = names if self.engine.interested(names) else None
        self._chain_generate = {refs[r].id for c in self.correlations if c.generate for r in c.rules if r in refs}

    # -- construction ----------------------------------------------------------------------------

    @classmethod
    def from_documents(cls, docs: Sequence[RawDoc], placeholders: Mapping[str, Sequence[str]] | None = None,
                       limits: Limits | None = None) -> Detector:
        kinds = [(kind_of(d), d) for d in docs]
        values = collect_placeholders((d for k, d in kinds if k == "placeholders"), placeholders)
        rules: list[SigmaRule] = []
        by_ref: dict[str, SigmaRule] = {}
        for kind, doc in kinds:
            if kind != "detection":
                continue
            rule = compile_rule(doc, values, len(rules))
            for ref in dict.fromkeys(filter(None, (rule.id, rule.name))):
                if ref in by_ref:
                    raise RuleError(doc.source, rule.title, f"id or name {ref!r} is also used by {by_ref[ref].source}")
                by_ref[ref] = rule
            rules.append(rule)
        correlations = [compile_correlation(d) for k, d in kinds if k == "correlation"]
        known = set(by_ref) | {c.id for c in correlations} | {c.name for c in correlations if c.name}
        for corr in correlations:
            for ref in corr.rules:
                if ref not in known:
                    raise RuleError(corr.source, corr.title,
                                    f"correlation references rule {ref!r}, which is not loaded")
        for rule in rules:
            users = [c for c in correlations if rule.id in c.rules or (rule.name and rule.name in c.rules)]
            rule.generate = not users or any(c.generate for c in users)
        for kind, doc in kinds:
            if kind == "filter":
                apply_filter(doc, by_ref, values)
        return cls(rules, correlations, limits)

    @classmethod
    def load(cls, specs: Sequence[str], placeholders: Mapping[str, Sequence[str]] | None = None,
             limits: Limits | None = None) -> Detector:
        """Rules from files, folders and `builtin:` packs (reads files; see `agent.detect.load`)."""
        from agent.detect.load import read_specs

        return cls.from_documents(read_specs(specs), placeholders, limits)

    # -- running ---------------------------------------------------------------------------------

    def process(self, event: Doc) -> list[Alert]:
        """The alerts `event` completes (single-event matches and correlation firings)."""
        self.counters["events"] += 1
        event = materialize(event)
        out: list[Alert] = []
        matches = self.index.match(event)
        if not matches:
            return out
        eid = event_id(event)
        nodes = _node(event)
        iso = str(event.get("@timestamp") or "")
        t: float | None = None
        for rule, views in matches:
            if rule.generate:
                fields = rule.matched_fields(event, views)
                self._emit(out, Alert(rule.id, rule.title, rule.level, rule.author, rule.license, rule.ruleset,
                                      rule.tags, "match", (eid,), (), iso, iso, 1, nodes,
                                      tuple((k, tuple(v)) for k, v in fields.items())))
            refs = self._refs[rule.ordinal]
            if refs is None:  # no correlation uses the rule
                continue
            if t is None:
                t = event_time(event)
                if t is None:
                    self.counters["correlation_missing_time"] = self.counters.get("correlation_missing_time", 0) + 1
                    break

            def lookup(name: str, rule: SigmaRule = rule, views: list[View] = views) -> str | None:
                getter = rule.route.getter(name)
                for view in views:
                    for v in view.values(getter):
                        text = text_of(v)
                        if text is not None:
                            return text
                return None
            self._handle(out, self.engine.feed(Hit(refs, t, iso, (eid,), nodes), lookup))
        if t is not None:
            self._handle(out, self.engine.advance(t))
        return out

    def flush(self) -> list[Alert]:
        """End of input: judge all open windows (for offline runs; the aggregator never calls it)."""
        out: list[Alert] = []
        self._handle(out, self.engine.close_all())
        return out

    def _handle(self, out: list[Alert], firings: list[Firing]) -> None:
        for firing in firings:
            spec = firing.spec
            ids = tuple(dict.fromkeys(i for e in firing.entries for i in e.event_ids))
            nodes = tuple(sorted({n for e in firing.entries for n in e.nodes}))
            first = min(firing.entries, key=lambda e: e.time)
            last = max(firing.entries, key=lambda e: e.time)
            alert = Alert(spec.id, spec.title, spec.level, spec.author, spec.license, spec.ruleset, spec.tags,
                          spec.type, ids, firing.group, first.iso, last.iso, len(firing.entries), nodes,
                          (("metric", (firing.metric,)),))
            if spec.id not in self._chained or spec.id in self._chain_generate:
                self._emit(out, alert)
            refs = frozenset(filter(None, (spec.id, spec.name)))
            if self.engine.interested(refs):
                group = dict(firing.group)
                self._handle(out, self.engine.feed(Hit(refs, last.time, last.iso, ids, nodes), group.get))

    def _emit(self, out: list[Alert], alert: Alert) -> None:
        key = alert.dedup_key
        if key in self._emitted:
            self.counters["duplicates_suppressed"] += 1
            return
        self._emitted[key] = None
        while len(self._emitted) > self.dedup_capacity:
            self._emitted.popitem(last=False)
        self.counters["alerts"] += 1
        out.append(alert)

    # -- persistence -----------------------------------------------------------------------------

    def snapshot(self) -> bytes:
        state = {"version": SNAPSHOT_VERSION, "correlation": self.engine.to_obj(), "emitted": list(self._emitted)}
        return json.dumps(state, separators=(",", ":")).encode()

    def restore(self, blob: bytes) -> None:
        """Take back a `snapshot()`; state of rules no longer loaded is dropped. ValueError if unreadable."""
        try:
            state: Any = json.loads(blob)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ValueError(f"detector snapshot is not JSON: {exc}") from None
        if not isinstance(state, dict) or state.get("version") != SNAPSHOT_VERSION:
            raise ValueError(f"detector snapshot version {state.get('version') if isinstance(state, dict) else None!r}"
                             f", expected {SNAPSHOT_VERSION}")
        self.engine.load_obj(state["correlation"])
        self._emitted = OrderedDict((str(k), None) for k in state.get("emitted", [])[-self.dedup_capacity:])

    def stats(self) -> dict[str, int]:
        return {**self.index.stats(), "correlations": len(self.correlations),
                "correlation_groups": self.engine.group_count(), **self.counters, **self.engine.counters}
