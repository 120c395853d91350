"""Sigma value matching: one detection item (`field|mod|mod: values`) compiled to a predicate.

Pure. Semantics (Sigma specification v2, "Modifiers" appendix):

- Plain strings match the whole field value, case-insensitively; `*` is any run of characters,
  `?` one character, and `\\*`, `\\?`, `\\\\` are the literal characters. Numbers and booleans
  compare by their text (`201` matches the string "201" and the integer 201).
- A field holding several values (a list in the event, or several mapped paths) matches when any
  of them matches; a list of rule values matches when any matches, or all with `|all`.
- Objects (dicts, lists of dicts) are matched as their compact JSON text, so `contains` can look
  inside them (as Falco's `ka.req.configmap.obj contains ...`).
- `null` as a value means the field is absent or null.

Modifiers: contains, startswith, endswith, all, cased, exists, neq, re (with i, m, s), cidr,
lt, lte, gt, gte, fieldref, base64, base64offset, wide/utf16le/utf16be/utf16, windash, expand
(placeholders), minute/hour/day/week/month/year. Anything else raises `UnsupportedConstruct`.
"""

from __future__ import annotations

import base64
import datetime as dt
import ipaddress
import json
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

# (values of the field, values-of-another-field lookup for fieldref) -> matched?
Getter = Callable[[Any], list[Any]]
Predicate = Callable[[list[Any], Any], bool]

MATCH_TYPES = frozenset({"contains", "startswith", "endswith", "re", "cidr", "exists", "lt", "lte", "gt", "gte",
                         "fieldref", "neq", "minute", "hour", "day", "week", "month", "year"})
TRANSFORMS = frozenset({"base64", "base64offset", "wide", "utf16le", "utf16be", "utf16", "windash", "expand"})
FLAGS = frozenset({"all", "cased", "i", "m", "s", "ignorecase", "multiline", "dotall"})
SUPPORTED_MODIFIERS = MATCH_TYPES | TRANSFORMS | FLAGS


class UnsupportedConstruct(ValueError):
    """A construct this engine refuses; the loader adds the rule file and rule name."""


def text_of(value: Any) -> str | None:
    """The text a Sigma string pattern is matched against; None for null."""
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return json.dumps(value, separators=(",", ":"), sort_keys=True)


# --- string patterns -------------------------------------------------------------------------


def _tokens(pattern: str) -> list[str | None]:
    """Split a Sigma string into literal runs and wildcards (None = `*`, "" never; `?` kept as '\0?')."""
    out: list[str | None] = []
    buf: list[str] = []
    i = 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "*?\\":
            buf.append(pattern[i + 1])
            i += 2
            continue
        if ch in "*?":
            if buf:
                out.append("".join(buf))
                buf = []
            out.append(None if ch == "*" else "\0?")
        else:
            buf.append(ch)
        i += 1
    if buf:
        out.append("".join(buf))
    return out


def _shape(pattern: str, mode: str, cased: bool) -> tuple[str, Any]:
    """What a pattern asks of a text: ("any", None), ("eq" | "prefix" | "suffix" | "inner", literal)
    or ("regex", compiled); literals are lowercased unless `cased`."""
    toks = _tokens(pattern)
    if mode in ("contains", "endswith"):
        toks.insert(0, None)
    if mode in ("contains", "startswith"):
        toks.append(None)
    # collapse runs of `*`
    collapsed: list[str | None] = []
    for t in toks:
        if t is None and collapsed and collapsed[-1] is None:
            continue
        collapsed.append(t)
    if not cased:
        collapsed = [t.lower() if isinstance(t, str) else t for t in collapsed]
    lits = [t for t in collapsed if t is not None]
    if all(t != "\0?" for t in lits):
        if not collapsed:
            return "eq", ""
        if collapsed == [None]:
            return "any", None
        if len(collapsed) == 1 and isinstance(collapsed[0], str):
            return "eq", collapsed[0]
        if len(collapsed) == 2 and collapsed[0] is None and isinstance(collapsed[1], str):
            return "suffix", collapsed[1]
        if len(collapsed) == 2 and collapsed[1] is None and isinstance(collapsed[0], str):
            return "prefix", collapsed[0]
        if len(collapsed) == 3 and collapsed[0] is None and collapsed[2] is None and isinstance(collapsed[1], str):
            return "inner", collapsed[1]
    regex = "".join(".*" if t is None else "." if t == "\0?" else re.escape(t) for t in collapsed)
    return "regex", re.compile(regex, re.DOTALL)


