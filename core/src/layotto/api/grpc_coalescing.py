"""One socket write per connection per event-loop turn for the gRPC server.

grpclib hands every HTTP/2 frame group to the transport as soon as it is built: a unary answer
is three writes (headers, data, trailers), and uvloop turns each into its own `send()` system
call. On this stack a system call costs as much as a good part of a request's Python work, so
`CoalescingTransport` gathers the writes made during one loop turn and sends them as one
buffer at the end of it (`loop.call_soon`): the same bytes in the same order, sent a few
microseconds later, with one system call per connection per turn instead of one per frame —
and under load the answers of many concurrent calls share it.

`CoalescingServer` is grpclib's `Server` with its protocol factory wrapping each accepted
transport. It overrides `Server._protocol_factory`, a private method: grpclib is pinned in
uv.lock, and `core/tests/api/test_grpc_coalescing.py` fails if an upgrade changes the hook.
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from grpclib.protocol import H2Protocol
from grpclib.server import Handler, Server


class CoalescingTransport:
    """A transport proxy whose `write` is deferred to the end of the current loop turn.

    Everything else (flow control callbacks, `get_extra_info`, `is_closing`, `abort`) is the
    real transport's. `close` sends what is pending first, so a GOAWAY written just before
    closing still goes out.
    """

    __slots__ = ("_loop", "_pending", "_scheduled", "_transport", "writes")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] = []
        self._scheduled = False
        #: Socket writes handed to the real transport (tests and diagnostics).
        self.writes = 0

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        self._pending.append(bytes(data))
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self.flush)

    def flush(self) -> None:
        self._scheduled = False
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if self._transport.is_closing():
            return  # the peer is gone: grpclib learns it from connection_lost
        self.writes += 1
        self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class _CoalescingProtocol(H2Protocol):
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        real = cast(asyncio.Transport, transport)
        proxy: Any = CoalescingTransport(real, asyncio.get_running_loop())
        super().connection_made(proxy)


class CoalescingServer(Server):
    """grpclib's server, its connections writing through `CoalescingTransport`."""

    def _protocol_factory(self) -> H2Protocol:
        # The body of grpclib 0.4's Server._protocol_factory, with our protocol class.
        self.__gc_step__()
        handler = Handler(
            self._mapping,
            self._codec,
            self._status_details_codec,
            self.__dispatch__,
        )
        self._handlers.add(handler)
        return _CoalescingProtocol(handler, self._config, self._h2_config)
