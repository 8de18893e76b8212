"""Tracing end to end, beyond the API calls: input binding events delivered to the app (HTTP
and gRPC), output binding calls (`bindings.http` to a real server), configuration updates
pushed to an HTTP app, and Layotto's OnTopicEvent. A sidecar in-process with `tracing:` set and
an in-test Zipkin collector receiving the exported JSON. Checked: each is a span of daprd's
name and kind (CONSUMER for what is delivered to the app, CLIENT for an output call) with
bounded attributes, and whoever is called next gets that span as its `traceparent`."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from grpclib.events import RecvRequest, listen
from grpclib.server import Server
from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.google.protobuf import Empty as PbEmpty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import RuntimeConfig, TracingConfig, embedded_default_components
from layotto.plugin import ConfigItem, ConfigStore, Kind
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto.tracing import parse_traceparent
from layotto_api_test_helpers import FakeHttpApp, until
from layotto_core_test_helpers import ZipkinCollector, serve_asgi
from starlette.responses import Response

pytestmark = pytest.mark.anyio

APP_ID = "shop"
TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
CALLER = "00f067aa0ba902b7"
CALLER_TRACEPARENT = f"00-{TRACE}-{CALLER}-01"
CRON = {"kind": "bindings", "type": "cron", "metadata": {"schedule": "@every 1s"}}
INVOKE_BINDING = "/dapr.proto.runtime.v1.Dapr/InvokeBinding"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib is asyncio-only


def config(
    tracing: TracingConfig, components: list[dict[str, Any]] | None = None, **app: Any
) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "app": {"id": APP_ID, **app},
            "components": [
                *(c.model_dump() for c in embedded_default_components()),
                *(components or []),
            ],
            "tracing": tracing.model_dump(),
        }
    )


def http_output_binding(url: str) -> dict[str, Any]:
    """An http output binding component named `out`, calling `url`."""
    return {"name": "out", "kind": "bindings", "type": "http", "metadata": {"url": url}}


@asynccontextmanager
async def collector() -> AsyncIterator[tuple[ZipkinCollector, TracingConfig]]:
    zipkin = ZipkinCollector()
    async with serve_asgi(zipkin) as port:
        yield (
            zipkin,
            TracingConfig(sampling_rate=1, zipkin_endpoint=f"http://127.0.0.1:{port}/api/v2/spans"),
        )


def span_of(spans: list[dict[str, Any]], traceparent: str | None) -> dict[str, Any]:
    """The exported span `traceparent` names."""
    context = parse_traceparent(traceparent)
    assert context is not None, traceparent
    found = [s for s in spans if s["id"] == context.span_id]
    assert len(found) == 1, (traceparent, [(s["name"], s["id"]) for s in spans])
    assert found[0]["traceId"] == context.trace_id
    return found[0]


@asynccontextmanager
async def grpc_app(*servicers: Any) -> AsyncIterator[tuple[int, list[tuple[str, dict[str, Any]]]]]:
    """Serve `servicers`; yields the port and every call's (method, metadata)."""
    server = Server(list(servicers))
    calls: list[tuple[str, dict[str, Any]]] = []

    async def on_request(event: RecvRequest) -> None:
        calls.append((event.method_name, dict(event.metadata)))

    listen(server, RecvRequest, on_request)
    await server.start("127.0.0.1", 0)
    port = int(server._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    try:
        yield port, calls
    finally:
        server.close()
        await server.wait_closed()


# -- input bindings --------------------------------------------------------------------------


async def test_an_input_binding_event_is_a_consumer_span_the_http_app_continues() -> None:
    app = FakeHttpApp([])
    app.bindings = {"tick", "tock"}
    app.answers["/tock"] = lambda call, nth: Response(status_code=500)
    components = [{"name": "tick", **CRON}, {"name": "tock", **CRON}]
    async with (
        collector() as (zipkin, tracing),
        serve_asgi(app.asgi) as port,
        run_sidecar(config(tracing, components, protocol="http"), app_port=port),
    ):
        await app.wait(lambda: bool(app.to("/tick")) and bool(app.to("/tock")))
    tick = span_of(zipkin.spans, app.to("/tick")[0].headers.get("traceparent"))
    assert tick["name"] == "bindings/tick"
    assert tick["kind"] == "CONSUMER"
    assert "parentId" not in tick  # a cron tick comes with no trace: a new one
    assert tick["tags"] == {"db.system": "bindings", "db.name": "tick", "rpc.service": "Dapr"}
    tock = span_of(zipkin.spans, app.to("/tock")[0].headers.get("traceparent"))
    assert tock["name"] == "bindings/tock"
    assert tock["tags"]["otel.status_code"] == "ERROR"  # the app did not process it
    assert "HTTP 500" in tock["tags"]["error"]
    assert not zipkin.rejected


class BindingApp(dapr_pb.AppCallbackBase):
    """A Dapr gRPC app reading input binding `tick`, answering each event by sending its data
    on to output binding `out`."""

    def __init__(self) -> None:
        self.events: list[dapr_pb.BindingEventRequest] = []

    async def list_input_bindings(self, message: PbEmpty) -> dapr_pb.ListInputBindingsResponse:
        return dapr_pb.ListInputBindingsResponse(bindings=["tick"])

    async def on_binding_event(
        self, message: dapr_pb.BindingEventRequest
    ) -> dapr_pb.BindingEventResponse:
        self.events.append(message)
        return dapr_pb.BindingEventResponse(to=["out"], data=b'{"tick": 1}')


async def test_a_grpc_apps_event_and_its_reply_stay_in_the_events_trace() -> None:
    app = BindingApp()
    target = FakeHttpApp([])
    async with (
        collector() as (zipkin, tracing),
        grpc_app(app) as (port, calls),
        serve_asgi(target.asgi) as target_port,
    ):
        out = http_output_binding(f"http://127.0.0.1:{target_port}/hook")
        components = [{"name": "tick", **CRON}, out]
        async with run_sidecar(config(tracing, components, protocol="dapr"), app_port=port):
            await target.wait(lambda: bool(target.to("/hook")))
    [(_, metadata), *_] = [c for c in calls if c[0].endswith("/OnBindingEvent")]
    event = span_of(zipkin.spans, metadata.get("traceparent"))
    assert event["name"] == "bindings/tick"
    assert event["kind"] == "CONSUMER"
    # The reply's output call is a CLIENT span, child of the event's; the target gets it.
    sent = span_of(zipkin.spans, target.to("/hook")[0].headers.get("traceparent"))
    assert sent["name"] == "bindings/out/create"
    assert sent["kind"] == "CLIENT"
    assert sent["parentId"] == event["id"]
    assert sent["tags"] == {"db.system": "bindings", "db.name": "out", "db.operation": "create"}


# -- output bindings -------------------------------------------------------------------------


async def test_an_output_binding_call_is_a_client_span_the_target_continues() -> None:
    target = FakeHttpApp([])
    async with (
        collector() as (zipkin, tracing),
        serve_asgi(target.asgi) as target_port,
    ):
        out = http_output_binding(f"http://127.0.0.1:{target_port}")
        async with run_sidecar(config(tracing, [out])) as sc, httpx.AsyncClient() as http:
            channel = sc.channel()
            try:
                await dapr_pb.DaprStub(channel).invoke_binding(
                    dapr_pb.InvokeBindingRequest(
                        name="out", operation="post", data=b"{}", metadata={"path": "/grpc"}
                    ),
                    metadata={"traceparent": CALLER_TRACEPARENT, "tracestate": "rojo=1"},
                )
            finally:
                channel.close()
            answer = await http.post(
                f"{sc.http_url}/v1.0/bindings/out",
                headers={"traceparent": CALLER_TRACEPARENT},
                json={"operation": "post", "data": {}, "metadata": {"path": "/http"}},
            )
            assert answer.status_code == 200, answer.text
    [over_grpc] = target.to("/grpc")
    client = span_of(zipkin.spans, over_grpc.headers.get("traceparent"))
    server = next(s for s in zipkin.spans if s["id"] == client["parentId"])
    assert server["name"] == INVOKE_BINDING
    assert (server["traceId"], server["parentId"]) == (TRACE, CALLER)
    assert client["name"] == "bindings/out/post"
    assert client["kind"] == "CLIENT"
    assert client["tags"] == {"db.system": "bindings", "db.name": "out", "db.operation": "post"}
    assert over_grpc.headers["tracestate"] == "rojo=1"  # the caller's, carried on
    [over_http] = target.to("/http")
    client = span_of(zipkin.spans, over_http.headers.get("traceparent"))
    server = next(s for s in zipkin.spans if s["id"] == client["parentId"])
    assert server["name"] == "/v1.0/bindings/{name}"
    assert (server["traceId"], server["parentId"]) == (TRACE, CALLER)


async def test_a_failed_output_binding_call_is_an_error_span() -> None:
    target = FakeHttpApp([])
    target.answers["/"] = lambda call, nth: Response(status_code=503)
    async with (
        collector() as (zipkin, tracing),
        serve_asgi(target.asgi) as target_port,
    ):
        out = http_output_binding(f"http://127.0.0.1:{target_port}")
        async with run_sidecar(config(tracing, [out])) as sc, httpx.AsyncClient() as http:
            answer = await http.post(f"{sc.http_url}/v1.0/bindings/out", json={"operation": "get"})
            assert answer.status_code == 500
    client = span_of(zipkin.spans, target.to("/", "GET")[0].headers.get("traceparent"))
    assert client["tags"]["otel.status_code"] == "ERROR"
    assert "503" in client["tags"]["error"]


# -- configuration updates -------------------------------------------------------------------


async def test_a_configuration_push_carries_its_span_to_the_app() -> None:
    app = FakeHttpApp([])
    components = [{"name": "cfg", "kind": "configuration", "type": "in-memory"}]
    async with (
        collector() as (zipkin, tracing),
        serve_asgi(app.asgi) as port,
        run_sidecar(config(tracing, components, protocol="http"), app_port=port) as sc,
        httpx.AsyncClient(base_url=sc.http_url) as http,
    ):
        subscribed = await http.get(
            "/v1.0/configuration/cfg/subscribe",
            params={"key": "color"},
            headers={"traceparent": CALLER_TRACEPARENT},
        )
        assert subscribed.status_code == 200, subscribed.text
        await write(sc, "cfg", color="blue")
        await app.wait(lambda: bool(app.to("/configuration/cfg/color")))
    [pushed] = app.to("/configuration/cfg/color")
    span = span_of(zipkin.spans, pushed.headers.get("traceparent"))
    assert span["name"] == "configuration/cfg"
    assert span["kind"] == "CONSUMER"
    # An update has no caller: a trace of its own, not the subscribe call's.
    assert span["traceId"] != TRACE
    assert "parentId" not in span
    assert span["tags"] == {"db.system": "configuration", "db.name": "cfg"}
    assert not any("color" in str(s) or "blue" in str(s) for s in zipkin.spans)


async def write(sc: Sidecar, name: str, **items: str) -> None:
    store = sc.runtime.components.of_kind(Kind.CONFIGURATION)[name].component
    assert isinstance(store, ConfigStore)
    await store.set(
        APP_ID,
        [
            ConfigItem(key, value, store.default_group, store.default_label)
            for key, value in items.items()
        ],
        {},
    )


# -- Layotto's OnTopicEvent ------------------------------------------------------------------


class LayottoApp(pb.AppCallbackBase):
    def __init__(self) -> None:
        self.events: list[pb.TopicEventRequest] = []

    async def list_topic_subscriptions(self, message: PbEmpty) -> pb.ListTopicSubscriptionsResponse:
        return pb.ListTopicSubscriptionsResponse(
            subscriptions=[pb.TopicSubscription(pubsub_name="pubsub", topic="orders")]
        )

    async def on_topic_event(self, message: pb.TopicEventRequest) -> pb.TopicEventResponse:
        self.events.append(message)
        return pb.TopicEventResponse()


async def test_layottos_on_topic_event_carries_the_deliverys_span() -> None:
    app = LayottoApp()
    async with (
        collector() as (zipkin, tracing),
        grpc_app(app) as (port, calls),
        run_sidecar(config(tracing, protocol="layotto"), app_port=port) as sc,
    ):
        dispatcher = sc.runtime.dispatcher
        assert dispatcher is not None
        await until(lambda: len(dispatcher.info()) == 1, within=10)
        channel = sc.channel()
        try:
            await pb.RuntimeStub(channel).publish_event(
                pb.PublishEventRequest(pubsub_name="pubsub", topic="orders", data=b"{}"),
                metadata={"traceparent": CALLER_TRACEPARENT},
            )
        finally:
            channel.close()
        await until(lambda: dispatcher.info()[0]["stats"]["delivered"] == 1, within=10)
    [(_, metadata)] = [c for c in calls if c[0].endswith("/OnTopicEvent")]
    consumer = span_of(zipkin.spans, metadata.get("traceparent"))
    assert consumer["name"] == "pubsub/orders"
    assert consumer["kind"] == "CONSUMER"
    assert consumer["traceId"] == TRACE
    publish = next(s for s in zipkin.spans if s["id"] == consumer["parentId"])
    assert publish["name"] == "/spec.proto.runtime.v1.Runtime/PublishEvent"
