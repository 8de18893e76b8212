"""The pub/sub conformance scenarios through a running sidecar on the in-memory component: the
streaming model (SubscribeTopicEvents) and the app-callback model (OnTopicEvent), over real
gRPC sockets. The component runs with `bulkPublish: true` (it declares BULK_PUBSUB), so the
bulk scenarios run too, through Dapr's BulkPublishEvent on the sidecar. Redis and Kafka run the
same classes in their plugins' suites."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager

import pytest
from layotto.config import RuntimeConfig
from layotto.testing.conformance import PubSubConformance
from layotto.testing.conformance.pubsub_sidecar import CallbackHarness, StreamingHarness
from layotto.testing.runtime import Sidecar, run_sidecar

CONFIG = RuntimeConfig.model_validate(
    {
        "components": [
            {
                "name": "pubsub",
                "kind": "pubsub",
                "type": "in-memory",
                "metadata": {"bulkPublish": "true"},
            }
        ],
        "pubsub": {"retry_initial_interval": 0.05, "retry_max_interval": 0.5},
    }
)


def start(app_port: int) -> AbstractAsyncContextManager[Sidecar]:
    return run_sidecar(CONFIG, grace_period=0.5, app_port=app_port)


class TestStreamingInMemory(PubSubConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"  # the sidecar's gRPC stack is asyncio-only

    @pytest.fixture
    async def pubsub_harness(self) -> AsyncIterator[StreamingHarness]:
        async with run_sidecar(CONFIG, grace_period=0.5) as sidecar:
            with StreamingHarness(sidecar, "pubsub") as harness:
                yield harness


class TestCallbackInMemory(PubSubConformance):
    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    async def pubsub_harness(self) -> AsyncIterator[CallbackHarness]:
        # A restarted in-memory sidecar starts empty: un-acked messages die with the old one.
        harness = CallbackHarness(start, "pubsub", reopen_redelivers=False)
        async with harness.running() as running:
            yield running
