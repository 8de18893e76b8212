"""The in-memory pub/sub against the pub/sub conformance kit, on asyncio and trio.

The kit's default `pubsub_harness` wraps the `pubsub` fixture in a `ComponentHarness`: the
sidecar's CloudEvents envelope and delivery engine (`DeliveryLoop`) over the component SPI.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.builtin.memory_pubsub import InMemoryPubSub, InMemoryPubSubMetadata
from layotto.plugin import ComponentContext, PubSub
from layotto.testing.conformance import ComponentHarness, PubSubConformance, PubSubHarness


class TestInMemoryPubSub(PubSubConformance):
    # Nothing is slow in-process: shorter waits keep the class fast (the defaults suit
    # real brokers). The harness is ordered, so a sentinel already proves most negatives.
    quiet_period = 0.1
    failing_handler_sleep = 0.05

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def pubsub(self) -> AsyncIterator[PubSub]:
        component = InMemoryPubSub.create(InMemoryPubSubMetadata(), ComponentContext("p", "app"))
        assert isinstance(component, PubSub)
        await component.init()
        yield component
        await component.close()

    @pytest.fixture
    def pubsub_harness(self, pubsub: PubSub) -> PubSubHarness:
        return ComponentHarness(pubsub, close_grace=0.1)
