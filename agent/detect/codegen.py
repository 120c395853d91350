"""A rule's detection compiled to one Python function over a `View`. Pure.

Evaluating a condition tree of closures costs a call (and often a generator) per node and per
item; the detector runs a handful of rules on every event, so that overhead is most of its time.
Instead each detection is written once, at load, as a single boolean expression: `and`, `or` and
`not` for the condition, an inline set lookup for plain equality items, a call for every other
item, e.g.

    def test(v):
        L = v.lowered_cache
        return bool((not k0.isdisjoint(L[k1] if k1 in L else v.lowered(k1))) and k2(v.values(k3), v.doc))

The generated text holds only operators and constant names (`k0`, `k1`, ...): every value from a
rule file (patterns, field names, selection names) is a Python object in the function's
namespace, never source text, so a rule cannot inject code. Short-circuit order is the order the
rule is written in, as with the closures it replaces, and every part is a pure test, so the verdict
is the same.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from agent.detect.fields import View
from agent.detect.values import Getter, TextMatch

Test = Callable[[View], bool]


class Code:
    """The constants of one function being generated, and the expressions that use them."""

    def __init__(self) -> None:
        self.namespace: dict[str, Any] = {}

    def const(self, value: Any) -> str:
        name = f"k{len(self.namespace)}"
        self.namespace[name] = value
        return name

    def lowered(self, getter: Getter) -> str:
        g = self.const(getter)
        return f"(L[{g}] if {g} in L else v.lowered({g}))"

    def text_item(self, match: TextMatch, texts: str) -> str:
        """`match` applied to the lowercased texts that the expression `texts` yields."""
        if not match.all_of and match.rest is None:
            return f"(not {self.const(match.equal)}.isdisjoint({texts}))"
        if not match.all_of and not match.equal:
            return f"any(map({self.const(match.rest)}, {texts}))"
        return f"{self.const(match)}({texts})"

    def call(self, fn: Any, *args: str) -> str:
        return f"{self.const(fn)}({', '.join(args)})"

    def function(self, expr: str) -> Test:
        source = f"def test(v):\n    L = v.lowered_cache\n    return bool({expr})\n"
        namespace = dict(self.namespace)
        exec(compile(source, "<sigma detection>", "exec"), namespace)  # operators and k-names only (see above)
        test: Test = namespace["test"]
        return test


def all_of(exprs: Sequence[str]) -> str:
    return exprs[0] if len(exprs) == 1 else "(" + " and ".join(exprs) + ")"


def any_of(exprs: Sequence[str]) -> str:
    return exprs[0] if len(exprs) == 1 else "(" + " or ".join(exprs) + ")"


def negation(expr: str) -> str:
    return f"(not {expr})"
