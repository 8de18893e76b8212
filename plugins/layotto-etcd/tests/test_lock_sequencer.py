"""`lock.etcd` and `sequencer.etcd` against the private etcd, checked from the outside with
aetcd's own client: keys, values, leases and TTLs as an operator would see them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import aetcd  # type: ignore[import-untyped]
import pytest
from layotto.plugin import ComponentError, InvalidArgument, LockStatus
from layotto_etcd import EtcdLockStore, EtcdSequencerStore
from layotto_etcd_test_support import ComponentFactory, EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def direct(etcd_server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    client = aetcd.Client(host="127.0.0.1", port=etcd_server.client_port, timeout=5)
    await client.connect()
    yield client
    await client.close()


async def lease_of(direct: aetcd.Client, key: bytes) -> tuple[int, int]:
    """(lease id, granted TTL) of the lease `key` is attached to."""
    got = await direct.get(key)
    assert got is not None, key
    info = await direct.get_lease_info(got.lease, keys=False)
    return int(got.lease), int(info.grantedTTL)


# -- lock ----------------------------------------------------------------------------------


async def test_lock_layout(lock: EtcdLockStore, direct: aetcd.Client, prefix: str) -> None:
    assert await lock.try_lock(f"{prefix}r", "owner-1", 30)
    key = f"/layotto/{prefix}r".encode()
    got = await direct.get(key)
    assert got.value == b"owner-1"
    lease, ttl = await lease_of(direct, key)
    assert lease != 0
    assert ttl == 30
    assert await lock.unlock(f"{prefix}r", "owner-1") is LockStatus.SUCCESS
    assert await direct.get(key) is None
    info = await direct.get_lease_info(lease, keys=False)
    assert info.TTL == -1  # the released lock's lease was revoked


async def test_failed_try_lock_leaves_no_lease(
    lock: EtcdLockStore, direct: aetcd.Client, prefix: str
) -> None:
    assert await lock.try_lock(f"{prefix}r", "a", 30)
    before = len((await direct.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest())).leases)
    assert not await lock.try_lock(f"{prefix}r", "b", 30)
    assert not await lock.try_lock(f"{prefix}r", "a", 30)  # not reentrant
    after = len((await direct.leasestub.LeaseLeases(aetcd.rpc.LeaseLeasesRequest())).leases)
    assert after == before
    assert (await direct.get(f"/layotto/{prefix}r".encode())).value == b"a"


async def test_keep_alive_moves_the_lock_to_a_new_lease(
    lock: EtcdLockStore, direct: aetcd.Client, prefix: str
) -> None:
    key = f"/layotto/{prefix}r".encode()
    assert await lock.try_lock(f"{prefix}r", "me", 5)
    old, _ = await lease_of(direct, key)
    created = (await direct.get(key)).create_revision

    assert await lock.keep_alive(f"{prefix}r", "me", 60) is LockStatus.SUCCESS
    new, ttl = await lease_of(direct, key)
    assert new != old
    assert ttl == 60  # now + expire, not the first grant's TTL
    assert (await direct.get(key)).create_revision == created  # the same lock, not recreated
    assert (await direct.get_lease_info(old, keys=False)).TTL == -1

    assert await lock.keep_alive(f"{prefix}r", "other", 60) is LockStatus.LOCK_BELONG_TO_OTHERS
    assert (await lease_of(direct, key))[0] == new  # unchanged
    assert await lock.keep_alive(f"{prefix}none", "me", 5) is LockStatus.LOCK_UNEXIST
    assert await direct.get(f"/layotto/{prefix}none".encode()) is None  # not recreated


async def test_unlock_statuses(lock: EtcdLockStore, prefix: str) -> None:
    assert await lock.unlock(f"{prefix}r", "me") is LockStatus.LOCK_UNEXIST
    assert await lock.try_lock(f"{prefix}r", "me", 30)
    assert await lock.unlock(f"{prefix}r", "you") is LockStatus.LOCK_BELONG_TO_OTHERS
    assert await lock.unlock(f"{prefix}r", "me") is LockStatus.SUCCESS
    assert await lock.unlock(f"{prefix}r", "me") is LockStatus.LOCK_UNEXIST


async def test_one_winner_among_concurrent_callers(
    make_component: ComponentFactory, etcd_server: EtcdServer, prefix: str
) -> None:
    stores = [await make_component("lock", etcd_server) for _ in range(3)]
    results = await asyncio.gather(
        *(stores[n % 3].try_lock(f"{prefix}r", f"owner-{n}", 30) for n in range(30))
    )
    assert sum(results) == 1


async def test_key_prefix_path(
    make_component: ComponentFactory, etcd_server: EtcdServer, direct: aetcd.Client, prefix: str
) -> None:
    store = await make_component("lock", etcd_server, keyPrefixPath="/locks-of/team-a/")
    assert await store.try_lock(f"{prefix}r", "me", 30)
    assert (await direct.get(f"/locks-of/team-a/{prefix}r".encode())).value == b"me"
    default = await make_component("lock", etcd_server)
    assert await default.try_lock(f"{prefix}r", "other", 30)  # another key: no conflict


@pytest.mark.parametrize(
    ("resource", "owner", "expire", "field"),
    [("", "o", 5, "resource_id"), ("r", "", 5, "lock_owner"), ("r", "o", 0, "expire")],
)
async def test_lock_validation(
    lock: EtcdLockStore, resource: str, owner: str, expire: int, field: str
) -> None:
    with pytest.raises(InvalidArgument, match=field):
        await lock.try_lock(resource, owner, expire)
    with pytest.raises(InvalidArgument, match=field):
        await lock.keep_alive(resource, owner, expire)


# -- sequencer -----------------------------------------------------------------------------


async def test_ids_are_key_versions(
    sequencer: EtcdSequencerStore, direct: aetcd.Client, prefix: str
) -> None:
    assert [await sequencer.next_id(f"{prefix}k") for _ in range(3)] == [1, 2, 3]
    got = await direct.get(f"/layotto/{prefix}k".encode())
    assert (got.version, got.value) == (3, b"")  # upstream's layout: an empty value


async def test_continues_upstream_counters(
    sequencer: EtcdSequencerStore, direct: aetcd.Client, prefix: str
) -> None:
    for _ in range(7):  # what an upstream Layotto sidecar leaves behind: Put(key, "")
        await direct.put(f"/layotto/{prefix}k".encode(), b"")
    assert await sequencer.next_id(f"{prefix}k") == 8


async def test_bigger_than_stores_an_offset(
    sequencer: EtcdSequencerStore, direct: aetcd.Client, prefix: str
) -> None:
    key = f"{prefix}k"
    assert await sequencer.next_id(key) == 1
    await sequencer.ensure_bigger_than(key, 1000)
    got = await direct.get(f"/layotto/{key}".encode())
    assert (got.version, got.value) == (2, b"998")  # version 2 + offset 998 = id 1000, used up
    assert await sequencer.next_id(key) == 1001
    await sequencer.ensure_bigger_than(key, 10)  # already above: no write
    assert (await direct.get(f"/layotto/{key}".encode())).version == 3
    assert await sequencer.next_id(key) == 1002
    await sequencer.ensure_bigger_than(key, 0)
    await sequencer.ensure_bigger_than(f"{prefix}untouched", -5)
    assert await direct.get(f"/layotto/{prefix}untouched".encode()) is None


async def test_bigger_than_while_ids_are_taken(
    make_component: ComponentFactory, etcd_server: EtcdServer, prefix: str
) -> None:
    """The compare-and-swap never loses an id already handed out: ids taken concurrently with
    ensure_bigger_than stay unique and increasing, and the ones after it are > the value."""
    first = await make_component("sequencer", etcd_server)
    second = await make_component("sequencer", etcd_server)
    key = f"{prefix}k"
    taken: list[int] = []

    async def take() -> None:
        for _ in range(100):
            taken.append(await first.next_id(key))

    async def raise_it() -> None:
        for value in (50, 5_000, 100_000):
            await second.ensure_bigger_than(key, value)
            await asyncio.sleep(0)

    await asyncio.gather(take(), raise_it())
    assert taken == sorted(taken)
    assert len(set(taken)) == len(taken)
    assert await first.next_id(key) > 100_000


async def test_foreign_value_is_a_component_error(
    sequencer: EtcdSequencerStore, direct: aetcd.Client, prefix: str
) -> None:
    await direct.put(f"/layotto/{prefix}k".encode(), b"not a number")
    with pytest.raises(ComponentError, match="not an id offset"):
        await sequencer.next_id(f"{prefix}k")


async def test_empty_key(sequencer: EtcdSequencerStore) -> None:
    with pytest.raises(InvalidArgument, match="key"):
        await sequencer.next_id("")
