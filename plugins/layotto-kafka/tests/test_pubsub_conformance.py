"""pubsub.kafka against the pub/sub conformance kit on librdkafka's mock cluster (fast group
joins): at the component level (through the sidecar's delivery engine), and through a running
sidecar in both delivery models (streaming SubscribeTopicEvents and app callbacks).

(Tansu, the realistic broker, runs the component's own and rebalance tests; its group joins
take seconds, which would make this suite several times slower.)"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from layotto.config import RuntimeConfig
from layotto.testing.conformance import PubSubConformance
from layotto.testing.conformance.pubsub_sidecar import CallbackHarness, StreamingHarness
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_kafka import KafkaPubSub
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import FAST_GROUP, Names, PubSubFactory

pytestmark = pytest.mark.integration


class TestKafkaOnMockCluster(PubSubConformance):
    @pytest.fixture
    async def pubsub(
        self, make_pubsub: PubSubFactory, mock_cluster: MockKafkaCluster, names: Names
    ) -> KafkaPubSub:
        return await make_pubsub(mock_cluster.bootstrap, consumerGroup=names("group"))


def sidecar_config(bootstrap: str, group: str) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "app": {"id": "conformance"},
            "components": [
                {
                    "name": "pubsub",
                    "kind": "pubsub",
                    "type": "kafka",
                    "metadata": {"brokers": bootstrap, "consumerGroup": group, **FAST_GROUP},
                }
            ],
            "pubsub": {"retry_initial_interval": 0.05, "retry_max_interval": 0.5},
        }
    )


class TestKafkaStreaming(PubSubConformance):
    @pytest.fixture
    async def pubsub_harness(
        self, mock_cluster: MockKafkaCluster, names: Names
    ) -> AsyncIterator[StreamingHarness]:
        config = sidecar_config(mock_cluster.bootstrap, names("group"))
        async with run_sidecar(config, grace_period=0.5) as sidecar:
            with StreamingHarness(sidecar, "pubsub") as harness:
                yield harness


class TestKafkaCallback(PubSubConformance):
    @pytest.fixture
    async def pubsub_harness(
        self, mock_cluster: MockKafkaCluster, names: Names
    ) -> AsyncIterator[CallbackHarness]:
        config = sidecar_config(mock_cluster.bootstrap, names("group"))

        def start(app_port: int) -> AbstractAsyncContextManager[Sidecar]:
            return run_sidecar(config, grace_period=0.5, app_port=app_port)

        # Kafka keeps what a stopped sidecar did not commit: the restarted one reads it again.
        async with CallbackHarness(start, "pubsub").running() as harness:
            yield harness
