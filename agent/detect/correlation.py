"""Sigma correlation rules on event time, with bounded state that can be saved and restored. Pure.

Invariants:
- Time is event time (`@timestamp`), never the clock. The *watermark* is the newest event time
  seen; a hit older than `watermark - max_lateness_s` is too late and is dropped and counted
  (`late_dropped`), so out-of-order events are accepted within a bounded window only.
- State is bounded: per correlation rule at most `max_groups` groups (least recently updated
  evicted first, counted in `evicted_groups`), per group at most `max_entries` hits (oldest
  dropped, counted in `dropped_entries`), and a group idle for longer than its timespan plus the
  lateness is forgotten (TTL). Nothing is dropped without a counter.
- A firing consumes the hits it used, so one burst fires once; the next firing needs new hits.
- `to_json()` / `from_json()` round-trip the whole state (versioned), so the aggregator can
  persist it across restarts.

Semantics per type (Sigma correlation specification):
- `event_count`, `value_count` (distinct values of `condition.field`), `value_sum`, `value_avg`:
  with lower bounds only (`gt`, `gte`, `eq` counts as both) a group fires as soon as some window
  of `timespan` holds enough; with upper bounds only (`lt`, `lte`) it is judged when the window
  that its first hit opened closes (watermark past its end plus lateness).
- `temporal`: every referenced rule matched within one `timespan`, in any order.
- `temporal_ordered`: the referenced rules matched in the listed order within one `timespan`.
- `group-by` fields are read with the referenced rule's field mapping; `aliases` give a group-by
  name a different field per rule. A hit without a group-by value is not counted
  (`missing_group_field`).
- Chaining: a correlation may reference another correlation; that one's firings are its hits
  (their group values are its fields).
"""

from __future__ import annotations

import bisect
import json
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

from agent.detect.rules import CorrelationSpec

STATE_VERSION = 1
# `advance` is skipped while the watermark is this much below the next due time: far more than the
# rounding of `t + span + late < w` against `t < w - span - late` at epoch magnitudes (~1e-7 s).
_DUE_MARGIN_S = 1e-3
_PER_RULE = 16  # temporal types: hits kept per referenced rule and group
ValueLookup = Callable[[str], str | None]


@lru_cache(maxsize=4096)
def _group_key(key: tuple[tuple[str, str], ...]) -> str:
    """The state's key of a group (JSON, as saved); the same few groups recur on every hit."""
    return json.dumps(key, separators=(",", ":"))


@dataclass(frozen=True)
class Hit:
    """One firing of a referenced rule, as a correlation sees it."""

    refs: frozenset[str]  # the rule's id and name
    time: float
    iso: str
    event_ids: tuple[str, ...]
    nodes: tuple[str, ...]


@dataclass
class Entry:
    time: float
    rule: int  # index into spec.rules
    value: Any
    event_ids: tuple[str, ...]
    nodes: tuple[str, ...]
    iso: str

    def to_list(self) -> list[Any]:
        return [self.time, self.rule, self.value, list(self.event_ids), list(self.nodes), self.iso]

    @classmethod
    def from_list(cls, data: list[Any]) -> Entry:
        return cls(float(data[0]), int(data[1]), data[2], tuple(data[3]), tuple(data[4]), str(data[5]))


@dataclass
class Group:
    entries: list[Entry] = field(default_factory=list)
    last: float = 0.0


@dataclass(frozen=True)
class Firing:
    spec: CorrelationSpec
    group: tuple[tuple[str, str], ...]
    entries: tuple[Entry, ...]
    metric: float


@dataclass(frozen=True)
class Limits:
    max_lateness_s: float = 300.0
    max_groups: int = 10_000
    max_entries: int = 1_000


