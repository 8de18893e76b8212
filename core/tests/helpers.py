"""Helpers shared by the core tests: small apps served on a real port.

Loaded by `core/tests/conftest.py` as `layotto_core_test_helpers` (the workspace runs pytest with
--import-mode=importlib, so test folders are not on sys.path).
"""

from __future__ import annotations

import json
import re
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from grpclib import GRPCError
from grpclib.const import Cardinality, Handler, Status
from grpclib.server import Server, Stream
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


@asynccontextmanager
async def serve_grpclib(*servicers: Any, port: int = 0) -> AsyncIterator[int]:
    """Serve grpclib `servicers` on 127.0.0.1 (`port`, or any free one); yields the port."""
    server = Server(list(servicers))
    await server.start("127.0.0.1", port)
    listener: Any = server._server  # grpclib does not expose the bound port
    try:
        yield int(listener.sockets[0].getsockname()[1])
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            server.close()
            await server.wait_closed()


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


# -- trace collectors ------------------------------------------------------------------------

_HEX32 = re.compile(r"[0-9a-f]{32}")
_HEX16 = re.compile(r"[0-9a-f]{16}")


class ZipkinCollector:
    """A Zipkin v2 collector as far as the exporter meets it: `POST /api/v2/spans` with a JSON
    list of spans (content-type application/json), answered 202; each span checked against the
    v2 model (hex ids, kind, µs timestamp and duration, local endpoint, string tags); a bad
    request is answered 400 and kept in `rejected`."""

    KINDS = frozenset({"CLIENT", "SERVER", "PRODUCER", "CONSUMER"})

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.posts = 0
        self.rejected: list[str] = []

    def check(self, span: Any) -> None:
        assert isinstance(span, dict), span
        assert _HEX32.fullmatch(span["traceId"]) or _HEX16.fullmatch(span["traceId"])
        assert _HEX16.fullmatch(span["id"])
        if "parentId" in span:
            assert _HEX16.fullmatch(span["parentId"])
        assert isinstance(span["name"], str)
        assert span.get("kind", "SERVER") in self.KINDS
        assert isinstance(span["timestamp"], int)
        assert span["timestamp"] > 1_600_000_000_000_000
        assert isinstance(span["duration"], int)
        assert span["duration"] >= 1
        assert isinstance(span["localEndpoint"]["serviceName"], str)
        tags = span.get("tags", {})
        assert all(isinstance(k, str) and isinstance(v, str) for k, v in tags.items())

    async def __call__(self, scope: Any, receive: Receive, send: Any) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        headers = dict(scope["headers"])
        status = 202
        try:
            assert scope["method"] == "POST"
            assert scope["path"] == "/api/v2/spans"
            assert headers.get(b"content-type", b"").startswith(b"application/json")
            spans = json.loads(body)
            assert isinstance(spans, list)
            for span in spans:
                self.check(span)
        except (AssertionError, KeyError, ValueError) as err:
            self.rejected.append(repr(err))
            status = 400
        else:
            self.posts += 1
            self.spans.extend(spans)
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b""})


class OtlpCollector:
    """An OTLP/HTTP collector taking JSON: `POST /v1/traces` with an ExportTraceServiceRequest
    (resourceSpans -> scopeSpans -> spans; hex ids, ns times as strings, kind and status as
    numbers, attributes as key/value pairs), answered 200 with an empty
    ExportTraceServiceResponse; the spans of all requests are kept flat with the service name
    of their resource."""

    def __init__(self) -> None:
        self.spans: list[dict[str, Any]] = []
        self.rejected: list[str] = []

    @staticmethod
    def attributes(pairs: Any) -> dict[str, str]:
        out: dict[str, str] = {}
        for pair in pairs:
            out[pair["key"]] = pair["value"]["stringValue"]
        return out

    async def __call__(self, scope: Any, receive: Receive, send: Any) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        headers = dict(scope["headers"])
        status, answer = 200, b"{}"
        try:
            assert scope["method"] == "POST"
            assert scope["path"] == "/v1/traces"
            assert headers.get(b"content-type", b"").startswith(b"application/json")
            request = json.loads(body)
            found = []
            for resource_spans in request["resourceSpans"]:
                service = self.attributes(resource_spans["resource"]["attributes"])["service.name"]
                for scope_spans in resource_spans["scopeSpans"]:
                    assert isinstance(scope_spans["scope"]["name"], str)
                    for span in scope_spans["spans"]:
                        assert _HEX32.fullmatch(span["traceId"])
                        assert _HEX16.fullmatch(span["spanId"])
                        if "parentSpanId" in span:
                            assert _HEX16.fullmatch(span["parentSpanId"])
                        assert span["kind"] in (1, 2, 3, 4, 5)
                        start, end = int(span["startTimeUnixNano"]), int(span["endTimeUnixNano"])
                        assert isinstance(span["startTimeUnixNano"], str)
                        assert 0 < start <= end
                        assert span["status"]["code"] in (0, 1, 2)
                        found.append(
                            {
                                **span,
                                "service": service,
                                "attributes": self.attributes(span.get("attributes", [])),
                            }
                        )
        except (AssertionError, KeyError, ValueError, TypeError) as err:
            self.rejected.append(repr(err))
            status, answer = 400, b'{"message": "bad request"}'
        else:
            self.spans.extend(found)
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": answer})
