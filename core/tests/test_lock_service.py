"""LockService and the in-memory lock store: key scheme, validation, statuses, expiry, errors."""

from __future__ import annotations

import anyio
import pytest
from layotto.builtin.memory_lock import InMemoryLockMetadata, InMemoryLockStore
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    ErrorCategory,
    InvalidArgument,
    NotConfigured,
)
from layotto.plugin import ComponentSpec, Kind, LockStatus, LockStore
from layotto.services.keys import BlockKeys
from layotto.services.lock import LockService

pytestmark = pytest.mark.anyio

SECRET = "redis://admin:hunter2@10.0.0.7:6379"
APP = "app1"
STORE = "lockstore"


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def built(name: str, store: LockStore, key_prefix: str | None = None) -> BuiltComponent:
    config = ComponentConfig(name=name, kind=Kind.LOCK, type="fake", key_prefix=key_prefix)
    spec = ComponentSpec(Kind.LOCK, "fake", InMemoryLockMetadata, lambda m, c: store)
    return BuiltComponent(config, spec, store)


def service(
    *stores: tuple[str, LockStore] | tuple[str, LockStore, str | None],
    app_id: str = APP,
    call_timeout: float = 10.0,
) -> LockService:
    registry = ComponentRegistry()
    for entry in stores:
        registry.add(built(*entry))
    return LockService(registry, app_id, call_timeout=call_timeout)


# -- the key scheme (layotto-semantics.md 2.3) ---------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "app_id", "stored"),
    [
        (None, "app1", "lock|||app1||r"),  # the default for locks is appid
        ("appid", "app1", "lock|||app1||r"),
        ("AppID", "app1", "lock|||app1||r"),  # case-insensitive
        (None, "", "lock|||r"),  # no app id: no prefix
        ("none", "app1", "lock|||r"),
        ("", "app1", "lock|||r"),
        ("name", "app1", f"lock|||{STORE}||r"),
        ("tenant", "app1", "lock|||tenant||r"),
    ],
)
async def test_stored_key(strategy: str | None, app_id: str, stored: str) -> None:
    store = InMemoryLockStore()
    svc = service((STORE, store, strategy), app_id=app_id)
    assert await svc.try_lock(STORE, "r", "owner", 10)
    # A probe owner sees the lease under the stored key, and only there.
    assert await store.unlock(stored, "probe") is LockStatus.LOCK_BELONG_TO_OTHERS
    if stored != "r":
        assert await store.unlock("r", "probe") is LockStatus.LOCK_UNEXIST


def test_block_keys_for_the_sequencer_too() -> None:
    keys = BlockKeys.resolve("sequencer", None, default="appid", app_id="a", store_name="s")
    assert keys.apply("k") == "sequencer|||a||k"
    err = keys.scrub(ComponentError("boom at sequencer|||a||k"))
    assert err.message == "boom at k"
    assert str(err) == "boom at k"


def test_a_literal_prefix_with_the_separator_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"\|\|"):
        service((STORE, InMemoryLockStore(), "a||b"))