class CorrelationState:
    """The state of one correlation rule: groups of hits."""

    def __init__(self, spec: CorrelationSpec, limits: Limits, counters: dict[str, int]) -> None:
        self.spec = spec
        self.limits = limits
        self.counters = counters
        self.groups: OrderedDict[str, Group] = OrderedDict()
        self._on_close = spec.fires_on_close
        self._horizon = spec.timespan_s + limits.max_lateness_s
        # A lower bound of the watermark at which `advance` can next change something (see `_due`).
        self._next_due = float("inf")

    # -- keys ----------------------------------------------------------------------------------

    def group_of(self, hit: Hit, lookup: ValueLookup) -> tuple[tuple[str, str], ...] | None:
        out = []
        for name in self.spec.group_by:
            fieldname = name
            alias = self.spec.aliases.get(name)
            if alias is not None:
                fieldname = next((f for ref, f in alias.items() if ref in hit.refs), name)
            value = lookup(fieldname)
            if value is None:
                return None
            out.append((name, value))
        return tuple(out)

    def rule_index(self, hit: Hit) -> int:
        return next(i for i, ref in enumerate(self.spec.rules) if ref in hit.refs)

    # -- feeding ---------------------------------------------------------------------------------

    def add(self, hit: Hit, lookup: ValueLookup, watermark: float) -> list[Firing]:
        key = self.group_of(hit, lookup)
        if key is None:
            self.counters["missing_group_field"] = self.counters.get("missing_group_field", 0) + 1
            return []
        value: Any = None
        if self.spec.value_field:
            value = lookup(self.spec.value_field)
            if value is None:
                self.counters["missing_value_field"] = self.counters.get("missing_value_field", 0) + 1
                return []
        gkey = _group_key(key)
        group = self.groups.get(gkey)
        if group is None:
            group = self.groups[gkey] = Group()
            while len(self.groups) > self.limits.max_groups:
                self.groups.popitem(last=False)
                self.counters["evicted_groups"] = self.counters.get("evicted_groups", 0) + 1
        self.groups.move_to_end(gkey)
        entry = Entry(hit.time, self.rule_index(hit), value, hit.event_ids, hit.nodes, hit.iso)
        if self.spec.type == "value_count":  # only the newest hit per distinct value can matter
            group.entries = [e for e in group.entries if e.value != value or e.time > hit.time]
        elif self.spec.type in ("temporal", "temporal_ordered"):
            same = [e for e in group.entries if e.rule == entry.rule]
            if len(same) >= _PER_RULE:
                group.entries.remove(same[0])
        times = [e.time for e in group.entries]
        group.entries.insert(bisect.bisect_right(times, hit.time), entry)
        if len(group.entries) > self.limits.max_entries:
            del group.entries[0]
            self.counters["dropped_entries"] = self.counters.get("dropped_entries", 0) + 1
        group.last = max(group.last, hit.time)
        self._next_due = min(self._next_due, hit.time + self._horizon)
        if self._on_close:
            return []
        found = self._evaluate(group, hit.time)
        if found is None:
            return []
        used, metric = found
        used_ids = {id(e) for e in used}
        group.entries = [e for e in group.entries if id(e) not in used_ids]
        return [Firing(self.spec, key, tuple(used), metric)]

    def advance(self, watermark: float) -> list[Firing]:
        """Expire idle groups; judge the closed windows of upper-bound conditions."""
        if watermark < self._next_due - _DUE_MARGIN_S:
            return []  # no group has a hit or an idle time old enough yet
        out: list[Firing] = []
        span, late = self.spec.timespan_s, self.limits.max_lateness_s
        for gkey in list(self.groups):
            group = self.groups[gkey]
            if self._on_close:
                while group.entries and group.entries[0].time + span + late < watermark:
                    start = group.entries[0].time
                    window = [e for e in group.entries if e.time <= start + span]
                    metric = self._metric(window)
                    if self.spec.holds(metric):
                        key = tuple((k, v) for k, v in json.loads(gkey))
                        out.append(Firing(self.spec, key, tuple(window), metric))
                    group.entries = group.entries[len(window):]
            # drop hits that can no longer be part of any window, then idle groups
            cutoff = watermark - span - late
            if group.entries and group.entries[0].time < cutoff:
                group.entries = [e for e in group.entries if e.time >= cutoff]
            if not group.entries and group.last + span + late < watermark:
                del self.groups[gkey]
        self._next_due = self._due()
        return out

    def _due(self) -> float:
        """The earliest watermark at which a group's oldest hit (or, empty, its last time) passes the
        timespan plus the lateness: before it, `advance` has nothing to judge or forget. Hits added
        later only lower it (`add`); removing hits only raises the true value, so it stays a lower bound."""
        return min(((g.entries[0].time if g.entries else g.last) + self._horizon for g in self.groups.values()),
                   default=float("inf"))

    # -- evaluation ------------------------------------------------------------------------------

    def _metric(self, window: Sequence[Entry]) -> float:
        t = self.spec.type
        if t == "event_count":
            return float(len(window))
        if t == "value_count":
            return float(len({e.value for e in window}))
        nums = []
        for e in window:
            try:
                nums.append(float(e.value))
            except (TypeError, ValueError):
                continue
        if t == "value_sum":
            return float(sum(nums))
        return float(sum(nums) / len(nums)) if nums else 0.0

    def _evaluate(self, group: Group, t: float) -> tuple[list[Entry], float] | None:
        """Judge the two windows of `timespan` that end and start at the new hit's time `t`."""
        span = self.spec.timespan_s
        entries = group.entries
        times = [e.time for e in entries]
        for lo_t, hi_t in ((t - span, t), (t, t + span)):
            window = entries[bisect.bisect_left(times, lo_t):bisect.bisect_right(times, hi_t)]
            if self.spec.type == "temporal":
                if {e.rule for e in window} >= set(range(len(self.spec.rules))):
                    return window, float(len(window))
            elif self.spec.type == "temporal_ordered":
                chosen = self._ordered(window)
                if chosen is not None:
                    return chosen, float(len(chosen))
            else:
                metric = self._metric(window)
                if self.spec.holds(metric):
                    return window, metric
        return None

    def _ordered(self, window: Sequence[Entry]) -> list[Entry] | None:
        """The rules' hits in the listed order (each at or after the previous), or None."""
        for start, first in enumerate(window):
            if first.rule != 0:
                continue
            chosen = [first]
            pos = start + 1
            for k in range(1, len(self.spec.rules)):
                while pos < len(window) and window[pos].rule != k:
                    pos += 1
                if pos == len(window):
                    return None
                chosen.append(window[pos])
                pos += 1
            return chosen
        return None

    # -- persistence -----------------------------------------------------------------------------

    def to_obj(self) -> dict[str, Any]:
        return {k: {"last": g.last, "entries": [e.to_list() for e in g.entries]} for k, g in self.groups.items()}

    def load_obj(self, data: Mapping[str, Any]) -> None:
        self.groups = OrderedDict(
            (str(k), Group([Entry.from_list(e) for e in v["entries"]], float(v["last"]))) for k, v in data.items())
        self._next_due = self._due()


