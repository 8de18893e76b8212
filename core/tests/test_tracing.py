"""Tracing units: W3C `traceparent` / `tracestate` parsing and formatting,
the sampler, spans and their bounds, the current span, the two wire encodings, and the
exporter actor against real HTTP collectors (Zipkin v2 and OTLP/HTTP JSON), a full queue and
a collector that is down."""

from __future__ import annotations

import json
import logging
import time

import anyio
import pytest
from layotto.actors.trace_exporter import Collector, TraceExporter, build_tracing, collectors
from layotto.config import TracingConfig
from layotto.tracing import (
    NO_TRACER,
    STATUS_ERROR,
    RatioSampler,
    RecordingTracer,
    Span,
    SpanContext,
    SpanKind,
    activate,
    current_span,
    current_traceparent,
    deactivate,
    format_traceparent,
    parse_headers,
    parse_traceparent,
    parse_tracestate,
)
from layotto.tracing.encode import otlp_body, zipkin_body
from layotto.tracing.span import MAX_ATTRIBUTES, MAX_VALUE_LENGTH
from layotto_api_test_helpers import until
from layotto_core_test_helpers import OtlpCollector, ZipkinCollector, free_port, serve_asgi

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
PARENT = "00f067aa0ba902b7"
VALID = f"00-{TRACE}-{PARENT}-01"


# -- W3C trace context ---------------------------------------------------------------------


def test_a_valid_traceparent_parses_and_formats_back() -> None:
    context = parse_traceparent(VALID)
    assert context == SpanContext(TRACE, PARENT, True)
    assert format_traceparent(context) == VALID
    unsampled = parse_traceparent(f"00-{TRACE}-{PARENT}-00")
    assert unsampled is not None
    assert not unsampled.sampled
    # Only bit 0 of the flags is "sampled"; other bits are kept out of the decision.
    other = parse_traceparent(f"00-{TRACE}-{PARENT}-02")
    assert other is not None
    assert not other.sampled
    # Surrounding blanks (optional white space around a header value) are tolerated.
    assert parse_traceparent(f" {VALID}\t") == context


@pytest.mark.parametrize(
    "value",
    [
        None,
        "",
        "garbage",
        f"ff-{TRACE}-{PARENT}-01",  # version ff is forbidden
        f"00-{'0' * 32}-{PARENT}-01",  # all-zero trace id
        f"00-{TRACE}-{'0' * 16}-01",  # all-zero parent id
        f"00-{TRACE.upper()}-{PARENT}-01",  # upper-case hex
        f"00-{TRACE}-{PARENT.upper()}-01",
        f"0A-{TRACE}-{PARENT}-01",
        f"00-{TRACE}-{PARENT}-0g",
        f"00-{TRACE}-{PARENT}-01-extra",  # version 00 has exactly four fields
        f"00-{TRACE[:-1]}-{PARENT}-01",  # short trace id
        f"00-{TRACE}-{PARENT}0-1",
        f"00_{TRACE}_{PARENT}_01",
        f"0-{TRACE}-{PARENT}-01",
        f"01-{TRACE}-{PARENT}-01x",  # a later version may add fields, after a dash only
    ],
)
def test_a_malformed_traceparent_is_ignored(value: str | None) -> None:
    assert parse_traceparent(value) is None
    assert parse_headers(value, "vendor=x") is None


def test_a_later_version_is_read_for_its_known_fields() -> None:
    context = parse_traceparent(f"cc-{TRACE}-{PARENT}-01-what-the-future-holds")
    assert context == SpanContext(TRACE, PARENT, True)


def test_tracestate_is_kept_when_valid_and_dropped_when_not() -> None:
    assert parse_tracestate("rojo=00f067aa0ba902b7, congo=t61rcWkgMzE") == (
        "rojo=00f067aa0ba902b7,congo=t61rcWkgMzE"
    )
    assert parse_tracestate("tenant@vendor=v,,  a=b ") == "tenant@vendor=v,a=b"
    for bad in ("novalue", "UPPER=x", "a=b,a=c", "a=,b=c", "a=x=y", "a=b\tc", "=x"):
        assert parse_tracestate(bad) == "", bad
    assert parse_tracestate(",".join(f"k{i}=v" for i in range(33))) == ""  # 32 members at most
    assert parse_tracestate(",".join(f"k{i}={'v' * 60}" for i in range(10))) == ""  # > 512
    context = parse_headers(VALID, "rojo=1")
    assert context is not None
    assert context.tracestate == "rojo=1"
    # A bad tracestate does not cost the traceparent.
    assert parse_headers(VALID, "bad") == SpanContext(TRACE, PARENT, True)


# -- sampling, spans, the current span -----------------------------------------------------


