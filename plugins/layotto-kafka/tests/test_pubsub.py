"""`pubsub.kafka` against real Kafka-protocol brokers: librdkafka's mock cluster (fast group
joins) and, for the round trip, Tansu too."""

from __future__ import annotations

import asyncio
import time

import pytest
from layotto.plugin import (
    BackendUnavailable,
    ComponentContext,
    HealthStatus,
    PublishRequest,
    SubscribeRequest,
)
from layotto_kafka import KafkaPubSub
from layotto_kafka.testing import MockKafkaCluster, free_port
from layotto_kafka_test_support import (
    Names,
    PubSubFactory,
    kafka_metadata,
    receive_n,
    receive_quiet,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]


async def test_round_trip_headers_and_partition_key(
    make_pubsub: PubSubFactory, bootstrap: str, names: Names
) -> None:
    pubsub = await make_pubsub(bootstrap, consumerGroup=names("group"))
    topic = names("orders")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    published = []
    for i in range(12):
        key = f"key-{i % 3}"
        metadata = {"partitionKey": key, "x-trace": f"trace-{i}", "note": "caf\u00e9 \u2615"}
        published.append((f"m{i}".encode(), metadata))
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode(), metadata))

    got = await receive_n(subscription, len(published))
    by_data = {m.data: m for m in got}
    assert set(by_data) == {data for data, _ in published}
    for data, metadata in published:
        message = by_data[data]
        assert message.topic == topic
        assert dict(message.metadata) == metadata  # headers <-> metadata, nothing else
        partition, _, offset = message.ref.removeprefix("p").partition("@")
        assert message.ordering_key == partition
        assert int(offset) >= 0
    # One partition per key; within a partition, offsets and publish order agree.
    for key in ("key-0", "key-1", "key-2"):
        mine = [m for m in got if m.metadata["partitionKey"] == key]
        assert len({m.ordering_key for m in mine}) == 1, [m.ref for m in mine]
        offsets = [int(m.ref.partition("@")[2]) for m in mine]
        assert offsets == sorted(offsets)
        assert [m.data for m in mine] == [d for d, md in published if md["partitionKey"] == key]
    for message in got:
        await message.ack()
    await subscription.close()


async def test_per_partition_order_across_many_keys(mock_pubsub: KafkaPubSub, names: Names) -> None:
    topic = names("ordered")
    subscription = await mock_pubsub.subscribe(SubscribeRequest(topic))
    for i in range(40):
        await mock_pubsub.publish(
            PublishRequest(topic, f"{i}".encode(), {"partitionKey": f"k{i % 7}"})
        )
    got = await receive_n(subscription, 40)
    lanes: dict[str | None, list[int]] = {}
    for message in got:
        lanes.setdefault(message.ordering_key, []).append(int(message.data))
    assert len(lanes) > 1, "every key landed in one partition"
    for lane in lanes.values():
        assert lane == sorted(lane)


async def test_no_ack_before_success(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    """Ack 0,1,2 and 4,6,7 of 10, close, resubscribe in the same group: 3 (the first un-acked)
    and everything after it comes again, the acked prefix does not."""
    pubsub = await make_pubsub(mock_cluster.bootstrap, consumerGroup=names("group"))
    topic = names("no-ack")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    for i in range(10):
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode(), {"partitionKey": "one"}))
    got = await receive_n(subscription, 10)
    assert [m.data for m in got] == [f"m{i}".encode() for i in range(10)]
    for i in (0, 1, 2, 4, 6, 7):
        await got[i].ack()
    await subscription.close()  # commits offset 3: the first one not acked

    again = await pubsub.subscribe(SubscribeRequest(topic))
    redelivered = await receive_n(again, 7)
    assert [m.data for m in redelivered] == [f"m{i}".encode() for i in range(3, 10)]
    assert [m.ref for m in redelivered] == [m.ref for m in got[3:]]
    assert await receive_quiet(again, 0.5) == []
    for message in redelivered:
        await message.ack()
    await again.close()

    # Everything acked now: a third subscription gets only what is new.
    third = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"new", {"partitionKey": "one"}))
    (only,) = await receive_n(third, 1)
    assert only.data == b"new"
    assert await receive_quiet(third, 0.3) == []


