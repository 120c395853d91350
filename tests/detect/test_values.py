"""Sigma value semantics: every modifier the packs use and the spec's generic ones."""

from __future__ import annotations

import base64

import pytest

from agent.detect import RuleError

from .helpers import detector, generic

RULE = """
title: t
id: r1
logsource: {{product: linux, service: auth}}
detection:
    sel:
        {item}
    condition: sel
"""


def fires(item: str, **fields: object) -> bool:
    det = detector(RULE.format(item=item))
    return bool(det.process(generic("2026-01-01T00:00:00Z", "e", **fields)))


@pytest.mark.parametrize(("item", "value", "expected"), [
    ("f: abc", "ABC", True),                       # case-insensitive equality
    ("f: abc", "abcd", False),
    ("f: 'a*c'", "aXYZc", True),                   # * any run
    ("f: 'a?c'", "abc", True),                     # ? one char
    ("f: 'a?c'", "abbc", False),
    ("f: 'a\\*c'", "a*c", True),                   # escaped *
    ("f: 'a\\*c'", "abc", False),
    ("f: 'a\\?c'", "a?c", True),
    ("f|contains: mid", "xxMIDxx", True),
    ("f|startswith: pre", "prefix", True),
    ("f|startswith: pre", "apre", False),
    ("f|endswith: fix", "suffix", True),
    ("f|contains|all: [a, b]", "xaxbx", True),
    ("f|contains|all: [a, b]", "xax", False),
    ("f|contains|cased: Mid", "xmidx", False),
    ("f|contains|cased: Mid", "xMidx", True),
    ("f|re: '^a.c$'", "abc", True),
    ("f|re: '^A.C$'", "abc", False),               # regex is case-sensitive ...
    ("f|re|i: '^A.C$'", "abc", True),              # ... unless |i
    ("f|re|s: 'a.c'", "a\nc", True),
    ("f|re: 'a.c'", "a\nc", False),
    ("f|re|m: '^c$'", "a\nc", True),
    ("f|cidr: 10.0.0.0/8", "10.1.2.3", True),
    ("f|cidr: 10.0.0.0/8", "11.1.2.3", False),
    ("f|cidr: 'fd00::/8'", "fd00::1", True),
    ("f|gt: 5", 6, True),
    ("f|gte: 5", "5", True),
    ("f|lt: 5", 5, False),
    ("f|lte: 5", 5, True),
    ("f|base64: secret", base64.b64encode(b"secret").decode(), True),
    ("f|base64offset|contains: secret", "xx" + base64.b64encode(b"  secret").decode()[3:] + "yy", True),
    ("f|neq: a", "b", True),
    ("f|neq: a", "A", False),
    ("f|windash|contains: ' -enc'", "cmd /enc x", True),
    ("f: 201", 201, True),                          # numbers compare by text
    ("f: true", True, True),
    ("f|hour: 10", "2026-01-01T10:30:00Z", True),
])
def test_modifier(item: str, value: object, expected: bool) -> None:
    assert fires(item, f=value) is expected


def test_list_values_match_any_and_list_fields_match_any_element() -> None:
    assert fires("f: [x, y]", f="y")
    assert fires("f: y", f=["x", "y"])
    assert not fires("f: z", f=["x", "y"])


def test_null_means_absent_and_exists_tests_presence() -> None:
    assert fires("f: null")
    assert not fires("f: null", f="v")
    assert fires("f|exists: true", f="v")
    assert fires("f|exists: false")


def test_fieldref_compares_two_fields() -> None:
    assert fires("f|fieldref: g", f="Same", g="same")
    assert not fires("f|fieldref: g", f="a", g="b")


def test_expand_takes_placeholder_values_and_refuses_unknown_ones() -> None:
    det = detector(RULE.format(item="f|expand: '%users%'"), placeholders={"users": ["ann", "bob"]})
    assert det.process(generic("2026-01-01T00:00:00Z", "e", f="bob"))
    with pytest.raises(RuleError, match="unknown placeholder %users%"):
        detector(RULE.format(item="f|expand: '%users%'"))


def test_keywords_search_the_message_and_original_line() -> None:
    det = detector("""
        title: kw
        id: kw
        logsource: {product: linux}
        detection:
            keywords: ['stack smashing detected', 'evil*payload']
            condition: keywords
        """)
    assert det.process(generic("2026-01-01T00:00:00Z", "1", message="*** stack smashing detected ***"))
    assert det.process(generic("2026-01-01T00:00:00Z", "2", event={"dataset": "system.auth", "id": "2",
                                                                     "original": "x evil-big-payload y"}))
    assert not det.process(generic("2026-01-01T00:00:00Z", "3", message="all fine"))


def test_objects_are_matched_as_their_json_text() -> None:
    assert fires("f|contains: 'password'", f={"data": {"db_password": "x"}})


@pytest.mark.parametrize(("item", "construct"), [
    ("f|frobnicate: x", "unsupported modifier |frobnicate"),
    ("f|contains|startswith: x", "cannot be combined"),
    ("f|i: x", "need |re"),
    ("f|base64offset: x", "followed by |contains"),
    ("f|re: '('", "invalid regular expression"),
])
def test_unsupported_constructs_are_refused_naming_file_rule_and_construct(item: str, construct: str) -> None:
    with pytest.raises(RuleError, match=construct) as err:
        detector(RULE.format(item=item))
    assert "test0.yml: rule 't'" in str(err.value)
