"""The gRPC server's write coalescing: same bytes, same order, one socket write per turn."""

from __future__ import annotations

import asyncio
from typing import Any

import anyio
import pytest
from grpclib.client import Channel
from layotto._proto.grpc.health import v1 as health_pb
from layotto.actors.api_server import ApiServer
from layotto.api.grpc_coalescing import CoalescingTransport
from layotto.api.grpc_health import HealthService

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib runs on asyncio only


class RecordingTransport:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, data: bytes) -> None:
        assert not self.closed, "write after close"
        self.sent.append(data)

    def is_closing(self) -> bool:
        return self.closed

    def close(self) -> None:
        self.closed = True

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_writes_of_one_turn_go_out_as_one_buffer_in_order() -> None:
    real = RecordingTransport()
    proxy = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"headers|")
    proxy.write(b"")  # nothing to send: not a write
    proxy.write(bytearray(b"data|"))
    proxy.write(b"trailers")
    assert real.sent == []  # deferred to the end of this turn
    await asyncio.sleep(0)
    assert real.sent == [b"headers|data|trailers"]
    assert proxy.writes == 1
    proxy.write(b"next")
    await asyncio.sleep(0)
    assert real.sent == [b"headers|data|trailers", b"next"]
    # Everything else is the real transport's.
    assert proxy.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_close_sends_what_is_pending_first() -> None:
    real = RecordingTransport()
    proxy = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"goaway")
    proxy.close()
    assert real.sent == [b"goaway"]
    assert real.closed
    await asyncio.sleep(0)  # the scheduled flush finds nothing left
    assert real.sent == [b"goaway"]


async def test_writes_to_a_closing_transport_are_dropped() -> None:
    real = RecordingTransport()
    proxy = CoalescingTransport(real, asyncio.get_running_loop())  # type: ignore[arg-type]
    proxy.write(b"late")
    real.closed = True  # the peer went away before the turn ended
    await asyncio.sleep(0)
    assert real.sent == []
    assert proxy.writes == 0


async def test_a_unary_answer_is_one_socket_write(monkeypatch: pytest.MonkeyPatch) -> None:
    """Headers, message and trailers of one answer leave the API server in a single write;
    without the coalescing grpclib makes three. Also proves grpclib still calls the overridden
    `_protocol_factory` (a private hook: an upgrade that drops it fails here)."""
    made: list[CoalescingTransport] = []
    original_init = CoalescingTransport.__init__

    def recording_init(self: CoalescingTransport, *args: Any) -> None:
        original_init(self, *args)
        made.append(self)

    monkeypatch.setattr(CoalescingTransport, "__init__", recording_init)
    health = HealthService([], anyio.Event())
    health.set_serving(True)
    api = ApiServer([health], "127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        await tg.start(api.run)
        assert api.bound_port
        channel = Channel("127.0.0.1", api.bound_port)
        try:
            stub = health_pb.HealthStub(channel)
            await stub.check(health_pb.HealthCheckRequest())  # connection set up
            (transport,) = made  # the one connection went through the coalescing proxy
            before = transport.writes
            for _ in range(5):
                reply = await stub.check(health_pb.HealthCheckRequest())
                assert reply.status == health_pb.HealthCheckResponseServingStatus.SERVING
            assert transport.writes - before == 5
        finally:
            channel.close()
            await api.stop()
