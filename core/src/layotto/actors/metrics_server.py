"""MetricsServer: Prometheus `GET /metrics` on a port of its own, as daprd serves it (9090).

An `HttpServer` with a tiny ASGI app. With `optional` (the port `layotto run` implies when none
is configured) a port that is taken does not stop the sidecar: metrics are then not served, a
warning says so, and `/actuator/info` shows it. A configured port that is taken fails startup,
as the gRPC and HTTP ports do.
"""

from __future__ import annotations

import logging
import socket

import anyio
from anyio.abc import TaskStatus
from starlette.types import ASGIApp

from layotto.actors.http_server import HttpServer

log = logging.getLogger(__name__)


class MetricsServer(HttpServer):
    name = "metrics_server"
    serves = "metrics"

    def __init__(self, app: ASGIApp, host: str, port: int, *, optional: bool = False) -> None:
        super().__init__(app, host, port)
        self._optional = optional
        self._idle = anyio.Event()
        self.unavailable: str | None = None  # why metrics are not served (optional port taken)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        if self._optional and not self._port_free():
            self._done = anyio.Event()
            task_status.started()
            try:
                await self._idle.wait()
            finally:
                self._done.set()  # what `stop` waits for
            return
        self.unavailable = None
        await super().run(task_status=task_status)

    def _port_free(self) -> bool:
        try:
            socket.create_server((self._host, self._port)).close()
        except OSError as err:
            self.unavailable = f"port {self._port} is not available ({err.strerror or err})"
            log.warning(
                "metrics are not served: %s; choose another with --metrics-port, or turn them "
                "off with --enable-metrics=false",
                self.unavailable,
            )
            return False
        return True

    async def stop(self) -> None:
        self._idle.set()
        await super().stop()
