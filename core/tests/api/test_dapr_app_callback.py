"""The sidecar driving an app that serves Dapr's `dapr.proto.runtime.v1.AppCallback`
(dapr-compat.md §1.4, §2.7, §3.2): surface detection, routing rules, outcomes, dead letters,
bulk subscribe, app health checks and the app token, against grpclib fake apps over real
sockets, the sidecar in-process on the in-memory pub/sub."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.dapr.proto.common import v1 as common
from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.google.protobuf import Empty
from layotto.actors import app_health
from layotto.actors.pubsub_dispatcher import APP_INDICATOR
from layotto.config import RuntimeConfig
from layotto.health import Probe
from layotto.plugin import HealthStatus
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.testing.conformance.pubsub_sidecar import wait_until_ready
from layotto.testing.pubsub import CallbackApp, Route, publish
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import send, until
from layotto_core_test_helpers import serve_grpclib

pytestmark = pytest.mark.anyio

PUBSUB = "pubsub"
TOKEN = "app-secret"
TOKEN_HEADER = "dapr-api-token"
LIST = "/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions"
ON_EVENT = "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"
ON_BULK = "/dapr.proto.runtime.v1.AppCallback/OnBulkTopicEvent"
ON_BULK_ALPHA = "/dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1"
ON_INVOKE = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
HEALTH = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"
Status_ = dapr.TopicEventResponseTopicEventResponseStatus


def sidecar_config(**app: Any) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "components": [{"name": PUBSUB, "kind": "pubsub", "type": "in-memory"}],
            "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.1},
            "app": app,
        }
    )


@asynccontextmanager
async def sidecar_for(port: int, **app: Any) -> AsyncIterator[Sidecar]:
    async with run_sidecar(sidecar_config(**app), grace_period=0.5, app_port=port) as sidecar:
        yield sidecar


# -- the fake app --------------------------------------------------------------------------

EventAnswer = Callable[[dapr.TopicEventRequest], Awaitable[EventStatus | None]]
BulkAnswer = Callable[[dapr.TopicEventBulkRequest], Awaitable[dapr.TopicEventBulkResponse]]


class Recorder:
    """What the app was asked: (method path, call metadata), in order; `wait` for a count."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, str]]] = []
        self._changed = anyio.Event()

    def add(self, path: str, metadata: Mapping[str, Any]) -> None:
        self.calls.append((path, {k: v for k, v in metadata.items() if isinstance(v, str)}))
        self.changed()

    def changed(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    def paths(self) -> list[str]:
        return [path for path, _ in self.calls]

    async def wait(self, done: Callable[[], bool], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while not done():
                await self._changed.wait()


class Recorded:
    """Serves `servicer`, recording every call's method and metadata first."""

    def __init__(self, servicer: Any, recorder: Recorder) -> None:
        self._servicer = servicer
        self._recorder = recorder

    def __mapping__(self) -> dict[str, Any]:
        mapping: dict[str, Any] = {}
        for path, handler in self._servicer.__mapping__().items():

            async def record(stream: Any, _path: str = path, _func: Any = handler.func) -> None:
                self._recorder.add(_path, stream.metadata)
                await _func(stream)

            mapping[path] = handler._replace(func=record)
        return mapping


class DaprApp(dapr.AppCallbackBase):
    """Lists `subscriptions`; answers events with `on_event` (None = an empty reply) and
    batches with `on_bulk` (unset = UNIMPLEMENTED, as the generated base)."""

    def __init__(
        self,
        subscriptions: list[dapr.TopicSubscription],
        recorder: Recorder,
        *,
        on_event: EventAnswer | None = None,
        on_bulk: BulkAnswer | None = None,
    ) -> None:
        self.subscriptions = subscriptions
        self.recorder = recorder
        self.events: list[dapr.TopicEventRequest] = []
        self.batches: list[dapr.TopicEventBulkRequest] = []
        self._on_event = on_event
        self._on_bulk = on_bulk

    async def list_topic_subscriptions(self, message: Empty) -> dapr.ListTopicSubscriptionsResponse:
        return dapr.ListTopicSubscriptionsResponse(subscriptions=self.subscriptions)

    async def on_topic_event(self, message: dapr.TopicEventRequest) -> dapr.TopicEventResponse:
        self.events.append(message)
        self.recorder.changed()
        status = None if self._on_event is None else await self._on_event(message)
        if status is None:
            return dapr.TopicEventResponse()
        return dapr.TopicEventResponse(status=Status_(int(status)))

    async def on_bulk_topic_event(
        self, message: dapr.TopicEventBulkRequest
    ) -> dapr.TopicEventBulkResponse:
        if self._on_bulk is None:
            raise GRPCError(Status.UNIMPLEMENTED, "no bulk")
        self.batches.append(message)
        self.recorder.changed()
        return await self._on_bulk(message)

    def on(self, topic: str) -> list[dapr.TopicEventRequest]:
        return [e for e in self.events if e.topic == topic]

    async def on_invoke(self, message: common.InvokeRequest) -> common.InvokeResponse:
        return common.InvokeResponse(data=PbAny(value=b"echo:" + message.method.encode()))


class Health(dapr.AppCallbackHealthCheckBase):
    def __init__(self, healthy: bool = True) -> None:
        self.healthy = healthy
        self.asked = 0

    async def health_check(self, message: Empty) -> dapr.HealthCheckResponse:
        self.asked += 1
        if not self.healthy:
            raise GRPCError(Status.INTERNAL, "not yet")
        return dapr.HealthCheckResponse()


def subscription(topic: str, **fields: Any) -> dapr.TopicSubscription:
    return dapr.TopicSubscription(pubsub_name=PUBSUB, topic=topic, **fields)


def routes(*rules: tuple[str, str], default: str = "") -> dapr.TopicRoutes:
    return dapr.TopicRoutes(
        rules=[dapr.TopicRule(match=m, path=p) for m, p in rules], default=default
    )


def stats(sidecar: Sidecar, topic: str) -> dict[str, Any]:
    dispatcher = sidecar.runtime.dispatcher
    assert dispatcher is not None
    (entry,) = [s for s in dispatcher.info() if s["topic"] == topic]
    return dict(entry)


# -- detection, the request, the token -----------------------------------------------------


async def test_a_dapr_app_is_detected_and_gets_path_extensions_headers_and_token() -> None:
    recorder = Recorder()
    app = DaprApp([subscription("plain", routes=dapr.TopicRoutes())], recorder)
    async with (
        serve_grpclib(Recorded(app, recorder)) as port,
        sidecar_for(port, api_token=TOKEN) as sc,
    ):
        await wait_until_ready(sc)
        sent = await send(sc, "plain", {"a": 1}, **{"x-order": "7"})
        await recorder.wait(lambda: len(app.events) == 1)
        indicator = sc.runtime.health.get(APP_INDICATOR)
    (event,) = app.events
    assert (event.id, event.topic, event.pubsub_name, event.path) == (sent, "plain", PUBSUB, "")
    assert json.loads(event.data) == {"a": 1}
    assert event.data_content_type == "application/json"
    assert event.spec_version == "1.0"
    assert event.extensions is not None
    extensions = event.extensions.to_dict()
    assert extensions["topic"] == "plain"
    assert extensions["pubsubname"] == PUBSUB
    assert {"traceparent", "time"} <= set(extensions)
    assert not {"id", "data", "type", "source"} & set(extensions)
    assert indicator is not None
    assert indicator.details["protocol"] == "dapr"
    # Every call to the app carried the app token; the delivery, the message's headers.
    assert {LIST, ON_EVENT} <= set(recorder.paths())
    assert all(meta.get(TOKEN_HEADER) == TOKEN for _, meta in recorder.calls)
    (delivery,) = [meta for path, meta in recorder.calls if path == ON_EVENT]
    assert delivery["x-order"] == "7"
    assert delivery["traceparent"] == extensions["traceparent"]


async def test_a_layotto_app_is_detected_and_gets_the_token_too() -> None:
    recorder = Recorder()
    got: list[TopicEvent] = []

    async def handler(event: TopicEvent) -> EventStatus:
        got.append(event)
        recorder.changed()
        return EventStatus.SUCCESS

    app = CallbackApp([Route(PUBSUB, "lay", handler)])
    async with (
        serve_grpclib(Recorded(app, recorder)) as port,
        sidecar_for(port, api_token=TOKEN) as sc,
    ):
        await wait_until_ready(sc)
        sent = await send(sc, "lay", 1)
        await recorder.wait(lambda: len(got) == 1)
        indicator = sc.runtime.health.get(APP_INDICATOR)
    assert got[0].id == sent
    assert indicator is not None
    assert indicator.details["protocol"] == "layotto"
    assert set(recorder.paths()) == {
        "/spec.proto.runtime.v1.AppCallback/ListTopicSubscriptions",
        "/spec.proto.runtime.v1.AppCallback/OnTopicEvent",
    }
    assert all(meta.get(TOKEN_HEADER) == TOKEN for _, meta in recorder.calls)


async def test_no_token_header_without_an_app_token() -> None:
    recorder = Recorder()
    app = DaprApp([subscription("t")], recorder)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        await send(sc, "t", 1)
        await recorder.wait(lambda: len(app.events) == 1)
    assert recorder.calls
    assert all(TOKEN_HEADER not in meta for _, meta in recorder.calls)


@pytest.mark.parametrize("protocol", ["dapr", "layotto"])
async def test_the_protocol_setting_forces_one_surface(protocol: str) -> None:
    """An app asked only through the other API has no subscriptions."""
    recorder = Recorder()
    dapr_app = DaprApp([subscription("d")], recorder)
    layotto_app = CallbackApp([Route(PUBSUB, "l", lambda e: _success())])
    async with (
        serve_grpclib(Recorded(dapr_app, recorder), Recorded(layotto_app, recorder)) as port,
        sidecar_for(port, protocol=protocol) as sc,
    ):
        await wait_until_ready(sc)
        dispatcher = sc.runtime.dispatcher
        assert dispatcher is not None
        topics = [s["topic"] for s in dispatcher.info()]
    assert topics == (["d"] if protocol == "dapr" else ["l"])


async def _success() -> EventStatus:
    return EventStatus.SUCCESS


# -- routing -------------------------------------------------------------------------------


async def test_rules_pick_the_path_in_order_then_the_default(
    caplog: pytest.LogCaptureFixture,
) -> None:
    recorder = Recorder()
    sub = subscription(
        "routed",
        routes=routes(
            ('event.type == "widget"', "widgets"),
            ("size(event.type) > 0", "refused"),  # outside the subset: never matches
            ('event.data.kind == "gadget" && has(event.traceparent)', "gadgets"),
            default="others",
        ),
    )
    app = DaprApp([sub], recorder)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        widget = await send(sc, "routed", {"kind": "gadget"}, **{"cloudevent.type": "widget"})
        gadget = await send(sc, "routed", {"kind": "gadget"})
        other = await send(sc, "routed", {"kind": "thing"})
        await recorder.wait(lambda: len(app.events) == 3)
        info = stats(sc, "routed")
    paths = {e.id: e.path for e in app.events}
    assert paths == {widget: "widgets", gadget: "gadgets", other: "others"}
    assert "size(event.type) > 0" in caplog.text
    assert "refused" in caplog.text
    assert info["rules"] == [
        {"match": 'event.type == "widget"', "path": "widgets"},
        {"match": "size(event.type) > 0", "path": "refused"},
        {"match": 'event.data.kind == "gadget" && has(event.traceparent)', "path": "gadgets"},
        {"path": "others"},
    ]


async def test_an_event_no_rule_takes_is_dead_lettered_or_dropped() -> None:
    recorder = Recorder()
    only_widgets = routes(('event.type == "widget"', "w"))
    subs = [
        subscription("strict", routes=only_widgets, dead_letter_topic="strict-dlq"),
        subscription("strict-dlq"),
        subscription("strict-nodlq", routes=only_widgets),
    ]
    app = DaprApp(subs, recorder)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        unrouted = await send(sc, "strict", 1)
        await send(sc, "strict-nodlq", 2)
        await recorder.wait(lambda: len(app.on("strict-dlq")) == 1)
        await until(lambda: stats(sc, "strict-nodlq")["stats"]["dropped"] >= 1)
        await anyio.sleep(0.2)
        dead_lettered = stats(sc, "strict")["stats"]["deadLettered"]
    assert [e.id for e in app.on("strict-dlq")] == [unrouted]
    assert app.on("strict") == []
    assert app.on("strict-nodlq") == []
    assert dead_lettered == 1


# -- outcomes ------------------------------------------------------------------------------


async def test_outcomes_retry_error_success_and_unimplemented() -> None:
    recorder = Recorder()
    seen: Counter[str] = Counter()

    async def answer(event: dapr.TopicEventRequest) -> EventStatus | None:
        seen[event.id] += 1
        first = seen[event.id] == 1
        if event.topic == "unimpl":
            raise GRPCError(Status.UNIMPLEMENTED, "no handler for this topic")
        if event.topic == "retry" and first:
            return EventStatus.RETRY
        if event.topic == "error" and first:
            raise GRPCError(Status.INTERNAL, "handler raised")
        return None  # an empty reply: SUCCESS

    subs = [subscription(t) for t in ("retry", "error", "unimpl")]
    app = DaprApp(subs, recorder, on_event=answer)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        retried = await send(sc, "retry", 1)
        errored = await send(sc, "error", 2)
        dropped = await send(sc, "unimpl", 3)
        await recorder.wait(lambda: sum(seen.values()) >= 5)
        await anyio.sleep(0.3)  # any further redelivery would come within this
        unimpl = stats(sc, "unimpl")["stats"]
        retry = stats(sc, "retry")["stats"]
    assert seen == {retried: 2, errored: 2, dropped: 1}
    assert unimpl["dropped"] == 1
    assert retry["delivered"] == 1


async def test_dead_letter_after_max_retries_from_the_field_or_the_metadata() -> None:
    recorder = Recorder()

    async def always_retry(event: dapr.TopicEventRequest) -> EventStatus | None:
        return None if event.topic.endswith("-dead") else EventStatus.RETRY

    subs = [
        subscription("dl", dead_letter_topic="dl-dead", metadata={"maxRetries": "2"}),
        subscription("dl2", metadata={"deadLetterTopic": "dl2-dead", "maxRetries": "0"}),
        subscription("dl-dead"),
        subscription("dl2-dead"),
    ]
    app = DaprApp(subs, recorder, on_event=always_retry)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        first = await send(sc, "dl", 1)
        second = await send(sc, "dl2", 2)
        await recorder.wait(lambda: len(app.on("dl-dead")) + len(app.on("dl2-dead")) == 2)
        await anyio.sleep(0.2)
        info = {t: stats(sc, t) for t in ("dl", "dl2")}
    assert [e.id for e in app.on("dl")] == [first] * 3
    assert [e.id for e in app.on("dl-dead")] == [first]
    assert [e.id for e in app.on("dl2")] == [second]
    assert [e.id for e in app.on("dl2-dead")] == [second]
    assert info["dl"]["deadLetterTopic"] == "dl-dead"
    assert info["dl2"]["deadLetterTopic"] == "dl2-dead"
    assert info["dl"]["stats"]["deadLettered"] == 1


# -- bulk subscribe ------------------------------------------------------------------------


def entry_data(entry: dapr.TopicEventBulkRequestEntry) -> Any:
    assert entry.cloud_event is not None
    return json.loads(entry.cloud_event.data)


async def test_bulk_subscribe_batches_and_settles_each_entry() -> None:
    recorder = Recorder()
    answered: Counter[str] = Counter()

    async def answer(batch: dapr.TopicEventBulkRequest) -> dapr.TopicEventBulkResponse:
        statuses = []
        for entry in batch.entries:
            data = entry_data(entry)
            answered[data] += 1
            first = answered[data] == 1
            if data == "skip" and first:
                continue  # no status for this entry: it counts as RETRY
            status = Status_.RETRY if data == "retry" and first else Status_.SUCCESS
            statuses.append(
                dapr.TopicEventBulkResponseEntry(entry_id=entry.entry_id, status=status)
            )
        return dapr.TopicEventBulkResponse(statuses=statuses)

    bulk = dapr.BulkSubscribeConfig(enabled=True, max_messages_count=4, max_await_duration_ms=300)
    app = DaprApp([subscription("bulk", bulk_subscribe=bulk)], recorder, on_bulk=answer)
    async with (
        serve_grpclib(Recorded(app, recorder)) as port,
        sidecar_for(port, api_token=TOKEN) as sc,
    ):
        await wait_until_ready(sc)
        ids = {}
        async with anyio.create_task_group() as tg:
            for data in ("one", "two", "skip", "retry"):

                async def publish_one(data: str = data) -> None:
                    ids[data] = await send(sc, "bulk", data)

                tg.start_soon(publish_one)
        await recorder.wait(lambda: sum(answered.values()) >= 6)
        await anyio.sleep(0.5)  # a further redelivery would come within this
        info = stats(sc, "bulk")
    assert app.events == []  # no single deliveries
    first = app.batches[0]
    assert len(first.entries) == 4  # the batch filled up: sent before max_await
    assert (first.topic, first.pubsub_name, first.path) == ("bulk", PUBSUB, "")
    assert first.type == "com.dapr.event.sent.bulk"
    by_data = {entry_data(e): e for e in first.entries}
    for data, sent in ids.items():
        cloud_event = by_data[data].cloud_event
        assert cloud_event is not None
        assert cloud_event.id == sent
        assert cloud_event.extensions is not None
        assert cloud_event.extensions.to_dict()["topic"] == "bulk"
    assert len({e.entry_id for e in first.entries}) == 4
    # The missing entry and the RETRY one came again (in a later batch), then stopped.
    assert answered == {"one": 1, "two": 1, "skip": 2, "retry": 2}
    assert all(meta.get(TOKEN_HEADER) == TOKEN for path, meta in recorder.calls if path == ON_BULK)
    assert info["stats"]["delivered"] == 4
    assert info["bulkSubscribe"] == {
        "enabled": True,
        "maxMessagesCount": 4,
        "maxAwaitDurationMs": 300,
    }


async def test_a_small_batch_waits_max_await_then_goes() -> None:
    recorder = Recorder()

    async def answer(batch: dapr.TopicEventBulkRequest) -> dapr.TopicEventBulkResponse:
        return dapr.TopicEventBulkResponse(
            statuses=[dapr.TopicEventBulkResponseEntry(entry_id=e.entry_id) for e in batch.entries]
        )

    bulk = dapr.BulkSubscribeConfig(enabled=True, max_messages_count=50, max_await_duration_ms=400)
    app = DaprApp([subscription("slow-bulk", bulk_subscribe=bulk)], recorder, on_bulk=answer)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        started = anyio.current_time()
        await send(sc, "slow-bulk", 1)
        await send(sc, "slow-bulk", 2)
        await recorder.wait(lambda: len(app.batches) == 1)
        waited = anyio.current_time() - started
        await anyio.sleep(0.3)
    assert [len(b.entries) for b in app.batches] == [2]
    assert 0.3 <= waited < 2.0


class Alpha(dapr.AppCallbackAlphaBase):
    """Only the deprecated bulk callback; UNIMPLEMENTED for `bulk-none`."""

    def __init__(self) -> None:
        self.batches: list[dapr.TopicEventBulkRequest] = []

    async def on_bulk_topic_event_alpha_1(
        self, message: dapr.TopicEventBulkRequest
    ) -> dapr.TopicEventBulkResponse:
        if message.topic == "bulk-none":
            raise GRPCError(Status.UNIMPLEMENTED, "bulk topic not implemented")
        self.batches.append(message)
        return dapr.TopicEventBulkResponse(
            statuses=[
                dapr.TopicEventBulkResponseEntry(entry_id=e.entry_id) for e in message.entries
            ]
        )


async def test_bulk_falls_back_to_alpha1_and_unimplemented_drops() -> None:
    recorder = Recorder()
    bulk = dapr.BulkSubscribeConfig(enabled=True, max_messages_count=2, max_await_duration_ms=50)
    subs = [
        subscription("bulk-alpha", bulk_subscribe=bulk),
        subscription("bulk-none", bulk_subscribe=bulk),
    ]
    app = DaprApp(subs, recorder)  # no OnBulkTopicEvent
    alpha = Alpha()
    async with (
        serve_grpclib(Recorded(app, recorder), Recorded(alpha, recorder)) as port,
        sidecar_for(port) as sc,
    ):
        await wait_until_ready(sc)
        sent = await send(sc, "bulk-alpha", 1)
        await send(sc, "bulk-none", 2)
        await recorder.wait(lambda: bool(alpha.batches))
        await until(lambda: stats(sc, "bulk-none")["stats"]["dropped"] >= 1)
        delivered = stats(sc, "bulk-alpha")["stats"]["delivered"]
    (batch,) = alpha.batches
    assert [e.cloud_event.id for e in batch.entries if e.cloud_event] == [sent]
    assert delivered == 1
    assert recorder.paths().count(ON_BULK_ALPHA) == 2  # once per topic, no retries


async def test_bulk_with_raw_payload_sends_bytes_entries() -> None:
    recorder = Recorder()

    async def answer(batch: dapr.TopicEventBulkRequest) -> dapr.TopicEventBulkResponse:
        return dapr.TopicEventBulkResponse(
            statuses=[dapr.TopicEventBulkResponseEntry(entry_id=e.entry_id) for e in batch.entries]
        )

    bulk = dapr.BulkSubscribeConfig(enabled=True, max_messages_count=1)
    sub = subscription("raw-bulk", bulk_subscribe=bulk, metadata={"rawPayload": "true"})
    app = DaprApp([sub], recorder, on_bulk=answer)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        channel = sc.channel()
        try:
            await publish(channel, PUBSUB, "raw-bulk", b"\x00raw", metadata={"rawPayload": "true"})
        finally:
            channel.close()
        await recorder.wait(lambda: bool(app.batches))
    (entry,) = app.batches[0].entries
    assert entry.cloud_event is None
    assert entry.bytes == b"\x00raw"


# -- app health checks ---------------------------------------------------------------------


async def test_health_check_gates_subscribing_and_pauses_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_health, "PROBE_INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(app_health, "STARTUP_PROBE_INTERVAL_SECONDS", 0.05)
    recorder = Recorder()
    app = DaprApp([subscription("h")], recorder)
    health = Health(healthy=False)
    async with (
        serve_grpclib(Recorded(app, recorder), Recorded(health, recorder)) as port,
        sidecar_for(port, api_token=TOKEN) as sc,
    ):
        registry = sc.runtime.health
        await recorder.wait(lambda: health.asked >= 3)
        # Unhealthy from the start: nothing asked of the app but its health.
        assert LIST not in recorder.paths()
        indicator = registry.get(app_health.INDICATOR)
        assert indicator is not None
        assert indicator.status is HealthStatus.INIT
        assert registry.status(Probe.READINESS) is HealthStatus.INIT

        health.healthy = True
        await wait_until_ready(sc)
        assert LIST in recorder.paths()
        first = await send(sc, "h", 1)
        await recorder.wait(lambda: len(app.events) == 1)

        health.healthy = False
        await until(lambda: registry.status(Probe.READINESS) is HealthStatus.DOWN)
        indicator = registry.get(app_health.INDICATOR)
        assert indicator is not None
        assert indicator.status is HealthStatus.DOWN
        second = await send(sc, "h", 2)
        await anyio.sleep(0.4)
        assert len(app.events) == 1  # paused

        health.healthy = True
        await recorder.wait(lambda: len(app.events) == 2)
        await until(lambda: registry.status(Probe.READINESS) is HealthStatus.UP)
    assert [e.id for e in app.events] == [first, second]
    assert all(meta.get(TOKEN_HEADER) == TOKEN for path, meta in recorder.calls if path == HEALTH)


async def test_an_app_without_health_check_is_not_gated() -> None:
    recorder = Recorder()
    app = DaprApp([subscription("nh")], recorder)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port, id="me") as sc:
        await wait_until_ready(sc)
        await send(sc, "nh", 1)
        await recorder.wait(lambda: len(app.events) == 1)
        assert sc.runtime.health.get(app_health.INDICATOR) is None
        assert await invoke(sc, "me", "m") == b"echo:m"
        assert "health" not in sc.runtime.dapr_metadata()["appConnectionProperties"]


async def invoke(sidecar: Sidecar, app_id: str, method: str) -> bytes:
    channel = sidecar.channel()
    try:
        reply = await dapr.DaprStub(channel, timeout=10).invoke_service(
            dapr.InvokeServiceRequest(id=app_id, message=common.InvokeRequest(method=method))
        )
    finally:
        channel.close()
    return reply.data.value if reply.data is not None else b""


async def test_an_unhealthy_app_is_not_invoked_and_metadata_shows_the_checks(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The one AppHealth gates invocation of the sidecar's own app too: while the app fails
    its checks, InvokeService for its id answers UNAVAILABLE at once (over HTTP, daprd's 500
    ERR_DIRECT_INVOKE) without calling it; the checks' timings are in Dapr's metadata."""
    monkeypatch.setattr(app_health, "PROBE_INTERVAL_SECONDS", 0.05)
    recorder = Recorder()
    app = DaprApp([], recorder)
    health = Health()
    async with (
        serve_grpclib(Recorded(app, recorder), Recorded(health, recorder)) as port,
        sidecar_for(port, id="me") as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as http,
    ):
        await wait_until_ready(sc)
        assert await invoke(sc, "me", "first") == b"echo:first"
        body = (await http.get("/v1.0/metadata")).json()
        assert body["appConnectionProperties"]["health"] == {
            "healthProbeInterval": "50ms",
            "healthProbeTimeout": "500ms",
            "healthThreshold": 3,
        }
        channel = sc.channel()
        try:
            reply = await dapr.DaprStub(channel, timeout=10).get_metadata(dapr.GetMetadataRequest())
        finally:
            channel.close()
        assert reply.app_connection_properties is not None
        props = reply.app_connection_properties.health
        assert props is not None
        assert (props.health_probe_interval, props.health_threshold) == ("50ms", 3)
        assert props.health_check_path == ""  # daprd shows it for HTTP apps only

        health.healthy = False
        await until(lambda: sc.runtime.health.status(Probe.READINESS) is HealthStatus.DOWN)
        started = anyio.current_time()
        with pytest.raises(GRPCError) as refused:
            await invoke(sc, "me", "second")
        assert refused.value.status is Status.UNAVAILABLE
        assert "healthy" in (refused.value.message or "")
        answer = await http.post("/v1.0/invoke/me/method/third", content=b"x")
        assert answer.status_code == 500
        assert answer.json()["errorCode"] == "ERR_DIRECT_INVOKE"
        assert anyio.current_time() - started < 1.0

        health.healthy = True
        await until(lambda: sc.runtime.health.status(Probe.READINESS) is HealthStatus.UP)
        assert await invoke(sc, "me", "fourth") == b"echo:fourth"
    invoked = [meta for path, meta in recorder.calls if path == ON_INVOKE]
    assert len(invoked) == 2  # first and fourth: the others never reached the app


async def test_shutdown_is_not_held_by_deliveries_paused_for_an_unhealthy_app(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_health, "PROBE_INTERVAL_SECONDS", 0.05)
    recorder = Recorder()
    app = DaprApp([subscription("p")], recorder)
    health = Health()
    async with (
        serve_grpclib(Recorded(app, recorder), Recorded(health, recorder)) as port,
        run_sidecar(sidecar_config(), grace_period=5.0, app_port=port) as sc,
    ):
        await wait_until_ready(sc)
        health.healthy = False
        await until(lambda: sc.runtime.health.status(Probe.READINESS) is HealthStatus.DOWN)
        await send(sc, "p", 1)
        await anyio.sleep(0.2)
        started = anyio.current_time()
        await sc.stop()
        stopped_after = anyio.current_time() - started
    assert app.events == []
    assert stopped_after < 3.0  # not the whole 5 s grace period


# -- metadata ------------------------------------------------------------------------------


async def test_info_and_metadata_describe_the_subscriptions() -> None:
    recorder = Recorder()
    subs = [
        subscription("m1", routes=routes(('event.type == "a"', "pa"), default="pd")),
        subscription("m2", dead_letter_topic="m2-dlq"),
    ]
    app = DaprApp(subs, recorder)
    async with serve_grpclib(Recorded(app, recorder)) as port, sidecar_for(port) as sc:
        await wait_until_ready(sc)
        async with httpx.AsyncClient(base_url=sc.http_url, timeout=10) as http:
            info = (await http.get("/actuator/info")).json()
            metadata = (await http.get("/v1.0/metadata")).json()
    pubsub = {s["topic"]: s for s in info["subscriptions"]["pubsub"]}
    assert pubsub["m1"]["rules"] == [{"match": 'event.type == "a"', "path": "pa"}, {"path": "pd"}]
    assert pubsub["m1"]["type"] == "PROGRAMMATIC"
    assert pubsub["m2"]["rules"] == []
    assert pubsub["m2"]["deadLetterTopic"] == "m2-dlq"
    listed = {s["topic"]: s for s in metadata["subscriptions"]}
    assert listed["m2"]["deadLetterTopic"] == "m2-dlq"
    assert listed["m1"]["type"] == "PROGRAMMATIC"
