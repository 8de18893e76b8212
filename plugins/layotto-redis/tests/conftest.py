"""Fixtures: a PRIVATE redis-server per session (and per outage test), components on it.

The server is ours alone, so tests may stop, pause and restart it. It is started with
`redis-server --port N --save "" --appendonly no --daemonize no` and killed at teardown. When
redis-server is not installed the tests skip, or fail under LAYOTTO_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_SUPPORT_NAME = "layotto_redis_test_support"
if _SUPPORT_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _SUPPORT_NAME, Path(__file__).with_name("redis_support.py")
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT_NAME] = _module
    _spec.loader.exec_module(_module)

from layotto.plugin import ComponentContext  # noqa: E402
from layotto_redis import (  # noqa: E402
    RedisConfigMetadata,
    RedisConfigStore,
    RedisLockMetadata,
    RedisLockStore,
    RedisPubSub,
    RedisPubSubMetadata,
    RedisSequencerMetadata,
    RedisSequencerStore,
    RedisStateMetadata,
    RedisStateStore,
)
from layotto_redis_test_support import (  # noqa: E402
    ComponentFactory,
    RedisServer,
    redis_binary,
)


def _server(tmp: Path, password: str = "", *, durable: bool = False) -> Iterator[RedisServer]:
    server = RedisServer(redis_binary(), tmp, password, durable=durable)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()  # a paused process ignores nothing, but let it die cleanly
        server.stop()


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    """One private server for the session. Tests must not stop it (use `own_redis_server`)."""
    yield from _server(tmp_path_factory.mktemp("redis"))


@pytest.fixture
def own_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server for this test alone: stop, pause and restart it at will."""
    yield from _server(tmp_path)


@pytest.fixture
def durable_redis_server(tmp_path: Path) -> Iterator[RedisServer]:
    """A private server for this test that fsyncs every write (append-only file), so it can be
    SIGKILLed and restarted without losing acknowledged writes."""
    yield from _server(tmp_path, durable=True)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # redis.asyncio is asyncio-only


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}-"


KINDS: dict[str, tuple[Any, Any]] = {
    "state": (RedisStateMetadata, RedisStateStore),
    "configuration": (RedisConfigMetadata, RedisConfigStore),
    "lock": (RedisLockMetadata, RedisLockStore),
    "pubsub": (RedisPubSubMetadata, RedisPubSub),
    "sequencer": (RedisSequencerMetadata, RedisSequencerStore),
}


@pytest.fixture
async def make_component() -> AsyncIterator[ComponentFactory]:
    """`await make_component("state", server, **metadata)`: an initialised component, closed at
    teardown. Metadata values are strings, as from Dapr YAML."""
    made: list[Any] = []

    async def make(kind: str, server: RedisServer, **metadata: str) -> Any:
        model, cls = KINDS[kind]
        values = {"redisHost": server.address, **metadata}
        if server.password:
            values.setdefault("redisPassword", server.password)
        component = cls.create(model.model_validate(values), ComponentContext(kind, "app"))
        await component.init()
        made.append(component)
        return component

    yield make
    for component in made:
        await component.close()


@pytest.fixture
async def state(make_component: ComponentFactory, redis_server: RedisServer) -> RedisStateStore:
    store: RedisStateStore = await make_component("state", redis_server)
    return store


@pytest.fixture
async def config(make_component: ComponentFactory, redis_server: RedisServer) -> RedisConfigStore:
    store: RedisConfigStore = await make_component("configuration", redis_server)
    return store


@pytest.fixture
async def lock(make_component: ComponentFactory, redis_server: RedisServer) -> RedisLockStore:
    store: RedisLockStore = await make_component("lock", redis_server)
    return store


@pytest.fixture
async def sequencer(
    make_component: ComponentFactory, redis_server: RedisServer
) -> RedisSequencerStore:
    store: RedisSequencerStore = await make_component("sequencer", redis_server)
    return store
