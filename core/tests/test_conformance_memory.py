"""The in-memory built-ins against the conformance kits (layotto.testing.conformance).

They are backend-neutral, so every kit runs on asyncio and on trio. No factory fixtures: two
in-memory instances never share a backend, so the cross-instance scenarios skip. The in-memory
configuration store is its own backend, so its updater writes through it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.builtin.memory_config import InMemoryConfigMetadata, InMemoryConfigStore
from layotto.builtin.memory_lock import InMemoryLockMetadata, InMemoryLockStore
from layotto.builtin.memory_sequencer import InMemorySequencer, InMemorySequencerMetadata
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.plugin import (
    ComponentContext,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    LockStore,
    SequencerStore,
    StateStore,
)
from layotto.testing.conformance import (
    ConfigStoreConformance,
    ConfigUpdater,
    LockStoreConformance,
    SequencerStoreConformance,
    StateStoreConformance,
)

BACKENDS = ["asyncio", "trio"]


class TestInMemoryState(StateStoreConformance):
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def state_store(self) -> AsyncIterator[StateStore]:
        store = InMemoryStateStore.create(InMemoryStateMetadata(), ComponentContext("s", "app"))
        assert isinstance(store, StateStore)
        await store.init()
        yield store
        await store.close()


class TestInMemoryLock(LockStoreConformance):
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def lock_store(self) -> AsyncIterator[LockStore]:
        store = InMemoryLockStore.create(InMemoryLockMetadata(), ComponentContext("l", "app"))
        assert isinstance(store, LockStore)
        await store.init()
        yield store
        await store.close()


class TestInMemorySequencer(SequencerStoreConformance):
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def sequencer_store(self) -> AsyncIterator[SequencerStore]:
        store = InMemorySequencer.create(InMemorySequencerMetadata(), ComponentContext("q", "app"))
        assert isinstance(store, SequencerStore)
        await store.init()
        yield store
        await store.close()


class MemoryUpdater:
    """The in-memory store has no backend besides itself: write through it."""

    def __init__(self, store: ConfigStore) -> None:
        self.store = store

    async def write(self, app_id: str, group: str, label: str, key: str, content: str) -> None:
        await self.store.set(app_id, [ConfigItem(key, content, group, label)], {})

    async def remove(self, app_id: str, group: str, label: str, key: str) -> None:
        await self.store.delete(ConfigQuery(app_id, group, label, (key,)))


class TestInMemoryConfig(ConfigStoreConformance):
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def config_store(self) -> AsyncIterator[ConfigStore]:
        store = InMemoryConfigStore.create(InMemoryConfigMetadata(), ComponentContext("c", "app"))
        assert isinstance(store, ConfigStore)
        await store.init()
        yield store
        await store.close()

    @pytest.fixture
    def config_updater(self, config_store: ConfigStore) -> ConfigUpdater:
        return MemoryUpdater(config_store)
