"""The subset of CEL that Dapr pub/sub routing rules use (`TopicRule.match`), compiled once per
rule and evaluated per event over `event` (the CloudEvent envelope as a map).

daprd evaluates full CEL; the SDKs and the docs write comparisons of envelope attributes, so
this evaluator accepts exactly these forms and refuses anything else when the rule is compiled
(a rule it cannot read must not silently match the wrong events):

    expr     := or
    or       := and ("||" and)*
    and      := unary ("&&" unary)*
    unary    := "!" unary | primary
    primary  := "(" expr ")" | "has" "(" path ")" | operand [("==" | "!=") operand]
    operand  := path | STRING | NUMBER | "true" | "false" | "null"
    path     := "event" ("." IDENT | "[" STRING "]")*

Semantics follow CEL: a missing key or a non-boolean where a boolean is needed is an error
value; `||` and `&&` absorb an error when the other side decides the result (`true || err`
is true, `false && err` is false); equality across types is false (numbers compare by value).
An expression that ends in an error raises `CelEvalError`.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

MAX_LENGTH: Final = 4096
MAX_DEPTH: Final = 32
# Evaluation recurses once per operator: bounded, so no rule can exhaust the stack.
MAX_OPERATORS: Final = 64
ROOT: Final = "event"


class CelError(ValueError):
    """A rule this evaluator cannot use."""


class CelSyntaxError(CelError):
    """Refused at compile time: not valid, or outside the supported subset."""


class CelEvalError(CelError):
    """The expression evaluated to an error for this event (e.g. a missing attribute)."""


class _Err:
    """CEL's error value: carried through the logical operators, raised at the top."""

    __slots__ = ("reason",)

    def __init__(self, reason: str) -> None:
        self.reason = reason


_Node = Callable[[Mapping[str, Any]], Any]

_TOKEN = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<op>==|!=|&&|\|\||[!().\[\]])
  | (?P<string>"(?:[^"\\\n]|\\.)*"|'(?:[^'\\\n]|\\.)*')
  | (?P<number>-?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][+-]?\d+)?)
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "'": "'", "0": "\0"}
_KEYWORDS = {"true": True, "false": False, "null": None}


@dataclass(frozen=True, slots=True)
class _Tok:
    kind: str  # op | string | number | ident | end
    text: str
    pos: int


def _unquote(text: str, pos: int) -> str:
    body = text[1:-1]
    out: list[str] = []
    i = 0
    while i < len(body):
        ch = body[i]
        if ch == "\\":
            nxt = body[i + 1] if i + 1 < len(body) else ""
            if nxt not in _ESCAPES:
                raise CelSyntaxError(f"unsupported escape '\\{nxt}' in the string at {pos}")
            out.append(_ESCAPES[nxt])
            i += 2
            continue
        out.append(ch)
        i += 1
    return "".join(out)


def _tokens(source: str) -> list[_Tok]:
    tokens: list[_Tok] = []
    pos = 0
    while pos < len(source):
        found = _TOKEN.match(source, pos)
        if found is None:
            raise CelSyntaxError(f"unexpected {source[pos]!r} at {pos}")
        kind = found.lastgroup or ""
        if kind != "ws":
            tokens.append(_Tok(kind, found.group(), pos))
        pos = found.end()
    tokens.append(_Tok("end", "", len(source)))
    return tokens


def _truth(value: Any) -> bool | _Err:
    if isinstance(value, _Err | bool):
        return value
    return _Err(f"{type(value).__name__} value where a boolean is needed")


def _equal(left: Any, right: Any) -> bool:
    numeric = (int, float)
    if isinstance(left, bool) or isinstance(right, bool):
        return type(left) is type(right) and left == right
    if isinstance(left, numeric) and isinstance(right, numeric):
        return bool(left == right)
    if type(left) is not type(right):
        return left is None and right is None
    return bool(left == right)


