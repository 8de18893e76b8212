"""Lock-store conformance (conformance.md §4, component level).

Subclass `LockStoreConformance` in a test module (the name must start with `Test`) and provide a
`lock_store` fixture that yields an initialised store and closes it on teardown::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import LockStoreConformance

    class TestRedisLock(LockStoreConformance):
        @pytest.fixture
        async def lock_store(self, redis_url):
            store = RedisLockStore.create(
                RedisLockMetadata(redisHost=...), ComponentContext("l", "app")
            )
            await store.init()
            yield store
            await store.close()

        @pytest.fixture
        def lock_store_factory(self, redis_url):  # optional: cross-instance scenarios
            async def another():
                store = RedisLockStore.create(...)
                await store.init()
                return store  # the kit closes it
            return another

Without a `lock_store_factory` override (the `layotto` pytest plugin's default is None) the
cross-instance scenarios are skipped. Resources and owners are unique per test (uuid4 prefix,
fixture `conformance_prefix`); whatever a test may still hold is unlocked afterwards.

Expiry scenarios poll every 100 ms with lock expiries of 1-3 s, so the class runs in ~8 s.
Request validation (empty ids, `expire <= 0`) and the mapping of store errors to
`INTERNAL_ERROR` are sidecar-level and tested there, not here.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable

import anyio
import pytest

from layotto.plugin import HealthStatus, LayottoError, LockStatus, LockStore
from layotto.testing.conformance._support import (
    ConformanceBase,
    Names,
    another_instance,
    poll_until,
    sleep_until,
)

LockStoreFactory = Callable[[], Awaitable[LockStore]]

# conformance.md §4 uses 15 s for a lock nobody waits on, and "TryLock succeeds again within
# 5 s" of a 3 s lock: the kit keeps Dapr's 2 s of slack after each (shorter) expiry.
_LONG = 15
_SLACK = 2.0


class LockNames(Names):
    """Resources and owners of one test; every (resource, owner) pair is unlocked afterwards."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.owner = f"{prefix}conftest"
        self.other = f"{prefix}other"
        self.third = f"{prefix}third"
        self.owners = [self.owner, self.other, self.third]

    def extra_owner(self, name: str) -> str:
        owner = f"{self.prefix}owner-{name}"
        self.owners.append(owner)
        return owner


