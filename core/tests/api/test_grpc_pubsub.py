"""PublishEvent and SubscribeTopicEvents over a real socket, and the app-callback model
(PubSubDispatcher) against a real app callback server, all on the in-memory pub/sub.

Behaviour: layotto-semantics.md §4, dapr-compat.md §2.5 and §3.2."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.actors.pubsub_dispatcher import APP_INDICATOR
from layotto.config import ComponentConfig, RuntimeConfig
from layotto.health import Probe
from layotto.plugin import HealthStatus, Kind
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.testing.conformance.pubsub_sidecar import wait_until_ready
from layotto.testing.pubsub import (
    SUBSCRIBE_PATH,
    CallbackApp,
    Route,
    isolated,
    publish,
    serve_app,
    topic_stream,
)
from layotto.testing.runtime import Sidecar, run_sidecar

pytestmark = pytest.mark.anyio

PUBSUB = "pubsub"

# Quick redelivery, so retry scenarios take tenths of a second.
FAST = RuntimeConfig.model_validate(
    {
        "components": [{"name": PUBSUB, "kind": "pubsub", "type": "in-memory"}],
        "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.1},
    }
)


async def expect_error(call: Any, status: Status, *fragments: str) -> GRPCError:
    with anyio.fail_after(10), pytest.raises(GRPCError) as info:
        await call
    err = info.value
    assert err.status is status, f"{err.status.name}: {err.message}"
    for fragment in fragments:
        assert fragment in (err.message or ""), f"{fragment!r} not in {err.message!r}"
    return err


class Inbox:
    """Collects events; `answer` decides each status."""

    def __init__(self, answer: Any = None) -> None:
        self.events: list[TopicEvent] = []
        self._answer = answer
        self._changed = anyio.Event()

    async def __call__(self, event: TopicEvent) -> EventStatus:
        self.events.append(event)
        self._changed.set()
        self._changed = anyio.Event()
        if self._answer is None:
            return EventStatus.SUCCESS
        result: EventStatus = await self._answer(event)
        return result

    async def wait_for(self, count: int, within: float = 10.0) -> list[TopicEvent]:
        with anyio.fail_after(within):
            while len(self.events) < count:
                await self._changed.wait()
        return self.events


@asynccontextmanager
async def fast_sidecar(**options: Any) -> AsyncIterator[Sidecar]:
    async with run_sidecar(FAST, grace_period=1.0, **options) as sidecar:
        yield sidecar


# -- PublishEvent --------------------------------------------------------------------------


async def test_publish_validation_names_the_field(stub: pb.RuntimeStub) -> None:
    await expect_error(
        stub.publish_event(pb.PublishEventRequest(topic="t", data=b"x")),
        Status.INVALID_ARGUMENT,
        "pubsub name is empty",
    )
    await expect_error(
        stub.publish_event(pb.PublishEventRequest(pubsub_name=PUBSUB, data=b"x")),
        Status.INVALID_ARGUMENT,
        "topic is empty in pubsub pubsub",
    )
    await expect_error(
        stub.publish_event(pb.PublishEventRequest(pubsub_name="nope", topic="t")),
        Status.INVALID_ARGUMENT,
        "pubsub nope not found",
    )
    await expect_error(
        stub.publish_event(
            pb.PublishEventRequest(pubsub_name=PUBSUB, topic="t", metadata={"ttlInSeconds": "soon"})
        ),
        Status.INVALID_ARGUMENT,
        "metadata.ttlInSeconds",
    )
    await expect_error(
        stub.publish_event(
            pb.PublishEventRequest(
                pubsub_name=PUBSUB,
                topic="t",
                data=b"{not json",
                data_content_type="application/cloudevents+json",
            )
        ),
        Status.INVALID_ARGUMENT,
        "CloudEvent",
    )


async def test_publish_without_any_pubsub_is_failed_precondition() -> None:
    config = RuntimeConfig(
        components=(ComponentConfig(name="statestore", kind=Kind.STATE, type="in-memory"),)
    )
    async with run_sidecar(config) as sidecar:
        channel = sidecar.channel()
        try:
            await expect_error(
                pb.RuntimeStub(channel).publish_event(
                    pb.PublishEventRequest(pubsub_name=PUBSUB, topic="t")
                ),
                Status.FAILED_PRECONDITION,
                "pubsub is not configured",
            )
        finally:
            channel.close()


async def test_published_event_arrives_as_a_cloudevent_with_the_returned_id() -> None:
    async with fast_sidecar() as sidecar:
        channel = sidecar.channel()
        inbox = Inbox()
        try:
            async with topic_stream(channel, PUBSUB, "orders", inbox):
                message_id = await publish(
                    channel,
                    PUBSUB,
                    "orders",
                    b'{"n": 1}',
                    metadata={"x-trace": "abc"},
                )
                (event,) = await inbox.wait_for(1)
        finally:
            channel.close()
    assert message_id, "PublishEvent must return the event id in the message-id header"
    assert event.id == message_id
    assert json.loads(event.data) == {"n": 1}
    assert event.datacontenttype == "application/json"
    assert (event.source, event.type, event.specversion) == (
        "runtime",
        "com.runtime.event.sent",
        "1.0",
    )
    assert (event.topic, event.pubsubname) == ("orders", PUBSUB)
    assert event.metadata["x-trace"] == "abc"


async def test_binary_raw_and_caller_cloudevents() -> None:
    async with fast_sidecar() as sidecar:
        channel = sidecar.channel()
        inbox = Inbox()
        try:
            async with topic_stream(channel, PUBSUB, "mixed", inbox):
                binary = bytes(range(256))
                await publish(
                    channel, PUBSUB, "mixed", binary, content_type="application/octet-stream"
                )
                raw_id = await publish(
                    channel,
                    PUBSUB,
                    "mixed",
                    b"not a cloudevent",
                    metadata={"rawPayload": "true"},
                    content_type="text/plain",
                )
                caller = {
                    "id": "my-own-id",
                    "source": "billing",
                    "type": "invoice.paid",
                    "specversion": "1.0",
                    "datacontenttype": "text/plain",
                    "data": "paid",
                }
                caller_id = await publish(
                    channel,
                    PUBSUB,
                    "mixed",
                    json.dumps(caller).encode(),
                    content_type="application/cloudevents+json",
                )
                events = await inbox.wait_for(3)
        finally:
            channel.close()
    by_data = {e.data: e for e in events}
    assert by_data[binary].datacontenttype == "application/octet-stream"
    raw = by_data[b"not a cloudevent"]
    assert raw.id == raw_id
    assert caller_id == "my-own-id"
    passed = by_data[b"paid"]
    assert (passed.id, passed.source, passed.type) == ("my-own-id", "billing", "invoice.paid")
    assert passed.topic == "mixed"


# -- SubscribeTopicEvents ------------------------------------------------------------------


async def _open_and_send(channel: Channel, *messages: pb.SubscribeTopicEventsRequest) -> None:
    await isolated(lambda: _exchange(channel, messages))


async def _exchange(channel: Channel, messages: Sequence[pb.SubscribeTopicEventsRequest]) -> None:
    async with channel.request(
        SUBSCRIBE_PATH,
        Cardinality.STREAM_STREAM,
        pb.SubscribeTopicEventsRequest,
        pb.SubscribeTopicEventsResponse,
        timeout=10,
    ) as stream:
        for message in messages:
            await stream.send_message(message)
        while await stream.recv_message() is not None:
            pass


def _initial(pubsub: str = PUBSUB, topic: str = "t") -> pb.SubscribeTopicEventsRequest:
    return pb.SubscribeTopicEventsRequest(
        initial_request=pb.SubscribeTopicEventsRequestInitial(pubsub_name=pubsub, topic=topic)
    )


async def test_streaming_handshake_errors(channel: Channel) -> None:
    processed = pb.SubscribeTopicEventsRequest(
        event_processed=pb.SubscribeTopicEventsRequestProcessed(id="x")
    )
    await expect_error(
        _open_and_send(channel, processed), Status.INVALID_ARGUMENT, "initial request is required"
    )
    await expect_error(
        _open_and_send(channel, _initial(pubsub="")),
        Status.INVALID_ARGUMENT,
        "pubsubName is required",
    )
    await expect_error(
        _open_and_send(channel, _initial(topic="")), Status.INVALID_ARGUMENT, "topic is required"
    )
    await expect_error(
        _open_and_send(channel, _initial(pubsub="nope")),
        Status.INVALID_ARGUMENT,
        "pubsub nope not found",
    )
    await expect_error(
        _open_and_send(channel, _initial(topic="dup"), _initial(topic="dup")),
        Status.INVALID_ARGUMENT,
        "duplicate initial request",
    )


async def test_a_second_stream_for_the_same_topic_is_refused(channel: Channel) -> None:
    async with topic_stream(channel, PUBSUB, "solo", Inbox()):
        await expect_error(
            _open_and_send(channel, _initial(topic="solo")),
            Status.INVALID_ARGUMENT,
            'already subscribed to pubsub "pubsub" topic "solo"',
        )
    # Once the first stream is gone the topic is free again.
    async with topic_stream(channel, PUBSUB, "solo", Inbox()):
        pass


async def test_events_unanswered_when_the_stream_ends_come_back() -> None:
    async with fast_sidecar() as sidecar:
        channel = sidecar.channel()
        try:
            held = anyio.Event()

            async def never_answers(event: TopicEvent) -> EventStatus:
                held.set()
                await anyio.sleep_forever()
                raise AssertionError("unreachable")

            async with topic_stream(channel, PUBSUB, "held", never_answers):
                sent = await publish(channel, PUBSUB, "held", b'"once"')
                with anyio.fail_after(10):
                    await held.wait()
            inbox = Inbox()
            async with topic_stream(channel, PUBSUB, "held", inbox):
                (again,) = await inbox.wait_for(1)
        finally:
            channel.close()
    assert again.id == sent


async def test_streaming_retry_redelivers_then_acks() -> None:
    async with fast_sidecar() as sidecar:
        channel = sidecar.channel()
        seen: Counter[str] = Counter()

        async def retry_three_times(event: TopicEvent) -> EventStatus:
            seen[event.id] += 1
            return EventStatus.RETRY if seen[event.id] <= 3 else EventStatus.SUCCESS

        inbox = Inbox(retry_three_times)
        try:
            async with topic_stream(channel, PUBSUB, "retry", inbox):
                sent = await publish(channel, PUBSUB, "retry", b"1")
                await inbox.wait_for(4)
                await anyio.sleep(0.3)  # a fifth delivery would come within this
        finally:
            channel.close()
    assert seen == {sent: 4}


# -- the app-callback model ----------------------------------------------------------------


async def test_callback_app_retry_n_times_gets_n_plus_one_deliveries() -> None:
    seen: Counter[str] = Counter()
    done = anyio.Event()

    async def handler(event: TopicEvent) -> EventStatus:
        seen[event.id] += 1
        if seen[event.id] <= 3:
            return EventStatus.RETRY
        done.set()
        return EventStatus.SUCCESS

    app = CallbackApp([Route(PUBSUB, "cb", handler)])
    async with serve_app(app) as port, fast_sidecar(app_port=port) as sidecar:
        await wait_until_ready(sidecar)
        channel = sidecar.channel()
        try:
            sent = await publish(channel, PUBSUB, "cb", b"1")
            with anyio.fail_after(10):
                await done.wait()
            await anyio.sleep(0.3)
        finally:
            channel.close()
    assert seen == {sent: 4}


class UnimplementedApp(CallbackApp):
    """Lists a subscription but answers every event with UNIMPLEMENTED."""

    def __init__(self) -> None:
        super().__init__([Route(PUBSUB, "unimpl", Inbox())])
        self.calls = 0
        self.called = anyio.Event()

    async def on_topic_event(self, message: pb.TopicEventRequest) -> pb.TopicEventResponse:
        self.calls += 1
        self.called.set()
        raise GRPCError(Status.UNIMPLEMENTED, "no handler")


async def test_unimplemented_from_the_app_is_a_drop() -> None:
    app = UnimplementedApp()
    async with serve_app(app) as port, fast_sidecar(app_port=port) as sidecar:
        await wait_until_ready(sidecar)
        channel = sidecar.channel()
        try:
            await publish(channel, PUBSUB, "unimpl", b"1")
            with anyio.fail_after(10):
                await app.called.wait()
            await anyio.sleep(0.3)  # a redelivery would come within this
        finally:
            channel.close()
        dispatcher = sidecar.runtime.dispatcher
        assert dispatcher is not None
        (info,) = dispatcher.info()
    assert app.calls == 1
    assert info["stats"]["dropped"] == 1


class NoSubscriptionsApp(pb.AppCallbackBase):
    """Implements nothing: ListTopicSubscriptions answers UNIMPLEMENTED."""


async def test_an_app_without_list_topic_subscriptions_has_none() -> None:
    async with (
        serve_app(NoSubscriptionsApp()) as port,
        fast_sidecar(app_port=port) as sidecar,
    ):
        await wait_until_ready(sidecar)
        assert sidecar.runtime.health.get(APP_INDICATOR) is not None
        dispatcher = sidecar.runtime.dispatcher
        assert dispatcher is not None
        assert dispatcher.info() == []


async def test_readiness_waits_for_the_app_and_deliveries_survive_an_app_restart() -> None:
    inbox = Inbox()
    app = CallbackApp([Route(PUBSUB, "restart", inbox)])
    async with serve_app(app) as port:
        pass  # reserve a port, then leave it closed: the app is "not started yet"
    async with fast_sidecar(app_port=port) as sidecar:
        await anyio.sleep(0.5)
        health = sidecar.runtime.health
        assert health.status(Probe.READINESS) is HealthStatus.INIT
        async with serve_app(app, port=port):
            await wait_until_ready(sidecar)
            channel = sidecar.channel()
            try:
                first = await publish(channel, PUBSUB, "restart", b"1")
                await inbox.wait_for(1)
            finally:
                channel.close()
        # The app is down: a published event waits for it instead of being lost.
        channel = sidecar.channel()
        try:
            second = await publish(channel, PUBSUB, "restart", b"2")
        finally:
            channel.close()
        await anyio.sleep(0.5)
        async with serve_app(app, port=port):
            await inbox.wait_for(2)
    assert [e.id for e in inbox.events] == [first, second]


async def test_info_and_metadata_list_the_app_subscriptions() -> None:
    app = CallbackApp(
        [Route(PUBSUB, "a", Inbox()), Route(PUBSUB, "b", Inbox(), {"deadLetterTopic": "dlq"})]
    )
    async with serve_app(app) as port, fast_sidecar(app_port=port) as sidecar:
        await wait_until_ready(sidecar)
        async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http:
            info = (await http.get("/actuator/info")).json()
            metadata = (await http.get("/v1.0/metadata")).json()
    topics = {s["topic"]: s for s in info["subscriptions"]["pubsub"]}
    assert set(topics) == {"a", "b"}
    assert topics["b"]["deadLetterTopic"] == "dlq"
    assert {(s["pubsubname"], s["topic"]) for s in metadata["subscriptions"]} == {
        (PUBSUB, "a"),
        (PUBSUB, "b"),
    }


async def test_shutdown_waits_for_an_answer_in_flight() -> None:
    started = anyio.Event()
    answered = anyio.Event()

    async def slow(event: TopicEvent) -> EventStatus:
        started.set()
        await anyio.sleep(0.5)
        answered.set()
        return EventStatus.SUCCESS

    app = CallbackApp([Route(PUBSUB, "slow", slow)])
    async with serve_app(app) as port:
        async with run_sidecar(FAST, grace_period=5.0, app_port=port) as sidecar:
            await wait_until_ready(sidecar)
            channel = sidecar.channel()
            try:
                await publish(channel, PUBSUB, "slow", b"1")
            finally:
                channel.close()
            with anyio.fail_after(5):
                await started.wait()
            sidecar.runtime.shutdown.set()
            with anyio.fail_after(5):
                await sidecar.stopped.wait()
        assert answered.is_set(), "shutdown cut off a delivery the app was still answering"


async def test_an_event_left_unanswered_on_a_stream_is_sent_again_after_the_app_timeout() -> None:
    config = FAST.model_copy(update={"pubsub": FAST.pubsub.model_copy(update={"app_timeout": 0.3})})
    calls: Counter[str] = Counter()

    async def first_time_silent(event: TopicEvent) -> EventStatus:
        calls[event.id] += 1
        if calls[event.id] == 1:
            await anyio.sleep_forever()
        return EventStatus.SUCCESS

    inbox = Inbox(first_time_silent)
    async with run_sidecar(config, grace_period=0.5) as sidecar:
        channel = sidecar.channel()
        try:
            async with topic_stream(channel, PUBSUB, "silent", inbox):
                sent = await publish(channel, PUBSUB, "silent", b"1")
                await inbox.wait_for(2)
                await anyio.sleep(0.5)  # answered the second time: no third delivery
        finally:
            channel.close()
    assert calls == {sent: 2}


class BlinkingApp(CallbackApp):
    """ListTopicSubscriptions answers UNAVAILABLE twice (the app is still starting), then lists."""

    def __init__(self, inbox: Inbox) -> None:
        super().__init__([Route(PUBSUB, "blink", inbox)])
        self.asked = 0

    async def list_topic_subscriptions(self, message: Any) -> pb.ListTopicSubscriptionsResponse:
        self.asked += 1
        if self.asked <= 2:
            raise GRPCError(Status.UNAVAILABLE, "still starting")
        return await super().list_topic_subscriptions(message)


async def test_list_topic_subscriptions_is_asked_again_after_a_transport_failure() -> None:
    inbox = Inbox()
    app = BlinkingApp(inbox)
    async with serve_app(app) as port, fast_sidecar(app_port=port) as sidecar:
        await wait_until_ready(sidecar)
        channel = sidecar.channel()
        try:
            sent = await publish(channel, PUBSUB, "blink", b"1")
            (event,) = await inbox.wait_for(1)
        finally:
            channel.close()
    assert app.asked == 3
    assert event.id == sent
