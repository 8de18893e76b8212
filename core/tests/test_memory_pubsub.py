"""The in-memory pub/sub component (its SPI directly), and the sidecar's delivery engine
(`DeliveryLoop`) driven through it: lanes, bounds, stop/redelivery, backoff, dead letters.

"""

from __future__ import annotations

import itertools
import json
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from typing import Any

import anyio
import pydantic
import pytest
from layotto.builtin.memory_pubsub import (
    InMemoryPubSub,
    InMemoryPubSubMetadata,
    QueueFull,
)
from layotto.builtin.plugin import layotto_components
from layotto.errors import ErrorCategory
from layotto.plugin import (
    BackendUnavailable,
    ComponentContext,
    Health,
    HealthStatus,
    InvalidArgument,
    Kind,
    Message,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_delivery import DeliveryLoop, DeliveryPolicy
from layotto.testing.conformance import ComponentHarness

pytestmark = pytest.mark.anyio

APP = "app"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
async def pubsub(clock: FakeClock) -> AsyncIterator[InMemoryPubSub]:
    component = InMemoryPubSub(app_id=APP, clock=clock)
    await component.init()
    yield component
    await component.close()


def publish(topic: str, data: bytes, **metadata: str) -> PublishRequest:
    return PublishRequest(topic, data, metadata)


async def receive(subscription: Subscription) -> Message:
    with anyio.fail_after(1):
        return await subscription.receive()


async def nothing_waiting(subscription: Subscription) -> bool:
    with anyio.move_on_after(0.05):
        await subscription.receive()
        return False
    return True


# -- the component -----------------------------------------------------------------------------


def test_registered_as_pubsub_in_memory() -> None:
    specs = {(s.kind, s.type): s for s in layotto_components()}
    spec = specs[(Kind.PUBSUB, "in-memory")]
    metadata = spec.metadata_model.model_validate({"maxQueueLength": "3"})
    component = spec.create(metadata, ComponentContext("pubsub", APP))
    assert isinstance(component, InMemoryPubSub)
    assert component.features == frozenset({PubSubFeature.MESSAGE_TTL})


def test_metadata() -> None:
    assert InMemoryPubSubMetadata().max_queue_length == 10_000
    assert InMemoryPubSubMetadata.model_validate({"maxQueueLength": "7"}).max_queue_length == 7
    with pytest.raises(pydantic.ValidationError):
        InMemoryPubSubMetadata.model_validate({"maxQueueLength": "0"})


async def test_a_topic_without_a_group_drops_messages(pubsub: InMemoryPubSub) -> None:
    await pubsub.publish(publish("t", b"lost"))
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"kept"))
    assert (await receive(subscription)).data == b"kept"
    assert await nothing_waiting(subscription)
    await subscription.close()


async def test_message_fields(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"a", partitionKey="k1", header="h"))
    await pubsub.publish(publish("t", b"b"))
    first, second = await receive(subscription), await receive(subscription)
    assert (first.topic, first.data, first.ordering_key, first.ref) == ("t", b"a", "k1", "m1")
    assert first.metadata == {"partitionKey": "k1", "header": "h"}
    assert (second.data, second.ordering_key, second.ref, second.metadata) == (b"b", "", "m2", {})
    await subscription.close()


async def test_ack_removes_and_close_puts_unacked_back_at_the_head(
    pubsub: InMemoryPubSub,
) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    for data in (b"1", b"2", b"3", b"4"):
        await pubsub.publish(publish("t", data))
    one, two, three = [await receive(subscription) for _ in range(3)]
    await two.ack()
    await subscription.close()
    await subscription.close()  # idempotent
    again = await pubsub.subscribe(SubscribeRequest("t"))
    redelivered = [await receive(again) for _ in range(3)]
    # 1 and 3 first (original order, same refs), then 4 that was never received.
    assert [(m.data, m.ref) for m in redelivered] == [(b"1", "m1"), (b"3", "m3"), (b"4", "m4")]
    assert await nothing_waiting(again)
    assert (one.ref, three.ref) == ("m1", "m3")
    await again.close()


async def test_the_group_queue_outlives_its_subscription(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await subscription.close()
    await pubsub.publish(publish("t", b"while-away"))
    again = await pubsub.subscribe(SubscribeRequest("t"))
    assert (await receive(again)).data == b"while-away"
    await again.close()


async def test_an_ack_after_close_still_removes_the_message(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"late-ack"))
    await pubsub.publish(publish("t", b"next"))
    late = await receive(subscription)
    await subscription.close()
    await late.ack()
    again = await pubsub.subscribe(SubscribeRequest("t"))
    assert (await receive(again)).data == b"next"
    await again.close()


