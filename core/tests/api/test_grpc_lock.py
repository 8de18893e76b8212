"""The Lock RPCs of `spec.proto.runtime.v1.Runtime` over a real socket (grpclib client).

Behaviour: layotto-semantics.md §2.3, §7; conformance.md §4. Expiry tests use 1-2 s leases and
poll with a probe that changes nothing: Unlock by a third owner answers LOCK_BELONG_TO_OTHERS
while the lease is held and LOCK_UNEXIST once it has expired."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin import layotto_components as builtin_components
from layotto.config import AppConfig, ComponentConfig, RuntimeConfig
from layotto.errors import BackendUnavailable
from layotto.plugin import (
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    Kind,
    LockStatus,
    LockStore,
)
from layotto.plugins import Catalog, PluginInfo

pytestmark = pytest.mark.anyio

STORE = "lockstore"
SECRET = "redis://admin:hunter2@10.0.0.7:6379"

UNLOCK = pb.UnlockResponseStatus
KEEP = pb.LockKeepAliveResponseStatus


async def expect_error(call: Awaitable[Any], status: Status, *fragments: str) -> GRPCError:
    with anyio.fail_after(10), pytest.raises(GRPCError) as info:
        await call
    err = info.value
    assert err.status is status, f"{err.status.name}: {err.message}"
    for fragment in fragments:
        assert fragment in (err.message or ""), f"{fragment!r} not in {err.message!r}"
    return err


async def try_lock(
    stub: pb.RuntimeStub, resource: str, owner: str, expire: int = 10, store: str = STORE
) -> bool:
    reply = await stub.try_lock(
        pb.TryLockRequest(store_name=store, resource_id=resource, lock_owner=owner, expire=expire)
    )
    return reply.success


async def unlock(
    stub: pb.RuntimeStub, resource: str, owner: str, store: str = STORE
) -> pb.UnlockResponseStatus:
    reply = await stub.unlock(
        pb.UnlockRequest(store_name=store, resource_id=resource, lock_owner=owner)
    )
    return reply.status


async def keep_alive(
    stub: pb.RuntimeStub, resource: str, owner: str, expire: int, store: str = STORE
) -> pb.LockKeepAliveResponseStatus:
    reply = await stub.lock_keep_alive(
        pb.LockKeepAliveRequest(
            store_name=store, resource_id=resource, lock_owner=owner, expire=expire
        )
    )
    return reply.status


async def wait_until_free(stub: pb.RuntimeStub, resource: str, within: float) -> float:
    """Polls until the lease on `resource` has expired; returns when (monotonic)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await unlock(stub, resource, "probe") is not UNLOCK.LOCK_BELONG_TO_OTHERS:
            return time.monotonic()
        await anyio.sleep(0.05)
    pytest.fail(f"the lease on {resource!r} did not expire within {within} s")


# -- TryLock and Unlock --------------------------------------------------------------------


async def test_try_lock_is_exclusive_and_not_reentrant(stub: pb.RuntimeStub) -> None:
    assert await try_lock(stub, "lock1", "conftest", 15)
    assert not await try_lock(stub, "lock1", "conftest", 15)  # the same owner: no
    assert not await try_lock(stub, "lock1", "someone-else", 15)
    assert await try_lock(stub, "lock2", "conftest", 3)


async def test_unlock_statuses(stub: pb.RuntimeStub) -> None:
    assert await unlock(stub, "r", "alice") is UNLOCK.LOCK_UNEXIST
    assert await try_lock(stub, "r", "alice")
    assert await unlock(stub, "r", "bob") is UNLOCK.LOCK_BELONG_TO_OTHERS
    assert not await try_lock(stub, "r", "bob")  # still held
    assert await unlock(stub, "r", "alice") is UNLOCK.SUCCESS
    assert await unlock(stub, "r", "alice") is UNLOCK.LOCK_UNEXIST
    assert await try_lock(stub, "r", "bob")


async def test_a_lease_expires(stub: pb.RuntimeStub) -> None:
    started = time.monotonic()
    assert await try_lock(stub, "r", "alice", 1)
    assert not await try_lock(stub, "r", "bob", 1)
    freed = await wait_until_free(stub, "r", within=3)
    assert freed - started >= 0.9
    assert await try_lock(stub, "r", "bob", 1)


