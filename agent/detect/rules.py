"""Sigma documents (rules, correlation rules, filters) parsed and compiled. Pure: text in, values out.

A file may hold several YAML documents. Each is one of:

- a **rule** (`detection:`), compiled against its logsource's route (`fields.py`);
- a **correlation rule** (`correlation:`), checked here and run by `correlation.py`;
- a **filter** (`filter:` with `rules:`), whose matches are removed from the rules it names
  (Sigma filters specification: its condition describes the events to leave out);
- a **placeholders** document (logseal extension, our processing pipeline's settings):
  `placeholders: {name: [values]}` replaces and `placeholders_append: {name: [values]}` extends the
  values that `|expand` puts in place of `%name%`.

Anything this engine cannot evaluate exactly (an unknown modifier, an unrouted logsource, a
deprecated aggregation, a Sigma v1 collection action) raises `RuleError` naming the file, the rule
and the construct: a rule is never skipped silently.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import yaml

from agent.detect.codegen import Code, Test, all_of, any_of, negation
from agent.detect.condition import And, Node, Not, Of, Or, Ref, parse_condition
from agent.detect.errors import RuleError
from agent.detect.fields import Doc, Route, View, route_for
from agent.detect.values import (
    ItemSpec,
    UnsupportedConstruct,
    compile_predicate,
    compile_text_match,
    split_modifiers,
)

LEVELS = ("informational", "low", "medium", "high", "critical")
CORRELATION_TYPES = ("event_count", "value_count", "temporal", "temporal_ordered", "value_sum", "value_avg")
_TIMESPAN = re.compile(r"^(\d+)([smhdwMy])$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800, "M": 2592000, "y": 31536000}


@dataclass(frozen=True)
class RawDoc:
    """One YAML document of a rule file, before compiling."""

    data: dict[str, Any]
    source: str  # "file[#n]"
    license: str
    ruleset: str

    @property
    def name(self) -> str:
        return str(self.data.get("title") or self.data.get("name") or self.data.get("id") or "")


def parse_documents(text: str, source: str, license: str = "unspecified", ruleset: str = "custom") -> list[RawDoc]:
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise RuleError(source, "", f"not valid YAML: {str(exc).splitlines()[0]}") from None
    out = []
    for i, data in enumerate(docs):
        where = source if len(docs) == 1 else f"{source}#{i + 1}"
        if not isinstance(data, dict):
            raise RuleError(where, "", "a Sigma document must be a mapping")
        if "action" in data:
            raise RuleError(where, str(data.get("title", "")), f"Sigma v1 collection action {data['action']!r} "
                            "is not supported (write each rule as a complete document)")
        out.append(RawDoc(data, where, str(data.get("license") or license), ruleset))
    return out


def kind_of(doc: RawDoc) -> str:
    keys = [k for k in ("detection", "correlation", "filter") if k in doc.data]
    if len(keys) > 1:
        raise RuleError(doc.source, doc.name, f"a document cannot hold both {keys[0]!r} and {keys[1]!r}")
    if keys:
        return keys[0]
    if set(doc.data) <= {"placeholders", "placeholders_append", "title", "description"}:
        return "placeholders"
    raise RuleError(doc.source, doc.name, "neither a rule (detection), a correlation, a filter nor placeholders")


def timespan_seconds(value: Any, doc: RawDoc) -> float:
    m = _TIMESPAN.match(str(value))
    if not m:
        raise RuleError(doc.source, doc.name, f"timespan {value!r}: write a number and a unit (s, m, h, d, w, M, y)")
    return float(int(m.group(1)) * _UNIT_S[m.group(2)])


# --- compiled detection --------------------------------------------------------------------------

@dataclass(frozen=True)
class Anchor:
    """A necessary condition for a rule: field `field` has one of `values` (lowercase)."""

    field: str
    values: frozenset[str]


@dataclass
class Selection:
    expr: str  # a boolean expression over the view `v`, in the rule's `Code` (see `codegen`)
    anchors: tuple[Anchor, ...]  # each must hold for the selection to match
    fields: tuple[str, ...]


def _item_specs(key: str, value: Any) -> ItemSpec:
    name, *mods = key.split("|")
    values = tuple(value) if isinstance(value, list) else (value,)
    return ItemSpec(name or None, tuple(mods), values)


def _plain_anchor(spec: ItemSpec) -> Anchor | None:
    if spec.field is None or spec.modifiers or not spec.values:
        return None
    vals = set()
    for v in spec.values:
        if v is None or isinstance(v, dict | list):
            return None
        text = v if isinstance(v, str) else ("true" if v is True else "false" if v is False else str(v))
        if "*" in text or "?" in text or "\\" in text:
            return None
        vals.add(text.lower())
    return Anchor(spec.field, frozenset(vals))


def _keyword_expr(spec: ItemSpec, route: Route, placeholders: Mapping[str, Sequence[str]], code: Code) -> str:
    match, _, _, _, _ = split_modifiers(spec.modifiers)
    mods = spec.modifiers if match else ("contains", *spec.modifiers)
    keyword = ItemSpec(None, tuple(mods), spec.values)
    pred = compile_predicate(keyword, placeholders, route.getter)
    fast = compile_text_match(keyword, placeholders)
    if fast is not None:
        return code.text_item(fast, "v.keywords_lowered()")
    return code.call(pred, "list(v.keywords())", "v.doc")


def _item_expr(name: str, spec: ItemSpec, route: Route, placeholders: Mapping[str, Sequence[str]],
               code: Code) -> str:
    """One `field|mods: values` entry; plain string matches read the field's lowercased texts."""
    getter = route.getter(name)
    pred = compile_predicate(spec, placeholders, route.getter)  # validates the item, and the general case
    fast = compile_text_match(spec, placeholders)
    if fast is not None:
        return code.text_item(fast, code.lowered(getter))
    return code.call(pred, f"v.values({code.const(getter)})", "v.doc")


