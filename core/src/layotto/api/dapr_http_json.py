"""JSON as daprd writes and reads it: what Go's `encoding/json` makes of a decoded value."""

from __future__ import annotations

import json
from typing import Any

# Go's encoder escapes these inside strings (HTML safety, and JavaScript line terminators).
_GO_ESCAPES = (
    ("<", "\\u003c"),
    (">", "\\u003e"),
    ("&", "\\u0026"),
    ("\u2028", "\\u2028"),
    ("\u2029", "\\u2029"),
)


def go_json(value: Any) -> bytes:
    """`value` encoded as Go's `json.Marshal` does: compact, object keys sorted, the characters
    above escaped (only string contents can hold them, so replacing them is safe). Numbers keep
    Python's spelling (`1.0` stays `1.0`; Go would write `1`)."""
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=True)
    for char, escaped in _GO_ESCAPES:
        text = text.replace(char, escaped)
    return text.encode()


def _reject_constant(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def loads(data: str | bytes) -> Any:
    """Decode one JSON value. Python's reader also takes NaN and Infinity, which are not JSON
    (and would break a document they were written back into): ValueError, as for any other
    malformed input."""
    return json.loads(data, parse_constant=_reject_constant)


def is_strict_json(text: str) -> bool:
    try:
        loads(text)
    except ValueError:
        return False
    return True
