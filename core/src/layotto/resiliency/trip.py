"""The circuit-breaker `trip` expression: the CEL subset Dapr users write over the breaker counts
(`consecutiveFailures > 5`, `requests > 10 && totalFailures >= 5`), compiled once at load time.

daprd evaluates full CEL; this sidecar accepts exactly what is below and refuses anything else at
config load (a trip rule it cannot read must not silently never or always trip):

    expr        := or
    or          := and ("||" and)*
    and         := unary ("&&" unary)*
    unary       := "!" unary | primary
    primary     := "(" expr ")" | "true" | "false" | comparison
    comparison  := term ("==" | "!=" | "<" | "<=" | ">" | ">=") term
    term        := COUNTER | INTEGER

`layotto.api.cel_match` (routing rules) was not reused: it reads `event.*` paths with equality
only, while trip rules need bare counter names and ordering comparisons; a separate 100 lines is
simpler than a parser with two modes. Every operand is an integer and every comparison a boolean,
so a compiled rule cannot fail at evaluation time.
"""

from __future__ import annotations

import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Final

COUNTERS: Final = (
    "requests",
    "totalSuccesses",
    "totalFailures",
    "consecutiveSuccesses",
    "consecutiveFailures",
)
DEFAULT_TRIP: Final = "consecutiveFailures > 5"
MAX_LENGTH: Final = 1024
MAX_DEPTH: Final = 32

_Counts = Mapping[str, int]
_Bool = Callable[[_Counts], bool]
_Int = Callable[[_Counts], int]

_TOKEN = re.compile(
    r"(?P<ws>\s+)|(?P<op>==|!=|<=|>=|&&|\|\||[<>!()])|(?P<int>\d+)|(?P<ident>[A-Za-z_]\w*)"
)
_COMPARE: Final[dict[str, Callable[[int, int], bool]]] = {
    "==": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class TripSyntaxError(ValueError):
    """The expression is not in the supported subset; the message says where and what."""


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # op | int | ident | end
    text: str
    pos: int


def _tokens(source: str) -> list[_Tok]:
    out: list[_Tok] = []
    pos = 0
    while pos < len(source):
        found = _TOKEN.match(source, pos)
        if found is None:
            raise TripSyntaxError(f"unexpected {source[pos]!r} at {pos}")
        if found.lastgroup != "ws":
            out.append(_Tok(found.lastgroup or "", found.group(), pos))
        pos = found.end()
    out.append(_Tok("end", "", len(source)))
    return out


class _Parser:
    def __init__(self, source: str) -> None:
        self._toks = _tokens(source)
        self._i = 0
        self._depth = 0

    def _peek(self) -> _Tok:
        return self._toks[self._i]

    def _take(self) -> _Tok:
        tok = self._toks[self._i]
        self._i += 1
        return tok

    def parse(self) -> _Bool:
        node = self._or()
        tok = self._peek()
        if tok.kind != "end":
            raise TripSyntaxError(f"unexpected {tok.text!r} at {tok.pos}")
        return node

    def _nest(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise TripSyntaxError(f"nested deeper than {MAX_DEPTH}")

    def _or(self) -> _Bool:
        node = self._and()
        while self._peek().text == "||":
            self._take()
            node = _either(node, self._and())
        return node

    def _and(self) -> _Bool:
        node = self._unary()
        while self._peek().text == "&&":
            self._take()
            node = _both(node, self._unary())
        return node

    def _unary(self) -> _Bool:
        if self._peek().text == "!":
            self._take()
            self._nest()
            inner = self._unary()
            self._depth -= 1
            return lambda c: not inner(c)
        return self._primary()

    def _primary(self) -> _Bool:
        tok = self._peek()
        if tok.text == "(":
            self._take()
            self._nest()
            node = self._or()
            close = self._take()
            if close.text != ")":
                raise TripSyntaxError(f"expected ')' at {close.pos}, got {close.text or 'end'!r}")
            self._depth -= 1
            return node
        if tok.kind == "ident" and tok.text in ("true", "false"):
            self._take()
            value = tok.text == "true"
            return lambda _c: value
        left = self._term()
        op = self._take()
        if op.text not in _COMPARE:
            raise TripSyntaxError(
                f"expected a comparison (==, !=, <, <=, >, >=) at {op.pos}, "
                f"got {op.text or 'end'!r}"
            )
        right = self._term()
        compare = _COMPARE[op.text]
        return lambda c: compare(left(c), right(c))

    def _term(self) -> _Int:
        tok = self._take()
        if tok.kind == "int":
            number = int(tok.text)
            return lambda _c: number
        if tok.kind == "ident" and tok.text in COUNTERS:
            name = tok.text
            return lambda c: c[name]
        raise TripSyntaxError(
            f"unsupported {tok.text or 'end'!r} at {tok.pos}: operands are integers and the "
            f"counters {', '.join(COUNTERS)}"
        )


def _either(left: _Bool, right: _Bool) -> _Bool:
    return lambda c: left(c) or right(c)


def _both(left: _Bool, right: _Bool) -> _Bool:
    return lambda c: left(c) and right(c)


@dataclass(frozen=True, slots=True)
class Trip:
    """A compiled trip rule: call it with the breaker's counts (keyed by the CEL names)."""

    source: str
    # Equal rules are equal by their text (a closure never compares equal to another).
    _node: _Bool = field(compare=False, repr=False)

    def __call__(self, counts: _Counts) -> bool:
        return self._node(counts)

    def __str__(self) -> str:
        return self.source


def compile_trip(source: str) -> Trip:
    """Compile a trip rule once; TripSyntaxError names what is outside the supported subset."""
    text = source.strip()
    if not text:
        raise TripSyntaxError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise TripSyntaxError(f"the expression is longer than {MAX_LENGTH} characters")
    return Trip(text, _Parser(text).parse())
