"""bindings.kafka against the binding kits (layotto.testing.conformance) on librdkafka's mock
cluster (fast group joins; Tansu runs the binding's own tests).

Output: `create` is the only operation (produce to `publishTopic`), so get / list / delete skip.
Input: a binding reading a fresh topic from the oldest offset; the kit's events are produced
by a second, output-only binding, as an outside writer. A record the handler failed is handed
to it again (`redelivers`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.plugin import BindingRequest, ComponentContext, InputBinding, OutputBinding
from layotto.testing.conformance import (
    BindingTrigger,
    InputBindingConformance,
    OutputBindingConformance,
)
from layotto_kafka import KafkaBinding, KafkaBindingMetadata
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import FAST_GROUP, Names

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]


async def started(bootstrap: str, **metadata: str) -> KafkaBinding:
    binding = KafkaBinding.create(
        KafkaBindingMetadata.model_validate({"brokers": bootstrap, **FAST_GROUP, **metadata}),
        ComponentContext("events", "app"),
    )
    await binding.init()
    return binding


class TestKafkaOutputBinding(OutputBindingConformance):
    expected_operations = frozenset({"create"})

    @pytest.fixture
    async def output_binding(
        self, mock_cluster: MockKafkaCluster, names: Names
    ) -> AsyncIterator[OutputBinding]:
        binding = await started(mock_cluster.bootstrap, publishTopic=names("out"))
        yield binding
        await binding.close()


class TestKafkaInputBinding(InputBindingConformance):
    redelivers = True

    @pytest.fixture
    def topic(self, names: Names) -> str:
        return names("in")

    @pytest.fixture
    async def input_binding(
        self, mock_cluster: MockKafkaCluster, names: Names, topic: str
    ) -> AsyncIterator[InputBinding]:
        binding = await started(
            mock_cluster.bootstrap,
            topics=topic,
            consumerGroup=names("group"),
            initialOffset="oldest",
            consumeRetryInterval="50ms",
        )
        yield binding
        await binding.close()

    @pytest.fixture
    async def input_binding_trigger(
        self, mock_cluster: MockKafkaCluster, topic: str
    ) -> AsyncIterator[BindingTrigger]:
        writer = await started(mock_cluster.bootstrap, publishTopic=topic, direction="output")

        async def produce(data: bytes) -> None:
            await writer.invoke(BindingRequest("create", data, {"partitionKey": "conftest"}))

        yield produce
        await writer.close()