# -- LockKeepAlive -------------------------------------------------------------------------


async def test_the_owner_renews(stub: pb.RuntimeStub) -> None:
    started = time.monotonic()
    assert await try_lock(stub, "r", "alice", 1)
    assert await keep_alive(stub, "r", "alice", 2) is KEEP.SUCCESS  # expiry: now + 2 s
    # Past the original expiry the lease is still held...
    await anyio.sleep(max(0.0, started + 1.3 - time.monotonic()))
    assert not await try_lock(stub, "r", "bob", 1)
    # ...until the renewed one.
    freed = await wait_until_free(stub, "r", within=3)
    assert freed - started >= 1.9
    assert await try_lock(stub, "r", "bob", 1)


async def test_a_non_owner_cannot_renew(stub: pb.RuntimeStub) -> None:
    started = time.monotonic()
    assert await try_lock(stub, "r", "alice", 1)
    assert await keep_alive(stub, "r", "bob", 60) is KEEP.LOCK_BELONG_TO_OTHERS
    # The lease keeps the owner's schedule.
    freed = await wait_until_free(stub, "r", within=3)
    assert freed - started < 2.0


async def test_renewing_an_expired_lease_does_not_recreate_it(stub: pb.RuntimeStub) -> None:
    assert await try_lock(stub, "r", "alice", 1)
    await wait_until_free(stub, "r", within=3)
    assert await keep_alive(stub, "r", "alice", 10) is KEEP.LOCK_UNEXIST
    assert await try_lock(stub, "r", "bob", 1)


async def test_renewing_a_never_acquired_resource(stub: pb.RuntimeStub) -> None:
    assert await keep_alive(stub, "never", "alice", 10) is KEEP.LOCK_UNEXIST
    assert await try_lock(stub, "never", "bob")


# -- validation ----------------------------------------------------------------------------

LockCall = Callable[..., Awaitable[Any]]

RPCS: dict[str, LockCall] = {
    "TryLock": lambda stub, store, resource, owner, expire: try_lock(
        stub, resource, owner, expire, store
    ),
    "Unlock": lambda stub, store, resource, owner, expire: unlock(stub, resource, owner, store),
    "LockKeepAlive": lambda stub, store, resource, owner, expire: keep_alive(
        stub, resource, owner, expire, store
    ),
}
WITH_EXPIRE = ["TryLock", "LockKeepAlive"]


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize(
    ("resource", "owner", "field"),
    [("", "o", "resource_id"), ("r", "", "lock_owner"), ("a||b", "o", "resource_id")],
)
async def test_invalid_fields_are_named(
    stub: pb.RuntimeStub, rpc: str, resource: str, owner: str, field: str
) -> None:
    await expect_error(RPCS[rpc](stub, STORE, resource, owner, 10), Status.INVALID_ARGUMENT, field)


@pytest.mark.parametrize("rpc", WITH_EXPIRE)
@pytest.mark.parametrize("expire", [0, -1])
async def test_expire_must_be_positive(stub: pb.RuntimeStub, rpc: str, expire: int) -> None:
    await expect_error(RPCS[rpc](stub, STORE, "r", "o", expire), Status.INVALID_ARGUMENT, "expire")
    assert await unlock(stub, "r", "probe") is UNLOCK.LOCK_UNEXIST  # nothing was taken


