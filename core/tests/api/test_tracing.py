"""Tracing end to end: a sidecar in-process with `tracing:` set, real gRPC and HTTP calls, a
Dapr HTTP app, and in-test Zipkin / OTLP collectors receiving the exported JSON. Checked: the
caller's trace is continued (gRPC and HTTP), `traceparent` comes back on HTTP answers, an
invocation reaches the app with the sidecar's span as its parent, a published event reaches
the subscriber in the same trace (through a CONSUMER span), sampling 0 records nothing, and a
collector that is down slows and fails nothing."""

from __future__ import annotations

import json
import logging
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from grpclib.const import Cardinality
from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import RuntimeConfig, TracingConfig, embedded_default_components, load_config
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto.tracing import NO_TRACER, parse_traceparent
from layotto_api_test_helpers import FakeHttpApp, until
from layotto_core_test_helpers import OtlpCollector, ZipkinCollector, free_port, serve_asgi

pytestmark = pytest.mark.anyio

APP_ID = "shop"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{TRACE}-{CALLER}-01"
GET_STATE = "/dapr.proto.runtime.v1.Dapr/GetState"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib is asyncio-only


def config(tracing: TracingConfig, **app: Any) -> RuntimeConfig:
    base = RuntimeConfig.model_validate(
        {
            "app": {"id": APP_ID, **app},
            "components": [c.model_dump() for c in embedded_default_components()],
            "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.05},
        }
    )
    return base.model_copy(update={"tracing": tracing})


@asynccontextmanager
async def collectors() -> AsyncIterator[tuple[ZipkinCollector, OtlpCollector, TracingConfig]]:
    zipkin, otlp = ZipkinCollector(), OtlpCollector()
    async with serve_asgi(zipkin) as zport, serve_asgi(otlp) as oport:
        yield (
            zipkin,
            otlp,
            TracingConfig(
                sampling_rate=1,
                zipkin_endpoint=f"http://127.0.0.1:{zport}/api/v2/spans",
                otlp_endpoint=f"http://127.0.0.1:{oport}/v1/traces",
            ),
        )


def named(spans: list[dict[str, Any]], name: str) -> dict[str, Any]:
    found = [s for s in spans if s["name"] == name]
    assert len(found) == 1, (name, [s["name"] for s in spans])
    return found[0]


async def get_state_with_metadata(
    sidecar: Sidecar, metadata: dict[str, Any]
) -> tuple[dapr_pb.GetStateResponse, Any]:
    """Dapr GetState with `metadata`; (the reply, the response's initial metadata)."""
    channel = sidecar.channel()
    try:
        async with channel.request(
            GET_STATE,
            Cardinality.UNARY_UNARY,
            dapr_pb.GetStateRequest,
            dapr_pb.GetStateResponse,
            metadata=metadata,
        ) as stream:
            await stream.send_message(
                dapr_pb.GetStateRequest(store_name="statestore", key="user-42"), end=True
            )
            await stream.recv_initial_metadata()
            reply = await stream.recv_message()
            assert reply is not None
            return reply, stream.initial_metadata
    finally:
        channel.close()


async def test_a_grpc_call_continues_the_callers_trace() -> None:
    async with collectors() as (zipkin, otlp, tracing), run_sidecar(config(tracing)) as sc:
        _, initial = await get_state_with_metadata(
            sc, {"traceparent": CALLER_TRACEPARENT, "tracestate": "rojo=1"}
        )
        assert "traceparent" not in initial  # nothing added to gRPC answers
        channel = sc.channel()
        try:  # the Layotto API, without a caller's trace: a new one
            await pb.RuntimeStub(channel).get_state(
                pb.GetStateRequest(store_name="statestore", key="user-42")
            )
        finally:
            channel.close()
    dapr = named(zipkin.spans, GET_STATE)
    assert dapr["traceId"] == TRACE
    assert dapr["parentId"] == CALLER
    assert dapr["kind"] == "SERVER"
    assert dapr["localEndpoint"] == {"serviceName": APP_ID}
    assert dapr["tags"] == {
        "rpc.system": "grpc",
        "rpc.service": "Dapr",
        "dapr.api": GET_STATE,
        "dapr.protocol": "grpc",
        "db.system": "state",
        "db.name": "statestore",
        "db.statement": GET_STATE,
        "db.connection_string": "state",
    }
    layotto = named(zipkin.spans, "/spec.proto.runtime.v1.Runtime/GetState")
    assert layotto["traceId"] != TRACE
    assert "parentId" not in layotto
    assert not any("user-42" in json.dumps(s) for s in zipkin.spans)
    # The same spans went to the OTLP collector, with the caller's tracestate kept.
    span = next(s for s in otlp.spans if s["name"] == GET_STATE)
    assert (span["traceId"], span["parentSpanId"], span["kind"]) == (TRACE, CALLER, 2)
    assert span["traceState"] == "rojo=1"
    assert span["service"] == APP_ID
    assert span["attributes"]["db.name"] == "statestore"
    assert not zipkin.rejected
    assert not otlp.rejected


