"""ApiServer: the gRPC port (Layotto Runtime, extensions, health, reflection)."""

from __future__ import annotations

import logging
import weakref
from typing import Any

import anyio
from anyio.abc import TaskStatus
from grpclib.protocol import H2Protocol
from grpclib.server import Server

from layotto.api.rich_errors import RICH_STATUS_CODEC

log = logging.getLogger(__name__)

CLOSE_TIMEOUT_SECONDS = 2.0


class _HangingUpServer(Server):
    """grpclib's server, which can also hang up on its open connections.

    `Server.close()` stops listening and cancels the running calls, but grpclib goes on
    serving the connections that are open: a call arriving afterwards becomes a task that
    `wait_closed()` never sees, and that the event loop then destroys while still pending at
    exit. Closing the connections too leaves no such call. (The protocols are recorded through
    `Server._protocol_factory`, a private hook: grpclib is pinned in uv.lock, and
    core/tests/api/test_drain.py fails if an upgrade changes it.)"""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def hang_up(self) -> None:
        for protocol in list(self._protocols):
            connection = getattr(protocol, "connection", None)  # None: not connected yet
            if connection is not None:
                connection.close()


class ApiServer:
    name = "api_server"

    def __init__(self, services: list[Any], host: str, port: int) -> None:
        self._services = services
        self._host = host
        self._port = port
        self._server: _HangingUpServer | None = None
        self._stopped = anyio.Event()
        self.bound_port: int | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stopped = anyio.Event()
        # Our codec encodes google.rpc.Status with the generated messages (Dapr's rich error
        # details) whether or not googleapis-common-protos is importable.
        server = _HangingUpServer(self._services, status_details_codec=RICH_STATUS_CODEC)
        await server.start(self._host, self._port, reuse_address=True)
        self._server = server
        # grpclib does not expose the bound port; it matters when we were asked for port 0.
        listener: Any = server._server
        sockets = listener.sockets if listener is not None else ()
        self.bound_port = sockets[0].getsockname()[1] if sockets else self._port
        log.info("gRPC API listening", extra={"host": self._host, "port": self.bound_port})
        task_status.started()
        try:
            await self._stopped.wait()
        finally:
            await self._close()

    async def _close(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
            server.close()
            server.hang_up()  # no call may arrive after close() on a still-open connection
            await server.wait_closed()

    async def stop(self) -> None:
        self._stopped.set()
        await self._close()
