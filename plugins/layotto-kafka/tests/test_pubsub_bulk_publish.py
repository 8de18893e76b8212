"""`pubsub.kafka`'s native bulk publish (BULK_PUBSUB) on real Kafka-protocol brokers: every entry
arrives once with its headers and partition key, in entry order per key; an entry the producer
refuses fails alone; no broker fails the call at once; a broker lost while the acks are awaited
lists every unacknowledged entry within about a second."""

from __future__ import annotations

import time

import anyio
import pytest
from layotto.plugin import (
    BackendUnavailable,
    BulkPublishEntry,
    BulkPublishRequest,
    InvalidArgument,
    PubSubFeature,
    SubscribeRequest,
)
from layotto_kafka import KafkaPubSub
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import Names, PubSubFactory, receive_n, receive_quiet

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]


def entries(count: int, keys: int = 3) -> list[BulkPublishEntry]:
    return [
        BulkPublishEntry(
            f"e{i}", f"m{i}".encode(), {"partitionKey": f"k{i % keys}", "x-trace": f"t{i}"}
        )
        for i in range(count)
    ]


async def test_every_entry_arrives_once_with_its_headers_in_key_order(
    make_pubsub: PubSubFactory, bootstrap: str, names: Names
) -> None:
    pubsub = await make_pubsub(bootstrap, consumerGroup=names("group"))
    assert PubSubFeature.BULK_PUBSUB in pubsub.features
    topic = names("bulk")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    batch = entries(60)
    assert await pubsub.publish_bulk(BulkPublishRequest(topic, batch)) == []
    got = await receive_n(subscription, len(batch))
    got += await receive_quiet(subscription, 0.5)
    assert sorted(m.data for m in got) == sorted(e.data for e in batch)
    by_data = {m.data: m for m in got}
    for entry in batch:
        assert dict(by_data[entry.data].metadata) == entry.metadata
    for key in ("k0", "k1", "k2"):
        mine = [int(m.data[1:]) for m in got if m.metadata["partitionKey"] == key]
        assert mine == sorted(mine)
        assert len({m.ordering_key for m in got if m.metadata["partitionKey"] == key}) == 1
    for message in got:
        await message.ack()
    await subscription.close()


async def test_a_record_too_large_fails_alone(
    make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    pubsub = await make_pubsub(
        mock_cluster.bootstrap, consumerGroup=names("group"), maxMessageBytes="2000"
    )
    topic = names("too-large")
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    batch = entries(4)
    batch[1] = BulkPublishEntry("huge", b"x" * 5000)
    failures = await pubsub.publish_bulk(BulkPublishRequest(topic, batch))
    assert [f.entry_id for f in failures] == ["huge"]
    assert isinstance(failures[0].error, InvalidArgument)
    got = await receive_n(subscription, 3)
    assert sorted(m.data for m in got) == [b"m0", b"m2", b"m3"]
    await subscription.close()


async def test_no_broker_fails_the_call_fast(
    make_pubsub: PubSubFactory, own_mock_cluster: MockKafkaCluster, names: Names
) -> None:
    pubsub: KafkaPubSub = await make_pubsub(own_mock_cluster.bootstrap)
    own_mock_cluster.stop()
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as caught:
        await pubsub.publish_bulk(BulkPublishRequest(names("gone"), entries(5)))
    assert time.monotonic() - start < 3.0
    assert "127.0.0.1" not in caught.value.message


async def test_a_bulk_in_flight_when_the_broker_goes_down_lists_every_unacked_entry(
    own_mock_cluster: MockKafkaCluster, make_pubsub: PubSubFactory, names: Names
) -> None:
    """The broker vanishes while the bulk waits for its acks (injected latency): within about a
    second, every entry not acknowledged is listed as UNAVAILABLE, not after publishTimeout."""
    cluster = own_mock_cluster
    pubsub = await make_pubsub(cluster.bootstrap, publishTimeout="10s")
    topic = names("bulk-in-flight")
    assert await pubsub.publish_bulk(BulkPublishRequest(topic, entries(2))) == []  # warm-up
    cluster.set_rtt(1, 5000)
    outcome: list[tuple[float, list[str]]] = []

    async def publish() -> None:
        started = time.monotonic()
        failures = await pubsub.publish_bulk(BulkPublishRequest(topic, entries(10)))
        assert all(isinstance(f.error, BackendUnavailable) for f in failures), failures
        outcome.append((time.monotonic() - started, [f.entry_id for f in failures]))

    async with anyio.create_task_group() as tg:
        tg.start_soon(publish)
        await anyio.sleep(0.2)
        cluster.broker_down(1)
    ((took, failed),) = outcome
    assert took < 2.5, took
    assert failed == [f"e{i}" for i in range(10)]  # none was acknowledged: all listed
