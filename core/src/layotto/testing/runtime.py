"""The sidecar served in-process on random ports, for tests that talk to it over real sockets
but want it on their own event loop (quick to start, stop and restart)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio
from anyio.abc import TaskStatus
from grpclib.client import Channel

from layotto.config import RuntimeConfig, load_config
from layotto.plugins import Catalog, load_catalog
from layotto.runtime import Runtime

START_TIMEOUT = 30.0
STOP_TIMEOUT = 15.0


@dataclass
class Sidecar:
    runtime: Runtime
    stopped: anyio.Event  # set once serve() has returned (or raised)

    @property
    def host(self) -> str:
        return self.runtime.config.server.host

    @property
    def grpc_port(self) -> int:
        assert self.runtime.grpc_port
        return self.runtime.grpc_port

    @property
    def http_url(self) -> str:
        assert self.runtime.http_port
        return f"http://{self.host}:{self.runtime.http_port}"

    def channel(self) -> Channel:
        return Channel(self.host, self.grpc_port)

    async def stop(self, within: float = STOP_TIMEOUT) -> None:
        """Begin shutdown and wait (bounded) for serve() to return."""
        self.runtime.shutdown.set()
        with anyio.fail_after(within):
            await self.stopped.wait()


@asynccontextmanager
async def run_sidecar(
    config: RuntimeConfig | None = None,
    catalog: Catalog | None = None,
    *,
    api_token: str | None = None,
    grace_period: float | None = None,
    app_port: int | None = None,
) -> AsyncIterator[Sidecar]:
    """Serve `config` (default: the embedded default) with ports 0; stop on exit."""
    base = config if config is not None else load_config()
    runtime = Runtime(
        base.with_overrides(
            grpc_port=0,
            http_port=0,
            api_token=api_token,
            grace_period=grace_period,
            app_port=app_port,
        ),
        catalog if catalog is not None else load_catalog(),
    )
    stopped = anyio.Event()

    async def serve(*, task_status: TaskStatus[None]) -> None:
        try:
            await runtime.serve(task_status=task_status)
        finally:
            stopped.set()

    async with anyio.create_task_group() as tg:
        with anyio.fail_after(START_TIMEOUT):
            await tg.start(serve)
        sidecar = Sidecar(runtime, stopped)
        try:
            yield sidecar
        finally:
            await sidecar.stop()
