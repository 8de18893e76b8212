"""The CEL subset for Dapr routing rules (`layotto.api.cel_match`): what the SDKs and the docs
write is evaluated as CEL would; anything else is refused when compiled."""

from __future__ import annotations

from typing import Any

import pytest
from layotto.api.cel_match import (
    MAX_OPERATORS,
    CelEvalError,
    CelSyntaxError,
    compile_match,
)

EVENT: dict[str, Any] = {
    "id": "1",
    "type": "widget",
    "source": "app-a",
    "specversion": "1.0",
    "topic": "orders",
    "count": 3,
    "ratio": 0.5,
    "flag": True,
    "nothing": None,
    "data": {"kind": "gadget", "size": 2, "nested": {"deep": "yes"}},
    "weird-key": "w",
}


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('event.type == "widget"', True),
        ("event.type == 'widget'", True),
        ('event.type == "gadget"', False),
        ('event.type != "gadget"', True),
        ('event.type == "widget" && event.source == "app-a"', True),
        ('event.type == "widget" && event.source == "app-b"', False),
        ('event.type == "gadget" || event.source == "app-a"', True),
        ('(event.type == "gadget" || event.type == "widget") && event.topic == "orders"', True),
        ('!(event.type == "widget")', False),
        ('event.data.kind == "gadget"', True),
        ('event.data.nested.deep == "yes"', True),
        ('event["weird-key"] == "w"', True),
        ('event.data["kind"] == "gadget"', True),
        ("event.count == 3", True),
        ("event.count == 3.0", True),  # numbers compare by value
        ('event.count == "3"', False),  # across types: not equal, not an error
        ("event.ratio == 0.5", True),
        ("event.flag == true", True),
        ("event.flag", True),
        ("event.flag == 1", False),  # a bool is not a number
        ("event.nothing == null", True),
        ("has(event.type)", True),
        ("has(event.missing)", False),
        ("has(event.data.kind)", True),
        ('!has(event.missing) && event.type == "widget"', True),
        ("true", True),
        ("false || event.count == 3", True),
        ('event.type == "a\\"b"', False),
        ('event.type == "widget" || event.missing == "x"', True),  # true || error
        ('event.type == "gadget" && event.missing == "x"', False),  # false && error
    ],
)
def test_evaluates_like_cel(expression: str, expected: bool) -> None:
    assert compile_match(expression)(EVENT) is expected


@pytest.mark.parametrize(
    "expression",
    [
        'event.missing == "x"',  # CEL: no such key
        'event.type == "gadget" || event.missing == "x"',
        'event.data.kind.more == "x"',  # a field of a string
        "event.type",  # not a boolean
        "has(event.type.length)",
    ],
)
def test_an_error_value_raises_at_evaluation(expression: str) -> None:
    match = compile_match(expression)
    with pytest.raises(CelEvalError):
        match(EVENT)


@pytest.mark.parametrize(
    "expression",
    [
        "",
        "   ",
        'event.type.startsWith("w")',  # function calls
        "size(event.type) > 2",
        "event.count > 2",  # ordering operators
        'event.type in ["a", "b"]',
        'event.type == "widget" ? true : false',
        'other.type == "widget"',  # only `event`
        'type == "widget"',
        'event.type == "unterminated',
        'event.type = "widget"',
        '"widget" == ',
        "(event.flag",
        "event.flag)",
        'event.type == "a" +',
        'event[0] == "x"',
        'event.type == "bad \\q escape"',
        "has(other.x)",
        "has(event)",
        "event.count == 1e999",
    ],
)
def test_anything_else_is_refused_when_compiled(expression: str) -> None:
    with pytest.raises(CelSyntaxError):
        compile_match(expression)


def test_size_is_bounded() -> None:
    long_chain = " || ".join(["event.flag"] * (MAX_OPERATORS + 2))
    with pytest.raises(CelSyntaxError, match="operators"):
        compile_match(long_chain)
    deep = "(" * 40 + "event.flag" + ")" * 40
    with pytest.raises(CelSyntaxError, match="nested"):
        compile_match(deep)
    with pytest.raises(CelSyntaxError, match="longer"):
        compile_match('event.type == "' + "x" * 5000 + '"')
    # Within the bounds it still works.
    assert compile_match(" || ".join(["event.flag"] * 10))(EVENT) is True
    assert compile_match("!" * 10 + "event.flag")(EVENT) is True


def test_the_source_is_kept() -> None:
    assert compile_match('  event.type == "widget" ').source == 'event.type == "widget"'
