"""Helpers shared by the core tests: small apps served on a real port.

Loaded by `core/tests/conftest.py` as `layotto_core_test_helpers` (the workspace runs pytest with
--import-mode=importlib, so test folders are not on sys.path).
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from grpclib import GRPCError
from grpclib.const import Cardinality, Handler, Status
from grpclib.server import Stream
from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.google.protobuf import Any as PbAny
from layotto.actors.http_server import HttpServer
from starlette.types import ASGIApp, Receive


async def read_body(receive: Receive) -> bytes:
    """The whole request body of an ASGI HTTP request."""
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            return body


@asynccontextmanager
async def serve_asgi(app: ASGIApp) -> AsyncIterator[int]:
    """Serves `app` with the runtime's `HttpServer` on 127.0.0.1 and a free port; yields it."""
    server = HttpServer(app, "127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        assert server.bound_port is not None
        try:
            yield server.bound_port
        finally:
            await server.stop()


def free_port() -> int:
    """A port nothing listens on (bound, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def text_metadata(stream: Stream[Any, Any]) -> dict[str, str]:
    return {k: v for k, v in (stream.metadata or {}).items() if isinstance(v, str)}


async def maybe_fail(method: str) -> None:
    """`fail/<STATUS>` answers that gRPC status, `crash` raises, `slow` takes 5 s."""
    if method.startswith("fail/"):
        status = Status[method.split("/", 1)[1]]
        raise GRPCError(status, "x")
    if method == "crash":
        raise RuntimeError("boom")
    if method == "slow":
        await anyio.sleep(5)


class EchoApp:
    """Dapr `AppCallback/OnInvoke`, echoing what it received (as JSON), with an `x-reply: app`
    header; the method names of `maybe_fail` make it fail. `received` keeps every request.
    Serve it with `layotto.testing.pubsub.serve_app`."""

    def __init__(self) -> None:
        self.calls = 0
        self.received: list[dapr_common.InvokeRequest] = []

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/dapr.proto.runtime.v1.AppCallback/OnInvoke": Handler(
                self.on_invoke,
                Cardinality.UNARY_UNARY,
                dapr_common.InvokeRequest,
                dapr_common.InvokeResponse,
            )
        }

    async def on_invoke(
        self, stream: Stream[dapr_common.InvokeRequest, dapr_common.InvokeResponse]
    ) -> None:
        self.calls += 1
        message = await stream.recv_message()
        assert message is not None
        self.received.append(message)
        await maybe_fail(message.method)
        extension = message.http_extension
        echo = {
            "method": message.method,
            "data": message.data.value.decode() if message.data else None,
            "type_url": message.data.type_url if message.data else None,
            "content_type": message.content_type,
            "verb": extension.verb.name if extension else None,
            "querystring": extension.querystring if extension else None,
            "metadata": text_metadata(stream),
        }
        await stream.send_initial_metadata(metadata={"x-reply": "app"})
        await stream.send_message(
            dapr_common.InvokeResponse(
                data=PbAny(value=json.dumps(echo).encode()), content_type="application/json"
            )
        )