def test_a_component_that_is_not_a_lock_store_is_rejected() -> None:
    registry = ComponentRegistry()
    bogus = built(STORE, InMemoryLockStore())
    registry.add(BuiltComponent(bogus.config, bogus.spec, object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=STORE):
        LockService(registry, APP)


# -- validation ----------------------------------------------------------------------------


async def test_no_lock_store_is_not_configured() -> None:
    svc = service()
    for call in (
        lambda: svc.try_lock(STORE, "r", "o", 10),
        lambda: svc.unlock(STORE, "r", "o"),
        lambda: svc.keep_alive(STORE, "r", "o", 10),
    ):
        with pytest.raises(NotConfigured, match="lock store is not configured") as info:
            await call()
        assert info.value.category is ErrorCategory.FAILED_PRECONDITION


@pytest.mark.parametrize(
    ("resource", "owner", "expire", "field"),
    [
        ("", "o", 10, "resource_id"),
        ("r", "", 10, "lock_owner"),
        ("r", "o", 0, "expire"),
        ("r", "o", -1, "expire"),
        ("a||b", "o", 10, "resource_id"),
    ],
)
async def test_invalid_fields_are_named(resource: str, owner: str, expire: int, field: str) -> None:
    store = InMemoryLockStore()
    svc = service((STORE, store))
    calls = [
        lambda: svc.try_lock(STORE, resource, owner, expire),
        lambda: svc.keep_alive(STORE, resource, owner, expire),
    ]
    if field != "expire":  # Unlock has no expire
        calls.append(lambda: svc.unlock(STORE, resource, owner))
    for call in calls:
        with pytest.raises(InvalidArgument, match=field):
            await call()
    assert len(store) == 0


async def test_unknown_store_is_invalid_argument() -> None:
    svc = service((STORE, InMemoryLockStore()))
    with pytest.raises(InvalidArgument, match="'nope' is not found"):
        await svc.try_lock("nope", "r", "o", 10)
    with pytest.raises(InvalidArgument, match="'nope' is not found"):
        await svc.unlock("nope", "r", "o")
    with pytest.raises(InvalidArgument, match="'' is not found"):
        await svc.keep_alive("", "r", "o", 10)


async def test_fields_are_checked_before_the_store() -> None:
    """Upstream's order: an empty resource id is reported even when the store is unknown."""
    svc = service((STORE, InMemoryLockStore()))
    with pytest.raises(InvalidArgument, match="resource_id"):
        await svc.try_lock("nope", "", "o", 10)
    with pytest.raises(InvalidArgument, match="expire"):
        await svc.try_lock("nope", "r", "o", 0)


# -- semantics (in-memory store through the service) ---------------------------------------


async def test_try_lock_is_exclusive_and_not_reentrant() -> None:
    svc = service((STORE, InMemoryLockStore()))
    assert await svc.try_lock(STORE, "r", "alice", 10)
    assert not await svc.try_lock(STORE, "r", "alice", 10)
    assert not await svc.try_lock(STORE, "r", "bob", 10)
    assert await svc.try_lock(STORE, "other", "bob", 10)


async def test_unlock_statuses() -> None:
    svc = service((STORE, InMemoryLockStore()))
    assert await svc.unlock(STORE, "r", "alice") is LockStatus.LOCK_UNEXIST
    assert await svc.try_lock(STORE, "r", "alice", 10)
    assert await svc.unlock(STORE, "r", "bob") is LockStatus.LOCK_BELONG_TO_OTHERS
    assert not await svc.try_lock(STORE, "r", "bob", 10)  # still held
    assert await svc.unlock(STORE, "r", "alice") is LockStatus.SUCCESS
    assert await svc.unlock(STORE, "r", "alice") is LockStatus.LOCK_UNEXIST
    assert await svc.try_lock(STORE, "r", "bob", 10)


async def test_two_app_ids_lock_independently() -> None:
    store = InMemoryLockStore()
    a = service((STORE, store), app_id="a")
    b = service((STORE, store), app_id="b")
    assert await a.try_lock(STORE, "r", "o", 10)
    assert await b.try_lock(STORE, "r", "o", 10)


async def test_leases_expire() -> None:
    clock = FakeClock()
    svc = service((STORE, InMemoryLockStore(clock)))
    assert await svc.try_lock(STORE, "r", "alice", 3)
    clock.now += 2.9
    assert not await svc.try_lock(STORE, "r", "bob", 3)
    clock.now += 0.1
    assert await svc.unlock(STORE, "r", "alice") is LockStatus.LOCK_UNEXIST
    assert await svc.try_lock(STORE, "r", "bob", 3)


async def test_keep_alive_extends_for_the_owner_only() -> None:
    clock = FakeClock()
    svc = service((STORE, InMemoryLockStore(clock)))
    assert await svc.keep_alive(STORE, "r", "alice", 3) is LockStatus.LOCK_UNEXIST
    assert await svc.try_lock(STORE, "r", "alice", 3)
    clock.now += 2
    assert await svc.keep_alive(STORE, "r", "bob", 30) is LockStatus.LOCK_BELONG_TO_OTHERS
    assert await svc.keep_alive(STORE, "r", "alice", 3) is LockStatus.SUCCESS
    clock.now += 2  # past the original expiry, within the renewed one
    assert not await svc.try_lock(STORE, "r", "bob", 3)
    clock.now += 1
    assert await svc.try_lock(STORE, "r", "bob", 3)


async def test_a_non_owner_renewal_leaves_the_expiry_alone() -> None:
    clock = FakeClock()
    svc = service((STORE, InMemoryLockStore(clock)))
    assert await svc.try_lock(STORE, "r", "alice", 3)
    assert await svc.keep_alive(STORE, "r", "bob", 60) is LockStatus.LOCK_BELONG_TO_OTHERS
    clock.now += 3
    assert await svc.try_lock(STORE, "r", "bob", 3)


async def test_renewing_an_expired_lease_does_not_recreate_it() -> None:
    clock = FakeClock()
    store = InMemoryLockStore(clock)
    svc = service((STORE, store))
    assert await svc.try_lock(STORE, "r", "alice", 1)
    clock.now += 1
    assert await svc.keep_alive(STORE, "r", "alice", 10) is LockStatus.LOCK_UNEXIST
    assert await svc.try_lock(STORE, "r", "bob", 1)


async def test_expired_leases_are_swept() -> None:
    clock = FakeClock()
    store = InMemoryLockStore(clock)
    for i in range(1500):
        assert await store.try_lock(f"r{i}", "o", 1)
    clock.now += 2
    for i in range(1500):
        assert await store.try_lock(f"s{i}", "o", 100)
    # The old leases were never touched again, yet they do not pile up.
    assert len(store) < 2100


# -- component failures --------------------------------------------------------------------


class BrokenLockStore(LockStore):
    def __init__(self, error: BaseException | None = None, status: LockStatus | None = None):
        self.error = error
        self.status = status
        self.seen: list[str] = []

    async def _answer(self, resource_id: str) -> LockStatus:
        self.seen.append(resource_id)
        if self.error is not None:
            raise self.error
        assert self.status is not None
        return self.status

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        await self._answer(resource_id)
        return True

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        return await self._answer(resource_id)

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        return await self._answer(resource_id)


async def test_foreign_errors_become_component_errors_without_secrets() -> None:
    svc = service((STORE, BrokenLockStore(ConnectionError(f"cannot reach {SECRET}"))))
    for call in (
        lambda: svc.try_lock(STORE, "r", "o", 10),
        lambda: svc.unlock(STORE, "r", "o"),
        lambda: svc.keep_alive(STORE, "r", "o", 10),
    ):
        with pytest.raises(ComponentError) as info:
            await call()
        assert SECRET not in info.value.message
        assert "'r'" in info.value.message
        assert info.value.category is ErrorCategory.INTERNAL


async def test_component_errors_name_the_callers_resource() -> None:
    store = BrokenLockStore(BackendUnavailable("lock|||app1||r: connection refused"))
    svc = service((STORE, store))
    with pytest.raises(BackendUnavailable) as info:
        await svc.unlock(STORE, "r", "o")
    assert store.seen == ["lock|||app1||r"]
    assert info.value.message == "r: connection refused"


async def test_an_internal_error_status_is_an_error() -> None:
    svc = service((STORE, BrokenLockStore(status=LockStatus.INTERNAL_ERROR)))
    with pytest.raises(ComponentError, match="internal error"):
        await svc.unlock(STORE, "r", "o")
    with pytest.raises(ComponentError, match="internal error"):
        await svc.keep_alive(STORE, "r", "o", 10)


class HangingLockStore(BrokenLockStore):
    async def _answer(self, resource_id: str) -> LockStatus:
        await anyio.sleep_forever()
        raise AssertionError


async def test_a_hanging_store_times_out() -> None:
    svc = service((STORE, HangingLockStore()), call_timeout=0.1)
    with anyio.fail_after(2):
        with pytest.raises(BackendTimeout, match="did not answer in time"):
            await svc.try_lock(STORE, "r", "o", 10)
        with pytest.raises(BackendTimeout):
            await svc.unlock(STORE, "r", "o")
