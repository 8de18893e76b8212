"""One span as recorded: ids, name, kind, start and end (ns since the epoch), status and a
bounded set of string attributes. Exporters read it once it has ended."""

from __future__ import annotations

from enum import Enum
from typing import Final

from layotto.tracing.context import SpanContext

MAX_ATTRIBUTES: Final = 32
MAX_VALUE_LENGTH: Final = 256
MAX_NAME_LENGTH: Final = 128


class SpanKind(Enum):
    """Zipkin's name and OTLP's number of each kind."""

    SERVER = ("SERVER", 2)
    CLIENT = ("CLIENT", 3)
    PRODUCER = ("PRODUCER", 4)
    CONSUMER = ("CONSUMER", 5)

    @property
    def zipkin(self) -> str:
        return self.value[0]

    @property
    def otlp(self) -> int:
        return self.value[1]


# OTLP's status codes.
STATUS_UNSET: Final = 0
STATUS_OK: Final = 1
STATUS_ERROR: Final = 2


def _bounded(value: str, limit: int) -> str:
    return value if len(value) <= limit else value[: limit - 3] + "..."


class Span:
    __slots__ = (
        "attributes",
        "end_ns",
        "kind",
        "name",
        "parent_id",
        "sampled",
        "span_id",
        "start_ns",
        "status",
        "status_message",
        "trace_id",
        "tracestate",
    )

    def __init__(
        self,
        trace_id: str,
        span_id: str,
        parent_id: str | None,
        name: str,
        kind: SpanKind,
        start_ns: int,
        sampled: bool,
        tracestate: str = "",
    ) -> None:
        self.trace_id = trace_id
        self.span_id = span_id
        self.parent_id = parent_id
        self.name = _bounded(name, MAX_NAME_LENGTH)
        self.kind = kind
        self.start_ns = start_ns
        self.end_ns = 0
        self.sampled = sampled  # recorded and exported; else only propagated
        self.tracestate = tracestate
        self.status = STATUS_UNSET
        self.status_message = ""
        self.attributes: dict[str, str] = {}

    def rename(self, name: str) -> None:
        self.name = _bounded(name, MAX_NAME_LENGTH)

    def set(self, key: str, value: str) -> None:
        """One attribute; past MAX_ATTRIBUTES new keys are ignored, long values cut."""
        attributes = self.attributes
        if len(attributes) < MAX_ATTRIBUTES or key in attributes:
            attributes[key] = _bounded(value, MAX_VALUE_LENGTH)

    def fail(self, message: str) -> None:
        self.status = STATUS_ERROR
        self.status_message = _bounded(message, MAX_VALUE_LENGTH)

    @property
    def context(self) -> SpanContext:
        return SpanContext(self.trace_id, self.span_id, self.sampled, self.tracestate)

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"

    def headers(self) -> dict[str, str]:
        """`traceparent` (and `tracestate` when there is one) naming this span as the parent."""
        if self.tracestate:
            return {"traceparent": self.traceparent, "tracestate": self.tracestate}
        return {"traceparent": self.traceparent}

    def __repr__(self) -> str:
        return f"Span({self.name!r}, {self.kind.zipkin}, {self.traceparent})"
