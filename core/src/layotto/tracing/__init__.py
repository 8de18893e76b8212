"""Distributed tracing with W3C trace context, as daprd does it: a span per API call (gRPC and
HTTP), per invocation forwarded, per pub/sub delivery, input binding event and configuration
update delivered to the app and per output binding call, exported to Zipkin (v2
JSON) and/or an OpenTelemetry collector (OTLP/HTTP JSON) and/or the log.

This package is the dependency-free interface the edges and services use (`Tracer`,
`NO_TRACER`, the current span); `layotto.actors.trace_exporter` builds the one recording
tracer and the exporter actor at startup, only when `tracing.sampling_rate` > 0. No
OpenTelemetry SDK: it would add import time and several dependencies for what is a few
hundred lines here (ids, a sampler, two JSON encoders, a batching POST loop over httpx).
"""

from layotto.tracing.context import (
    TRACEPARENT,
    TRACESTATE,
    SpanContext,
    format_traceparent,
    parse_headers,
    parse_traceparent,
    parse_tracestate,
)
from layotto.tracing.span import STATUS_ERROR, STATUS_OK, STATUS_UNSET, Span, SpanKind
from layotto.tracing.tracer import (
    NO_TRACER,
    RatioSampler,
    RecordingTracer,
    Sink,
    Tracer,
    activate,
    active,
    current_span,
    current_traceparent,
    deactivate,
    detach,
    ending,
    fail_span,
)

__all__ = [
    "NO_TRACER",
    "STATUS_ERROR",
    "STATUS_OK",
    "STATUS_UNSET",
    "TRACEPARENT",
    "TRACESTATE",
    "RatioSampler",
    "RecordingTracer",
    "Sink",
    "Span",
    "SpanContext",
    "SpanKind",
    "Tracer",
    "activate",
    "active",
    "current_span",
    "current_traceparent",
    "deactivate",
    "detach",
    "ending",
    "fail_span",
    "format_traceparent",
    "parse_headers",
    "parse_traceparent",
    "parse_tracestate",
]