async def test_an_ack_after_close_leaves_a_redelivered_message_to_its_new_receiver(
    pubsub: InMemoryPubSub,
) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"x"))
    old = await receive(subscription)
    await subscription.close()
    again = await pubsub.subscribe(SubscribeRequest("t"))
    new = await receive(again)
    await old.ack()  # too late: the new subscription holds it
    await again.close()
    third = await pubsub.subscribe(SubscribeRequest("t"))
    assert (await receive(third)).ref == new.ref == "m1"
    await third.close()


async def test_every_group_gets_every_message(pubsub: InMemoryPubSub) -> None:
    default = await pubsub.subscribe(SubscribeRequest("t"))
    other = await pubsub.subscribe(SubscribeRequest("t", {"consumerGroup": "audit"}))
    same_as_default = SubscribeRequest("t", {"consumerGroup": APP})
    with pytest.raises(InvalidArgument, match="already subscribed"):
        await pubsub.subscribe(same_as_default)
    await pubsub.publish(publish("t", b"both"))
    assert (await receive(default)).data == b"both"
    assert (await receive(other)).data == b"both"
    await default.close()
    reopened = await pubsub.subscribe(same_as_default)  # free again after close
    await reopened.close()
    await other.close()


async def test_topics_are_independent(pubsub: InMemoryPubSub) -> None:
    a = await pubsub.subscribe(SubscribeRequest("a"))
    b = await pubsub.subscribe(SubscribeRequest("b"))
    await pubsub.publish(publish("a", b"for-a"))
    assert (await receive(a)).data == b"for-a"
    assert await nothing_waiting(b)
    await a.close()
    await b.close()


async def test_receive_waits_and_is_cancel_safe(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    assert await nothing_waiting(subscription)  # a cancelled receive loses nothing
    got: list[Message] = []

    async def take() -> None:
        got.append(await receive(subscription))

    async with anyio.create_task_group() as tg:
        tg.start_soon(take)
        await anyio.sleep(0.01)
        await pubsub.publish(publish("t", b"wake"))
    assert [m.data for m in got] == [b"wake"]
    await subscription.close()


async def test_ttl_is_native(pubsub: InMemoryPubSub, clock: FakeClock) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"short", ttlInSeconds="5"))
    await pubsub.publish(publish("t", b"long", ttlInSeconds="60"))
    await pubsub.publish(publish("t", b"zero", ttlInSeconds="0"))
    await pubsub.publish(publish("t", b"forever"))
    clock.now += 10
    assert [(await receive(subscription)).data for _ in range(2)] == [b"long", b"forever"]
    assert await nothing_waiting(subscription)
    await subscription.close()


async def test_a_put_back_message_keeps_its_expiry(
    pubsub: InMemoryPubSub, clock: FakeClock
) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"short", ttlInSeconds="5"))
    await receive(subscription)
    await subscription.close()
    clock.now += 6
    again = await pubsub.subscribe(SubscribeRequest("t"))
    assert await nothing_waiting(again)
    await again.close()


@pytest.mark.parametrize("ttl", ["soon", "1.5", "-1"])
async def test_a_bad_ttl_is_refused(pubsub: InMemoryPubSub, ttl: str) -> None:
    with pytest.raises(InvalidArgument, match="ttlInSeconds"):
        await pubsub.publish(publish("t", b"x", ttlInSeconds=ttl))


async def test_empty_topics_are_refused(pubsub: InMemoryPubSub) -> None:
    with pytest.raises(InvalidArgument):
        await pubsub.publish(publish("", b"x"))
    with pytest.raises(InvalidArgument):
        await pubsub.subscribe(SubscribeRequest(""))


