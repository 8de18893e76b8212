"""W3C trace context (`traceparent` / `tracestate`), parsed strictly and formatted. A header
that does not parse is ignored (the call starts a new trace): never an error for the caller.

`traceparent` is `{version}-{trace-id}-{parent-id}-{flags}`, lower-case hex only: version `ff`
is invalid, version `00` is exactly 55 characters, a later version may append `-...` (ignored);
an all-zero trace id or parent id is invalid. `tracestate` is kept only when every member is
valid (at most 32, keys and values per the W3C grammar, 512 characters in all, as daprd caps
it); otherwise it is dropped and the `traceparent` still counts.

daprd also reads and answers OpenCensus' binary `grpc-trace-bin` on gRPC calls; grpclib
reserves every `grpc-*` metadata name (it neither passes them to handlers nor sends them), so
gRPC calls carry `traceparent` / `tracestate` here, which daprd accepts as well.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

TRACEPARENT: Final = "traceparent"
TRACESTATE: Final = "tracestate"

MAX_TRACESTATE_LENGTH: Final = 512
MAX_TRACESTATE_MEMBERS: Final = 32

_ZERO_TRACE: Final = "0" * 32
_ZERO_SPAN: Final = "0" * 16
_HEX = re.compile(r"[0-9a-f]+")
_KEY = re.compile(
    r"[a-z][_0-9a-z\-*/]{0,255}|[a-z0-9][_0-9a-z\-*/]{0,240}@[a-z][_0-9a-z\-*/]{0,13}"
)
_VALUE = re.compile(r"[\x20-\x2b\x2d-\x3c\x3e-\x7e]{0,255}[\x21-\x2b\x2d-\x3c\x3e-\x7e]")


@dataclass(frozen=True, slots=True)
class SpanContext:
    """What crosses a process boundary: ids as lower-case hex, the sampled flag, the vendors'
    `tracestate` ("" for none)."""

    trace_id: str  # 32 hex digits, not all zero
    span_id: str  # 16 hex digits, not all zero
    sampled: bool
    tracestate: str = ""


def parse_traceparent(value: str | None) -> SpanContext | None:
    """The span context of a `traceparent` header, or None when absent or invalid."""
    if not value:
        return None
    value = value.strip(" \t")
    if len(value) < 55 or value[2] != "-" or value[35] != "-" or value[52] != "-":
        return None
    version, trace_id, span_id, flags = value[:2], value[3:35], value[36:52], value[53:55]
    if version == "ff" or not _HEX.fullmatch(version):
        return None
    if version == "00":
        if len(value) != 55:
            return None
    elif len(value) > 55 and value[55] != "-":
        return None
    if not (_HEX.fullmatch(trace_id) and _HEX.fullmatch(span_id) and _HEX.fullmatch(flags)):
        return None
    if trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return SpanContext(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_tracestate(value: str | None) -> str:
    """A valid `tracestate` normalised (members trimmed, empty ones left out), else ""."""
    if not value or len(value) > 4 * MAX_TRACESTATE_LENGTH:
        return ""
    members: list[str] = []
    keys: set[str] = set()
    for raw in value.split(","):
        member = raw.strip(" \t")
        if not member:
            continue
        key, eq, val = member.partition("=")
        if not eq or key in keys or not _KEY.fullmatch(key) or not _VALUE.fullmatch(val):
            return ""
        keys.add(key)
        members.append(member)
    if len(members) > MAX_TRACESTATE_MEMBERS:
        return ""
    joined = ",".join(members)
    return joined if len(joined) <= MAX_TRACESTATE_LENGTH else ""


def parse_headers(traceparent: str | None, tracestate: str | None) -> SpanContext | None:
    """The caller's span context from its two W3C headers (None: start a new trace)."""
    context = parse_traceparent(traceparent)
    if context is None or not tracestate:
        return context
    state = parse_tracestate(tracestate)
    if not state:
        return context
    return SpanContext(context.trace_id, context.span_id, context.sampled, state)


def format_traceparent(context: SpanContext) -> str:
    return f"00-{context.trace_id}-{context.span_id}-{'01' if context.sampled else '00'}"