def _shape_test(kind: str, arg: Any) -> Callable[[str], bool]:
    if kind == "any":
        return lambda s: True
    if kind == "eq":
        return lambda s: s == arg
    if kind == "suffix":
        return lambda s: s.endswith(arg)
    if kind == "prefix":
        return lambda s: s.startswith(arg)
    if kind == "inner":
        return lambda s: arg in s
    return lambda s: arg.fullmatch(s) is not None


def string_matcher(pattern: str, mode: str, cased: bool) -> Callable[[str], bool]:
    """A function of the (already lowered unless `cased`) field text."""
    return _shape_test(*_shape(pattern, mode, cased))


def _grouped(patterns: Sequence[str], mode: str) -> tuple[frozenset[str], Callable[[str], bool] | None]:
    """Case-insensitive patterns as (the exact texts they accept, a test for the rest or None):
    equality becomes one set lookup, prefixes and suffixes one `startswith`/`endswith` call."""
    equal: set[str] = set()
    prefixes: list[str] = []
    suffixes: list[str] = []
    inner: list[str] = []
    others: list[Callable[[str], bool]] = []
    for pattern in patterns:
        kind, arg = _shape(pattern, mode, False)
        if kind == "eq":
            equal.add(arg)
        elif kind == "prefix":
            prefixes.append(arg)
        elif kind == "suffix":
            suffixes.append(arg)
        elif kind == "inner":
            inner.append(arg)
        else:
            others.append(_shape_test(kind, arg))
    pre, suf, words = tuple(prefixes), tuple(suffixes), tuple(inner)
    parts: list[Callable[[str], bool]] = []
    if pre:
        parts.append(lambda s: s.startswith(pre))
    if suf:
        parts.append(lambda s: s.endswith(suf))
    if len(words) == 1:
        (word,) = words
        parts.append(lambda s: word in s)
    elif words:  # any of several substrings: one scan by the regex engine instead of one `in` per word
        search = re.compile("|".join(re.escape(w) for w in words), re.DOTALL).search
        parts.append(lambda s: search(s) is not None)
    parts.extend(others)
    if not parts:
        return frozenset(equal), None
    if len(parts) == 1:
        return frozenset(equal), parts[0]
    return frozenset(equal), lambda s: any(p(s) for p in parts)


# --- value transformations ---------------------------------------------------------------------


def _base64offset(raw: bytes) -> list[str]:
    out = []
    for i in range(3):
        enc = base64.b64encode(b" " * i + raw).decode("ascii")
        start = (0, 2, 3)[i]
        end = (None, -3, -2)[(len(raw) + i) % 3]
        out.append(enc[start:end])
    return out


def _windash(value: str) -> list[str]:
    variants = [value]
    for dash in ("/", "\u2013", "\u2014", "\u2015"):
        variants.append(re.sub(r"(^|\s)-", lambda m, d=dash: m.group(1) + d, value))  # type: ignore[misc]
    return list(dict.fromkeys(variants))


def expand_values(values: Sequence[Any], transforms: Sequence[str],
                  placeholders: Mapping[str, Sequence[str]]) -> list[Any]:
    """Apply value transformations in the order written (Sigma applies modifiers left to right)."""
    out: list[Any] = list(values)
    encoding = "utf-8"
    for mod in transforms:
        if mod == "expand":
            expanded: list[Any] = []
            for v in out:
                if not isinstance(v, str):
                    expanded.append(v)
                    continue
                names = re.findall(r"%([A-Za-z0-9_.-]+)%", v)
                if not names:
                    expanded.append(v)
                    continue
                if len(names) != 1 or v != f"%{names[0]}%":
                    raise UnsupportedConstruct(f"expand: a value must be exactly one placeholder, got {v!r}")
                if names[0] not in placeholders:
                    raise UnsupportedConstruct(f"expand: unknown placeholder %{names[0]}%")
                expanded.extend(placeholders[names[0]])
            out = expanded
        elif mod == "windash":
            out = [w for v in out for w in (_windash(v) if isinstance(v, str) else [v])]
        elif mod in ("wide", "utf16le"):
            encoding = "utf-16-le"
        elif mod == "utf16be":
            encoding = "utf-16-be"
        elif mod == "utf16":
            encoding = "utf-16"
        elif mod in ("base64", "base64offset"):
            encoded: list[Any] = []
            for v in out:
                raw = (text_of(v) or "").encode(encoding)
                if mod == "base64":
                    encoded.append(base64.b64encode(raw).decode("ascii"))
                else:
                    encoded.extend(_base64offset(raw))
            out = encoded
            encoding = "utf-8"
    return out


# --- the compiled item -----------------------------------------------------------------------

