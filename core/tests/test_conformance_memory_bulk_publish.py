"""The in-memory pub/sub with `bulkPublish: true` (it then declares BULK_PUBSUB) against the
pub/sub conformance kit: the bulk scenarios run through the sidecar's bulk path
(`ComponentHarness.publish_bulk` -> `PubSubService.publish_bulk` -> the component's native
`publish_bulk`), and the other scenarios prove the flag changes nothing else. Without the flag
(`test_conformance_memory_pubsub.py`) the bulk scenarios skip with the reason."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.builtin.memory_pubsub import InMemoryPubSub, InMemoryPubSubMetadata
from layotto.plugin import ComponentContext, PubSub, PubSubFeature
from layotto.testing.conformance import ComponentHarness, PubSubConformance, PubSubHarness


class TestInMemoryBulkPubSub(PubSubConformance):
    quiet_period = 0.1
    failing_handler_sleep = 0.05

    @pytest.fixture
    async def pubsub(self) -> AsyncIterator[PubSub]:
        metadata = InMemoryPubSubMetadata.model_validate({"bulkPublish": "true"})
        component = InMemoryPubSub.create(metadata, ComponentContext("p", "app"))
        assert isinstance(component, PubSub)
        assert PubSubFeature.BULK_PUBSUB in component.features
        await component.init()
        yield component
        await component.close()

    @pytest.fixture
    def pubsub_harness(self, pubsub: PubSub) -> PubSubHarness:
        return ComponentHarness(pubsub, close_grace=0.1)