def compile_selection(name: str, body: Any, route: Route, placeholders: Mapping[str, Sequence[str]],
                      code: Code) -> Selection:
    """A named search identifier: a map (AND), a list of maps (OR) or a list of keywords (OR)."""
    if isinstance(body, dict):
        items: list[str] = []
        anchors: list[Anchor] = []
        keyword_items: list[str] = []
        for key, value in body.items():
            spec = _item_specs(str(key), value)
            if spec.field is None:
                keyword_items.append(_keyword_expr(spec, route, placeholders, code))
                continue
            items.append(_item_expr(spec.field, spec, route, placeholders, code))
            anchor = _plain_anchor(spec)
            if anchor:
                anchors.append(anchor)
        if not items and not keyword_items:
            raise UnsupportedConstruct(f"selection {name!r} is empty")
        fields = tuple(_item_specs(str(k), None).field or "" for k in body)
        return Selection(all_of(items + keyword_items), tuple(anchors), tuple(f for f in fields if f))
    if isinstance(body, list) and body and all(isinstance(b, dict) for b in body):
        parts = [compile_selection(name, b, route, placeholders, code) for b in body]
        return Selection(any_of([p.expr for p in parts]), tuple(_common([list(p.anchors) for p in parts])),
                         tuple(f for p in parts for f in p.fields))
    if isinstance(body, list) and body and all(not isinstance(b, dict | list) for b in body):
        return Selection(_keyword_expr(ItemSpec(None, (), tuple(body)), route, placeholders, code), (), ())
    if isinstance(body, str | int | float):
        return Selection(_keyword_expr(ItemSpec(None, (), (body,)), route, placeholders, code), (), ())
    raise UnsupportedConstruct(f"selection {name!r} has an unsupported shape ({type(body).__name__})")


