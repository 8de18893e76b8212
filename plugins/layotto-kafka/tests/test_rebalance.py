"""Consumer-group rebalances on Tansu (a real broker; no client-side workaround needed): two
members split the partitions, the survivor takes everything back when one leaves, and no
message is lost across either rebalance."""

from __future__ import annotations

import time
from collections.abc import Callable

import anyio
import pytest
from aiokafka.structs import TopicPartition
from layotto.plugin import (
    BackendUnavailable,
    Message,
    PublishRequest,
    SubscribeRequest,
    Subscription,
)
from layotto_kafka import KafkaPubSub, KafkaSubscription
from layotto_kafka.testing import TansuBroker
from layotto_kafka_test_support import Names, PubSubFactory

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(90)]

MEASURED: dict[str, float] = {}
PARTITIONS = 4  # Tansu creates topics with 4 partitions


def assignment(subscription: Subscription) -> set[TopicPartition]:
    assert isinstance(subscription, KafkaSubscription)
    return set(subscription._consumer.assignment())


async def wait_for(check: Callable[[], bool], within: float, what: str) -> float:
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within} s")
        await anyio.sleep(0.05)
    return time.monotonic() - started


async def consume(subscription: Subscription, into: list[Message]) -> None:
    """The sidecar's part: receive and ack, until the subscription is closed."""
    while True:
        try:
            message = await subscription.receive()
        except BackendUnavailable:
            return  # closed
        into.append(message)
        await message.ack()


async def publish_batch(pubsub: KafkaPubSub, topic: str, tag: str, count: int) -> set[bytes]:
    sent = set()
    for i in range(count):
        data = f"{tag}-{i}".encode()
        await pubsub.publish(PublishRequest(topic, data, {"partitionKey": f"key-{i}"}))
        sent.add(data)
    return sent


async def test_two_members_split_and_take_over_without_loss(
    make_pubsub: PubSubFactory, tansu: TansuBroker, names: Names
) -> None:
    group, topic = names("group"), names("rebalance")
    # Two sidecars of one app: two components, one consumer group.
    one = await make_pubsub(tansu.bootstrap, consumerGroup=group)
    two = await make_pubsub(tansu.bootstrap, consumerGroup=group)
    first = await one.subscribe(SubscribeRequest(topic))
    assert len(assignment(first)) == PARTITIONS

    got_first: list[Message] = []
    got_second: list[Message] = []
    expected: set[bytes] = set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume, first, got_first)
        expected |= await publish_batch(one, topic, "a", 20)

        started = time.monotonic()
        second = await two.subscribe(SubscribeRequest(topic))
        # The new member returns once it has its share; the first one has given it up.
        await wait_for(
            lambda: len(assignment(first)) + len(assignment(second)) == PARTITIONS,
            15,
            "the split",
        )
        MEASURED["split (second subscribe -> disjoint halves)"] = time.monotonic() - started
        assert assignment(first)
        assert assignment(second)
        assert not assignment(first) & assignment(second)
        tg.start_soon(consume, second, got_second)
        expected |= await publish_batch(two, topic, "b", 20)

        def b_seen_by_both() -> bool:
            return any(m.data.startswith(b"b-") for m in got_first) and any(
                m.data.startswith(b"b-") for m in got_second
            )

        await wait_for(b_seen_by_both, 15, "batch b delivered to both members")

        await anyio.sleep(0.3)  # let the second member's acks be committed in the background
        started = time.monotonic()
        await second.close()
        MEASURED["second close"] = time.monotonic() - started
        MEASURED["take-over (close -> first owns all)"] = await wait_for(
            lambda: len(assignment(first)) == PARTITIONS, 20, "the take-over"
        )
        expected |= await publish_batch(one, topic, "c", 20)

        def everything_arrived() -> bool:
            return expected <= {m.data for m in got_first + got_second}

        MEASURED["all received after take-over"] = await wait_for(
            everything_arrived, 20, "every message of a, b and c"
        )
        tg.cancel_scope.cancel()
    print(MEASURED)
    received = [m.data for m in got_first + got_second]
    assert set(received) == expected  # nothing lost, nothing foreign (duplicates are allowed)