class CorrelationEngine:
    """All correlation rules; hits in, firings out."""

    def __init__(self, specs: Sequence[CorrelationSpec], limits: Limits | None = None) -> None:
        self.limits = limits or Limits()
        self.counters: dict[str, int] = {}
        self.states = {s.id: CorrelationState(s, self.limits, self.counters) for s in specs}
        self.by_ref: dict[str, list[CorrelationState]] = {}
        for state in self.states.values():
            for ref in state.spec.rules:
                self.by_ref.setdefault(ref, []).append(state)
        self.watermark = float("-inf")

    def interested(self, refs: frozenset[str]) -> bool:
        return any(r in self.by_ref for r in refs)

    def feed(self, hit: Hit, lookup: ValueLookup) -> list[Firing]:
        if hit.time < self.watermark - self.limits.max_lateness_s:
            self.counters["late_dropped"] = self.counters.get("late_dropped", 0) + 1
            return []
        out: list[Firing] = []
        seen: set[str] = set()
        for ref in sorted(hit.refs):
            for state in self.by_ref.get(ref, ()):
                if state.spec.id in seen:
                    continue
                seen.add(state.spec.id)
                out.extend(state.add(hit, lookup, self.watermark))
        return out

    def advance(self, time: float) -> list[Firing]:
        if time <= self.watermark:
            return []
        self.watermark = time
        out: list[Firing] = []
        for state in self.states.values():
            out.extend(state.advance(time))
        return out

    def close_all(self) -> list[Firing]:
        """End of input (offline runs): judge every open window now."""
        out: list[Firing] = []
        for state in self.states.values():
            out.extend(state.advance(float("inf")))
        return out

    def group_count(self) -> int:
        return sum(len(s.groups) for s in self.states.values())

    def to_obj(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "watermark": self.watermark if self.watermark != float("-inf") else None,
                "counters": dict(self.counters), "rules": {k: s.to_obj() for k, s in self.states.items()}}

    def load_obj(self, data: Mapping[str, Any]) -> None:
        if data.get("version") != STATE_VERSION:
            raise ValueError(f"correlation state version {data.get('version')!r}, expected {STATE_VERSION}")
        wm = data.get("watermark")
        self.watermark = float(wm) if wm is not None else float("-inf")
        self.counters.clear()
        self.counters.update({str(k): int(v) for k, v in data.get("counters", {}).items()})
        for rule_id, groups in data.get("rules", {}).items():
            if rule_id in self.states:  # state of rules no longer loaded is dropped
                self.states[rule_id].load_obj(groups)