class LockStoreConformance(ConformanceBase):
    """conformance.md §4 against the `lock_store` fixture. See the module docstring."""

    @pytest.fixture
    async def conformance_locks(
        self, lock_store: LockStore, conformance_prefix: str
    ) -> AsyncIterator[LockNames]:
        names = LockNames(conformance_prefix)
        yield names
        with anyio.move_on_after(10):
            for resource in names.used:
                for owner in names.owners:
                    with contextlib.suppress(LayottoError):
                        await lock_store.unlock(resource, owner)

    @staticmethod
    async def wait_until_acquired(
        store: LockStore, resource: str, owner: str, *, since: float, deadline: float, what: str
    ) -> float:
        async def acquired() -> bool:
            return await store.try_lock(resource, owner, _LONG)

        return await poll_until(acquired, since=since, deadline=deadline, what=what)

    # -- Dapr scenarios ------------------------------------------------------------------------

    async def test_init_and_ping(self, lock_store: LockStore) -> None:
        assert isinstance(lock_store, LockStore)
        with anyio.fail_after(1):
            health = await lock_store.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_close_is_idempotent(self, lock_store: LockStore) -> None:
        with anyio.fail_after(5):
            await lock_store.close()
            await lock_store.close()  # the fixture's teardown closes it a third time

    async def test_acquire(self, lock_store: LockStore, conformance_locks: LockNames) -> None:
        assert await lock_store.try_lock(conformance_locks("lock1"), conformance_locks.owner, 15)
        assert await lock_store.try_lock(conformance_locks("lock2"), conformance_locks.owner, 3)

    async def test_is_not_reentrant(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        lock1, owner = conformance_locks("lock1"), conformance_locks.owner
        assert await lock_store.try_lock(lock1, owner, _LONG)
        assert not await lock_store.try_lock(lock1, owner, _LONG), "the same owner re-acquired"
        assert not await lock_store.try_lock(lock1, conformance_locks.other, _LONG)

    async def test_unlock_a_missing_resource(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        status = await lock_store.unlock(conformance_locks("never-locked"), conformance_locks.owner)
        assert status is LockStatus.LOCK_UNEXIST

    async def test_unlock_by_another_owner(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        lock1 = conformance_locks("lock1")
        assert await lock_store.try_lock(lock1, conformance_locks.owner, _LONG)
        status = await lock_store.unlock(lock1, conformance_locks.other)
        assert status is LockStatus.LOCK_BELONG_TO_OTHERS
        assert not await lock_store.try_lock(lock1, conformance_locks.third, _LONG), "released"

    async def test_unlock_by_the_owner(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        lock1 = conformance_locks("lock1")
        assert await lock_store.try_lock(lock1, conformance_locks.owner, _LONG)
        assert await lock_store.unlock(lock1, conformance_locks.owner) is LockStatus.SUCCESS
        assert await lock_store.try_lock(lock1, conformance_locks.other, _LONG), "still held"
        # The old owner cannot release it again: it is the other owner's now.
        assert await lock_store.unlock(lock1, conformance_locks.owner) is (
            LockStatus.LOCK_BELONG_TO_OTHERS
        )

    async def test_lock_expires(self, lock_store: LockStore, conformance_locks: LockNames) -> None:
        lock2, expiry = conformance_locks("lock2"), 1
        start = time.monotonic()
        assert await lock_store.try_lock(lock2, conformance_locks.owner, expiry)
        assert not await lock_store.try_lock(lock2, conformance_locks.other, _LONG)
        await self.wait_until_acquired(
            lock_store,
            lock2,
            conformance_locks.other,
            since=start,
            deadline=expiry + _SLACK,
            what=f"another owner acquiring a lock that expired after {expiry} s",
        )

    # -- keep-alive ----------------------------------------------------------------------------

    async def test_keep_alive_by_the_owner_extends_the_lease(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        resource, owner, other = (
            conformance_locks("renewed"),
            conformance_locks.owner,
            conformance_locks.other,
        )
        start = time.monotonic()
        assert await lock_store.try_lock(resource, owner, 2)  # expires at 2 s
        await sleep_until(start, 1.0)
        assert await lock_store.keep_alive(resource, owner, 3) is LockStatus.SUCCESS  # at 4 s
        await sleep_until(start, 3.0)  # past the original expiry, before the renewed one
        assert not await lock_store.try_lock(resource, other, _LONG), "the renewal was lost"
        took = await self.wait_until_acquired(
            lock_store,
            resource,
            other,
            since=start,
            deadline=4.0 + _SLACK,
            what="another owner acquiring after the renewed expiry",
        )
        assert took >= 3.5, f"released after {took:.2f} s, before the renewed expiry (4 s)"

    async def test_keep_alive_by_another_owner(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        resource, expiry = conformance_locks("theirs"), 1
        start = time.monotonic()
        assert await lock_store.try_lock(resource, conformance_locks.owner, expiry)
        status = await lock_store.keep_alive(resource, conformance_locks.other, 30)
        assert status is LockStatus.LOCK_BELONG_TO_OTHERS
        assert not await lock_store.try_lock(resource, conformance_locks.other, _LONG)
        # It keeps the owner's expiry, not the 30 s the other owner asked for.
        await self.wait_until_acquired(
            lock_store,
            resource,
            conformance_locks.third,
            since=start,
            deadline=expiry + _SLACK,
            what="the lock expiring on its owner's schedule after a foreign keep-alive",
        )

    async def test_keep_alive_of_an_expired_lock(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        resource, probe, expiry = conformance_locks("expired"), conformance_locks("probe"), 1
        owner = conformance_locks.owner
        start = time.monotonic()
        assert await lock_store.try_lock(resource, owner, expiry)
        assert await lock_store.try_lock(probe, owner, expiry)
        # The probe, taken after `resource` with the same expiry, tells when `resource` is gone
        # without touching it.
        await self.wait_until_acquired(
            lock_store,
            probe,
            conformance_locks.other,
            since=start,
            deadline=expiry + _SLACK,
            what="a lock expiring",
        )
        assert await lock_store.keep_alive(resource, owner, 30) is LockStatus.LOCK_UNEXIST
        assert await lock_store.try_lock(resource, conformance_locks.other, _LONG), (
            "keep-alive recreated an expired lock"
        )

    async def test_keep_alive_of_a_never_acquired_resource(
        self, lock_store: LockStore, conformance_locks: LockNames
    ) -> None:
        resource = conformance_locks("never-locked")
        status = await lock_store.keep_alive(resource, conformance_locks.owner, 30)
        assert status is LockStatus.LOCK_UNEXIST
        assert await lock_store.try_lock(resource, conformance_locks.other, _LONG), (
            "keep-alive created a lock"
        )

    # -- two instances on one backend ----------------------------------------------------------

    async def test_instances_share_locks(
        self,
        lock_store: LockStore,
        lock_store_factory: LockStoreFactory | None,
        conformance_locks: LockNames,
    ) -> None:
        async with another_instance(lock_store_factory, "lock_store_factory") as second:
            resource, owner, other = (
                conformance_locks("shared"),
                conformance_locks.owner,
                conformance_locks.other,
            )
            assert await lock_store.try_lock(resource, owner, _LONG)
            assert not await second.try_lock(resource, other, _LONG)
            assert not await second.try_lock(resource, owner, _LONG)
            assert await second.unlock(resource, other) is LockStatus.LOCK_BELONG_TO_OTHERS
            assert await second.keep_alive(resource, owner, _LONG) is LockStatus.SUCCESS
            assert await second.unlock(resource, owner) is LockStatus.SUCCESS
            assert await lock_store.unlock(resource, owner) is LockStatus.LOCK_UNEXIST
            assert await second.try_lock(resource, other, _LONG)
            assert not await lock_store.try_lock(resource, owner, _LONG)

    async def test_only_one_of_many_concurrent_acquirers_wins(
        self,
        lock_store: LockStore,
        lock_store_factory: LockStoreFactory | None,
        conformance_locks: LockNames,
    ) -> None:
        resource = conformance_locks("contended")
        owners = [conformance_locks.extra_owner(str(i)) for i in range(20)]
        winners: list[str] = []

        async def contend(store: LockStore, owner: str) -> None:
            if await store.try_lock(resource, owner, _LONG):
                winners.append(owner)

        async with contextlib.AsyncExitStack() as stack:
            stores = [lock_store]
            if lock_store_factory is not None:
                stores.append(
                    await stack.enter_async_context(
                        another_instance(lock_store_factory, "lock_store_factory")
                    )
                )
            async with anyio.create_task_group() as tg:
                for i, owner in enumerate(owners):
                    tg.start_soon(contend, stores[i % len(stores)], owner)
        assert len(winners) == 1, winners
        assert await lock_store.unlock(resource, winners[0]) is LockStatus.SUCCESS