@pytest.mark.parametrize("rpc", RPCS)
async def test_unknown_store_is_invalid_argument(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(
        RPCS[rpc](stub, "no-such-store", "r", "o", 10), Status.INVALID_ARGUMENT, "no-such-store"
    )


@pytest.mark.parametrize(
    "runtime_options", [{"config": RuntimeConfig(components=())}], indirect=True
)
@pytest.mark.parametrize("rpc", RPCS)
async def test_no_lock_store_is_failed_precondition(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(
        RPCS[rpc](stub, STORE, "r", "o", 10),
        Status.FAILED_PRECONDITION,
        "lock store is not configured",
    )


# -- key prefixes --------------------------------------------------------------------------

PREFIXED = RuntimeConfig(
    app=AppConfig(id="myapp"),
    components=(
        ComponentConfig(name="by-app", kind=Kind.LOCK, type="in-memory"),
        ComponentConfig(name="by-name", kind=Kind.LOCK, type="in-memory", key_prefix="name"),
        ComponentConfig(name="plain", kind=Kind.LOCK, type="in-memory", key_prefix="none"),
        ComponentConfig(name="literal", kind=Kind.LOCK, type="in-memory", key_prefix="tenant"),
    ),
)


@pytest.fixture
async def prefixed(start_sidecar: Any) -> AsyncIterator[Any]:
    async with start_sidecar(PREFIXED) as sidecar:
        yield sidecar


@pytest.mark.parametrize(
    ("store", "stored_key"),
    [
        ("by-app", "lock|||myapp||r"),
        ("by-name", "lock|||by-name||r"),
        ("plain", "lock|||r"),
        ("literal", "lock|||tenant||r"),
    ],
)
async def test_key_prefix_strategies(prefixed: Any, store: str, stored_key: str) -> None:
    channel = prefixed.channel()
    try:
        stub = pb.RuntimeStub(channel, timeout=10)
        assert await try_lock(stub, "r", "alice", store=store)
        component = prefixed.runtime.components.of_kind(Kind.LOCK)[store].component
        assert await component.unlock(stored_key, "probe") is LockStatus.LOCK_BELONG_TO_OTHERS
    finally:
        channel.close()


# -- a failing lock store ------------------------------------------------------------------


class BrokenLockMetadata(ComponentMetadata):
    failure: str = "foreign"


class BrokenLockStore(LockStore):
    """Fails every call: `foreign` raises an exception carrying a secret, `unavailable` a
    BackendUnavailable, `status` answers INTERNAL_ERROR without raising."""

    def __init__(self, failure: str) -> None:
        self.failure = failure

    @classmethod
    def create(cls, metadata: BrokenLockMetadata, context: ComponentContext) -> BrokenLockStore:
        return cls(metadata.failure)

    def _fail(self) -> LockStatus:
        if self.failure == "foreign":
            raise ConnectionError(f"cannot reach {SECRET}")
        if self.failure == "unavailable":
            raise BackendUnavailable("the lock backend is unreachable")
        return LockStatus.INTERNAL_ERROR

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        self._fail()
        return False

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        return self._fail()

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        return self._fail()


def broken_config() -> tuple[RuntimeConfig, Catalog]:
    catalog = Catalog()
    catalog.add(PluginInfo("builtin", "layotto", "0", tuple(builtin_components())))
    spec = ComponentSpec(Kind.LOCK, "broken", BrokenLockMetadata, BrokenLockStore.create)
    catalog.add(PluginInfo("broken", "layotto-tests", "0", (spec,)))
    config = RuntimeConfig(
        components=tuple(
            ComponentConfig(
                name=failure, kind=Kind.LOCK, type="broken", metadata={"failure": failure}
            )
            for failure in ("foreign", "unavailable", "status")
        )
    )
    return config, catalog


@pytest.fixture
async def broken(start_sidecar: Any) -> AsyncIterator[pb.RuntimeStub]:
    config, catalog = broken_config()
    async with start_sidecar(config, catalog) as sidecar:
        channel = sidecar.channel()
        try:
            yield pb.RuntimeStub(channel, timeout=10)
        finally:
            channel.close()


@pytest.mark.parametrize("rpc", RPCS)
@pytest.mark.parametrize(
    ("store", "status", "fragment"),
    [
        ("foreign", Status.INTERNAL, "ConnectionError"),
        ("unavailable", Status.UNAVAILABLE, "unreachable"),
    ],
)
async def test_a_store_error_is_an_error_status(
    broken: pb.RuntimeStub, rpc: str, store: str, status: Status, fragment: str
) -> None:
    """Upstream answers INTERNAL_ERROR *and* an error; gRPC carries one: the error status."""
    err = await expect_error(RPCS[rpc](broken, store, "r", "o", 10), status, fragment)
    assert SECRET not in (err.message or "")


@pytest.mark.parametrize("rpc", ["Unlock", "LockKeepAlive"])
async def test_an_internal_error_status_is_answered_as_internal(
    broken: pb.RuntimeStub, rpc: str
) -> None:
    await expect_error(RPCS[rpc](broken, "status", "r", "o", 10), Status.INTERNAL, "internal")
