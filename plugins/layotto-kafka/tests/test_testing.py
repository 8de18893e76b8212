"""The broker launchers of `layotto_kafka.testing` (used by these tests and by `bench/`)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from layotto.plugin import PublishRequest, SubscribeRequest
from layotto_kafka.testing import MockKafkaCluster, port_open
from layotto_kafka_test_support import (
    Names,
    PubSubFactory,
    receive_n,
    start_mock_cluster,
    start_tansu,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(60)]


async def test_tansu_restarts_on_its_port(
    tmp_path: Path, make_pubsub: PubSubFactory, names: Names
) -> None:
    broker = start_tansu(tmp_path)
    try:
        port = broker.port
        broker.stop()
        assert not broker.running
        assert not port_open(port)
        broker.start()
        assert broker.port == port
        assert port_open(port)
        pubsub = await make_pubsub(broker.bootstrap, consumerGroup=names("group"))
        await pubsub.publish(PublishRequest(names("topic"), b"after a restart"))
        await pubsub.close()
    finally:
        broker.stop()


async def test_mock_cluster_commands(
    own_mock_cluster: MockKafkaCluster, make_pubsub: PubSubFactory, names: Names
) -> None:
    cluster = own_mock_cluster
    topic = names("one-partition")
    cluster.create_topic(topic, 1)
    with pytest.raises(RuntimeError, match="unknown command"):
        cluster.command("explode")
    with pytest.raises(RuntimeError, match="failed"):
        cluster.broker_down(42)  # no such broker

    pubsub = await make_pubsub(cluster.bootstrap, consumerGroup=names("group"))
    subscription = await pubsub.subscribe(SubscribeRequest(topic))
    # Two REQUEST_TIMED_OUT answers to Produce: the producer retries, the publish succeeds.
    cluster.push_request_errors(0, 7, 7)
    started = time.monotonic()
    for i in range(3):
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode()))
    assert time.monotonic() - started < 3
    got = await receive_n(subscription, 3)
    assert [m.data for m in got] == [b"m0", b"m1", b"m2"]
    assert {m.ordering_key for m in got} == {"0"}  # the topic has one partition


def test_mock_cluster_stops_cleanly() -> None:
    cluster = start_mock_cluster(3)
    assert len(cluster.bootstrap.split(",")) == 3
    proc = cluster.proc
    assert proc is not None
    cluster.stop()
    assert proc.returncode == 0
    cluster.stop()  # idempotent