async def test_a_full_group_refuses_publishes_in_every_group(clock: FakeClock) -> None:
    pubsub = InMemoryPubSub(app_id=APP, max_queue_length=2, clock=clock)
    small = await pubsub.subscribe(SubscribeRequest("t"))
    other = await pubsub.subscribe(SubscribeRequest("t", {"consumerGroup": "other"}))
    await pubsub.publish(publish("t", b"1"))
    await pubsub.publish(publish("t", b"2"))
    one = await receive(small)  # received but not acked: still held by the group
    with pytest.raises(QueueFull) as caught:
        await pubsub.publish(publish("t", b"3"))
    assert caught.value.category is ErrorCategory.RESOURCE_EXHAUSTED
    assert "maxQueueLength" in caught.value.message
    assert [(await receive(other)).data for _ in range(2)] == [b"1", b"2"]
    assert await nothing_waiting(other)  # all or nothing: 3 reached no group
    await one.ack()
    # `small` has room again, but `other` still holds 1 and 2 unacked.
    with pytest.raises(QueueFull):
        await pubsub.publish(publish("t", b"3"))
    await other.close()
    await small.close()
    await pubsub.close()


async def test_expired_messages_make_room(clock: FakeClock) -> None:
    pubsub = InMemoryPubSub(app_id=APP, max_queue_length=1, clock=clock)
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await pubsub.publish(publish("t", b"old", ttlInSeconds="1"))
    clock.now += 2
    await pubsub.publish(publish("t", b"new"))
    assert (await receive(subscription)).data == b"new"
    await subscription.close()
    await pubsub.close()


