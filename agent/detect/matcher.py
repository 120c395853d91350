"""Single-event matching with an index: which rules can an event possibly fire? Pure.

Rules are indexed by `event.dataset` (from their logsource route), then by a *prefilter anchor*:
a field test every match of the rule needs (for example `objectRef.resource` in {pods} or an
auditd record `type` in {EXECVE}), found from the condition tree at load. For each event only the
rules whose anchor value is present, plus the few rules without an anchor, are evaluated, so the
cost grows with the rules that could fire, not with the number loaded.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agent.detect.fields import Doc, Route, get_values
from agent.detect.rules import SigmaRule
from agent.detect.values import Getter, text_of


@dataclass
class _AnchorGroup:
    route: Route
    getter: Getter
    by_value: dict[str, list[SigmaRule]]


class RuleIndex:
    def __init__(self, rules: Iterable[SigmaRule]) -> None:
        self.rules = sorted(rules, key=lambda r: r.ordinal)
        self._always: dict[str, list[SigmaRule]] = defaultdict(list)
        groups: dict[str, dict[tuple[str, str], _AnchorGroup]] = defaultdict(dict)
        for rule in self.rules:
            anchor = rule.detection.anchor
            for ds in rule.route.datasets:
                if anchor is None:
                    self._always[ds].append(rule)
                    continue
                key = (rule.route.name, anchor.field)
                group = groups[ds].get(key)
                if group is None:
                    group = groups[ds][key] = _AnchorGroup(rule.route, rule.route.getter(anchor.field), {})
                for value in anchor.values:
                    group.by_value.setdefault(value, []).append(rule)
        self._groups = {ds: list(g.values()) for ds, g in groups.items()}

    def stats(self) -> dict[str, int]:
        anchored = sum(1 for r in self.rules if r.detection.anchor is not None)
        return {"rules": len(self.rules), "anchored": anchored, "unanchored": len(self.rules) - anchored}

    def match(self, event: Doc) -> list[tuple[SigmaRule, list[Doc]]]:
        """The rules that fire on `event`, each with the documents it was evaluated on, in load order."""
        datasets = get_values(event, ("event", "dataset"))
        dataset = datasets[0] if datasets else None
        if not isinstance(dataset, str):
            return []
        docs_by_route: dict[str, list[Doc]] = {}

        def docs_for(route: Route) -> list[Doc]:
            docs = docs_by_route.get(route.name)
            if docs is None:
                docs = docs_by_route[route.name] = route.documents(event)
            return docs

        candidates: dict[int, SigmaRule] = {}
        for group in self._groups.get(dataset, ()):
            seen: set[str] = set()
            for doc in docs_for(group.route):
                for value in group.getter(doc):
                    text: Any = value if isinstance(value, str) else text_of(value)
                    if text is None:
                        continue
                    low = text.lower()
                    if low in seen:
                        continue
                    seen.add(low)
                    for rule in group.by_value.get(low, ()):
                        candidates[rule.ordinal] = rule
        for rule in self._always.get(dataset, ()):
            candidates[rule.ordinal] = rule
        out = []
        for ordinal in sorted(candidates):
            rule = candidates[ordinal]
            docs = docs_for(rule.route)
            if rule.matches(event, docs):
                out.append((rule, docs))
        return out
