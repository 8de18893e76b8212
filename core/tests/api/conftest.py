"""Fixtures for the API edge tests: a real Runtime served in-process on random ports.

The runtime runs on asyncio (grpclib is asyncio-only) under the anyio pytest plugin. Tests get:

* `sidecar`: a running runtime plus its ports and a `stopped` event (set when `serve` returns);
* `runtime`: the `Runtime` of `sidecar`;
* `stub` / `http`: a grpclib `RuntimeStub` and an `httpx.AsyncClient` pointed at it;
* `dapr`: a Dapr SDK (grpcio) `DaprStub` pointed at it;
* `start_sidecar`: an async context manager factory, for tests that need a second runtime or
  want to control shutdown themselves;
* `slow_kit`: a catalog holding a `state.slow` store whose calls take a configurable time.

Options come from the `runtime_options` fixture, a dict with any of `config`, `catalog`,
`api_token`, `grace_period`. Override it in a module, or parametrise it indirectly::

    @pytest.mark.parametrize("runtime_options", [{"api_token": "t"}], indirect=True)
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import grpclib.const
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc
from grpclib.client import Channel
from layotto._proto.spec.proto.extension.v1 import cryption, delay_queue, email, phone, s3, sms
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import ComponentConfig, RuntimeConfig
from layotto.plugin import (
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    DeleteRequest,
    Feature,
    GetRequest,
    GetResponse,
    HealthStatus,
    Kind,
    SetRequest,
    StateStore,
    TransactionOperation,
)
from layotto.plugins import Catalog, PluginInfo
from layotto.runtime import Runtime
from layotto.testing.runtime import Sidecar, run_sidecar


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


SidecarFactory = Callable[..., AbstractAsyncContextManager[Sidecar]]


@pytest.fixture
def start_sidecar() -> SidecarFactory:
    return run_sidecar


@pytest.fixture
def runtime_options(request: pytest.FixtureRequest) -> Mapping[str, Any]:
    return getattr(request, "param", {})


@pytest.fixture
async def sidecar(runtime_options: Mapping[str, Any]) -> AsyncIterator[Sidecar]:
    async with run_sidecar(**runtime_options) as running:
        yield running


@pytest.fixture
def runtime(sidecar: Sidecar) -> Runtime:
    return sidecar.runtime


@pytest.fixture
async def channel(sidecar: Sidecar) -> AsyncIterator[Channel]:
    chan = sidecar.channel()
    try:
        yield chan
    finally:
        chan.close()


@pytest.fixture
async def dapr(sidecar: Sidecar) -> AsyncIterator[dapr_pb2_grpc.DaprStub]:
    """A Dapr SDK (grpcio) `DaprStub` pointed at `sidecar`."""
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        yield dapr_pb2_grpc.DaprStub(chan)


@pytest.fixture
def stub(channel: Channel) -> pb.RuntimeStub:
    # A default timeout bounds every call made through this stub.
    return pb.RuntimeStub(channel, timeout=10)


@pytest.fixture
async def http(sidecar: Sidecar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as client:
        yield client


async def wait_for_readiness(runtime: Runtime, status: HealthStatus, within: float = 5.0) -> None:
    """Returns once readiness is `status` (at once if it already is)."""
    reached = anyio.Event()

    def listener(current: HealthStatus) -> None:
        if current is status:
            reached.set()

    runtime.health.on_readiness_change(listener)  # calls back with the current status too
    with anyio.fail_after(within):
        await reached.wait()


@pytest.fixture
def readiness_reached() -> Callable[..., Awaitable[None]]:
    return wait_for_readiness


# -- calling any RPC generically ----------------------------------------------------------


def _handlers() -> dict[str, grpclib.const.Handler]:
    """Path -> generated handler (cardinality, request and reply types) of every service."""
    handlers: dict[str, grpclib.const.Handler] = {}
    bases = (
        pb.RuntimeBase,
        pb.LifecycleBase,
        s3.ObjectStorageServiceBase,
        cryption.CryptionServiceBase,
        delay_queue.DelayQueueBase,
        email.EmailServiceBase,
        phone.PhoneCallServiceBase,
        sms.SmsServiceBase,
    )
    for base in bases:
        concrete: Any = type(f"Concrete{base.__name__}", (base,), {})
        handlers.update(concrete().__mapping__())
    return handlers


HANDLERS = _handlers()

RpcCaller = Callable[..., Awaitable[list[Any]]]


async def call_rpc(
    channel: Channel,
    path: str,
    request: Any = None,
    *,
    metadata: Mapping[str, str] | None = None,
    within: float = 10.0,
) -> list[Any]:
    """Calls `path` with one request message (a default one unless given), whatever its
    cardinality, and returns every reply; a status other than OK raises GRPCError."""
    handler = HANDLERS[path]
    with anyio.fail_after(within):
        async with channel.request(
            path,
            handler.cardinality,
            handler.request_type,
            handler.reply_type,
            metadata=metadata,
            timeout=within,
        ) as stream:
            await stream.send_message(
                request if request is not None else handler.request_type(), end=True
            )
            return [reply async for reply in stream]


@pytest.fixture
def rpc() -> RpcCaller:
    return call_rpc


# -- a slow state store, for drain and readiness-during-drain tests ------------------------


class SlowStateMetadata(ComponentMetadata):
    delay: float = 0.5


class SlowStateStore(StateStore):
    """Every `get` sleeps `delay` seconds (a key `delay=<s>` overrides it); records what
    happened so tests can poll instead of sleeping."""

    features = frozenset({Feature.ETAG})

    def __init__(self, delay: float) -> None:
        self.delay = delay
        self.data: dict[str, bytes] = {}
        self.started = 0
        self.finished = 0
        self.cancelled = 0
        self.active = 0
        self.max_active = 0
        self.closed = False
        self._progress = anyio.Event()

    @classmethod
    def create(cls, metadata: SlowStateMetadata, context: ComponentContext) -> SlowStateStore:
        return cls(metadata.delay)

    async def get(self, request: GetRequest) -> GetResponse | None:
        delay = self.delay
        if request.key.startswith("delay="):
            delay = float(request.key.removeprefix("delay="))
        self.started += 1
        self._progress.set()
        self._progress = anyio.Event()
        self.active += 1
        self.max_active = max(self.max_active, self.active)
        try:
            await anyio.sleep(delay)
        except anyio.get_cancelled_exc_class():
            self.cancelled += 1
            raise
        finally:
            self.active -= 1
        self.finished += 1
        value = self.data.get(request.key)
        return None if value is None else GetResponse(value, "1")

    async def set(self, request: SetRequest) -> None:
        self.data[request.key] = request.value

    async def delete(self, request: DeleteRequest) -> None:
        self.data.pop(request.key, None)

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        raise NotImplementedError

    async def close(self) -> None:
        self.closed = True

    async def wait_started(self, count: int, within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while self.started < count:
                await self._progress.wait()


@dataclass
class SlowKit:
    catalog: Catalog
    name: str = "slow"
    delay: float = 0.5

    def config(self, **metadata: Any) -> RuntimeConfig:
        component = ComponentConfig(
            name=self.name,
            kind=Kind.STATE,
            type="slow",
            metadata={"delay": self.delay, **metadata},
        )
        return RuntimeConfig(components=(component,))

    @staticmethod
    def store(runtime: Runtime, name: str = "slow") -> SlowStateStore:
        component = runtime.components.of_kind(Kind.STATE)[name].component
        assert isinstance(component, SlowStateStore)
        return component


@pytest.fixture
def slow_kit() -> SlowKit:
    catalog = Catalog()
    catalog.add(
        PluginInfo(
            "slow",
            "layotto-tests",
            "0",
            (ComponentSpec(Kind.STATE, "slow", SlowStateMetadata, SlowStateStore.create),),
        )
    )
    return SlowKit(catalog)