async def test_close_wakes_receivers_and_refuses_calls(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    failures: list[BaseException] = []

    async def wait_for_one() -> None:
        try:
            await receive(subscription)
        except BackendUnavailable as err:
            failures.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(wait_for_one)
        await anyio.sleep(0.01)
        await pubsub.close()
    assert len(failures) == 1
    assert (await pubsub.check_health()).status is HealthStatus.DOWN
    with pytest.raises(BackendUnavailable):
        await pubsub.publish(publish("t", b"x"))
    with pytest.raises(BackendUnavailable):
        await pubsub.subscribe(SubscribeRequest("t2"))
    await subscription.close()
    await pubsub.close()  # idempotent


async def test_a_closed_subscription_refuses_receive(pubsub: InMemoryPubSub) -> None:
    subscription = await pubsub.subscribe(SubscribeRequest("t"))
    await subscription.close()
    with pytest.raises(BackendUnavailable):
        await receive(subscription)


# -- the delivery engine over it ---------------------------------------------------------------


FAST = DeliveryPolicy(retry_initial_interval=0.02, retry_max_interval=0.2)


def harness(pubsub: PubSub, **policy: Any) -> ComponentHarness:
    return ComponentHarness(pubsub, policy=replace(FAST, **policy))


async def wait_until(check: Callable[[], bool]) -> None:
    with anyio.fail_after(5):
        while not check():  # noqa: ASYNC110 - polling a handler's record
            await anyio.sleep(0.005)


@pytest.fixture
async def real_clock_pubsub() -> AsyncIterator[InMemoryPubSub]:
    component = InMemoryPubSub(app_id=APP)
    yield component
    await component.close()


async def test_lanes_keep_order_per_key_and_run_keys_concurrently(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    b_seen = anyio.Event()
    order: list[str] = []

    async def handler(event: TopicEvent) -> EventStatus:
        name = event.data.decode()
        order.append(name)
        if name == "a1":
            await b_seen.wait()  # lane a waits for lane b: lanes run concurrently
        if name.startswith("b"):
            b_seen.set()
        await anyio.sleep(0.002)
        return EventStatus.SUCCESS

    async with h.subscribe("t", handler):
        for i in range(1, 4):
            await h.publish("t", f"a{i}".encode(), metadata={"partitionKey": "a"})
        for i in range(1, 4):
            await h.publish("t", f"b{i}".encode(), metadata={"partitionKey": "b"})
        await wait_until(lambda: len(order) == 6)
    assert [n for n in order if n[0] == "a"] == ["a1", "a2", "a3"]
    assert [n for n in order if n[0] == "b"] == ["b1", "b2", "b3"]
    assert order.index("b1") < order.index("a2")


async def test_concurrency_is_bounded(real_clock_pubsub: InMemoryPubSub) -> None:
    h = harness(real_clock_pubsub, concurrency=2)
    running = peak = done = 0

    async def handler(event: TopicEvent) -> EventStatus:
        nonlocal running, peak, done
        running += 1
        peak = max(peak, running)
        await anyio.sleep(0.02)
        running -= 1
        done += 1
        return EventStatus.SUCCESS

    async with h.subscribe("t", handler):
        for i in range(6):
            await h.publish("t", b"x", metadata={"partitionKey": f"k{i}"})
        await wait_until(lambda: done == 6)
    assert peak == 2


async def test_the_mailbox_bounds_what_is_received(real_clock_pubsub: InMemoryPubSub) -> None:
    h = harness(real_clock_pubsub, mailbox=2)
    release = anyio.Event()
    calls = 0

    async def handler(event: TopicEvent) -> EventStatus:
        nonlocal calls
        calls += 1
        await release.wait()
        return EventStatus.SUCCESS

    async with h.subscribe("t", handler):
        for i in range(5):
            await h.publish("t", f"{i}".encode(), metadata={"partitionKey": f"k{i}"})
        await wait_until(lambda: calls == 2)
        await anyio.sleep(0.05)
        assert h.loops[-1].stats.received == 2
        release.set()
        await wait_until(lambda: calls == 5)


async def test_stop_leaves_unacked_messages_for_the_next_subscription(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    h.close_grace = 0.05
    entered = anyio.Event()

    async def stuck(event: TopicEvent) -> EventStatus:
        entered.set()
        await anyio.sleep_forever()
        raise AssertionError("unreachable")

    async with h.subscribe("t", stuck):
        for i in range(4):
            await h.publish("t", f"{i}".encode(), metadata={"partitionKey": "k"})
        with anyio.fail_after(5):
            await entered.wait()
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    async with h.subscribe("t", record):
        await wait_until(lambda: len(got) == 4)
    assert got == [b"0", b"1", b"2", b"3"]


async def test_stop_lets_an_in_flight_delivery_finish_and_acks_it(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    entered = anyio.Event()

    async def slow(event: TopicEvent) -> EventStatus:
        entered.set()
        await anyio.sleep(0.05)
        return EventStatus.SUCCESS

    async with h.subscribe("t", slow):
        for i in range(3):
            await h.publish("t", f"{i}".encode(), metadata={"partitionKey": "k"})
        with anyio.fail_after(5):
            await entered.wait()
    # 0 finished within the grace period and was acked; 1 and 2 never started.
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    async with h.subscribe("t", record):
        await wait_until(lambda: len(got) == 2)
        await anyio.sleep(0.05)
    assert got == [b"1", b"2"]


async def test_retry_backoff_is_exponential_and_capped(real_clock_pubsub: InMemoryPubSub) -> None:
    base, cap = 0.02, 0.08
    h = harness(real_clock_pubsub, retry_initial_interval=base, retry_max_interval=cap)
    times: list[float] = []

    async def retry(event: TopicEvent) -> EventStatus:
        times.append(time.monotonic())
        return EventStatus.RETRY if len(times) <= 5 else EventStatus.SUCCESS

    async with h.subscribe("t", retry):
        await h.publish("t", b"x")
        await wait_until(lambda: len(times) == 6)
    gaps = [b - a for a, b in itertools.pairwise(times)]
    for attempt, gap in enumerate(gaps):
        ceiling = min(cap, base * 2**attempt)
        # Equal jitter: in [ceiling/2, ceiling], plus scheduling slack.
        assert ceiling / 2 * 0.9 <= gap <= ceiling + 0.25, (attempt, gaps)
    assert h.loops[-1].stats.retried == 5
    assert h.loops[-1].stats.delivered == 1


async def test_dead_letter_with_no_retries_goes_straight_there(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    calls: list[str] = []
    dead: list[TopicEvent] = []

    async def fail(event: TopicEvent) -> EventStatus:
        calls.append(event.id)
        raise RuntimeError("boom")

    async def collect(event: TopicEvent) -> EventStatus:
        dead.append(event)
        return EventStatus.SUCCESS

    async with (
        h.subscribe("dlq", collect),
        h.subscribe("t", fail, dead_letter_topic="dlq", max_retries=0),
    ):
        await h.publish("t", b'{"n":1}', metadata={"x-h": "v"})
        await wait_until(lambda: len(dead) == 1)
    assert len(calls) == 1
    assert dead[0].id == calls[0]
    assert json.loads(dead[0].data) == {"n": 1}
    assert dead[0].metadata["x-h"] == "v"
    stats = h.loops[1].stats
    assert (stats.dead_lettered, stats.delivered) == (1, 0)


async def test_subscription_metadata_sets_the_dead_letter_topic(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    dead: list[TopicEvent] = []

    async def drop(event: TopicEvent) -> EventStatus:
        return EventStatus.DROP

    async def collect(event: TopicEvent) -> EventStatus:
        dead.append(event)
        return EventStatus.SUCCESS

    async with (
        h.subscribe("dlq", collect),
        h.subscribe("t", drop, metadata={"deadLetterTopic": "dlq"}),
    ):
        await h.publish("t", b"x")
        await wait_until(lambda: len(dead) == 1)


async def test_native_ttl_expires_before_delivery(pubsub: InMemoryPubSub, clock: FakeClock) -> None:
    h = harness(pubsub)
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    async with h.subscribe("t", record):
        pass  # creates the group
    await h.publish("t", b"expires", metadata={"ttlInSeconds": "5"})
    await h.publish("t", b"stays", metadata={"ttlInSeconds": "60"})
    clock.now += 10
    async with h.subscribe("t", record):
        await wait_until(lambda: len(got) == 1)
        await anyio.sleep(0.02)
    assert got == [b"stays"]


class EnvelopeExpiry(InMemoryPubSub):
    """The same component without MESSAGE_TTL: the envelope's `expiration` applies."""

    features = frozenset()


async def test_envelope_expiration_applies_without_message_ttl() -> None:
    pubsub = EnvelopeExpiry(app_id=APP)
    h = harness(pubsub)
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    async with h.subscribe("t", record):
        await h.publish("t", b"expired", metadata={"ttlInSeconds": "0"})
        await h.publish("t", b"fresh")
        await wait_until(lambda: got == [b"fresh"])
    assert h.loops[-1].stats.dropped == 1
    await pubsub.close()


async def test_run_resubscribes_until_the_group_is_free(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    holder = await real_clock_pubsub.subscribe(SubscribeRequest("t"))
    health: list[Health] = []
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    policy = DeliveryPolicy(resubscribe_initial_interval=0.01, resubscribe_max_interval=0.05)
    loop = DeliveryLoop(
        real_clock_pubsub, "pubsub", SubscribeRequest("t"), record, policy, health.append
    )
    async with anyio.create_task_group() as tg:
        await tg.start(loop.run)
        assert health[0].status is HealthStatus.DOWN
        assert "already subscribed" in health[0].details["reason"]
        await holder.close()
        await wait_until(lambda: any(h.status is HealthStatus.UP for h in health))
        await ComponentHarness(real_clock_pubsub).publish("t", b"after")
        await wait_until(lambda: got == [b"after"])
        loop.stop()


async def test_consume_fails_when_the_component_closes() -> None:
    pubsub = InMemoryPubSub(app_id=APP)
    loop = DeliveryLoop(pubsub, "pubsub", SubscribeRequest("t"), _success)
    subscription = await loop.open()
    failures: list[Exception] = []

    async def consume() -> None:
        try:
            await loop.consume(subscription)
        except BackendUnavailable as err:
            failures.append(err)

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(consume)
            await anyio.sleep(0.01)
            await pubsub.close()
    assert len(failures) == 1


async def _success(event: TopicEvent) -> EventStatus:
    return EventStatus.SUCCESS


async def test_a_dead_letter_is_an_event_of_the_dead_letter_topic(
    real_clock_pubsub: InMemoryPubSub,
) -> None:
    h = harness(real_clock_pubsub)
    dead: list[TopicEvent] = []

    async def drop(event: TopicEvent) -> EventStatus:
        return EventStatus.DROP

    async def collect(event: TopicEvent) -> EventStatus:
        dead.append(event)
        return EventStatus.SUCCESS

    async with (
        h.subscribe("dlq", collect),
        h.subscribe("orders", drop, dead_letter_topic="dlq"),
    ):
        await h.publish("orders", b"x")
        await wait_until(lambda: len(dead) == 1)
    assert dead[0].extensions["topic"] == "orders"  # the envelope keeps its origin
    assert dead[0].topic == "dlq"


# -- envelope round trips ------------------------------------------------------------------


async def test_a_json_string_payload_round_trips(real_clock_pubsub: InMemoryPubSub) -> None:
    h = harness(real_clock_pubsub)
    got: list[bytes] = []

    async def record(event: TopicEvent) -> EventStatus:
        got.append(event.data)
        return EventStatus.SUCCESS

    async with h.subscribe("t", record):
        await h.publish("t", b'"hello"', content_type="application/json")
        await wait_until(lambda: len(got) == 1)
    assert got == [b'"hello"']
