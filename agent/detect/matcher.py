"""Single-event matching with an index: which rules can an event possibly fire? Pure.

Rules are indexed by `event.dataset` (from their logsource route), then by a *prefilter anchor*:
a field test every match of the rule needs (for example `objectRef.resource` in {pods} or an
auditd record `type` in {EXECVE}), found from the condition tree at load. For each event only the
rules whose anchor value is present, plus the few rules without an anchor, are evaluated, so the
cost grows with the rules that could fire, not with the number loaded.

Invariant (tested against `match_unfiltered` over every test corpus): the prefilter only skips
rules that cannot match, so `match` and `match_unfiltered` return the same rules for any event.

Each document is evaluated through one `View` shared by the index and every candidate rule, so
a field is read and lowercased once per event, however many rules test it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from agent.detect.fields import Doc, Route, View, get_values
from agent.detect.rules import SigmaRule
from agent.detect.values import Getter

Match = tuple[SigmaRule, list[View]]
_DATASET = ("event", "dataset")
SHARED_ANCHOR_RULES = 3
"""A field anchored by at least this many rules of a route is read by the index for every event."""


@dataclass
class _FieldMask:
    """One indexed field of one route, for one dataset's rules, as bit masks over rule ordinals:
    `by_value[v]` = the rules whose anchor on the field accepts v; `free` = the rules with no anchor
    on it. The rules still possible after reading the field: `free` | the masks of its values."""

    route: Route
    getter: Getter
    free: int
    by_value: dict[str, int]


def _dataset(event: Doc) -> str | None:
    found = get_values(event, _DATASET)
    dataset = found[0] if found else None
    return dataset if isinstance(dataset, str) else None


class _Views:
    """The views of one event, one list per route, made on first use."""

    __slots__ = ("by_route", "event")

    def __init__(self, event: Doc) -> None:
        self.event = event
        self.by_route: dict[str, list[View]] = {}

    def of(self, route: Route) -> list[View]:
        views = self.by_route.get(route.name)
        if views is None:
            views = self.by_route[route.name] = route.views(self.event)
        return views


class RuleIndex:
    def __init__(self, rules: Iterable[SigmaRule]) -> None:
        self.rules = sorted(rules, key=lambda r: r.ordinal)
        self._by_ordinal = {r.ordinal: r for r in self.rules}
        self._by_dataset: dict[str, list[SigmaRule]] = defaultdict(list)
        for rule in self.rules:
            for ds in rule.route.datasets:
                self._by_dataset[ds].append(rule)
        # Fields read for every event: each rule's most telling anchor, and fields that several rules
        # anchor on (read once, they rule out many). A rule's other anchors are left to the rule itself.
        uses = Counter((rule.route.name, a.field) for rule in self.rules for a in rule.detection.anchors)
        index_fields = {(rule.route.name, rule.detection.anchors[0].field) for rule in self.rules
                        if rule.detection.anchors} | {key for key, n in uses.items() if n >= SHARED_ANCHOR_RULES}
        self._all: dict[str, int] = {}
        self._masks: dict[str, list[_FieldMask]] = {}
        for ds, ds_rules in self._by_dataset.items():
            self._all[ds] = sum(1 << r.ordinal for r in ds_rules)
            masks: dict[tuple[str, str], _FieldMask] = {}
            for rule in ds_rules:
                anchored: set[str] = set()
                for anchor in rule.detection.anchors:  # most telling first; one anchor per field
                    key = (rule.route.name, anchor.field)
                    if key not in index_fields or anchor.field in anchored:
                        continue
                    anchored.add(anchor.field)
                    mask = masks.get(key)
                    if mask is None:
                        mask = masks[key] = _FieldMask(rule.route, rule.route.getter(anchor.field), self._all[ds], {})
                    mask.free &= ~(1 << rule.ordinal)
                    for value in anchor.values:
                        mask.by_value[value] = mask.by_value.get(value, 0) | (1 << rule.ordinal)
            self._masks[ds] = list(masks.values())

    def stats(self) -> dict[str, int]:
        anchored = sum(1 for r in self.rules if r.detection.anchors)
        return {"rules": len(self.rules), "anchored": anchored, "unanchored": len(self.rules) - anchored}

    def candidates(self, event: Doc, views: _Views | None = None) -> list[SigmaRule]:
        """The rules the prefilter lets through for `event` (each indexed anchor holds in some document),
        in load order."""
        dataset = _dataset(event)
        if dataset is None:
            return []
        views = views or _Views(event)
        possible = self._all.get(dataset, 0)
        for mask in self._masks.get(dataset, ()):
            allowed = mask.free
            by_value = mask.by_value
            for view in views.of(mask.route):
                for low in view.lowered(mask.getter):
                    allowed |= by_value.get(low, 0)
            possible &= allowed
            if not possible:
                return []
        found = []
        by_ordinal = self._by_ordinal
        while possible:
            lowest = possible & -possible
            found.append(by_ordinal[lowest.bit_length() - 1])
            possible ^= lowest
        return found

    def match(self, event: Doc) -> list[Match]:
        """The rules that fire on `event`, each with the views it was evaluated on, in load order."""
        views = _Views(event)
        out = []
        for rule in self.candidates(event, views):
            rviews = views.of(rule.route)
            if rule.matches(event, rviews):
                out.append((rule, rviews))
        return out

    def match_unfiltered(self, event: Doc) -> list[Match]:
        """`match` without the anchor prefilter: every rule of the event's dataset, each on fresh
        views (nothing shared between rules). The reference the prefilter is tested against."""
        dataset = _dataset(event)
        out = []
        for rule in self._by_dataset.get(dataset or "", ()) if dataset else ():
            rviews = rule.route.views(event)
            if rule.matches(event, rviews):
                out.append((rule, rviews))
        return out
