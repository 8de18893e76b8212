"""Failures at the component edge: outage and recovery, a hung etcd, authentication, several
endpoints, and messages free of hosts, ports and passwords.

Each test here has its own private etcd (`own_etcd_server`), which it kills, pauses and
restarts on the same ports with the same data dir (so data and revisions survive).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aetcd  # type: ignore[import-untyped]
import pytest
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ConfigItem,
    ConfigQuery,
    HealthStatus,
    LayottoError,
    LockStatus,
)
from layotto_etcd import EtcdConfigStore
from layotto_etcd.base import HEALTH_TIMEOUT
from layotto_etcd_test_support import (
    ComponentFactory,
    EtcdServer,
    etcd_binary,
    free_port,
    make_tls_files,
)

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# The sidecar polls health every second: DOWN/UP must show within 2 s, calls fail within 2 s.
DETECT_WITHIN = 2.0


def assert_clean(message: str, server: EtcdServer, password: str = "") -> None:
    assert "127.0.0.1" not in message, message
    assert str(server.client_port) not in message, message
    assert "localhost" not in message, message
    if password:
        assert password not in message, message


async def wait_for_health(store: Any, status: HealthStatus, within: float = 10) -> float:
    start = time.monotonic()
    while (await store.check_health()).status is not status:
        assert time.monotonic() - start < within, f"health never became {status}"
        await asyncio.sleep(0.02)
    return time.monotonic() - start


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        await call()
    except Exception as err:
        return time.monotonic() - start, err
    return time.monotonic() - start, None


class WatchLoop:
    """What the sidecar's ConfigWatcher does with `watch`: call it again after a failure. Here
    it waits for `go` before each new attempt, so a test can write in between."""

    def __init__(self, store: EtcdConfigStore, app_id: str) -> None:
        self.store = store
        self.app_id = app_id
        self.batches: asyncio.Queue[list[ConfigItem]] = asyncio.Queue()
        self.errors: list[LayottoError] = []
        self.established = asyncio.Event()
        self.failed = asyncio.Event()
        self.go = asyncio.Event()
        self.go.set()

    async def run(self) -> None:
        while True:
            await self.go.wait()
            try:
                async for batch in self.store.watch(self.app_id):
                    if batch:
                        await self.batches.put(batch)
                    else:
                        self.established.set()
            except LayottoError as err:
                self.errors.append(err)
                self.established.clear()
                self.failed.set()
                await asyncio.sleep(0.1)

    async def next(self, within: float = 5) -> list[ConfigItem]:
        async with asyncio.timeout(within):
            return await self.batches.get()


@contextlib.asynccontextmanager
async def running(loop: WatchLoop) -> AsyncIterator[WatchLoop]:
    task = asyncio.create_task(loop.run())
    try:
        yield loop
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def test_outage_and_recovery(
    make_component: ComponentFactory, own_etcd_server: EtcdServer, prefix: str
) -> None:
    server = own_etcd_server
    config = await make_component("configuration", server)
    lock = await make_component("lock", server)
    sequencer = await make_component("sequencer", server)
    app = f"{prefix}app"
    item = ConfigItem("k", "v1", "g", "l")
    await config.set(app, [item], {})
    assert await lock.try_lock(f"{prefix}held", "me", 60)
    assert await sequencer.next_id(f"{prefix}s") == 1

    watcher = WatchLoop(config, app)
    async with running(watcher):
        async with asyncio.timeout(5):
            await watcher.established.wait()
        watcher.go.clear()  # after the coming failure, wait until we say so

        killed = time.monotonic()
        server.stop()
        down_after = await wait_for_health(config, HealthStatus.DOWN)
        for store in (lock, sequencer):
            assert (await store.check_health()).status is HealthStatus.DOWN
        health = await config.check_health()
        assert_clean(health.details["reason"], server)
        assert "unavailable" in health.details["reason"]
        async with asyncio.timeout(DETECT_WITHIN):
            await watcher.failed.wait()
        watch_failed_after = time.monotonic() - killed
        assert isinstance(watcher.errors[-1], BackendUnavailable)
        assert_clean(watcher.errors[-1].message, server)

        calls: dict[str, Callable[[], Awaitable[object]]] = {
            "get": lambda: config.get(ConfigQuery(app, "g", "l")),
            "set": lambda: config.set(app, [item], {}),
            "delete": lambda: config.delete(ConfigQuery(app, "g", "l", ["k"])),
            "watch": lambda: anext(config.watch(app)),
            "try_lock": lambda: lock.try_lock(f"{prefix}l", "o", 5),
            "unlock": lambda: lock.unlock(f"{prefix}l", "o"),
            "keep_alive": lambda: lock.keep_alive(f"{prefix}l", "o", 5),
            "next_id": lambda: sequencer.next_id(f"{prefix}s"),
            "ensure_bigger_than": lambda: sequencer.ensure_bigger_than(f"{prefix}s", 10),
        }
        slowest = 0.0
        for name, call in calls.items():
            took, err = await timed(call)
            assert isinstance(err, BackendUnavailable), (name, err)
            assert took < DETECT_WITHIN, (name, took)
            assert_clean(err.message, server)
            slowest = max(slowest, took)

        restart = time.monotonic()
        server.start()  # same ports, same data dir
        started_after = time.monotonic() - restart
        up_after = await wait_for_health(config, HealthStatus.UP)
        # Written right after the restart, before the watch is re-established.
        async with aetcd.Client(host="127.0.0.1", port=server.client_port, timeout=5) as direct:
            await direct.put(f"/{app}/g/l/k".encode(), b"written-after-restart")
        watcher.go.set()
        batch = await watcher.next()
        resumed_after = time.monotonic() - restart
        assert [(i.key, i.content) for i in batch] == [("k", "written-after-restart")]
        assert watcher.established.is_set()
        await config.set(app, [ConfigItem("k", "live", "g", "l")], {})
        assert [i.content for i in await watcher.next()] == ["live"]

    # The data survived the restart: the lock is still held, the counter goes on.
    assert not await lock.try_lock(f"{prefix}held", "other", 5)
    assert await lock.unlock(f"{prefix}held", "me") is LockStatus.SUCCESS
    assert await sequencer.next_id(f"{prefix}s") == 2
    print(
        f"\noutage: health DOWN after {down_after:.3f} s, watch failed after "
        f"{watch_failed_after:.3f} s, calls failed within {slowest * 1000:.1f} ms; etcd restart "
        f"took {started_after:.2f} s, UP {up_after:.3f} s after it answered, watch resumed and "
        f"delivered the post-restart write {resumed_after:.2f} s after the restart began"
    )
    assert down_after < DETECT_WITHIN
    assert up_after < DETECT_WITHIN


async def test_hung_etcd_times_out(
    make_component: ComponentFactory, own_etcd_server: EtcdServer, prefix: str
) -> None:
    server = own_etcd_server
    lock = await make_component("lock", server, requestTimeout="500ms")
    assert await lock.try_lock(f"{prefix}r", "me", 30)
    server.pause()
    try:
        took, err = await timed(lambda: lock.unlock(f"{prefix}r", "me"))
        assert isinstance(err, BackendTimeout), err
        assert 0.4 < took < 1.5
        assert_clean(err.message, server)
        start = time.monotonic()
        health = await lock.check_health()
        assert time.monotonic() - start < HEALTH_TIMEOUT + 0.3
        assert health.status is HealthStatus.DOWN
    finally:
        server.resume()
    await wait_for_health(lock, HealthStatus.UP)
    assert await lock.unlock(f"{prefix}r", "me") in (LockStatus.SUCCESS, LockStatus.LOCK_UNEXIST)


async def test_init_errors_are_clear(make_component: ComponentFactory) -> None:
    nobody = EtcdServer("unused", Path("."))  # nothing listens on its port
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await make_component("lock", nobody)
    assert time.monotonic() - start < 2
    assert "connection refused" in info.value.message
    assert "lock store 'lock'" in info.value.message
    assert "check metadata.endpoints" in info.value.message
    assert_clean(info.value.message, nobody)


async def test_several_endpoints_one_dead(
    make_component: ComponentFactory, etcd_server: EtcdServer, prefix: str
) -> None:
    dead = f"127.0.0.1:{free_port()}"
    for endpoints in (f"{dead},{etcd_server.address}", [etcd_server.address, dead]):
        sequencer = await make_component("sequencer", etcd_server, endpoints=endpoints)
        assert (await sequencer.check_health()).status is HealthStatus.UP
        assert [await sequencer.next_id(f"{prefix}k") for _ in range(20)][-1] >= 20


async def _enable_auth(server: EtcdServer, password: str) -> None:
    rpc = aetcd.rpc
    async with aetcd.Client(host="127.0.0.1", port=server.client_port, timeout=5) as admin:
        auth = rpc.AuthStub(admin.channel)
        await auth.UserAdd(rpc.AuthUserAddRequest(name="root", password=password))
        await auth.UserGrantRole(rpc.AuthUserGrantRoleRequest(user="root", role="root"))
        await auth.AuthEnable(rpc.AuthEnableRequest())


@pytest.fixture
async def auth_server(tmp_path: Path) -> AsyncIterator[tuple[EtcdServer, str]]:
    server = EtcdServer(etcd_binary(), tmp_path)
    server.start()
    try:
        password = f"pw-{uuid.uuid4().hex}"
        await _enable_auth(server, password)
        yield server, password
    finally:
        server.stop()


async def test_authentication_and_token_renewal(
    make_component: ComponentFactory, auth_server: tuple[EtcdServer, str], prefix: str
) -> None:
    server, password = auth_server
    lock = await make_component("lock", server, username="root", password=password)
    assert await lock.try_lock(f"{prefix}r", "me", 30)
    config: EtcdConfigStore = await make_component(
        "configuration", server, username="root", password=password
    )
    watch = config.watch(f"{prefix}app")
    async with asyncio.timeout(5):
        assert await anext(watch) == []
    await watch.aclose()

    # etcd forgets its simple tokens when it restarts: the component authenticates again.
    server.stop()
    server.start()
    await wait_for_health(lock, HealthStatus.UP)
    assert await lock.unlock(f"{prefix}r", "me") is LockStatus.SUCCESS
    watch = config.watch(f"{prefix}app")
    async with asyncio.timeout(5):
        assert await anext(watch) == []
    await watch.aclose()
    # Whether etcd still knows a token after a restart depends on its WAL replay; an expired
    # or forgotten token makes etcd cancel a watch as "permission denied" (not as an invalid
    # token): the watch authenticates again, like unary calls.
    config.etcd._token = "forgotten.1"
    watch = config.watch(f"{prefix}app")
    async with asyncio.timeout(5):
        assert await anext(watch) == []
    await watch.aclose()

    # A wrong password: a clear startup error, without the password.
    wrong = f"wrong-{uuid.uuid4().hex}"
    with pytest.raises(BackendUnavailable) as info:
        await make_component("lock", server, username="root", password=wrong)
    assert "authentication failed" in info.value.message
    assert "metadata.password" in info.value.message
    assert wrong not in str(info.value)
    assert_clean(info.value.message, server, wrong)
    # No credentials at all.
    with pytest.raises(BackendUnavailable) as missing:
        await make_component("lock", server)
    assert "etcd requires authentication" in missing.value.message
    assert_clean(missing.value.message, server, password)


def pem_texts(files: dict[str, str]) -> dict[str, str]:
    return {name: Path(path).read_text() for name, path in files.items()}


async def test_tls_with_a_client_certificate(
    make_component: ComponentFactory, tmp_path: Path, prefix: str
) -> None:
    tls = make_tls_files(tmp_path / "certs")
    server = EtcdServer(etcd_binary(), tmp_path / "etcd", tls)
    server.workdir.mkdir()
    server.start()
    try:
        files = {
            "tlsCa": str(tls.ca),
            "tlsCert": str(tls.client_cert),
            "tlsCertKey": str(tls.client_key),
        }
        lock = await make_component("lock", server, **files)
        assert await lock.try_lock(f"{prefix}r", "me", 30)
        assert (await lock.check_health()).status is HealthStatus.UP
        inline = pem_texts(files)  # the PEM text itself works too
        https = f"https://{server.address}"
        sequencer = await make_component("sequencer", server, endpoints=https, **inline)
        assert await sequencer.next_id(f"{prefix}k") == 1

        # Without a client certificate, or without our CA: a clear error, no host.
        for partial in ({"tlsCa": str(tls.ca)}, {"endpoints": https}):
            with pytest.raises(BackendUnavailable) as info:
                await make_component("lock", server, **partial)
            assert_clean(info.value.message, server)
            assert "check metadata" in info.value.message
            assert "TLS handshake failed) (check metadata.tlsCa" in info.value.message
    finally:
        server.stop()


async def test_not_started_and_closed() -> None:
    from layotto.plugin import ComponentContext
    from layotto_etcd import EtcdLockMetadata, EtcdLockStore

    store = EtcdLockStore.create(
        EtcdLockMetadata.model_validate({"endpoints": "127.0.0.1:1"}), ComponentContext("l", "a")
    )
    assert (await store.check_health()).status is HealthStatus.DOWN
    with pytest.raises(BackendUnavailable, match="not started"):
        await store.try_lock("r", "o", 5)
    await store.close()
    await store.close()  # idempotent
