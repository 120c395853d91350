"""The condition grammar: and/or/not, parentheses, `1 of`/`all of` patterns and `them`."""

from __future__ import annotations

import pytest

from agent.detect import RuleError

from .helpers import detector, generic

RULE = """
title: c
id: c
logsource: {{product: linux, service: auth}}
detection:
    sel_a: {{a: 1}}
    sel_b: {{b: 1}}
    filter: {{c: 1}}
    condition: {condition}
"""


@pytest.mark.parametrize(("condition", "fields", "expected"), [
    ("sel_a and sel_b", {"a": 1, "b": 1}, True),
    ("sel_a and sel_b", {"a": 1}, False),
    ("sel_a or sel_b", {"b": 1}, True),
    ("sel_a and not filter", {"a": 1, "c": 1}, False),
    ("not sel_a", {}, True),
    ("sel_a or sel_b and filter", {"a": 1}, True),            # and binds tighter than or
    ("(sel_a or sel_b) and filter", {"a": 1}, False),
    ("not (sel_a or sel_b)", {"c": 1}, True),
    ("1 of sel_*", {"b": 1}, True),
    ("all of sel_*", {"b": 1}, False),
    ("all of sel_*", {"a": 1, "b": 1}, True),
    ("1 of them", {"c": 1}, True),
    ("all of them", {"a": 1, "b": 1}, False),
    ("all of them", {"a": 1, "b": 1, "c": 1}, True),
    ("any of sel_* and not filter", {"a": 1}, True),
    ("SEL_A", {"a": 1}, None),
])
def test_condition(condition: str, fields: dict[str, int], expected: bool | None) -> None:
    if expected is None:
        with pytest.raises(RuleError, match="not a selection"):
            detector(RULE.format(condition=condition))
        return
    det = detector(RULE.format(condition=condition))
    assert bool(det.process(generic("2026-01-01T00:00:00Z", "e", **fields))) is expected


@pytest.mark.parametrize(("condition", "message"), [
    ("sel_a | count() > 5", "aggregation"),
    ("1 of nothing*", "matches no selection"),
    ("(sel_a", "ends too early"),
    ("sel_a and", "ends too early"),
    ("sel_a sel_b", "unexpected"),
])
def test_bad_conditions_are_refused(condition: str, message: str) -> None:
    with pytest.raises(RuleError, match=message):
        detector(RULE.format(condition=condition))
