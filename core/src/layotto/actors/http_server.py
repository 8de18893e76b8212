"""HttpServer: serves the ASGI app with uvicorn, driven through its startup / main_loop /
shutdown steps rather than `serve()`, which would install signal handlers of its own (the
runtime owns SIGTERM/SIGINT)."""

from __future__ import annotations

import logging
import socket

import anyio
import uvicorn
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

log = logging.getLogger(__name__)

STOP_TIMEOUT_SECONDS = 3.0


class HttpServer:
    name = "http_server"
    serves = "HTTP API"  # for the log line

    def __init__(self, app: ASGIApp, host: str, port: int) -> None:
        self._app = app
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._done = anyio.Event()
        self.bound_port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._done = anyio.Event()
        # Bind ourselves so that a taken port fails here, with the OS error, before startup ends.
        sock = socket.create_server((self._host, self._port))
        self.bound_port = sock.getsockname()[1]
        config = uvicorn.Config(
            self._app,
            lifespan="off",
            log_config=None,
            access_log=False,
            http="h11",
            ws="none",
            loop="none",
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        self._server = server
        try:
            await server.startup(sockets=[sock])
            if server.should_exit:
                raise OSError(f"HTTP server could not start on {self._host}:{self.bound_port}")
            log.info(
                "%s listening", self.serves, extra={"host": self._host, "port": self.bound_port}
            )
            task_status.started()
            await server.main_loop()
            with anyio.CancelScope(shield=True), anyio.move_on_after(STOP_TIMEOUT_SECONDS):
                await server.shutdown(sockets=[sock])
        finally:
            sock.close()
            self._done.set()

    async def stop(self) -> None:
        if self._server is not None:
            self._server.should_exit = True  # main_loop notices within its 0.1 s tick
        with anyio.move_on_after(STOP_TIMEOUT_SECONDS):
            await self._done.wait()
