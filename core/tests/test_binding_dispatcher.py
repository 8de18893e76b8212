"""BindingDispatcher + BindingCallbackClient (+ the runtime's AppHealth) against a fake Dapr
app: a grpclib `dapr.proto.runtime.v1.AppCallback` server on a real socket (dapr-compat.md 1.4,
2.7, 3.6).

The input binding is a test component that behaves like a redelivering backend: it hands each
queued event to the handler until the handler returns (a raise = not processed = again)."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
import grpclib.const
import pytest
from grpclib import GRPCError
from grpclib.events import RecvRequest, listen
from grpclib.server import Server
from layotto._proto.dapr.proto.common import v1 as common_pb
from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto._proto.google.protobuf import Empty
from layotto.actors import app_health
from layotto.actors.app_health import AppHealth
from layotto.actors.binding_dispatcher import (
    APP_INDICATOR,
    BindingDispatcher,
    RestartPolicy,
    binding_indicator,
)
from layotto.api.app_connection import AppConnection
from layotto.api.binding_callback import BindingCallbackClient, to_reply
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import BackendUnavailable
from layotto.health import BOTH, STARTUP, HealthRegistry, Probe
from layotto.plugin import (
    BindingEvent,
    BindingHandler,
    BindingRequest,
    BindingResponse,
    ComponentContext,
    ComponentSpec,
    Concurrency,
    Consistency,
    GetRequest,
    Health,
    HealthStatus,
    InputBinding,
    Kind,
    OutputBinding,
)
from layotto.plugin.component import ComponentMetadata
from layotto.services.bindings import BindingService
from layotto.services.state import StateService
from layotto.tracing import NO_TRACER, RatioSampler, RecordingTracer, Span, Tracer

pytestmark = pytest.mark.anyio

APP_ID = "app"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib is asyncio-only


# -- components ------------------------------------------------------------------------------


class QueueBinding(InputBinding, OutputBinding):
    """Input: delivers `queue` in order, each event again until the handler returns (after a
    short pause), like a backend that redelivers. Output: records what was sent."""

    def __init__(self) -> None:
        self.send, self._receive = anyio.create_memory_object_stream[BindingEvent](100)
        self.processed: list[BindingEvent] = []
        self.attempts = 0
        self.reads = 0
        self.fail_reads = 0  # the next n reads raise at once
        self.sent: list[BindingRequest] = []
        self.fail_sends: list[Exception] = []

    def operations(self) -> Sequence[str]:
        return ("create",)

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if self.fail_sends:
            raise self.fail_sends.pop(0)
        self.sent.append(request)
        return BindingResponse()

    async def read(self, handler: BindingHandler) -> None:
        self.reads += 1
        if self.fail_reads:
            self.fail_reads -= 1
            raise BackendUnavailable("the backend is gone")
        async for event in self._receive:
            while True:
                self.attempts += 1
                try:
                    await handler(event)
                except Exception:
                    await anyio.sleep(0.05)
                    continue
                self.processed.append(event)
                break


@dataclass
class FakeApp(pb.AppCallbackBase):
    """A Dapr app: lists `bindings`; answers events with `reply(request)` (or raises)."""

    bindings: list[str] | None = field(default_factory=lambda: ["in"])
    reply: Callable[[pb.BindingEventRequest], pb.BindingEventResponse] = field(
        default=lambda request: pb.BindingEventResponse()
    )
    events: list[pb.BindingEventRequest] = field(default_factory=list)
    tokens: list[str | None] = field(default_factory=list)
    traceparents: list[str | None] = field(default_factory=list)
    list_calls: int = 0
    list_error: grpclib.const.Status | None = None

    async def list_input_bindings(self, message: Empty) -> pb.ListInputBindingsResponse:
        self.list_calls += 1
        if self.list_error is not None:
            raise GRPCError(self.list_error, "no")
        if self.bindings is None:
            raise GRPCError(grpclib.const.Status.UNIMPLEMENTED)
        return pb.ListInputBindingsResponse(bindings=self.bindings)

    async def on_binding_event(self, message: pb.BindingEventRequest) -> pb.BindingEventResponse:
        self.events.append(message)
        return self.reply(message)


class HealthCheck(pb.AppCallbackHealthCheckBase):
    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy

    async def health_check(self, message: Empty) -> pb.HealthCheckResponse:
        if not self.healthy:
            raise GRPCError(grpclib.const.Status.INTERNAL, "not now")
        return pb.HealthCheckResponse()


@asynccontextmanager
async def serve(app: FakeApp | None, *others: Any) -> AsyncIterator[int]:
    server = Server([*([app] if app else []), *others])

    async def on_request(event: RecvRequest) -> None:
        if app is not None and event.method_name.endswith("/OnBindingEvent"):
            token = event.metadata.get("dapr-api-token")
            app.tokens.append(token if isinstance(token, str) else None)
            traceparent = event.metadata.get("traceparent")
            app.traceparents.append(traceparent if isinstance(traceparent, str) else None)

    listen(server, RecvRequest, on_request)
    await server.start("127.0.0.1", 0)
    port = int(server._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]
    try:
        yield port
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            server.close()
            await server.wait_closed()


class _Meta(ComponentMetadata):
    pass


def _built(name: str, kind: Kind, type_: str, component: Any) -> BuiltComponent:
    spec = ComponentSpec(kind, type_, _Meta, lambda m, c: component)
    return BuiltComponent(ComponentConfig(name=name, kind=kind, type=type_), spec, component)


class RecordingHealth(HealthRegistry):
    """Remembers every status an indicator was set to."""

    def __init__(self) -> None:
        self.history: list[tuple[str, HealthStatus]] = []
        super().__init__()

    def set(self, name: str, health: Health, probes: frozenset[Probe] = BOTH) -> None:
        self.history.append((name, health.status))
        super().set(name, health, probes)


@dataclass
class Harness:
    app: FakeApp
    source: QueueBinding
    out: QueueBinding
    store: InMemoryStateStore
    state: StateService
    health: RecordingHealth
    app_health: AppHealth
    dispatcher: BindingDispatcher

    @property
    def statuses(self) -> list[HealthStatus]:
        """What the `in` binding's indicator was set to, in order."""
        name = binding_indicator("in")
        return [status for indicator, status in self.health.history if indicator == name]

    async def emit(self, data: bytes, **metadata: str) -> None:
        await self.source.send.send(BindingEvent(data, metadata))

    async def until(self, condition: Callable[[], bool], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            for _ in iter(int, 1):  # poll a test double until the deadline
                if condition():
                    return
                await anyio.sleep(0.02)

    def status(self, name: str) -> HealthStatus | None:
        health = self.health.get(name)
        return None if health is None else health.status


@asynccontextmanager
async def running(
    app: FakeApp | None = None,
    *,
    token: str | None = None,
    grace: float = 2.0,
    fail_reads: int = 0,
    check: HealthCheck | None = None,
    wait_up: bool = True,
    tracer: Tracer = NO_TRACER,
) -> AsyncIterator[Harness]:
    app = app or FakeApp()
    source, out = QueueBinding(), QueueBinding()
    source.fail_reads = fail_reads
    store = InMemoryStateStore.create(InMemoryStateMetadata(), ComponentContext("statestore", ""))
    registry = ComponentRegistry()
    registry.tracer = tracer
    await registry.start(
        [
            _built("in", Kind.BINDINGS, "queue", source),
            _built("out", Kind.BINDINGS, "queue", out),
            _built("statestore", Kind.STATE, "in-memory", store),
        ]
    )
    health = RecordingHealth()
    health.set(STARTUP, Health.up(), BOTH)  # the runtime's part: only ours counts here
    state = StateService(registry, APP_ID, default_key_prefix="appid")
    async with serve(app, *([check] if check else [])) as port:
        connection = AppConnection("127.0.0.1", port, api_token=token)
        monitor = AppHealth(connection, health, interval=0.05, startup_interval=0.05)
        dispatcher = BindingDispatcher(
            BindingService(registry),
            state,
            BindingCallbackClient(connection),
            health,
            monitor,
            grace_period=grace,
            restart=RestartPolicy(initial=0.05, cap=0.2),
        )
        try:
            async with anyio.create_task_group() as tg:
                await tg.start(monitor.run)
                await tg.start(dispatcher.run)
                harness = Harness(app, source, out, store, state, health, monitor, dispatcher)
                if wait_up:
                    await harness.until(lambda: harness.status(APP_INDICATOR) is HealthStatus.UP)
                yield harness
                with anyio.fail_after(10):
                    await dispatcher.stop()
                    await monitor.stop()
        finally:
            connection.close()
            await registry.close()


# -- listing ---------------------------------------------------------------------------------


async def test_events_are_delivered_to_the_listed_binding(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    app = FakeApp(bindings=["in", "nowhere", "in"])
    async with running(app, token="app-token") as h:
        assert h.dispatcher.reading == ["in"]
        assert h.status(binding_indicator("in")) is HealthStatus.UP
        assert h.health.status(Probe.READINESS) is HealthStatus.UP
        await h.emit(b"one", source="test")
        await h.emit(b"two")
        await h.until(lambda: len(h.source.processed) == 2)
    assert app.list_calls == 1
    assert [(e.name, e.data, dict(e.metadata)) for e in app.events] == [
        ("in", b"one", {"source": "test"}),
        ("in", b"two", {}),
    ]
    assert app.tokens == ["app-token", "app-token"]
    warned = [r.getMessage() for r in caplog.records if "nowhere" in r.getMessage()]
    assert len(warned) == 1
    assert "is configured: it gets no events" in warned[0]
    # Stopped: the indicators are gone.
    assert h.health.get(APP_INDICATOR) is None
    assert h.health.get(binding_indicator("in")) is None


@pytest.mark.parametrize(
    "error", [None, grpclib.const.Status.INTERNAL, grpclib.const.Status.PERMISSION_DENIED]
)
async def test_no_bindings_when_the_app_has_none(error: grpclib.const.Status | None) -> None:
    """UNIMPLEMENTED (an app without bindings) or any other error answer: none, asked once."""
    app = FakeApp(bindings=None, list_error=error)
    async with running(app) as h:
        assert h.dispatcher.reading == []
        assert h.health.status(Probe.READINESS) is HealthStatus.UP
    assert app.list_calls == 1


async def test_list_waits_for_the_app() -> None:
    """The app's port is not open yet: readiness stays INIT until it is and was asked."""
    health = HealthRegistry()
    registry = ComponentRegistry()
    with anyio.fail_after(10):
        async with serve(FakeApp()) as port:
            pass  # the port is free again now
        connection = AppConnection("127.0.0.1", port)
        monitor = AppHealth(connection, health)
        dispatcher = BindingDispatcher(
            BindingService(registry),
            StateService(registry, APP_ID),
            BindingCallbackClient(connection),
            health,
            monitor,
            grace_period=1,
        )
        async with anyio.create_task_group() as tg:
            await tg.start(monitor.run)
            await tg.start(dispatcher.run)
            await anyio.sleep(0.5)
            indicator = health.get(APP_INDICATOR)
            assert indicator is not None
            assert indicator.status is HealthStatus.INIT
            await dispatcher.stop()  # stopping before the app came up: at once
            await monitor.stop()
        connection.close()
    assert health.get(APP_INDICATOR) is None


async def test_a_grpclib_app_without_dapr_callbacks_has_none_at_once() -> None:
    """An app that serves no Dapr AppCallback (a Layotto app on grpclib, say): grpclib answers
    a method it does not serve trailers-only, which reads as UNIMPLEMENTED (none), not as a
    transport failure to ask again for seconds."""
    with anyio.fail_after(2):
        async with serve(None, HealthCheck()) as port:
            connection = AppConnection("127.0.0.1", port)
            try:
                assert await BindingCallbackClient(connection).list_input_bindings() == []
            finally:
                connection.close()


# -- app health ------------------------------------------------------------------------------


async def test_events_wait_while_the_app_is_unhealthy() -> None:
    """The runtime's AppHealth gates input bindings as daprd does: nothing is asked before the
    app's first successful check; after `threshold` failed checks, events wait (unprocessed);
    one success delivers them."""
    check = HealthCheck(healthy=False)
    app = FakeApp()
    async with running(app, check=check, wait_up=False) as h:
        await h.until(lambda: h.status(app_health.INDICATOR) is HealthStatus.INIT)
        await anyio.sleep(0.2)
        assert app.list_calls == 0
        assert h.status(APP_INDICATOR) is HealthStatus.INIT
        check.healthy = True
        await h.until(lambda: h.status(APP_INDICATOR) is HealthStatus.UP)
        await h.emit(b"first")
        await h.until(lambda: len(h.source.processed) == 1)

        check.healthy = False
        await h.until(lambda: h.status(app_health.INDICATOR) is HealthStatus.DOWN)
        await h.emit(b"second")
        await h.until(lambda: h.source.attempts == 2)  # handed to the dispatcher...
        await anyio.sleep(0.3)
        assert [e.data for e in app.events] == [b"first"]  # ...which holds it back
        assert h.health.status(Probe.READINESS) is HealthStatus.DOWN

        check.healthy = True
        await h.until(lambda: len(h.source.processed) == 2)
    assert [e.data for e in app.events] == [b"first", b"second"]
    assert h.source.attempts == 2  # waited, not failed and redelivered


# -- not processed ---------------------------------------------------------------------------


async def test_app_error_means_not_processed_and_redelivered() -> None:
    failures = {"count": 2}

    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        if failures["count"]:
            failures["count"] -= 1
            raise GRPCError(grpclib.const.Status.INTERNAL, "handler crashed")
        return pb.BindingEventResponse()

    async with running(FakeApp(reply=reply)) as h:
        await h.emit(b"retry me")
        await h.until(lambda: len(h.source.processed) == 1)
    assert h.source.attempts == 3
    assert [e.data for e in h.app.events] == [b"retry me"] * 3


async def test_unimplemented_on_binding_event_is_not_processed() -> None:
    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        raise GRPCError(grpclib.const.Status.UNIMPLEMENTED)

    async with running(FakeApp(reply=reply)) as h:
        await h.emit(b"x")
        await h.until(lambda: h.source.attempts >= 3)
        assert h.source.processed == []


async def test_read_failures_restart_with_backoff() -> None:
    """`read` raising: DOWN while backing off, read again, UP once it runs."""
    async with running(fail_reads=3) as h:
        await h.until(lambda: h.source.reads == 4)
        await h.until(lambda: h.status(binding_indicator("in")) is HealthStatus.UP)
        await h.emit(b"after")
        await h.until(lambda: len(h.source.processed) == 1)
        downs = [s for s in h.statuses if s is HealthStatus.DOWN]
    assert len(downs) == 3


# -- the reply -------------------------------------------------------------------------------


async def test_reply_states_are_saved_with_the_dapr_key_scheme() -> None:
    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        return pb.BindingEventResponse(
            store_name="statestore",
            states=[
                common_pb.StateItem(key="order", value=request.data),
                common_pb.StateItem(key="audit", value=b"seen", metadata={"ttlInSeconds": "60"}),
            ],
        )

    async with running(FakeApp(reply=reply)) as h:
        await h.emit(b"order-1")
        await h.until(lambda: len(h.source.processed) == 1)
        saved = await h.state.get("statestore", "order")
        assert saved.data == b"order-1"
        raw = await h.store.get(GetRequest(f"{APP_ID}||audit"))
        assert raw.data == b"seen"


@pytest.mark.parametrize(
    "concurrency",
    [
        pb.BindingEventResponseBindingEventConcurrency.SEQUENTIAL,
        pb.BindingEventResponseBindingEventConcurrency.PARALLEL,
    ],
)
async def test_reply_data_goes_to_the_output_bindings(
    concurrency: pb.BindingEventResponseBindingEventConcurrency,
) -> None:
    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        return pb.BindingEventResponse(
            to=["out", "in"], data=b"forwarded:" + request.data, concurrency=concurrency
        )

    async with running(FakeApp(reply=reply)) as h:
        await h.emit(b"e1")
        await h.until(lambda: len(h.source.processed) == 1)
    for binding in (h.out, h.source):
        assert [(r.operation, r.data) for r in binding.sent] == [("create", b"forwarded:e1")]


async def test_transient_forward_failure_redelivers_the_event() -> None:
    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        return pb.BindingEventResponse(to=["out"], data=b"d")

    async with running(FakeApp(reply=reply)) as h:
        h.out.fail_sends = [BackendUnavailable("down for a moment")]
        await h.emit(b"e")
        await h.until(lambda: len(h.source.processed) == 1)
    assert len(h.app.events) == 2  # delivered again after the forward failed
    assert [r.data for r in h.out.sent] == [b"d"]


async def test_permanent_reply_failures_are_logged_not_retried(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        return pb.BindingEventResponse(
            store_name="no-such-store",
            states=[common_pb.StateItem(key="k", value=b"v")],
            to=["no-such-binding", "out"],
            data=b"d",
        )

    async with running(FakeApp(reply=reply)) as h:
        await h.emit(b"e")
        await h.until(lambda: len(h.source.processed) == 1)
    assert len(h.app.events) == 1
    assert [r.data for r in h.out.sent] == [b"d"]  # the others still went
    messages = " ".join(r.getMessage() for r in caplog.records)
    assert "no-such-store" in messages
    assert "no-such-binding" in messages


# -- shutdown --------------------------------------------------------------------------------


async def test_drain_lets_in_flight_events_finish() -> None:
    entered = anyio.Event()
    release = anyio.Event()

    class SlowApp(FakeApp):
        async def on_binding_event(
            self, message: pb.BindingEventRequest
        ) -> pb.BindingEventResponse:
            self.events.append(message)
            entered.set()
            await release.wait()
            return pb.BindingEventResponse()

    app = SlowApp()
    async with running(app, grace=5) as h:
        await h.emit(b"slow")
        await h.emit(b"queued")
        with anyio.fail_after(5):
            await entered.wait()
        h.dispatcher.begin_drain(5)

        async def finish_later() -> None:
            await anyio.sleep(0.3)
            release.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(finish_later)
            with anyio.fail_after(5):
                await h.dispatcher.stop()
    assert [e.data for e in h.source.processed] == [b"slow"]  # finished within the grace
    assert [e.data for e in app.events] == [b"slow"]  # the queued one never started


async def test_drain_deadline_cancels_what_is_left() -> None:
    class StuckApp(FakeApp):
        async def on_binding_event(
            self, message: pb.BindingEventRequest
        ) -> pb.BindingEventResponse:
            self.events.append(message)
            await anyio.sleep_forever()
            raise AssertionError

    async with running(StuckApp(), grace=0.3) as h:
        await h.emit(b"stuck")
        await h.until(lambda: len(h.app.events) == 1)
        start = anyio.current_time()
        with anyio.fail_after(5):
            await h.dispatcher.stop()
        assert anyio.current_time() - start < 3
    assert h.source.processed == []  # never marked processed


# -- the client's translation ----------------------------------------------------------------


def test_reply_conversion(caplog: pytest.LogCaptureFixture) -> None:
    item = common_pb.StateItem(
        key="k",
        value=b"v",
        etag=common_pb.Etag(value="3"),
        metadata={"a": "b"},
        options=common_pb.StateOptions(
            concurrency=common_pb.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE,
            consistency=common_pb.StateOptionsStateConsistency.CONSISTENCY_STRONG,
        ),
    )
    plain = common_pb.StateItem(key="k", etag=common_pb.Etag(value=""))
    reply = to_reply(pb.BindingEventResponse(store_name="s", states=[item, plain], to=["", "o"]))
    request, second = reply.states
    assert (request.key, request.value, request.etag, dict(request.metadata)) == (
        "k",
        b"v",
        "3",
        {"a": "b"},
    )
    assert request.concurrency is Concurrency.FIRST_WRITE
    assert request.consistency is Consistency.STRONG
    assert (second.etag, second.concurrency) == (None, Concurrency.LAST_WRITE)
    assert (reply.store_name, list(reply.to), reply.parallel) == ("s", ["o"], False)
    # Options the sidecar cannot read: the states are not saved (logged), the rest stands.
    unreadable = common_pb.StateItem(
        key="k",
        options=common_pb.StateOptions(
            concurrency=common_pb.StateOptionsStateConcurrency(7)  # type: ignore[call-arg]
        ),
    )
    reply = to_reply(pb.BindingEventResponse(states=[unreadable], to=["o"], data=b"d"))
    assert (list(reply.states), list(reply.to), reply.data) == ([], ["o"], b"d")
    assert "states[0].options.concurrency" in caplog.text


# -- tracing ---------------------------------------------------------------------------------


async def test_each_event_is_a_consumer_span_child_of_its_traceparent() -> None:
    """With tracing on: a CONSUMER span per event (per delivery, retries inside), child of
    the event's `traceparent` metadata; the app gets it as its parent; one the app did not
    process is an ERROR span; the reply's output call is a CLIENT child carrying the span."""
    spans: list[Span] = []
    tracer = RecordingTracer(RatioSampler(1.0), [spans.append])
    answers: list[pb.BindingEventResponse | None] = [None, pb.BindingEventResponse(to=["out"])]

    def reply(request: pb.BindingEventRequest) -> pb.BindingEventResponse:
        answer = answers.pop(0) if answers else pb.BindingEventResponse()
        if answer is None:
            raise GRPCError(grpclib.const.Status.INTERNAL, "not yet")
        return answer

    trace, caller = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with running(FakeApp(reply=reply), tracer=tracer) as h:
        await h.emit(b"one", traceparent=f"00-{trace}-{caller}-01", tracestate="rojo=1")
        await h.until(lambda: len(h.source.processed) == 1)
        await h.emit(b"two")  # no trace of its own: a new one
        await h.until(lambda: len(h.source.processed) == 2)
    failed, done, sent, fresh = spans
    assert [s.name for s in (failed, done, fresh)] == ["bindings/in"] * 3
    assert {s.kind.zipkin for s in (failed, done, fresh)} == {"CONSUMER"}
    assert (failed.trace_id, failed.parent_id, failed.tracestate) == (trace, caller, "rojo=1")
    assert "not yet" in failed.status_message
    assert (done.trace_id, done.parent_id, done.status) == (trace, caller, 0)
    assert done.attributes == {"db.system": "bindings", "db.name": "in", "rpc.service": "Dapr"}
    assert h.app.traceparents[:2] == [failed.traceparent, done.traceparent]
    assert (sent.name, sent.kind.zipkin, sent.parent_id) == (
        "bindings/out/create",
        "CLIENT",
        done.span_id,
    )
    assert h.out.sent[0].metadata["traceparent"] == sent.traceparent
    assert h.out.sent[0].metadata["tracestate"] == "rojo=1"
    assert fresh.trace_id != trace
    assert fresh.parent_id is None
    assert h.app.traceparents[2] == fresh.traceparent


async def test_without_tracing_the_app_gets_no_traceparent() -> None:
    async with running() as h:
        await h.emit(b"one")
        await h.until(lambda: len(h.source.processed) == 1)
    assert h.app.traceparents == [None]


# -- wired into the runtime ------------------------------------------------------------------


async def test_the_runtime_delivers_a_cron_binding_to_the_app() -> None:
    """`bindings.cron` + `--app-port`: the sidecar asks the app, reads the binding and calls
    OnBindingEvent with the app token; readiness has the binding's indicator."""
    from layotto.config import AppConfig, RuntimeConfig
    from layotto.testing.runtime import run_sidecar

    app = FakeApp(bindings=["tick"])
    async with serve(app) as port:
        config = RuntimeConfig(
            app=AppConfig(api_token="t0k"),
            components=(
                ComponentConfig(
                    name="tick", kind=Kind.BINDINGS, type="cron", metadata={"schedule": "@every 1s"}
                ),
            ),
        )
        async with run_sidecar(config, app_port=port) as sidecar:
            runtime = sidecar.runtime
            with anyio.fail_after(10):
                while len(app.events) < 2:  # noqa: ASYNC110 - polls the fake app
                    await anyio.sleep(0.05)
            assert runtime.binding_dispatcher is not None
            assert runtime.binding_dispatcher.reading == ["tick"]
            health = runtime.health.get(binding_indicator("tick"))
            assert health is not None
            assert health.status is HealthStatus.UP
    assert [e.name for e in app.events[:2]] == ["tick", "tick"]
    assert app.events[0].metadata["readTimeUTC"].endswith("+0000 UTC")
    assert app.tokens[:2] == ["t0k", "t0k"]