async def test_commits_happen_while_the_subscription_runs(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    """Acked offsets are committed in the background (not only on close): a member that takes
    over after a crash-like stop resumes after them."""
    group = names("group")
    topic = names("bg-commit")
    first = await make_pubsub(mock_cluster.bootstrap, consumerGroup=group)
    subscription = await first.subscribe(SubscribeRequest(topic))
    for i in range(5):
        await first.publish(PublishRequest(topic, f"m{i}".encode(), {"partitionKey": "k"}))
    got = await receive_n(subscription, 5)
    for message in got[:3]:
        await message.ack()
    # Committed without a close: ask the group's committed offset through the consumer.
    consumer = subscription._consumer  # type: ignore[attr-defined]
    partition = int(got[0].ordering_key or 0)
    tp = next(t for t in consumer.assignment() if t.partition == partition)
    committed: int | None = None
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        committed = await consumer.committed(tp)
        if committed == 3:
            break
        await asyncio.sleep(0.05)
    assert committed == 3

    # A crash-like end (no close, no final commit) and a new member: it resumes at 3.
    await consumer.stop()
    second = await make_pubsub(mock_cluster.bootstrap, consumerGroup=group)
    resumed = await second.subscribe(SubscribeRequest(topic))
    assert [m.data for m in await receive_n(resumed, 2)] == [b"m3", b"m4"]


async def test_initial_offset_newest_and_oldest(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    topic = names("offsets")
    newest = await make_pubsub(mock_cluster.bootstrap, consumerGroup=names("newest"))
    oldest = await make_pubsub(
        mock_cluster.bootstrap, consumerGroup=names("oldest"), initialOffset="oldest"
    )
    for i in range(3):
        await newest.publish(PublishRequest(topic, f"before-{i}".encode(), {"partitionKey": "k"}))

    sub_newest = await newest.subscribe(SubscribeRequest(topic))
    sub_oldest = await oldest.subscribe(SubscribeRequest(topic))
    # Published after subscribe() returned: received even with `newest`.
    await newest.publish(PublishRequest(topic, b"after", {"partitionKey": "k"}))

    (first,) = await receive_n(sub_newest, 1)
    assert first.data == b"after"
    assert await receive_quiet(sub_newest, 0.3) == []
    got = await receive_n(sub_oldest, 4)
    assert [m.data for m in got] == [b"before-0", b"before-1", b"before-2", b"after"]


async def test_subscription_metadata_overrides_the_group(
    mock_pubsub: KafkaPubSub, names: Names
) -> None:
    """Two groups on one topic each get every message (fan-out)."""
    topic = names("fan-out")
    one = await mock_pubsub.subscribe(SubscribeRequest(topic, {"consumerGroup": names("g1")}))
    two = await mock_pubsub.subscribe(SubscribeRequest(topic, {"consumerGroup": names("g2")}))
    await mock_pubsub.publish(PublishRequest(topic, b"hello"))
    assert [m.data for m in await receive_n(one, 1)] == [b"hello"]
    assert [m.data for m in await receive_n(two, 1)] == [b"hello"]


async def test_idempotent_producer(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    pubsub = await make_pubsub(
        mock_cluster.bootstrap, consumerGroup=names("group"), idempotence="true"
    )
    topic = names("idempotent")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"once", {"partitionKey": "k"}))
    assert [m.data for m in await receive_n(subscription, 1)] == [b"once"]


async def test_close_is_idempotent_and_ends_receive(mock_pubsub: KafkaPubSub, names: Names) -> None:
    subscription = await mock_pubsub.subscribe(SubscribeRequest(names("close")))
    await subscription.close()
    await subscription.close()
    with pytest.raises(BackendUnavailable):
        await subscription.receive()
    await mock_pubsub.close()
    await mock_pubsub.close()
    assert (await mock_pubsub.check_health()).status is HealthStatus.DOWN


async def test_init_fails_fast_without_a_broker() -> None:
    port = free_port()
    component = KafkaPubSub.create(
        kafka_metadata(f"127.0.0.1:{port}"), ComponentContext("pubsub", "app")
    )
    started = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await component.init()
    assert time.monotonic() - started < 3
    assert str(port) not in info.value.message
    assert "127.0.0.1" not in info.value.message
    assert "metadata.brokers" in info.value.message
    await component.close()
