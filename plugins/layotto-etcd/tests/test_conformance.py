"""The layotto conformance kits against the etcd components on the private etcd.

Every kit runs on asyncio only (grpc.aio). The factory fixtures give the cross-instance
scenarios a second component on the same server.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable

import aetcd  # type: ignore[import-untyped]
import pytest
from layotto.plugin import ComponentContext, ConfigStore, LockStore, SequencerStore
from layotto.testing.conformance import (
    ConfigStoreConformance,
    LockStoreConformance,
    SequencerStoreConformance,
)
from layotto_etcd import (
    EtcdConfigMetadata,
    EtcdConfigStore,
    EtcdLockMetadata,
    EtcdLockStore,
    EtcdSequencerMetadata,
    EtcdSequencerStore,
)
from layotto_etcd_test_support import EtcdServer

pytestmark = pytest.mark.integration


async def _lock(address: str) -> LockStore:
    store = EtcdLockStore(
        EtcdLockMetadata.model_validate({"endpoints": address}), ComponentContext("l", "app")
    )
    await store.init()
    return store


async def _sequencer(address: str) -> SequencerStore:
    store = EtcdSequencerStore(
        EtcdSequencerMetadata.model_validate({"endpoints": address}),
        ComponentContext("q", "app"),
    )
    await store.init()
    return store


class EtcdUpdater:
    """Writes straight to etcd with aetcd's own client, in the store's layout."""

    def __init__(self, client: aetcd.Client) -> None:
        self.client = client

    async def write(self, app_id: str, group: str, label: str, key: str, content: str) -> None:
        await self.client.put(f"/{app_id}/{group}/{label}/{key}".encode(), content.encode())

    async def remove(self, app_id: str, group: str, label: str, key: str) -> None:
        item = f"/{app_id}/{group}/{label}/{key}".encode()
        await self.client.delete(item)
        await self.client.delete_prefix(item + b"/")  # its tags


class TestEtcdConfigConformance(ConfigStoreConformance):
    @pytest.fixture
    async def config_store(self, etcd_server: EtcdServer) -> AsyncIterator[ConfigStore]:
        store = EtcdConfigStore(
            EtcdConfigMetadata.model_validate({"endpoints": etcd_server.address}),
            ComponentContext("c", "app"),
        )
        await store.init()
        yield store
        await store.close()

    @pytest.fixture
    async def config_updater(self, etcd_server: EtcdServer) -> AsyncIterator[EtcdUpdater]:
        client = aetcd.Client(host="127.0.0.1", port=etcd_server.client_port, timeout=5)
        async with client:
            yield EtcdUpdater(client)


class TestEtcdLockConformance(LockStoreConformance):
    @pytest.fixture
    async def lock_store(self, etcd_server: EtcdServer) -> AsyncIterator[LockStore]:
        store = await _lock(etcd_server.address)
        yield store
        await store.close()

    @pytest.fixture
    def lock_store_factory(self, etcd_server: EtcdServer) -> Callable[[], Awaitable[LockStore]]:
        return lambda: _lock(etcd_server.address)


class TestEtcdSequencerConformance(SequencerStoreConformance):
    @pytest.fixture
    async def sequencer_store(self, etcd_server: EtcdServer) -> AsyncIterator[SequencerStore]:
        store = await _sequencer(etcd_server.address)
        yield store
        await store.close()

    @pytest.fixture
    def sequencer_store_factory(
        self, etcd_server: EtcdServer
    ) -> Callable[[], Awaitable[SequencerStore]]:
        return lambda: _sequencer(etcd_server.address)