class _Parser:
    def __init__(self, source: str) -> None:
        self._tokens = _tokens(source)
        self._i = 0
        self._depth = 0
        self._operators = 0

    def _peek(self) -> _Tok:
        return self._tokens[self._i]

    def _take(self) -> _Tok:
        token = self._tokens[self._i]
        self._i += 1
        return token

    def _expect(self, text: str) -> None:
        token = self._take()
        if token.text != text or token.kind != "op":
            raise CelSyntaxError(f"expected {text!r} at {token.pos}, got {token.text or 'end'!r}")

    def parse(self) -> _Node:
        node = self._or()
        token = self._peek()
        if token.kind != "end":
            raise CelSyntaxError(f"unsupported {token.text!r} at {token.pos}")
        return node

    def _nested(self) -> None:
        self._depth += 1
        if self._depth > MAX_DEPTH:
            raise CelSyntaxError(f"nested deeper than {MAX_DEPTH}")

    def _operator(self) -> None:
        self._take()
        self._operators += 1
        if self._operators > MAX_OPERATORS:
            raise CelSyntaxError(f"more than {MAX_OPERATORS} operators")

    def _or(self) -> _Node:
        node = self._and()
        while self._peek().text == "||":
            self._operator()
            node = _logical(node, self._and(), decisive=True)
        return node

    def _and(self) -> _Node:
        node = self._unary()
        while self._peek().text == "&&":
            self._operator()
            node = _logical(node, self._unary(), decisive=False)
        return node

    def _unary(self) -> _Node:
        token = self._peek()
        if token.kind == "op" and token.text == "!":
            self._operator()
            self._nested()
            node = _negate(self._unary())
            self._depth -= 1
            return node
        return self._primary()

    def _primary(self) -> _Node:
        token = self._peek()
        if token.kind == "op" and token.text == "(":
            self._take()
            self._nested()
            node = self._or()
            self._expect(")")
            self._depth -= 1
            return node
        if token.kind == "ident" and token.text == "has":
            self._take()
            self._expect("(")
            keys = self._path()
            self._expect(")")
            if not keys:
                raise CelSyntaxError(f"has() needs a field of {ROOT!r} at {token.pos}")
            return _has(keys)
        left = self._operand()
        op = self._peek()
        if op.kind == "op" and op.text in ("==", "!="):
            self._operator()
            right = self._operand()
            return _compare(left, right, negate=op.text == "!=")
        return left

    def _operand(self) -> _Node:
        token = self._peek()
        if token.kind == "string":
            self._take()
            text = _unquote(token.text, token.pos)
            return lambda _event: text
        if token.kind == "number":
            self._take()
            number = _number(token)
            return lambda _event: number
        if token.kind == "ident" and token.text in _KEYWORDS:
            self._take()
            constant = _KEYWORDS[token.text]
            return lambda _event: constant
        if token.kind == "ident" and token.text == ROOT:
            return _lookup(self._path())
        raise CelSyntaxError(
            f"unsupported {token.text or 'end'!r} at {token.pos}: only {ROOT}.<attribute>, "
            "string/number/bool/null literals, ==, !=, &&, ||, !, () and has() are supported"
        )

    def _path(self) -> tuple[str, ...]:
        token = self._take()
        if token.kind != "ident" or token.text != ROOT:
            raise CelSyntaxError(f"expected {ROOT!r} at {token.pos}, got {token.text or 'end'!r}")
        keys: list[str] = []
        while True:
            nxt = self._peek()
            if nxt.kind == "op" and nxt.text == ".":
                self._take()
                name = self._take()
                if name.kind != "ident":
                    raise CelSyntaxError(f"expected a field name at {name.pos}")
                keys.append(name.text)
            elif nxt.kind == "op" and nxt.text == "[":
                self._take()
                key = self._take()
                if key.kind != "string":
                    raise CelSyntaxError(f"expected a string key at {key.pos}")
                keys.append(_unquote(key.text, key.pos))
                self._expect("]")
            else:
                return tuple(keys)


def _number(token: _Tok) -> int | float:
    text = token.text
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    value = float(text)
    if not math.isfinite(value):
        raise CelSyntaxError(f"number out of range at {token.pos}")
    return value


def _walk(event: Mapping[str, Any], keys: tuple[str, ...]) -> Any:
    value: Any = event
    for key in keys:
        if not isinstance(value, Mapping):
            return _Err(f"no field {key!r} on a {type(value).__name__}")
        if key not in value:
            return _Err(f"no such key: {key}")
        value = value[key]
    return value


def _lookup(keys: tuple[str, ...]) -> _Node:
    return lambda event: _walk(event, keys)


def _has(keys: tuple[str, ...]) -> _Node:
    parent, last = keys[:-1], keys[-1]

    def node(event: Mapping[str, Any]) -> Any:
        holder = _walk(event, parent)
        if isinstance(holder, _Err):
            return holder
        if not isinstance(holder, Mapping):
            return _Err(f"has() on a {type(holder).__name__}")
        return last in holder

    return node


def _compare(left: _Node, right: _Node, *, negate: bool) -> _Node:
    def node(event: Mapping[str, Any]) -> Any:
        a, b = left(event), right(event)
        if isinstance(a, _Err):
            return a
        if isinstance(b, _Err):
            return b
        return _equal(a, b) != negate

    return node


def _negate(inner: _Node) -> _Node:
    def node(event: Mapping[str, Any]) -> Any:
        value = _truth(inner(event))
        return value if isinstance(value, _Err) else not value

    return node


def _logical(left: _Node, right: _Node, *, decisive: bool) -> _Node:
    """CEL's commutative `||` (`decisive` True) and `&&` (False): a side with the decisive
    value decides, even when the other side is an error."""

    def node(event: Mapping[str, Any]) -> Any:
        a, b = _truth(left(event)), _truth(right(event))
        if a is decisive or b is decisive:
            return decisive
        return a if isinstance(a, _Err) else b

    return node


@dataclass(frozen=True, slots=True)
class Match:
    """A compiled rule expression."""

    source: str
    _node: _Node

    def __call__(self, event: Mapping[str, Any]) -> bool:
        """Whether `event` (the envelope map) matches; raises CelEvalError on an error value."""
        value = _truth(self._node(event))
        if isinstance(value, _Err):
            raise CelEvalError(value.reason)
        return value


def compile_match(source: str) -> Match:
    """Compile one `match` expression; CelSyntaxError names what is not supported."""
    text = source.strip()
    if not text:
        raise CelSyntaxError("the expression is empty")
    if len(text) > MAX_LENGTH:
        raise CelSyntaxError(f"the expression is longer than {MAX_LENGTH} characters")
    return Match(text, _Parser(text).parse())
