"""A broker outage on the mock cluster (rd_kafka_mock_broker_set_down / set_up): publishing
fails fast with UNAVAILABLE, health goes DOWN and comes back UP, and a subscription that lived
through it receives everything published before and after."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest
from layotto.plugin import (
    BackendUnavailable,
    HealthStatus,
    Message,
    PublishRequest,
    SubscribeRequest,
    Subscription,
)
from layotto_kafka import KafkaPubSub
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import Names, PubSubFactory

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]

# The figures the tests measured, for the README (printed with -s).
MEASURED: dict[str, float] = {}


async def wait_for(check: Callable[[], Awaitable[bool]], within: float, what: str) -> float:
    """Poll `check` until it holds; the seconds it took."""
    started = time.monotonic()
    while not await check():
        if time.monotonic() - started > within:
            raise AssertionError(f"{what}: not within {within} s")
        await anyio.sleep(0.05)
    return time.monotonic() - started


async def consume(subscription: Subscription, into: list[Message]) -> None:
    """The sidecar's part: receive and ack, for as long as the task runs."""
    while True:
        message = await subscription.receive()
        into.append(message)
        await message.ack()


async def health_is(pubsub: KafkaPubSub, status: HealthStatus) -> bool:
    started = time.monotonic()
    health = await pubsub.check_health()
    assert time.monotonic() - started < 1.0, "check_health took a second or more"
    return health.status is status


async def test_outage_fails_fast_and_loses_nothing(
    own_mock_cluster: MockKafkaCluster, make_pubsub: PubSubFactory, names: Names
) -> None:
    cluster = own_mock_cluster
    pubsub = await make_pubsub(cluster.bootstrap, consumerGroup=names("group"))
    topic = names("outage")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    assert await health_is(pubsub, HealthStatus.UP)

    received: list[Message] = []
    expected: set[bytes] = set()
    async with anyio.create_task_group() as tg:
        tg.start_soon(consume, subscription, received)
        for i in range(5):
            data = f"before-{i}".encode()
            await pubsub.publish(PublishRequest(topic, data, {"partitionKey": f"k{i}"}))
            expected.add(data)

        cluster.broker_down(1)
        MEASURED["health DOWN after broker down"] = await wait_for(
            lambda: health_is(pubsub, HealthStatus.DOWN), 3, "health DOWN"
        )
        for attempt in range(3):
            started = time.monotonic()
            with pytest.raises(BackendUnavailable) as info:
                await pubsub.publish(PublishRequest(topic, f"lost-{attempt}".encode()))
            elapsed = time.monotonic() - started
            MEASURED[f"publish fails while down (#{attempt})"] = elapsed
            assert elapsed < 2.0, f"publish took {elapsed:.2f} s to fail"
            assert "127.0.0.1" not in info.value.message
            assert cluster.bootstrap not in info.value.message

        # Longer than the session timeout (3 s): the group forgets the member, which must
        # rejoin after the outage. The subscription keeps waiting in receive() meanwhile.
        await anyio.sleep(3.5)
        cluster.broker_up(1)
        MEASURED["health UP after broker up"] = await wait_for(
            lambda: health_is(pubsub, HealthStatus.UP), 10, "health UP"
        )
        for i in range(5):
            data = f"after-{i}".encode()
            await pubsub.publish(PublishRequest(topic, data, {"partitionKey": f"k{i}"}))
            expected.add(data)

        async def all_arrived() -> bool:
            return expected <= {m.data for m in received}

        MEASURED["everything received after up"] = await wait_for(
            all_arrived, 30, "every message published before and after the outage"
        )
        tg.cancel_scope.cancel()
    print(MEASURED)


async def test_publish_in_flight_when_the_broker_goes_down(
    own_mock_cluster: MockKafkaCluster, make_pubsub: PubSubFactory, names: Names
) -> None:
    """The broker vanishes while a publish waits for its ack (injected latency): the publish
    fails with UNAVAILABLE within about a second, not after publishTimeout."""
    cluster = own_mock_cluster
    pubsub = await make_pubsub(cluster.bootstrap, publishTimeout="10s")
    topic = names("in-flight")
    await pubsub.publish(PublishRequest(topic, b"warm-up"))
    cluster.set_rtt(1, 5000)
    failed_after: list[float] = []

    async def publish() -> None:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable):
            await pubsub.publish(PublishRequest(topic, b"in-flight"))
        failed_after.append(time.monotonic() - started)

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        await anyio.sleep(0.2)
        cluster.broker_down(1)
    MEASURED["in-flight publish fails"] = failed_after[0]
    print(MEASURED)
    assert failed_after[0] < 2.5, failed_after