_ANCHOR_PRIORITY = ("objectRef.resource", "type", "event.action", "verb")


def _ranked(anchors: Sequence[Anchor]) -> tuple[Anchor, ...]:
    """Distinct anchors, the most telling first (a few fields known to split events well, then fewest values)."""
    rank = {name: i for i, name in enumerate(_ANCHOR_PRIORITY)}
    unique = list(dict.fromkeys(anchors))
    return tuple(sorted(unique, key=lambda a: (rank.get(a.field, len(rank)), len(a.values))))


def _common(per_child: list[list[Anchor]]) -> list[Anchor]:
    """Anchors necessary for an OR: a field every alternative anchors, with the union of their values."""
    if not per_child or any(not p for p in per_child):
        return []
    out = []
    for a in per_child[0]:
        same = [next((b for b in p if b.field == a.field), None) for p in per_child[1:]]
        if all(s is not None for s in same):
            out.append(Anchor(a.field, a.values.union(*(s.values for s in same if s))))
    return out


def necessary_anchors(node: Node, sels: Mapping[str, Selection]) -> list[Anchor]:
    """Anchors each of which must hold for `node` to be true (used by the prefilter)."""
    if isinstance(node, Ref):
        return list(sels[node.name].anchors)
    if isinstance(node, Not):
        return []
    if isinstance(node, And) or (isinstance(node, Of) and node.quantifier == "all"):
        children = node.operands if isinstance(node, And) else tuple(Ref(n) for n in node.names)
        return [a for c in children for a in necessary_anchors(c, sels)]
    children = node.operands if isinstance(node, Or) else tuple(Ref(n) for n in node.names)
    return _common([necessary_anchors(c, sels) for c in children])


def node_expr(node: Node, sels: Mapping[str, Selection]) -> str:
    """The condition tree as one boolean expression over the selections' expressions."""
    if isinstance(node, Ref):
        return sels[node.name].expr
    if isinstance(node, Not):
        return negation(node_expr(node.operand, sels))
    if isinstance(node, And):
        return all_of([node_expr(n, sels) for n in node.operands])
    if isinstance(node, Or):
        return any_of([node_expr(n, sels) for n in node.operands])
    exprs = [sels[n].expr for n in node.names]
    return all_of(exprs) if node.quantifier == "all" else any_of(exprs)


@dataclass(frozen=True)
class Detection:
    test: Test
    anchors: tuple[Anchor, ...]  # necessary conditions, the most telling first; () = none known
    fields: tuple[str, ...]

    @property
    def anchor(self) -> Anchor | None:
        return self.anchors[0] if self.anchors else None


def compile_detection(detection: Any, route: Route, placeholders: Mapping[str, Sequence[str]]) -> Detection:
    if not isinstance(detection, dict) or "condition" not in detection:
        raise UnsupportedConstruct("detection needs a mapping with a condition")
    if "timeframe" in detection:
        raise UnsupportedConstruct("detection timeframe (Sigma v1 aggregation): use a correlation rule")
    code = Code()
    sels = {str(k): compile_selection(str(k), v, route, placeholders, code)
            for k, v in detection.items() if k != "condition"}
    conditions = detection["condition"]
    texts = conditions if isinstance(conditions, list) else [conditions]
    if not texts or not all(isinstance(t, str) for t in texts):
        raise UnsupportedConstruct("condition must be a string or a list of strings")
    nodes = [parse_condition(t, list(sels)) for t in texts]
    node: Node = nodes[0] if len(nodes) == 1 else Or(tuple(nodes))
    fields = tuple(dict.fromkeys(f for s in sels.values() for f in s.fields))
    return Detection(code.function(node_expr(node, sels)), _ranked(necessary_anchors(node, sels)), fields)


# --- rules ---------------------------------------------------------------------------------------


