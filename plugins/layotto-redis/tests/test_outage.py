"""Failures at the component edge: translation, no leaked hosts or passwords, outage and recovery.

Each test here has its own private redis-server (`own_redis_server`), which it kills, pauses and
restarts on the same port.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    GetRequest,
    HealthStatus,
    LayottoError,
    SetRequest,
)
from layotto_redis import RedisStateMetadata, RedisStateStore
from layotto_redis.base import HEALTH_TIMEOUT
from layotto_redis.errors import translate
from layotto_redis_test_support import ComponentFactory, RedisServer, free_port, redis_binary

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

# The sidecar polls health every second: DOWN/UP must show within 2 s, calls fail within 2 s.
DETECT_WITHIN = 2.0


def assert_clean(message: str, server: RedisServer, password: str = "") -> None:
    assert "127.0.0.1" not in message, message
    assert str(server.port) not in message, message
    assert "localhost" not in message, message
    if password:
        assert password not in message, message


async def wait_for_health(store: RedisStateStore, status: HealthStatus) -> float:
    start = time.monotonic()
    while (await store.check_health()).status is not status:
        assert time.monotonic() - start < 5, f"health never became {status}"
        await asyncio.sleep(0.05)
    return time.monotonic() - start


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        await call()
    except Exception as err:
        return time.monotonic() - start, err
    return time.monotonic() - start, None


async def test_outage_and_recovery(
    make_component: ComponentFactory, own_redis_server: RedisServer, prefix: str
) -> None:
    server = own_redis_server
    state = await make_component("state", server)
    lock = await make_component("lock", server)
    sequencer = await make_component("sequencer", server)
    await state.set(SetRequest(prefix + "k", b"v"))
    assert (await state.check_health()).status is HealthStatus.UP

    server.stop()
    down_after = await wait_for_health(state, HealthStatus.DOWN)
    health = await state.check_health()
    assert_clean(health.details["reason"], server)
    assert "unavailable" in health.details["reason"]

    calls: dict[str, Callable[[], Awaitable[object]]] = {
        "get": lambda: state.get(GetRequest(prefix + "k")),
        "set": lambda: state.set(SetRequest(prefix + "k", b"w")),
        "bulk_get": lambda: state.bulk_get([GetRequest(prefix + "k")]),
        "try_lock": lambda: lock.try_lock(prefix + "l", "o", 5),
        "unlock": lambda: lock.unlock(prefix + "l", "o"),
        "next_id": lambda: sequencer.next_id(prefix + "s"),
    }
    slowest = 0.0
    for name, call in calls.items():
        took, err = await timed(call)
        assert isinstance(err, BackendUnavailable), (name, err)
        assert took < DETECT_WITHIN, (name, took)
        assert_clean(err.message, server)
        slowest = max(slowest, took)

    server.start()
    up_after = await wait_for_health(state, HealthStatus.UP)
    got = await state.get(GetRequest(prefix + "k"))
    assert got is None  # the private server keeps nothing across a restart
    await state.set(SetRequest(prefix + "k", b"again"))
    assert await lock.try_lock(prefix + "l", "o", 5)
    assert await sequencer.next_id(prefix + "s") == 1
    print(
        f"\noutage: DOWN after {down_after:.3f} s, calls failed within {slowest:.3f} s, "
        f"UP after restart {up_after:.3f} s"
    )
    assert down_after < DETECT_WITHIN
    assert up_after < DETECT_WITHIN


async def test_hung_server_times_out(
    make_component: ComponentFactory, own_redis_server: RedisServer, prefix: str
) -> None:
    server = own_redis_server
    state = await make_component("state", server, readTimeout="500ms")
    await state.set(SetRequest(prefix + "k", b"v"))
    server.pause()
    try:
        took, err = await timed(lambda: state.get(GetRequest(prefix + "k")))
        assert isinstance(err, BackendTimeout), err
        assert 0.4 < took < 1.5
        assert_clean(err.message, server)
        start = time.monotonic()
        health = await state.check_health()
        assert time.monotonic() - start < HEALTH_TIMEOUT + 0.3
        assert health.status is HealthStatus.DOWN
    finally:
        server.resume()
    await wait_for_health(state, HealthStatus.UP)
    got = await state.get(GetRequest(prefix + "k"))
    assert got is not None
    assert got.data == b"v"  # no reply got out of step with its command


async def test_nothing_leaks_host_port_or_password(
    tmp_path: Path, make_component: ComponentFactory, prefix: str
) -> None:
    password = f"pw-{uuid.uuid4().hex}"
    server = RedisServer(redis_binary(), tmp_path, password=password)
    server.start()
    try:
        store = await make_component("state", server)
        await store.set(SetRequest(prefix + "k", b"v"))
        messages: list[str] = []

        # Wrong password at init: a clear startup error, without the password.
        wrong = f"wrong-{uuid.uuid4().hex}"
        with pytest.raises(LayottoError) as info:
            await make_component("state", server, redisPassword=wrong)
        assert "authentication failed" in info.value.message
        assert "redisPassword" in info.value.message
        assert wrong not in str(info.value)
        messages.append(info.value.message)

        # A server error reply is passed on, scrubbed.
        await store.client.set(prefix + "str", "x")
        with pytest.raises(ComponentError) as info2:
            await store.get(GetRequest(prefix + "str"))
        messages.append(info2.value.message)

        server.stop()
        for call in (
            lambda: store.get(GetRequest(prefix + "k")),
            lambda: store.set(SetRequest(prefix + "k", b"v")),
        ):
            _, err = await timed(call)
            assert isinstance(err, LayottoError)
            messages.append(err.message)
            messages.append(str(err))
        messages.append((await store.check_health()).details["reason"])
        with pytest.raises(LayottoError) as info3:
            await make_component("state", server)  # init against a dead server
        messages.append(info3.value.message)
        assert "check metadata.redisHost" in info3.value.message
    finally:
        server.stop()
    for message in messages:
        assert_clean(message, server, password)


async def test_init_errors_are_clear(make_component: ComponentFactory) -> None:
    nobody = RedisServer("unused", Path("."))
    nobody.port = free_port()  # nothing listens there
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await make_component("state", nobody)
    assert time.monotonic() - start < 2
    assert "connection refused" in info.value.message
    assert "state store 'state'" in info.value.message


async def test_password_to_a_server_without_one(
    make_component: ComponentFactory, redis_server: RedisServer
) -> None:
    """Redis 7 answers AUTH with an error that echoes `<password>` (a placeholder); either way
    no message may carry the real one."""
    secret = f"s-{uuid.uuid4().hex}"
    failure: LayottoError | None = None
    try:
        store = await make_component("state", redis_server, redisPassword=secret)
    except LayottoError as err:
        failure = err
    if failure is not None:
        assert secret not in str(failure)
        assert_clean(failure.message, redis_server, secret)
    else:
        assert (await store.check_health()).status is HealthStatus.UP


async def test_not_started_and_closed() -> None:
    store = RedisStateStore.create(
        RedisStateMetadata.model_validate({"redisHost": "127.0.0.1:1"}), ComponentContext("s", "a")
    )
    assert (await store.check_health()).status is HealthStatus.DOWN
    with pytest.raises(BackendUnavailable, match="not started"):
        await store.get(GetRequest("k"))
    await store.close()
    await store.close()  # idempotent


def test_translate() -> None:
    import redis.exceptions as rx

    assert isinstance(translate(rx.TimeoutError("Timeout reading from h:1"), "x"), BackendTimeout)
    assert isinstance(translate(TimeoutError(), "x"), BackendTimeout)
    connect = translate(rx.TimeoutError("Timeout connecting to server"), "x")
    assert isinstance(connect, BackendUnavailable)
    assert "connect timed out" in connect.message
    err = translate(
        rx.ConnectionError("Error 111 connecting to 10.1.2.3:6379. Connection refused."), "x"
    )
    assert isinstance(err, BackendUnavailable)
    assert "10.1.2.3" not in err.message
    assert "connection refused" in err.message
    pool = translate(rx.ConnectionError("No connection available."), "x")
    assert isinstance(pool, BackendUnavailable)
    assert "poolSize" in pool.message
    assert isinstance(translate(rx.MaxConnectionsError("Too many"), "x"), BackendUnavailable)
    auth = translate(rx.AuthenticationError("invalid username-password pair"), "x")
    assert isinstance(auth, BackendUnavailable)
    reply = translate(rx.ResponseError("ERR oops pw123 here\nsecond"), "x", ["pw123"])
    assert isinstance(reply, ComponentError)
    assert reply.message == "x: Redis answered with an error: ERR oops *** here"
    assert isinstance(translate(rx.DataError("bad"), "x"), ComponentError)
    assert "Redis protocol" in translate(rx.InvalidResponse("Protocol Error: H"), "x").message
    assert isinstance(translate(ConnectionRefusedError(), "x"), BackendUnavailable)