_NUMERIC: dict[str, Callable[[float, float], bool]] = {
    "lt": lambda a, b: a < b, "lte": lambda a, b: a <= b, "gt": lambda a, b: a > b, "gte": lambda a, b: a >= b}
_TIME_PART: dict[str, Callable[[dt.datetime], int]] = {
    "minute": lambda d: d.minute, "hour": lambda d: d.hour, "day": lambda d: d.day,
    "week": lambda d: d.isocalendar()[1], "month": lambda d: d.month, "year": lambda d: d.year,
}


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return None
    return None


def _as_datetime(value: Any) -> dt.datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None


@dataclass(frozen=True)
class ItemSpec:
    """What the loader parsed from one `field|mods: values` entry (field None = keyword search)."""

    field: str | None
    modifiers: tuple[str, ...]
    values: tuple[Any, ...]


def split_modifiers(mods: Sequence[str]) -> tuple[str | None, list[str], bool, bool, set[str]]:
    """(match type, transforms, all, cased, regex flags); raises on an unknown or clashing modifier."""
    match: str | None = None
    transforms: list[str] = []
    flags: set[str] = set()
    want_all = cased = False
    for mod in mods:
        if mod not in SUPPORTED_MODIFIERS:
            raise UnsupportedConstruct(f"unsupported modifier |{mod}")
        if mod in MATCH_TYPES:
            if match is not None:
                raise UnsupportedConstruct(f"modifiers |{match} and |{mod} cannot be combined")
            match = mod
        elif mod in TRANSFORMS:
            transforms.append(mod)
        elif mod == "all":
            want_all = True
        elif mod == "cased":
            cased = True
        else:
            flags.add({"ignorecase": "i", "multiline": "m", "dotall": "s"}.get(mod, mod))
    if flags and match != "re":
        raise UnsupportedConstruct(f"regex flags |{'|'.join(sorted(flags))} need |re")
    if "base64offset" in transforms and match != "contains":
        raise UnsupportedConstruct("|base64offset must be followed by |contains")
    return match, transforms, want_all, cased, flags


def compile_predicate(spec: ItemSpec, placeholders: Mapping[str, Sequence[str]],
                      field_getter: Callable[[str], Getter]) -> Predicate:
    """Predicate over (values of the item's field, the document) for one detection item."""
    match, transforms, want_all, cased, flags = split_modifiers(spec.modifiers)
    values = expand_values(spec.values, transforms, placeholders)

    if match == "exists":
        if len(values) != 1 or not isinstance(values[0], bool):
            raise UnsupportedConstruct("|exists takes true or false")
        wanted = values[0]
        return lambda vals, doc: (any(v is not None for v in vals)) == wanted

    if match in _NUMERIC:
        op = _NUMERIC[match]
        bounds = []
        for v in values:
            num = _as_float(v)
            if num is None:
                raise UnsupportedConstruct(f"|{match} needs a number, got {v!r}")
            bounds.append(num)
        return _combine([_numeric_test(op, b) for b in bounds], want_all)

    if match in _TIME_PART:
        part = _TIME_PART[match]
        wanted_parts = [int(v) for v in values]
        return _combine([_time_test(part, w) for w in wanted_parts], want_all)

    if match == "cidr":
        nets = []
        for v in values:
            try:
                nets.append(ipaddress.ip_network(str(v), strict=False))
            except ValueError as exc:
                raise UnsupportedConstruct(f"|cidr: {exc}") from None

        def in_net(vals: list[Any], net: Any) -> bool:
            for v in vals:
                try:
                    if ipaddress.ip_address(str(v)) in net:
                        return True
                except ValueError:
                    continue
            return False
        return _combine([_bind(in_net, n) for n in nets], want_all)

    if match == "re":
        re_flags = (re.IGNORECASE if "i" in flags else 0) | (re.MULTILINE if "m" in flags else 0) | \
                   (re.DOTALL if "s" in flags else 0)
        regexes = []
        for v in values:
            try:
                regexes.append(re.compile(str(v), re_flags))
            except re.error as exc:
                raise UnsupportedConstruct(f"|re: invalid regular expression {v!r}: {exc}") from None
        return _combine([_regex_test(r) for r in regexes], want_all)

    if match == "fieldref":
        getters = [field_getter(str(v)) for v in values]

        def same(vals: list[Any], doc: Any, g: Getter) -> bool:
            other = {_fold(text_of(x), cased) for x in g(doc)} - {None}
            return any(_fold(text_of(v), cased) in other for v in vals)
        return _combine_doc([_bind_doc(same, g) for g in getters], want_all)

    # string-ish equality / contains / startswith / endswith / neq
    mode = "eq" if match in (None, "neq") else match
    has_null = any(v is None for v in values)
    if has_null and mode != "eq":
        raise UnsupportedConstruct(f"null cannot be used with |{match}")
    tests: list[Predicate] = []
    for v in values:
        if v is None:
            tests.append(lambda vals, doc: all(x is None for x in vals))
            continue
        if isinstance(v, dict | list):
            raise UnsupportedConstruct(f"a value cannot be a nested {type(v).__name__}")
        fn = string_matcher(text_of(v) or "", mode, cased)
        tests.append(_text_test(fn, cased))
    pred = _combine_doc(tests, want_all)
    if match == "neq":
        return lambda vals, doc: any(x is not None for x in vals) and not pred(vals, doc)
    return pred