@dataclass
class SigmaRule:
    id: str
    name: str | None
    title: str
    level: str
    author: str
    license: str
    ruleset: str
    tags: tuple[str, ...]
    source: str
    route: Route
    detection: Detection
    ordinal: int = 0
    exclusions: list[Test] = field(default_factory=list)
    # False when the rule only feeds correlations (Sigma correlation `generate: false`).
    generate: bool = True

    def matches(self, event: Doc, views: list[View]) -> bool:
        """`views` = `self.route.views(event)` (made once per event by the caller, shared by all rules)."""
        flt = self.route.event_filter
        if flt is not None and not flt(event):
            return False
        test = self.detection.test
        if not self.exclusions:
            return any(map(test, views))
        return any(test(view) and not any(ex(view) for ex in self.exclusions) for view in views)

    def matched_fields(self, event: Doc, views: list[View]) -> dict[str, list[Any]]:
        out: dict[str, list[Any]] = {}
        for name in self.detection.fields:
            getter = self.route.getter(name)
            vals = [v for view in views for v in view.values(getter) if v is not None and not isinstance(v, dict)]
            if vals:
                out[name] = list(dict.fromkeys(v if isinstance(v, str | int | float | bool) else str(v)
                                               for v in vals))[:10]
        return out


def _meta(doc: RawDoc) -> tuple[str, str, str, str, tuple[str, ...]]:
    d = doc.data
    title = d.get("title")
    if not isinstance(title, str) or not title:
        raise RuleError(doc.source, doc.name, "a title is required")
    # Sigma makes `id` optional: without one (or a name), a stable id is derived from the title.
    rid = str(d.get("id") or d.get("name") or uuid.uuid5(uuid.NAMESPACE_URL, "logseal-rule:" + title))
    level = str(d.get("level") or "informational").lower()
    if level not in LEVELS:
        raise RuleError(doc.source, title, f"level {level!r}: use one of {', '.join(LEVELS)}")
    tags = d.get("tags") or []
    if not isinstance(tags, list):
        raise RuleError(doc.source, title, "tags must be a list")
    return rid, title, level, str(d.get("author") or "unknown"), tuple(str(t) for t in tags)


def compile_rule(doc: RawDoc, placeholders: Mapping[str, Sequence[str]], ordinal: int = 0) -> SigmaRule:
    rid, title, level, author, tags = _meta(doc)
    try:
        route = route_for(doc.data.get("logsource") or {})
        detection = compile_detection(doc.data["detection"], route, placeholders)
    except UnsupportedConstruct as exc:
        raise RuleError(doc.source, title, str(exc)) from None
    name = doc.data.get("name")
    return SigmaRule(rid, str(name) if name else None, title, level, author, doc.license, doc.ruleset, tags,
                     doc.source, route, detection, ordinal)


def apply_filter(doc: RawDoc, rules: Mapping[str, SigmaRule], placeholders: Mapping[str, Sequence[str]]) -> None:
    """Attach a filter document's condition to each rule it names, as an exclusion."""
    flt = doc.data["filter"]
    title = doc.name
    if not isinstance(flt, dict) or not isinstance(flt.get("rules"), list) or "condition" not in flt:
        raise RuleError(doc.source, title, "a filter needs rules (a list) and a condition")
    body = {k: v for k, v in flt.items() if k != "rules"}
    for ref in flt["rules"]:
        rule = rules.get(str(ref))
        if rule is None:
            raise RuleError(doc.source, title, f"filter names rule {ref!r}, which is not loaded")
        try:
            det = compile_detection(body, rule.route, placeholders)
        except UnsupportedConstruct as exc:
            raise RuleError(doc.source, title, str(exc)) from None
        rule.exclusions.append(det.test)


# --- correlation rules ---------------------------------------------------------------------------

_COND_OPS = ("gt", "gte", "lt", "lte", "eq")