async def test_a_grpc_error_is_an_error_span() -> None:
    async with collectors() as (zipkin, _, tracing), run_sidecar(config(tracing)) as sc:
        channel = sc.channel()
        try:
            with pytest.raises(Exception, match="nope"):
                await dapr_pb.DaprStub(channel).get_state(
                    dapr_pb.GetStateRequest(store_name="nope", key="k")
                )
        finally:
            channel.close()
    span = named(zipkin.spans, GET_STATE)
    assert span["tags"]["otel.status_code"] == "ERROR"
    assert "nope" in span["tags"]["error"]
    assert span["tags"]["rpc.grpc.status_code"] == "3"  # INVALID_ARGUMENT


async def test_an_http_call_answers_traceparent_and_is_traced() -> None:
    async with (
        collectors() as (zipkin, _, tracing),
        run_sidecar(config(tracing)) as sc,
        httpx.AsyncClient() as http,
    ):
        fresh = await http.get(f"{sc.http_url}/v1.0/state/statestore/user-42")
        followed = await http.get(
            f"{sc.http_url}/v1.0/state/statestore/user-42",
            headers={"traceparent": CALLER_TRACEPARENT},
        )
        garbage = await http.get(
            f"{sc.http_url}/v1.0/state/statestore/user-42",
            headers={"traceparent": f"00-{TRACE.upper()}-{CALLER}-01"},
        )
        health = await http.get(f"{sc.http_url}/v1.0/healthz")
    assert fresh.status_code == followed.status_code == garbage.status_code == 204
    new, continued, restarted = (
        parse_traceparent(r.headers["traceparent"]) for r in (fresh, followed, garbage)
    )
    assert new is not None
    assert continued is not None
    assert restarted is not None
    assert new.trace_id != TRACE
    assert new.sampled
    assert continued.trace_id == TRACE
    assert continued.span_id != CALLER
    assert restarted.trace_id not in (TRACE, TRACE.lower(), new.trace_id)  # a new trace
    assert "traceparent" not in health.headers  # health endpoints are not traced
    route = "/v1.0/state/{store}/{key:path}"
    spans = [s for s in zipkin.spans if s["name"] == route]
    assert len(spans) == 3
    span = next(s for s in spans if s["traceId"] == TRACE)
    assert span["parentId"] == CALLER
    assert span["id"] == continued.span_id
    assert span["tags"] == {
        "dapr.api": f"GET {route}",
        "dapr.protocol": "http",
        "dapr.status_code": "204",
        "db.system": "state",
        "db.name": "statestore",
        "db.statement": f"GET {route}",
    }
    assert not any("user-42" in json.dumps(s) for s in zipkin.spans)


async def test_an_invocation_forwards_the_sidecars_span_to_the_app() -> None:
    app = FakeHttpApp(subscriptions=[])
    async with (
        collectors() as (zipkin, _, tracing),
        serve_asgi(app.asgi) as port,
        run_sidecar(config(tracing, protocol="http"), app_port=port) as sc,
        httpx.AsyncClient() as http,
    ):
        answer = await http.post(
            f"{sc.http_url}/v1.0/invoke/{APP_ID}/method/hello",
            headers={"traceparent": CALLER_TRACEPARENT},
            content=b"hi",
        )
        assert answer.status_code == 200
        channel = sc.channel()
        try:  # and over gRPC, without a caller's trace
            await dapr_pb.DaprStub(channel).invoke_service(
                dapr_pb.InvokeServiceRequest(
                    id=APP_ID,
                    message=dapr_common.InvokeRequest(
                        method="again",
                        http_extension=dapr_common.HttpExtension(
                            verb=dapr_common.HttpExtensionVerb.POST
                        ),
                    ),
                )
            )
        finally:
            channel.close()
    [hello] = app.to("/hello")
    received = parse_traceparent(hello.headers["traceparent"])
    assert received is not None
    assert received.trace_id == TRACE
    span = named(zipkin.spans, f"CallLocal/{APP_ID}/hello")
    assert received.span_id == span["id"] != CALLER  # a child of the sidecar's span
    assert span["parentId"] == CALLER
    assert span["traceId"] == TRACE
    assert span["tags"]["net.peer.name"] == APP_ID
    [again] = app.to("/again")
    grpc_span = named(zipkin.spans, f"CallLocal/{APP_ID}/again")
    assert again.headers["traceparent"] == f"00-{grpc_span['traceId']}-{grpc_span['id']}-01"
    assert grpc_span["tags"]["rpc.service"] == "ServiceInvocation"


