"""HttpServer: serves the ASGI app with hypercorn, stopped through its shutdown trigger
(so hypercorn installs no signal handlers of its own)."""

from __future__ import annotations

import logging
import socket

import anyio
from anyio.abc import TaskStatus
from hypercorn.asyncio import serve
from hypercorn.config import Config
from starlette.types import ASGIApp

log = logging.getLogger(__name__)


class HttpServer:
    name = "http_server"

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self.bound_port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        self._done = anyio.Event()
        # Bind first so that readiness of this actor means the port accepts connections.
        sock = socket.create_server((self._host, self._port), reuse_port=False)
        sock.set_inheritable(True)
        self.bound_port = sock.getsockname()[1]
        config = Config()
        # Hypercorn takes ownership of the descriptor (and closes it when it stops).
        config.bind = [f"fd://{sock.detach()}"]
        config.accesslog = None
        config.errorlog = logging.getLogger("layotto.http")
        config.graceful_timeout = 1.0
        log.info("HTTP API listening", extra={"host": self._host, "port": self.bound_port})
        task_status.started()
        try:
            await serve(self._app, config, shutdown_trigger=self._stop.wait)  # type: ignore[arg-type]
        finally:
            self._done.set()

    async def stop(self) -> None:
        self._stop.set()
        with anyio.move_on_after(3.0):
            await self._done.wait()
