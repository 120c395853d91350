"""A detection compiled to one generated function decides exactly as its condition tree says, and
what a rule file holds stays data, never code."""

from __future__ import annotations

import itertools
import random

import pytest

from agent.detect.condition import And, Node, Not, Of, Or, Ref, parse_condition

from .helpers import detector, generic

NAMES = ["sel_a", "sel_b", "filter_c", "filter_d"]


def truth(node: Node, holds: dict[str, bool]) -> bool:
    """The reference: the condition tree evaluated directly."""
    if isinstance(node, Ref):
        return holds[node.name]
    if isinstance(node, Not):
        return not truth(node.operand, holds)
    if isinstance(node, And):
        return all(truth(n, holds) for n in node.operands)
    if isinstance(node, Or):
        return any(truth(n, holds) for n in node.operands)
    assert isinstance(node, Of)
    results = [holds[n] for n in node.names]
    return all(results) if node.quantifier == "all" else any(results)


def random_condition(rng: random.Random, depth: int = 0) -> str:
    roll = rng.random()
    if depth > 2 or roll < 0.3:
        return rng.choice(NAMES + ["1 of sel_*", "all of filter_*", "all of them", "1 of them"])
    if roll < 0.45:
        return f"not {random_condition(rng, depth + 1)}"
    if roll < 0.6:
        return f"({random_condition(rng, depth + 1)})"
    op = rng.choice(["and", "or"])
    return f"{random_condition(rng, depth + 1)} {op} {random_condition(rng, depth + 1)}"


@pytest.mark.parametrize("seed", range(40))
def test_the_generated_function_agrees_with_the_condition_tree(seed: int) -> None:
    rng = random.Random(seed)
    condition = random_condition(rng)
    selections = "\n".join(f"            {name}:\n                f_{name}: 'yes'" for name in NAMES)
    det = detector(f"""
        title: generated
        logsource: {{product: linux, service: auth}}
        detection:
{selections}
            condition: {condition}
        """)
    tree = parse_condition(condition, NAMES)
    for i, values in enumerate(itertools.product([False, True], repeat=len(NAMES))):
        holds = dict(zip(NAMES, values, strict=True))
        event = generic("2026-01-01T00:00:00Z", f"e{i}", **{f"f_{n}": "YES" if h else "no" for n, h in holds.items()})
        fired = bool(det.process(event))
        assert fired == truth(tree, holds), (condition, holds)


def test_rule_text_is_data_even_when_it_looks_like_code() -> None:
    hostile = "') or True or ('"
    det = detector(f"""
        title: hostile
        logsource: {{product: linux, service: auth}}
        detection:
            "sel) or True or (x":
                "f\\") or True or (\\"": "{hostile}"
                g|contains: ["__import__('os').system('false')", '"; raise SystemExit; "']
            condition: "1 of sel*"
        """)
    assert not det.process(generic("2026-01-01T00:00:00Z", "e1", g="nothing"))
    assert not det.process(generic("2026-01-01T00:00:00Z", "e2", **{'f") or True or ("': "x"},
                                   g="__import__('os').system('false')"))
    assert det.process(generic("2026-01-01T00:00:00Z", "e3", **{'f") or True or ("': hostile.upper()},
                               g="a\"; raise SystemExit; \"b"))
