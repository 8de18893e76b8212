"""The layotto conformance kits against the Redis components on the private redis-server.

Every kit runs on asyncio only (redis.asyncio). The factory fixtures give the cross-instance
scenarios a second component on the same server.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from layotto.plugin import ComponentContext, ConfigStore, LockStore, SequencerStore, StateStore
from layotto.testing.conformance import (
    ConfigStoreConformance,
    LockStoreConformance,
    SequencerStoreConformance,
    StateStoreConformance,
)
from layotto_redis import (
    RedisConfigMetadata,
    RedisConfigStore,
    RedisLockMetadata,
    RedisLockStore,
    RedisSequencerMetadata,
    RedisSequencerStore,
    RedisStateMetadata,
    RedisStateStore,
)
from layotto_redis_test_support import RedisServer
from redis.asyncio import Redis

pytestmark = pytest.mark.integration


async def _state(address: str) -> StateStore:
    store = RedisStateStore(
        RedisStateMetadata.model_validate({"redisHost": address}), ComponentContext("s", "app")
    )
    await store.init()
    return store


async def _lock(address: str) -> LockStore:
    store = RedisLockStore(
        RedisLockMetadata.model_validate({"redisHost": address}), ComponentContext("l", "app")
    )
    await store.init()
    return store


async def _sequencer(address: str) -> SequencerStore:
    store = RedisSequencerStore(
        RedisSequencerMetadata.model_validate({"redisHost": address}),
        ComponentContext("q", "app"),
    )
    await store.init()
    return store


class TestRedisStateConformance(StateStoreConformance):
    malformed_etag = "not-an-etag"

    @pytest.fixture
    async def state_store(self, redis_server: RedisServer) -> AsyncIterator[StateStore]:
        store = await _state(redis_server.address)
        yield store
        await store.close()

    @pytest.fixture
    def state_store_bad_metadata(self) -> Callable[[], Awaitable[object]]:
        async def bad() -> object:
            return await _state("no-port-here")

        return bad


class TestRedisLockConformance(LockStoreConformance):
    @pytest.fixture
    async def lock_store(self, redis_server: RedisServer) -> AsyncIterator[LockStore]:
        store = await _lock(redis_server.address)
        yield store
        await store.close()

    @pytest.fixture
    def lock_store_factory(self, redis_server: RedisServer) -> Callable[[], Awaitable[LockStore]]:
        return lambda: _lock(redis_server.address)


class TestRedisSequencerConformance(SequencerStoreConformance):
    @pytest.fixture
    async def sequencer_store(self, redis_server: RedisServer) -> AsyncIterator[SequencerStore]:
        store = await _sequencer(redis_server.address)
        yield store
        await store.close()

    @pytest.fixture
    def sequencer_store_factory(
        self, redis_server: RedisServer
    ) -> Callable[[], Awaitable[SequencerStore]]:
        return lambda: _sequencer(redis_server.address)


class DaprStyleUpdater:
    """Writes as a Dapr user does, straight to Redis: `SET key "content||version"` (the key
    alone in the default group and label, else `<group>||<label>||<key>`), and `DEL`."""

    def __init__(self, client: Redis, store: ConfigStore) -> None:
        self.client = client
        self.defaults = (store.default_group, store.default_label)
        self.versions = itertools.count(100)

    def stored(self, group: str, label: str, key: str) -> str:
        return key if (group, label) == self.defaults else f"{group}||{label}||{key}"

    async def write(self, app_id: str, group: str, label: str, key: str, content: str) -> None:
        await self.client.set(self.stored(group, label, key), f"{content}||{next(self.versions)}")

    async def remove(self, app_id: str, group: str, label: str, key: str) -> None:
        await self.client.delete(self.stored(group, label, key))


class TestRedisConfigConformance(ConfigStoreConformance):
    @pytest.fixture
    async def config_store(self, redis_server: RedisServer) -> AsyncIterator[ConfigStore]:
        store = RedisConfigStore(
            RedisConfigMetadata.model_validate({"redisHost": redis_server.address}),
            ComponentContext("c", "app"),
        )
        await store.init()
        yield store
        await store.close()

    @pytest.fixture
    async def config_updater(
        self, redis_server: RedisServer, config_store: ConfigStore
    ) -> AsyncIterator[DaprStyleUpdater]:
        client = Redis(host="127.0.0.1", port=redis_server.port)
        yield DaprStyleUpdater(client, config_store)
        await client.aclose()
