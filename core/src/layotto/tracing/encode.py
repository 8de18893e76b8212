"""Finished spans as the two wire formats the exporter POSTs, both JSON:

- Zipkin v2 (`POST /api/v2/spans`): a list of spans, times in microseconds, the app id as the
  local endpoint's service name, attributes as tags; an error status as the `error` tag (with
  `otel.status_code`, as OpenTelemetry's Zipkin exporter writes it).
- OTLP/HTTP JSON (`POST /v1/traces`, an `ExportTraceServiceRequest`): one resource
  (`service.name` = the app id) and scope; ids as hex, times as decimal strings of ns, kinds
  and status codes as numbers, as the OTLP JSON mapping specifies.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any, Final

from layotto.tracing.span import STATUS_ERROR, STATUS_OK, Span

SCOPE_NAME: Final = "layotto"
JSON: Final = "application/json"


def zipkin_span(span: Span, service: str) -> dict[str, Any]:
    tags = dict(span.attributes)
    if span.status == STATUS_ERROR:
        tags["otel.status_code"] = "ERROR"
        tags["error"] = span.status_message or "error"
    elif span.status == STATUS_OK:
        tags["otel.status_code"] = "OK"
    encoded: dict[str, Any] = {
        "traceId": span.trace_id,
        "id": span.span_id,
        "name": span.name,
        "kind": span.kind.zipkin,
        "timestamp": span.start_ns // 1000,
        "duration": max(1, (span.end_ns - span.start_ns) // 1000),
        "localEndpoint": {"serviceName": service},
    }
    if span.parent_id:
        encoded["parentId"] = span.parent_id
    if tags:
        encoded["tags"] = tags
    return encoded


def zipkin_body(spans: Sequence[Span], service: str) -> bytes:
    return json.dumps([zipkin_span(s, service) for s in spans], separators=(",", ":")).encode()


def _string(key: str, value: str) -> dict[str, Any]:
    return {"key": key, "value": {"stringValue": value}}


def otlp_span(span: Span) -> dict[str, Any]:
    encoded: dict[str, Any] = {
        "traceId": span.trace_id,
        "spanId": span.span_id,
        "name": span.name,
        "kind": span.kind.otlp,
        "startTimeUnixNano": str(span.start_ns),
        "endTimeUnixNano": str(span.end_ns),
        "attributes": [_string(k, v) for k, v in span.attributes.items()],
        "status": {"code": span.status},
    }
    if span.parent_id:
        encoded["parentSpanId"] = span.parent_id
    if span.tracestate:
        encoded["traceState"] = span.tracestate
    if span.status_message:
        encoded["status"]["message"] = span.status_message
    return encoded


def otlp_body(spans: Sequence[Span], service: str, version: str = "") -> bytes:
    scope: dict[str, Any] = {"name": SCOPE_NAME}
    if version:
        scope["version"] = version
    request = {
        "resourceSpans": [
            {
                "resource": {"attributes": [_string("service.name", service)]},
                "scopeSpans": [{"scope": scope, "spans": [otlp_span(s) for s in spans]}],
            }
        ]
    }
    return json.dumps(request, separators=(",", ":")).encode()


def log_fields(span: Span) -> dict[str, Any]:
    """A span as structured log fields (`tracing.stdout`)."""
    fields: dict[str, Any] = {
        "trace_id": span.trace_id,
        "span_id": span.span_id,
        "parent_id": span.parent_id or "",
        "kind": span.kind.zipkin,
        "duration_us": (span.end_ns - span.start_ns) // 1000,
        "attributes": dict(span.attributes),
    }
    if span.status == STATUS_ERROR:
        fields["error"] = span.status_message
    return fields
