"""Durations in component metadata: Go duration strings, as Dapr components take them
("5s", "500ms", "1m30s"), or plain numbers of seconds. Use `Duration` as a field type."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import BeforeValidator

_GO_UNITS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_GO_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")
_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")


def parse_duration(value: Any) -> float:
    """Seconds from a Go duration string ("5s", "1m30s", "250ms"), or from a number of seconds
    (an int, a float, or a string of one)."""
    if isinstance(value, bool):
        raise ValueError("expected a duration such as '5s', '500ms' or a number of seconds")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            seconds = float(text)
        else:
            sign = -1.0 if text.startswith("-") else 1.0
            body = text.lstrip("+-")
            parts = list(_GO_PART.finditer(body))
            if not body or "".join(p.group(0) for p in parts) != body:
                raise ValueError(
                    f"{value!r} is not a duration: use e.g. '5s', '500ms', '1m30s' "
                    "or a number of seconds"
                )
            seconds = sign * sum(float(p.group(1)) * _GO_UNITS[p.group(2)] for p in parts)
    else:
        raise ValueError("expected a duration such as '5s', '500ms' or a number of seconds")
    if not math.isfinite(seconds):
        raise ValueError(f"{value!r} is not a finite duration")
    return seconds


Duration = Annotated[float, BeforeValidator(parse_duration)]