@dataclass(frozen=True)
class CorrelationSpec:
    id: str
    name: str | None
    title: str
    level: str
    author: str
    license: str
    ruleset: str
    tags: tuple[str, ...]
    source: str
    type: str
    rules: tuple[str, ...]  # references as written (ids or names)
    group_by: tuple[str, ...]
    timespan_s: float
    condition: tuple[tuple[str, float], ...]  # (op, bound)
    value_field: str | None
    aliases: Mapping[str, Mapping[str, str]]
    generate: bool

    def holds(self, value: float) -> bool:
        ops = {"gt": value.__gt__, "gte": value.__ge__, "lt": value.__lt__, "lte": value.__le__,
               "eq": value.__eq__}
        return all(ops[op](bound) for op, bound in self.condition)

    @property
    def fires_on_close(self) -> bool:
        """Conditions with only upper bounds (`lt`, `lte`) can only be judged when the window closes."""
        return bool(self.condition) and all(op in ("lt", "lte") for op, _ in self.condition)


def compile_correlation(doc: RawDoc) -> CorrelationSpec:
    rid, title, level, author, tags = _meta(doc)
    corr = doc.data["correlation"]
    if not isinstance(corr, dict):
        raise RuleError(doc.source, title, "correlation must be a mapping")
    ctype = corr.get("type")
    if ctype not in CORRELATION_TYPES:
        raise RuleError(doc.source, title, f"correlation type {ctype!r} is not supported "
                        f"(supported: {', '.join(CORRELATION_TYPES)})")
    refs = corr.get("rules")
    if isinstance(refs, str):
        refs = [refs]
    if not isinstance(refs, list) or not refs:
        raise RuleError(doc.source, title, "correlation rules must name at least one rule")
    group_by = corr.get("group-by") or []
    if isinstance(group_by, str):
        group_by = [group_by]
    if "timespan" not in corr and "timeframe" not in corr:
        raise RuleError(doc.source, title, "correlation timespan is required")
    span = timespan_seconds(corr.get("timespan", corr.get("timeframe")), doc)
    cond = corr.get("condition")
    value_field = None
    bounds: list[tuple[str, float]] = []
    if ctype in ("temporal", "temporal_ordered"):
        if cond is not None:
            raise RuleError(doc.source, title, f"a {ctype} correlation takes no condition")
    else:
        if not isinstance(cond, dict):
            raise RuleError(doc.source, title, f"a {ctype} correlation needs a condition (e.g. gte: 10)")
        for key, val in cond.items():
            if key == "field":
                value_field = str(val)
            elif key in _COND_OPS:
                try:
                    bounds.append((key, float(val)))
                except (TypeError, ValueError):
                    raise RuleError(doc.source, title, f"condition {key}: {val!r} is not a number") from None
            else:
                raise RuleError(doc.source, title, f"condition operator {key!r} is not supported")
        if not bounds:
            raise RuleError(doc.source, title, "condition needs gt, gte, lt, lte or eq")
        if ctype != "event_count" and not value_field:
            raise RuleError(doc.source, title, f"a {ctype} condition needs a field")
    aliases = corr.get("aliases") or {}
    if not isinstance(aliases, dict) or not all(isinstance(v, dict) for v in aliases.values()):
        raise RuleError(doc.source, title, "aliases must map each alias to {rule: field}")
    unknown = set(corr) - {"type", "rules", "group-by", "timespan", "timeframe", "condition", "aliases", "generate"}
    if unknown:
        raise RuleError(doc.source, title, f"unsupported correlation key {sorted(unknown)[0]!r}")
    generate = bool(corr.get("generate", doc.data.get("generate", False)))
    name = doc.data.get("name")
    return CorrelationSpec(rid, str(name) if name else None, title, level, author, doc.license, doc.ruleset, tags,
                           doc.source, str(ctype), tuple(str(r) for r in refs), tuple(str(g) for g in group_by),
                           span, tuple(bounds), value_field,
                           {str(a): {str(r): str(f) for r, f in m.items()} for a, m in aliases.items()}, generate)