@dataclass(frozen=True)
class TextMatch:
    """A plain case-insensitive string item as a test of its field's lowercased texts: true when
    some text is in `equal` or passes `rest`; with `all_of` (the `|all` modifier), when every
    function of `all_of` accepts some text."""

    equal: frozenset[str]
    rest: Callable[[str], bool] | None
    all_of: tuple[Callable[[str], bool], ...] = ()

    def __call__(self, texts: list[str]) -> bool:
        if self.all_of:
            return all(any(f(t) for t in texts) for f in self.all_of)
        if not self.equal.isdisjoint(texts):
            return True
        return self.rest is not None and any(map(self.rest, texts))


def compile_text_match(spec: ItemSpec, placeholders: Mapping[str, Sequence[str]]) -> TextMatch | None:
    """The item as a `TextMatch` when it is a plain case-insensitive string match (equal, contains,
    startswith, endswith; any transformation); None for anything else.

    It gives the verdict of `compile_predicate` (which must accept the item first), but the caller
    lowers each field value once per event instead of once per pattern and rule.
    """
    match, transforms, want_all, cased, _ = split_modifiers(spec.modifiers)
    if cased or match not in (None, "contains", "startswith", "endswith"):
        return None
    values = expand_values(spec.values, transforms, placeholders)
    if not values or any(v is None or isinstance(v, dict | list) for v in values):
        return None
    mode = match or "eq"
    patterns = [text_of(v) or "" for v in values]
    if want_all:
        return TextMatch(frozenset(), None, tuple(string_matcher(p, mode, False) for p in patterns))
    return TextMatch(*_grouped(patterns, mode))


def _numeric_test(op: Callable[[float, float], bool], bound: float) -> Callable[[list[Any]], bool]:
    return lambda vals: any((x := _as_float(v)) is not None and op(x, bound) for v in vals)


def _time_test(part: Callable[[dt.datetime], int], wanted: int) -> Callable[[list[Any]], bool]:
    return lambda vals: any((d := _as_datetime(v)) is not None and part(d) == wanted for v in vals)


def _regex_test(regex: re.Pattern[str]) -> Callable[[list[Any]], bool]:
    return lambda vals: any((t := text_of(v)) is not None and regex.search(t) is not None for v in vals)


def _bind(fn: Callable[[list[Any], Any], bool], arg: Any) -> Callable[[list[Any]], bool]:
    return lambda vals: fn(vals, arg)


def _bind_doc(fn: Callable[[list[Any], Any, Getter], bool], getter: Getter) -> Predicate:
    return lambda vals, doc: fn(vals, doc, getter)


def _fold(text: str | None, cased: bool) -> str | None:
    return text if cased or text is None else text.lower()


def _text_test(fn: Callable[[str], bool], cased: bool) -> Predicate:
    if cased:
        def test_cased(vals: list[Any], doc: Any) -> bool:
            for v in vals:
                t = text_of(v)
                if t is not None and fn(t):
                    return True
            return False
        return test_cased

    def test(vals: list[Any], doc: Any) -> bool:
        for v in vals:
            t = v if isinstance(v, str) else text_of(v)
            if t is not None and fn(t.lower()):
                return True
        return False
    return test


def _combine(tests: list[Callable[[list[Any]], bool]], want_all: bool) -> Predicate:
    if want_all:
        return lambda vals, doc: all(t(vals) for t in tests)
    if len(tests) == 1:
        only = tests[0]
        return lambda vals, doc: only(vals)
    return lambda vals, doc: any(t(vals) for t in tests)


def _combine_doc(tests: list[Predicate], want_all: bool) -> Predicate:
    if want_all:
        return lambda vals, doc: all(t(vals, doc) for t in tests)
    if len(tests) == 1:
        return tests[0]
    return lambda vals, doc: any(t(vals, doc) for t in tests)