async def test_publish_and_delivery_stay_in_one_trace() -> None:
    app = FakeHttpApp(subscriptions=[{"pubsubname": "pubsub", "topic": "orders", "route": "/o"}])
    async with (
        collectors() as (zipkin, _, tracing),
        serve_asgi(app.asgi) as port,
        run_sidecar(config(tracing, protocol="http"), app_port=port) as sc,
        httpx.AsyncClient() as http,
    ):
        dispatcher = sc.runtime.dispatcher
        assert dispatcher is not None
        await until(lambda: len(dispatcher.info()) == 1, within=10)
        published = await http.post(
            f"{sc.http_url}/v1.0/publish/pubsub/orders",
            headers={"traceparent": CALLER_TRACEPARENT},
            json={"order": 1},
        )
        assert published.status_code == 204
        await app.wait(lambda: bool(app.to("/o")))
        await until(lambda: dispatcher.info()[0]["stats"]["delivered"] == 1)
    [delivery] = app.to("/o")
    publish = named(zipkin.spans, "/v1.0/publish/{pubsub}/{topic:path}")
    consumer = named(zipkin.spans, "pubsub/orders")
    assert publish["traceId"] == consumer["traceId"] == TRACE
    assert publish["parentId"] == CALLER
    assert publish["tags"]["messaging.destination.name"] == "orders"
    # The event carries the publishing span; the delivery is its child, the app's parent.
    event = json.loads(delivery.body)
    assert event["traceparent"] == f"00-{TRACE}-{publish['id']}-01"
    assert consumer["kind"] == "CONSUMER"
    assert consumer["parentId"] == publish["id"]
    assert consumer["tags"] == {
        "messaging.system": "pubsub",
        "messaging.destination.name": "orders",
        "dapr.pubsub": "pubsub",
    }
    assert delivery.headers["traceparent"] == f"00-{TRACE}-{consumer['id']}-01"


def native_tracing_config(tmp_path: Path, port: int, *, sampling_rate: int) -> Path:
    """A native layotto.yaml whose tracing section exports to the Zipkin collector on `port`."""
    native = tmp_path / "layotto.yaml"
    native.write_text(
        f"app:\n  id: {APP_ID}\ntracing:\n  sampling_rate: {sampling_rate}\n"
        f"  zipkin_endpoint: http://127.0.0.1:{port}/api/v2/spans\n"
    )
    return native


async def test_sampling_zero_records_and_exports_nothing(tmp_path: Path) -> None:
    zipkin = ZipkinCollector()
    async with serve_asgi(zipkin) as port:
        native = native_tracing_config(tmp_path, port, sampling_rate=0)
        loaded = load_config(native)
        assert loaded.tracing.zipkin_endpoint.endswith("/api/v2/spans")
        base = loaded.model_copy(update={"components": embedded_default_components()})
        async with run_sidecar(base) as sc, httpx.AsyncClient() as http:
            assert sc.runtime.tracer is NO_TRACER
            assert sc.runtime.trace_exporter is None
            answer = await http.get(
                f"{sc.http_url}/v1.0/state/statestore/k",
                headers={"traceparent": CALLER_TRACEPARENT},
            )
            assert "traceparent" not in answer.headers
            await get_state_with_metadata(sc, {"traceparent": CALLER_TRACEPARENT})
    assert zipkin.posts == 0
    assert zipkin.spans == []


async def test_a_native_yaml_tracing_section_turns_tracing_on(tmp_path: Path) -> None:
    zipkin = ZipkinCollector()
    async with serve_asgi(zipkin) as port:
        native = native_tracing_config(tmp_path, port, sampling_rate=1)
        base = load_config(native).model_copy(update={"components": embedded_default_components()})
        async with run_sidecar(base) as sc:
            await get_state_with_metadata(sc, {})
    assert [s["name"] for s in zipkin.spans] == [GET_STATE]


async def test_a_daprd_configuration_file_turns_tracing_on(tmp_path: Path) -> None:
    zipkin = ZipkinCollector()
    async with serve_asgi(zipkin) as port:
        daprd = tmp_path / "config.yaml"
        daprd.write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Configuration\nmetadata: {name: c}\n"
            'spec:\n  tracing:\n    samplingRate: "1"\n'
            f"    zipkin: {{endpointAddress: 'http://127.0.0.1:{port}/api/v2/spans'}}\n"
        )
        base = load_config(daprd).model_copy(update={"components": embedded_default_components()})
        async with run_sidecar(base) as sc:
            await get_state_with_metadata(sc, {})
    assert [s["name"] for s in zipkin.spans] == [GET_STATE]


async def test_a_collector_that_is_down_neither_slows_nor_fails_calls(
    caplog: pytest.LogCaptureFixture,
) -> None:
    down = TracingConfig(
        sampling_rate=1, zipkin_endpoint=f"http://127.0.0.1:{free_port()}/api/v2/spans"
    )
    with caplog.at_level(logging.WARNING, logger="layotto.actors.trace_exporter"):
        with anyio.fail_after(30):
            async with run_sidecar(config(down)) as sc, httpx.AsyncClient() as http:
                exporter = sc.runtime.trace_exporter
                assert exporter is not None
                started = time.perf_counter()
                for _ in range(50):
                    answer = await http.get(f"{sc.http_url}/v1.0/state/statestore/k")
                    assert answer.status_code == 204
                elapsed = time.perf_counter() - started
                await until(lambda: exporter.failed >= 50, within=10)
                stopping = time.perf_counter()
            stopped_in = time.perf_counter() - stopping
    assert elapsed < 5  # ~1 ms a call here; the exporter never holds a request
    assert stopped_in < 10  # the final flush is bounded
    assert exporter.exported == 0
    assert any("zipkin collector failed" in r.getMessage() for r in caplog.records)
