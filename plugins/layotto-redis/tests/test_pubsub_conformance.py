"""pubsub.redis against the pub/sub conformance kit: at the component level (through the
sidecar's delivery engine), and through a running sidecar in both delivery models (streaming
SubscribeTopicEvents and app callbacks), on the private redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from layotto.config import RuntimeConfig
from layotto.testing.conformance import PubSubConformance
from layotto.testing.conformance.pubsub import ComponentHarness
from layotto.testing.conformance.pubsub_sidecar import CallbackHarness, StreamingHarness
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_redis import RedisPubSub
from layotto_redis_test_support import ComponentFactory, RedisServer

pytestmark = pytest.mark.integration


class TestRedisPubSubInOrder(PubSubConformance):
    """`concurrency: 1`: one lane, so deliveries keep the stream's order."""

    @pytest.fixture
    async def pubsub(
        self, make_component: ComponentFactory, redis_server: RedisServer
    ) -> RedisPubSub:
        component: RedisPubSub = await make_component("pubsub", redis_server, concurrency="1")
        return component


class TestRedisPubSubConcurrent(PubSubConformance):
    """The default `concurrency` (10): keyless messages are delivered concurrently."""

    @pytest.fixture
    async def pubsub(
        self, make_component: ComponentFactory, redis_server: RedisServer
    ) -> RedisPubSub:
        component: RedisPubSub = await make_component("pubsub", redis_server)
        return component

    @pytest.fixture
    def pubsub_harness(self, pubsub: RedisPubSub) -> ComponentHarness:
        return ComponentHarness(pubsub, ordered=False)


def sidecar_config(server: RedisServer) -> RuntimeConfig:
    metadata: dict[str, Any] = {"redisHost": server.address, "concurrency": "1"}
    return RuntimeConfig.model_validate(
        {
            "app": {"id": "conformance"},
            "components": [
                {"name": "pubsub", "kind": "pubsub", "type": "redis", "metadata": metadata}
            ],
            "pubsub": {"retry_initial_interval": 0.05, "retry_max_interval": 0.5},
        }
    )


class TestRedisStreaming(PubSubConformance):
    @pytest.fixture
    async def pubsub_harness(self, redis_server: RedisServer) -> AsyncIterator[StreamingHarness]:
        async with run_sidecar(sidecar_config(redis_server), grace_period=0.5) as sidecar:
            with StreamingHarness(sidecar, "pubsub") as harness:
                yield harness


class TestRedisCallback(PubSubConformance):
    @pytest.fixture
    async def pubsub_harness(self, redis_server: RedisServer) -> AsyncIterator[CallbackHarness]:
        config = sidecar_config(redis_server)

        def start(app_port: int) -> AbstractAsyncContextManager[Sidecar]:
            return run_sidecar(config, grace_period=0.5, app_port=app_port)

        # Redis keeps what a stopped sidecar left un-acked: the restarted one re-reads it.
        async with CallbackHarness(start, "pubsub").running() as harness:
            yield harness
