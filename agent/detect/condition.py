"""The Sigma condition grammar, parsed to a small tree. Pure.

    expr   := term ("or" term)*
    term   := factor ("and" factor)*
    factor := "not" factor | "(" expr ")" | quant "of" target | IDENT
    quant  := "1" | "any" | "all"            target := "them" | IDENT-pattern (with * wildcards)

Precedence, highest first: not, and, or (Sigma specification v2). Aggregations after a pipe
(`| count() by x > 5`, deprecated in Sigma v2) are refused: write a correlation rule instead.
"""

from __future__ import annotations

import fnmatch
import re
from dataclasses import dataclass

from agent.detect.values import UnsupportedConstruct


@dataclass(frozen=True)
class Ref:
    name: str


@dataclass(frozen=True)
class Not:
    operand: Node


@dataclass(frozen=True)
class And:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    operands: tuple[Node, ...]


@dataclass(frozen=True)
class Of:
    quantifier: str  # "1" or "all"
    names: tuple[str, ...]  # the selections the pattern resolved to


Node = Ref | Not | And | Or | Of

_TOKEN = re.compile(r"\s*(\(|\)|[^\s()]+)")


def tokenize(text: str) -> list[str]:
    pos, out = 0, []
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # only trailing whitespace remains
            break
        out.append(m.group(1))
        pos = m.end()
    return out


def parse_condition(text: str, selections: list[str]) -> Node:
    """Parse `text` against the rule's selection names; unknown names and patterns are errors."""
    if "|" in text:
        raise UnsupportedConstruct(f"aggregation in condition {text!r} (Sigma v2: use a correlation rule)")
    parser = _Parser(tokenize(text), selections)
    node = parser.expr()
    if parser.pos != len(parser.tokens):
        raise UnsupportedConstruct(f"condition {text!r}: unexpected {parser.tokens[parser.pos]!r}")
    return node


class _Parser:
    def __init__(self, tokens: list[str], selections: list[str]) -> None:
        self.tokens = tokens
        self.pos = 0
        self.selections = selections

    def peek(self) -> str | None:
        return self.tokens[self.pos] if self.pos < len(self.tokens) else None

    def take(self) -> str:
        tok = self.peek()
        if tok is None:
            raise UnsupportedConstruct("condition ends too early")
        self.pos += 1
        return tok

    def expr(self) -> Node:
        operands = [self.term()]
        while (self.peek() or "").lower() == "or":
            self.take()
            operands.append(self.term())
        return operands[0] if len(operands) == 1 else Or(tuple(operands))

    def term(self) -> Node:
        operands = [self.factor()]
        while (self.peek() or "").lower() == "and":
            self.take()
            operands.append(self.factor())
        return operands[0] if len(operands) == 1 else And(tuple(operands))

    def factor(self) -> Node:
        tok = self.take()
        low = tok.lower()
        if low == "not":
            return Not(self.factor())
        if tok == "(":
            node = self.expr()
            if self.take() != ")":
                raise UnsupportedConstruct("condition: missing ')'")
            return node
        if low in ("1", "any", "all") and (self.peek() or "").lower() == "of":
            self.take()
            target = self.take()
            if target.lower() == "them":
                names = tuple(s for s in self.selections if not s.startswith("_"))
            else:
                names = tuple(s for s in self.selections if fnmatch.fnmatchcase(s, target))
            if not names:
                raise UnsupportedConstruct(f"condition: '{tok} of {target}' matches no selection")
            return Of("all" if low == "all" else "1", names)
        if tok in (")", "and", "or", "of") or low in ("and", "or", "of"):
            raise UnsupportedConstruct(f"condition: unexpected {tok!r}")
        if tok not in self.selections:
            raise UnsupportedConstruct(f"condition names {tok!r}, which is not a selection of the rule")
        return Ref(tok)