def test_the_sampler_follows_a_sampled_parent_and_otherwise_the_rate() -> None:
    never, always, half = RatioSampler(0.0), RatioSampler(1.0), RatioSampler(0.5)
    sampled_parent = SpanContext(TRACE, PARENT, True)
    unsampled_parent = SpanContext(TRACE, PARENT, False)
    assert never.sample(TRACE, sampled_parent)
    assert not never.sample(TRACE, unsampled_parent)
    assert not never.sample(TRACE, None)
    assert always.sample(TRACE, None)
    assert always.sample(TRACE, unsampled_parent)
    # Decided on the trace id's low 8 bytes: the same id, the same answer, at every hop.
    low, high = "0" * 16 + "0" * 15 + "1", "0" * 16 + "f" * 16
    assert half.sample(low, None)
    assert not half.sample(high, None)
    ids = [f"{i:032x}" for i in range(0, 2**64, 2**64 // 1000)]
    assert 400 < sum(RatioSampler(0.5).sample("0" * 16 + i[16:], None) for i in ids) < 600
    with pytest.raises(ValueError, match=r"within 0\.\.1"):
        RatioSampler(1.5)


def test_a_recording_tracer_parents_spans_and_exports_only_sampled_ones() -> None:
    ended: list[Span] = []
    tracer = RecordingTracer(RatioSampler(1.0), [ended.append])
    root = tracer.start("root", SpanKind.SERVER)
    assert root.parent_id is None
    assert len(root.trace_id) == 32
    assert len(root.span_id) == 16
    assert root.sampled
    token = activate(root)
    try:
        assert current_span() is root
        assert current_traceparent() == root.traceparent
        child = tracer.start("child", SpanKind.CONSUMER)  # the current span is its parent
    finally:
        deactivate(token)
    assert current_span() is None
    assert (child.trace_id, child.parent_id) == (root.trace_id, root.span_id)
    remote = tracer.start("remote", SpanKind.SERVER, parse_headers(VALID, "rojo=1"))
    assert (remote.trace_id, remote.parent_id, remote.tracestate) == (TRACE, PARENT, "rojo=1")
    assert remote.headers() == {"traceparent": remote.traceparent, "tracestate": "rojo=1"}
    for span in (child, root):
        tracer.end(span)
    assert ended == [child, root]
    assert root.end_ns >= root.start_ns

    quiet = RecordingTracer(RatioSampler(0.0), [ended.append])
    span = quiet.start("unsampled", SpanKind.SERVER, SpanContext(TRACE, PARENT, False))
    assert not span.sampled
    assert span.traceparent.endswith("-00")
    quiet.end(span)
    assert len(ended) == 2
    assert NO_TRACER.start("x", SpanKind.SERVER) is None
    assert not NO_TRACER.enabled


def test_span_attributes_names_and_messages_are_bounded() -> None:
    span = Span(TRACE, PARENT, None, "n" * 500, SpanKind.SERVER, 1, True)
    assert len(span.name) == 128
    for i in range(MAX_ATTRIBUTES + 10):
        span.set(f"k{i}", "v" * 1000)
    assert len(span.attributes) == MAX_ATTRIBUTES
    assert all(len(v) == MAX_VALUE_LENGTH for v in span.attributes.values())
    span.set("k0", "again")  # an existing key may still change
    assert span.attributes["k0"] == "again"
    span.fail("x" * 1000)
    assert span.status == STATUS_ERROR
    assert len(span.status_message) == MAX_VALUE_LENGTH


# -- encodings -----------------------------------------------------------------------------


def _finished(kind: SpanKind = SpanKind.SERVER, *, error: bool = False) -> Span:
    span = Span(TRACE, "a" * 16, PARENT, "/dapr.proto.runtime.v1.Dapr/GetState", kind, 0, True)
    span.start_ns = 1_700_000_000_123_456_789
    span.end_ns = span.start_ns + 2_500_000
    span.set("db.system", "state")
    if error:
        span.fail("boom")
    return span


def test_zipkin_v2_json() -> None:
    [encoded] = json.loads(zipkin_body([_finished(error=True)], "shop"))
    assert encoded == {
        "traceId": TRACE,
        "id": "a" * 16,
        "parentId": PARENT,
        "name": "/dapr.proto.runtime.v1.Dapr/GetState",
        "kind": "SERVER",
        "timestamp": 1_700_000_000_123_456,
        "duration": 2500,
        "localEndpoint": {"serviceName": "shop"},
        "tags": {"db.system": "state", "otel.status_code": "ERROR", "error": "boom"},
    }


def test_otlp_http_json() -> None:
    body = json.loads(otlp_body([_finished(SpanKind.CONSUMER)], "shop", "1.2.3"))
    [resource] = body["resourceSpans"]
    assert resource["resource"]["attributes"] == [
        {"key": "service.name", "value": {"stringValue": "shop"}}
    ]
    [scope] = resource["scopeSpans"]
    assert scope["scope"] == {"name": "layotto", "version": "1.2.3"}
    [span] = scope["spans"]
    assert span == {
        "traceId": TRACE,
        "spanId": "a" * 16,
        "parentSpanId": PARENT,
        "name": "/dapr.proto.runtime.v1.Dapr/GetState",
        "kind": 5,
        "startTimeUnixNano": "1700000000123456789",
        "endTimeUnixNano": "1700000000125956789",
        "attributes": [{"key": "db.system", "value": {"stringValue": "state"}}],
        "status": {"code": 0},
    }


# -- the exporter --------------------------------------------------------------------------


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the HTTP collectors run on uvicorn


def _spans(n: int) -> list[Span]:
    spans = []
    for i in range(n):
        span = _finished()
        span.span_id = f"{i + 1:016x}"
        spans.append(span)
    return spans


@pytest.mark.anyio
async def test_batches_reach_a_zipkin_and_an_otlp_collector() -> None:
    zipkin, otlp = ZipkinCollector(), OtlpCollector()
    async with serve_asgi(zipkin) as zport, serve_asgi(otlp) as oport:
        config = TracingConfig(
            sampling_rate=1,
            zipkin_endpoint=f"http://127.0.0.1:{zport}/api/v2/spans",
            otlp_endpoint=f"http://127.0.0.1:{oport}/v1/traces",
        )
        exporter = TraceExporter(collectors(config, "shop"), batch_size=10, interval=30)
        async with anyio.create_task_group() as tg:
            await tg.start(exporter.run)
            spans = _spans(25)
            for span in spans[:10]:
                exporter.submit(span)
            # A full batch goes at once (no waiting for the 30 s interval) ...
            await until(lambda: len(zipkin.spans) == 10 and len(otlp.spans) == 10)
            assert zipkin.posts == 1
            for span in spans[10:]:
                exporter.submit(span)  # 15 queued: one more batch of 10 goes, 5 wait
            await until(lambda: len(zipkin.spans) >= 20)
            # ... the rest on the final flush at stop.
            await exporter.stop()
    assert len(zipkin.spans) == len(otlp.spans) == 25
    assert zipkin.posts == 3  # 10 + 10 + 5
    assert not zipkin.rejected
    assert not otlp.rejected
    assert {s["localEndpoint"]["serviceName"] for s in zipkin.spans} == {"shop"}
    assert {s["service"] for s in otlp.spans} == {"shop"}
    assert len({s["id"] for s in zipkin.spans}) == 25
    assert exporter.exported == 50
    assert exporter.dropped == 0


@pytest.mark.anyio
async def test_a_full_queue_drops_with_a_counted_warning(caplog: pytest.LogCaptureFixture) -> None:
    exporter = TraceExporter(
        [Collector("zipkin", "http://127.0.0.1:9/", lambda s: b"[]")], max_queue=5
    )
    with caplog.at_level(logging.WARNING, logger="layotto.actors.trace_exporter"):
        started = time.perf_counter()
        for span in _spans(50):
            exporter.submit(span)  # never waits: no actor is even running
        assert time.perf_counter() - started < 0.05
    assert exporter.queued == 5
    assert exporter.dropped == 45
    warnings = [r for r in caplog.records if "queue full" in r.getMessage()]
    assert len(warnings) == 1  # rate-limited


@pytest.mark.anyio
async def test_a_collector_that_is_down_costs_a_warning_and_a_bounded_stop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = f"http://127.0.0.1:{free_port()}/api/v2/spans"
    exporter = TraceExporter(
        collectors(TracingConfig(sampling_rate=1, zipkin_endpoint=down), "shop"),
        batch_size=5,
        interval=0.05,
        post_timeout=0.5,
    )
    with caplog.at_level(logging.WARNING, logger="layotto.actors.trace_exporter"):
        async with anyio.create_task_group() as tg:
            await tg.start(exporter.run)
            for span in _spans(12):
                exporter.submit(span)
            await until(lambda: exporter.failed == 12)
            with anyio.fail_after(5):
                await exporter.stop()
    assert exporter.exported == 0
    assert any("zipkin collector failed" in r.getMessage() for r in caplog.records)


def test_build_tracing_is_off_at_rate_zero_and_logs_with_stdout(
    caplog: pytest.LogCaptureFixture,
) -> None:
    assert build_tracing(TracingConfig(), "shop") == (NO_TRACER, None)
    tracer, exporter = build_tracing(TracingConfig(sampling_rate=1, stdout=True), "shop")
    assert tracer.enabled
    assert exporter is None
    with caplog.at_level(logging.INFO, logger="layotto.tracing.spans"):
        span = tracer.start("/v1.0/state/{store}", SpanKind.SERVER)
        assert span is not None
        tracer.end(span)
    [record] = [r for r in caplog.records if r.name == "layotto.tracing.spans"]
    assert record.levelno == logging.INFO
    assert record.span["trace_id"] == span.trace_id  # type: ignore[attr-defined]
