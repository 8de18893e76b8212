"""The InvokeService channels `rpc.http` and `rpc.grpc` over real sockets: an in-process HTTP/1.1
server (uvicorn), a small h2c server (the `h2` library), and grpclib servers standing in for a
Dapr app (`AppCallback/OnInvoke`) and for the target's sidecar (`Runtime/InvokeService`).

Behaviour: layotto-semantics.md §5, dapr-compat.md §1.3-1.4 and §2.7."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import h2.config
import h2.connection
import h2.events
import pytest
from grpclib.client import Channel
from grpclib.const import Cardinality, Handler, Status
from grpclib.server import Stream
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.spec.proto.runtime import v1 as spec
from layotto.builtin.plugin import layotto_components
from layotto.builtin.rpc_grpc import (
    GrpcChannel,
    GrpcChannelMetadata,
    call_app_on_invoke,
)
from layotto.builtin.rpc_http import HttpChannel, HttpChannelMetadata
from layotto.errors import ErrorCategory
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    InvalidArgument,
    Kind,
)
from layotto.plugin.rpc import RpcChannel, RpcRequest, TargetError
from layotto.testing.pubsub import serve_app
from layotto_core_test_helpers import (
    EchoApp,
    free_port,
    maybe_fail,
    read_body,
    serve_asgi,
    text_metadata,
)
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

CALLER = "caller-app"
TARGET = "target-app"


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # grpclib and uvicorn are asyncio-only


@asynccontextmanager
async def closing_server() -> AsyncIterator[str]:
    """A TCP server that accepts and closes at once, before any answer."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield f"127.0.0.1:{port}"
    finally:
        server.close()
        await server.wait_closed()


# -- HTTP/1.1: an echo app served by uvicorn ------------------------------------------------


async def echo_asgi(scope: Scope, receive: Receive, send: Send) -> None:
    assert scope["type"] == "http"
    body = await read_body(receive)
    path: str = scope["path"]
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        payload = b"y" * 300 if status == 500 else b"nope"
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", b"text/plain"), (b"location", b"/elsewhere")],
            }
        )
        await send({"type": "http.response.body", "body": payload})
        return
    if path == "/slow":
        await anyio.sleep(5)
    payload = json.dumps(
        {
            "method": scope["method"],
            "path": path,
            "query": scope["query_string"].decode(),
            "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
            "body": body.decode("latin-1"),
            "client_port": scope["client"][1],
            "http_version": scope["http_version"],
        }
    ).encode()
    await send(
        {
            "type": "http.response.start",
            "status": 201 if path == "/created" else 200,
            "headers": [
                (b"content-type", b"application/json"),
                (b"x-reply", b"yes"),
                (b"set-cookie", b"a=1"),
                (b"set-cookie", b"b=2"),
                (b"keep-alive", b"timeout=5"),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
async def http_target() -> AsyncIterator[str]:
    async with serve_asgi(echo_asgi) as port:
        yield f"127.0.0.1:{port}"


@asynccontextmanager
async def http_channel(**metadata: Any) -> AsyncIterator[HttpChannel]:
    channel = HttpChannel(HttpChannelMetadata.model_validate(metadata))
    await channel.init()
    try:
        yield channel
    finally:
        await channel.close()


def header_map(echo: dict[str, Any]) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for name, value in echo["headers"]:
        found.setdefault(name, []).append(value)
    return found


def request(**fields: Any) -> RpcRequest:
    fields.setdefault("app_id", TARGET)
    fields.setdefault("method", "echo")
    return RpcRequest(**fields)


@pytest.mark.parametrize("verb", ["GET", "POST", "PUT", "DELETE", "PATCH", "post"])
@pytest.mark.parametrize("method", ["orders/42", "/orders/42"])
async def test_http_verb_path_query_and_body(http_target: str, verb: str, method: str) -> None:
    async with http_channel() as channel:
        response = await channel.invoke(
            request(method=method, verb=verb, query_string="a=1&b=x%20y", data=b"payload"),
            http_target,
        )
    echo = json.loads(response.data)
    assert echo["method"] == verb.upper()
    assert echo["path"] == "/orders/42"
    assert echo["query"] == "a=1&b=x%20y"
    assert echo["body"] == "payload"
    assert echo["http_version"] == "1.1"


async def test_http_default_verb_is_get_even_with_a_body(http_target: str) -> None:
    async with http_channel() as channel:
        response = await channel.invoke(request(data=b"{}"), http_target)
    echo = json.loads(response.data)
    assert (echo["method"], echo["path"], echo["query"], echo["body"]) == ("GET", "/echo", "", "{}")


async def test_http_request_headers(http_target: str) -> None:
    headers = {
        "x-trace": "t1",
        "X-Upper": "v",
        "connection": "close",
        "keep-alive": "300",
        "transfer-encoding": "chunked",
        "upgrade": "h2c",
        "host": "spoofed",
        "content-length": "999",
        "content-type": "text/ignored",
        "rpc_request_timeout": "1000",
        "rpc_target_address": "10.0.0.1:80",
        "id": "someone-else",
        "x-utf8": "café",
        "bad key": "dropped",
        ":path": "/elsewhere",
    }
    async with http_channel() as channel:
        response = await channel.invoke(
            request(headers=headers, content_type="application/json", data=b"[1]", verb="POST"),
            http_target,
        )
    sent = header_map(json.loads(response.data))
    assert sent["x-trace"] == ["t1"]
    assert sent["x-upper"] == ["v"]
    assert sent["x-utf8"] == ["café"]  # sent as UTF-8 bytes, unchanged
    assert "bad key" not in sent
    assert sent["id"] == [TARGET]  # the target, whatever the caller sent
    assert sent["host"] == [http_target]
    assert sent["content-type"] == ["application/json"]
    assert sent["content-length"] == ["3"]
    for name in ("keep-alive", "transfer-encoding", "upgrade", "rpc_request_timeout"):
        assert name not in sent, name
    assert "rpc_target_address" not in sent
    assert sent.get("connection", ["keep-alive"]) == ["keep-alive"]  # ours, not the caller's
    assert "accept-encoding" not in sent  # the body is passed through as the target sends it


async def test_http_host_and_app_id_header_from_metadata(http_target: str) -> None:
    async with http_channel(host="localhost", appIdHeader="X-App") as channel:
        response = await channel.invoke(request(), http_target)
    sent = header_map(json.loads(response.data))
    assert sent["host"] == ["localhost"]
    assert sent["x-app"] == [TARGET]
    assert "id" not in sent


async def test_http_response_body_content_type_and_headers(http_target: str) -> None:
    async with http_channel() as channel:
        response = await channel.invoke(request(method="created"), http_target)
    assert json.loads(response.data)["path"] == "/created"  # 201 is a success
    assert response.content_type == "application/json"
    assert response.headers["x-reply"] == "yes"
    assert response.headers["set-cookie"] == "a=1, b=2"
    for name in ("keep-alive", "content-length", "transfer-encoding", "connection"):
        assert name not in response.headers, name
    assert "content-type" not in response.headers  # carried as content_type


@pytest.mark.parametrize(
    ("status", "category"),
    [
        (400, ErrorCategory.INVALID_ARGUMENT),
        (401, ErrorCategory.UNAUTHENTICATED),
        (403, ErrorCategory.PERMISSION_DENIED),
        (404, ErrorCategory.NOT_FOUND),
        (409, ErrorCategory.ABORTED),
        (429, ErrorCategory.RESOURCE_EXHAUSTED),
        (501, ErrorCategory.UNIMPLEMENTED),
        (503, ErrorCategory.UNAVAILABLE),
        (504, ErrorCategory.DEADLINE_EXCEEDED),
        (418, ErrorCategory.INTERNAL),
        (302, ErrorCategory.INTERNAL),  # redirects are not followed
    ],
)
async def test_http_error_status_is_a_target_error(
    http_target: str, status: int, category: ErrorCategory
) -> None:
    async with http_channel() as channel:
        with pytest.raises(TargetError) as info:
            await channel.invoke(request(method=f"status/{status}"), http_target)
    assert info.value.category is category
    assert info.value.message == f"http response code {status}, body: nope"


async def test_http_error_body_is_cut_at_256_characters(http_target: str) -> None:
    async with http_channel() as channel:
        with pytest.raises(TargetError) as info:
            await channel.invoke(request(method="status/500"), http_target)
    assert info.value.category is ErrorCategory.INTERNAL
    assert info.value.message == "http response code 500, body: " + "y" * 256


async def test_http_keeps_connections_alive(http_target: str) -> None:
    async with http_channel() as channel:
        first = json.loads((await channel.invoke(request(), http_target)).data)
        second = json.loads((await channel.invoke(request(), http_target)).data)
    assert first["client_port"] == second["client_port"]


async def test_http_pool_bound_queues_calls(http_target: str) -> None:
    ports: list[int] = []

    async def call(channel: RpcChannel) -> None:
        ports.append(json.loads((await channel.invoke(request(), http_target)).data)["client_port"])

    async with http_channel(maxConnections="1") as channel, anyio.create_task_group() as tg:
        for _ in range(5):
            tg.start_soon(call, channel)
    assert len(ports) == 5
    assert len(set(ports)) == 1


async def test_http_unknown_host_is_unavailable() -> None:
    async with http_channel() as channel:
        with pytest.raises(BackendUnavailable) as info:
            await channel.invoke(request(timeout=5), "no-such-host.invalid:80")
    assert "no-such-host" not in info.value.message


async def test_http_connection_closed_before_an_answer_is_unavailable() -> None:
    async with closing_server() as address, http_channel() as channel:
        with pytest.raises(BackendUnavailable):
            await channel.invoke(request(verb="POST", data=b"x"), address)


async def test_http_timeout(http_target: str) -> None:
    async with http_channel() as channel:
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as info:
            await channel.invoke(request(method="slow", timeout=0.2), http_target)
        assert time.monotonic() - started < 1
        assert "200 ms" in info.value.message


async def test_http_no_time_left_is_a_timeout(http_target: str) -> None:
    async with http_channel() as channel:
        with pytest.raises(BackendTimeout):
            await channel.invoke(request(timeout=0), http_target)


@pytest.mark.parametrize("address", ["no-port", "host:notaport", ""])
async def test_http_bad_address_is_invalid_argument(address: str) -> None:
    async with http_channel() as channel:
        with pytest.raises(InvalidArgument):
            await channel.invoke(request(), address)


async def test_http_close_is_idempotent() -> None:
    channel = HttpChannel(HttpChannelMetadata())
    assert (await channel.check_health()).status.value == "UP"
    await channel.close()
    await channel.close()


# -- HTTP/2 with prior knowledge (h2c) --------------------------------------------------------


def _h2_reply(
    conn: h2.connection.H2Connection, stream_id: int, headers: list[tuple[str, str]], body: bytes
) -> None:
    pseudo = {k: v for k, v in headers if k.startswith(":")}
    payload = json.dumps(
        {
            "method": pseudo[":method"],
            "path": pseudo[":path"],
            "authority": pseudo.get(":authority", ""),
            "headers": [[k, v] for k, v in headers if not k.startswith(":")],
            "body": body.decode("latin-1"),
            "http_version": "2",
        }
    ).encode()
    conn.send_headers(
        stream_id,
        [(":status", "200"), ("content-type", "application/json"), ("x-reply", "h2")],
    )
    conn.send_data(stream_id, payload, end_stream=True)


@asynccontextmanager
async def h2c_server() -> AsyncIterator[str]:
    """A minimal HTTP/2 server (prior knowledge, no TLS) that echoes each request."""

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding="utf-8")
        )
        conn.initiate_connection()
        writer.write(conn.data_to_send())
        requests: dict[int, tuple[list[tuple[str, str]], bytearray]] = {}
        try:
            while data := await reader.read(65536):
                for event in conn.receive_data(data):
                    if isinstance(event, h2.events.RequestReceived):
                        assert event.stream_id is not None
                        headers = [(str(k), str(v)) for k, v in event.headers or []]
                        requests[event.stream_id] = (headers, bytearray())
                    elif isinstance(event, h2.events.DataReceived):
                        assert event.stream_id is not None
                        assert event.data is not None
                        requests[event.stream_id][1].extend(event.data)
                        conn.acknowledge_received_data(
                            event.flow_controlled_length or 0, event.stream_id
                        )
                    elif isinstance(event, h2.events.StreamEnded):
                        assert event.stream_id is not None
                        headers, body = requests.pop(event.stream_id)
                        _h2_reply(conn, event.stream_id, headers, bytes(body))
                writer.write(conn.data_to_send())
                await writer.drain()
        except (ConnectionError, h2.exceptions.ProtocolError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0)
    try:
        yield f"127.0.0.1:{server.sockets[0].getsockname()[1]}"
    finally:
        server.close()
        await server.wait_closed()


async def test_http2_prior_knowledge() -> None:
    async with h2c_server() as address, http_channel(http2="true", host="svc.local") as channel:
        response = await channel.invoke(
            request(
                method="/orders",
                verb="PUT",
                query_string="q=1",
                data=b"body",
                content_type="text/plain",
                headers={"x-trace": "t2", "connection": "keep-alive", "te": "trailers"},
            ),
            address,
        )
    echo = json.loads(response.data)
    assert echo["http_version"] == "2"
    assert (echo["method"], echo["path"], echo["body"]) == ("PUT", "/orders?q=1", "body")
    assert echo["authority"] == "svc.local"
    sent = header_map(echo)
    assert sent["id"] == [TARGET]
    assert sent["x-trace"] == ["t2"]
    assert sent["content-type"] == ["text/plain"]
    assert "connection" not in sent
    assert response.headers["x-reply"] == "h2"
    assert response.content_type == "application/json"


# -- gRPC: a Dapr app (OnInvoke) and a stand-in for the target's sidecar ----------------------


class EchoSidecar:
    """`spec.proto.runtime.v1.Runtime/InvokeService` of the "other sidecar", echoing."""

    def __mapping__(self) -> dict[str, Handler]:
        return {
            "/spec.proto.runtime.v1.Runtime/InvokeService": Handler(
                self.invoke_service,
                Cardinality.UNARY_UNARY,
                spec.InvokeServiceRequest,
                spec.InvokeResponse,
            )
        }

    async def invoke_service(
        self, stream: Stream[spec.InvokeServiceRequest, spec.InvokeResponse]
    ) -> None:
        request_ = await stream.recv_message()
        assert request_ is not None
        assert request_.message is not None
        message = request_.message
        await maybe_fail(message.method)
        extension = message.http_extension
        echo = {
            "id": request_.id,
            "method": message.method,
            "data": message.data.value.decode() if message.data else None,
            "content_type": message.content_type,
            "verb": extension.verb.name if extension else None,
            "querystring": extension.querystring if extension else None,
            "metadata": text_metadata(stream),
        }
        await stream.send_initial_metadata(metadata={"x-reply": "sidecar"})
        await stream.send_message(
            spec.InvokeResponse(
                data=PbAny(value=json.dumps(echo).encode()), content_type="application/json"
            )
        )


@pytest.fixture
async def app_address() -> AsyncIterator[str]:
    async with serve_app(EchoApp()) as port:
        yield f"127.0.0.1:{port}"


@pytest.fixture
async def sidecar_address() -> AsyncIterator[str]:
    async with serve_app(EchoSidecar()) as port:
        yield f"127.0.0.1:{port}"


@asynccontextmanager
async def grpc_channel(**metadata: Any) -> AsyncIterator[GrpcChannel]:
    model = GrpcChannelMetadata.model_validate(metadata)
    channel = GrpcChannel.create(model, ComponentContext("rpc", CALLER))
    assert isinstance(channel, GrpcChannel)
    await channel.init()
    try:
        yield channel
    finally:
        await channel.close()


FORWARDED = {
    "x-trace": "t1",
    "X-Upper": "v",
    "connection": "close",
    "te": "trailers",
    "content-type": "application/grpc",
    "grpc-timeout": "1S",
    "user-agent": "spoofed",
    "rpc_request_timeout": "1",
    "rpc_target_address": "10.0.0.1:1",
    "bad key": "v",
    "x-non-ascii": "é",
    "dapr-caller-app-id": "spoofed",
}


def _check_forwarded(metadata: dict[str, str]) -> None:
    assert metadata["x-trace"] == "t1"
    assert metadata["x-upper"] == "v"
    assert metadata["dapr-caller-app-id"] == CALLER
    assert metadata["dapr-callee-app-id"] == TARGET
    for name in ("connection", "te", "bad key", "x-non-ascii", "rpc_target_address"):
        assert name not in metadata, name
    assert metadata.get("user-agent") != "spoofed"


async def test_grpc_app_on_invoke(app_address: str) -> None:
    async with grpc_channel(target="app") as channel:
        response = await channel.invoke(
            request(
                method="say",
                data=b"hi",
                content_type="text/plain",
                verb="post",
                query_string="a=1",
                headers=FORWARDED,
            ),
            app_address,
        )
    echo = json.loads(response.data)
    assert echo["method"] == "say"
    assert (echo["data"], echo["type_url"], echo["content_type"]) == ("hi", "", "text/plain")
    assert (echo["verb"], echo["querystring"]) == ("POST", "a=1")
    _check_forwarded(echo["metadata"])
    assert "rpc_request_timeout" not in echo["metadata"]
    assert "dapr-api-token" not in echo["metadata"]
    assert response.content_type == "application/json"
    assert response.headers == {"x-reply": "app"}


async def test_grpc_app_without_verb_has_no_http_extension(app_address: str) -> None:
    async with grpc_channel(target="app") as channel:
        response = await channel.invoke(request(method="say"), app_address)
    echo = json.loads(response.data)
    assert (echo["verb"], echo["querystring"]) == (None, None)
    assert echo["data"] in (None, "")  # an empty Any may arrive as no Any at all


async def test_grpc_app_token(app_address: str) -> None:
    async with grpc_channel(target="app", apiToken="s3cret") as channel:
        response = await channel.invoke(request(), app_address)
    assert json.loads(response.data)["metadata"]["dapr-api-token"] == "s3cret"


async def test_grpc_sidecar_invoke_service(sidecar_address: str) -> None:
    async with grpc_channel() as channel:
        response = await channel.invoke(
            request(
                method="say",
                data=b"hi",
                content_type="text/plain",
                verb="DELETE",
                query_string="?b=2",
                headers=FORWARDED,
                timeout=2.5,
            ),
            sidecar_address,
        )
    echo = json.loads(response.data)
    assert (echo["id"], echo["method"], echo["data"]) == (TARGET, "say", "hi")
    assert (echo["content_type"], echo["verb"], echo["querystring"]) == (
        "text/plain",
        "DELETE",
        "b=2",
    )
    _check_forwarded(echo["metadata"])
    # Our deadline travels on, so the other sidecar gives up when we do (not at its default).
    assert echo["metadata"]["rpc_request_timeout"] == "2500"
    assert response.headers == {"x-reply": "sidecar"}
    assert response.content_type == "application/json"


@pytest.mark.parametrize("target", ["app", "sidecar"])
@pytest.mark.parametrize(
    ("status", "category"),
    [
        (Status.NOT_FOUND, ErrorCategory.NOT_FOUND),
        (Status.INVALID_ARGUMENT, ErrorCategory.INVALID_ARGUMENT),
        (Status.UNIMPLEMENTED, ErrorCategory.UNIMPLEMENTED),
        (Status.PERMISSION_DENIED, ErrorCategory.PERMISSION_DENIED),
        (Status.UNAVAILABLE, ErrorCategory.UNAVAILABLE),
        (Status.UNKNOWN, ErrorCategory.INTERNAL),
        (Status.FAILED_PRECONDITION, ErrorCategory.FAILED_PRECONDITION),
    ],
)
async def test_grpc_target_errors_pass_through(
    app_address: str, sidecar_address: str, target: str, status: Status, category: ErrorCategory
) -> None:
    address = app_address if target == "app" else sidecar_address
    async with grpc_channel(target=target) as channel:
        with pytest.raises(TargetError) as info:
            await channel.invoke(request(method=f"fail/{status.name}"), address)
    assert info.value.category is category
    assert info.value.message == "x"


async def test_grpc_target_crash_is_internal(app_address: str) -> None:
    async with grpc_channel(target="app") as channel:
        with pytest.raises(TargetError) as info:
            await channel.invoke(request(method="crash"), app_address)
    assert info.value.category is ErrorCategory.INTERNAL


@pytest.mark.parametrize("kind", ["http", "grpc-app", "grpc-sidecar"])
async def test_connection_refused_is_unavailable_fast(kind: str) -> None:
    port = free_port()
    channels = {
        "http": http_channel,
        "grpc-app": lambda: grpc_channel(target="app"),
        "grpc-sidecar": lambda: grpc_channel(target="sidecar"),
    }
    async with channels[kind]() as channel:
        started = time.monotonic()
        with pytest.raises(BackendUnavailable) as info:
            await channel.invoke(request(timeout=5), f"127.0.0.1:{port}")
    assert time.monotonic() - started < 1
    assert "connection refused" in info.value.message
    assert "127.0.0.1" not in info.value.message
    assert str(port) not in info.value.message


async def test_grpc_connection_closed_before_an_answer_is_unavailable() -> None:
    async with closing_server() as address, grpc_channel(target="app") as channel:
        with pytest.raises(BackendUnavailable):
            await channel.invoke(request(timeout=2), address)


@pytest.mark.parametrize("target", ["app", "sidecar"])
async def test_grpc_deadline(app_address: str, sidecar_address: str, target: str) -> None:
    address = app_address if target == "app" else sidecar_address
    async with grpc_channel(target=target) as channel:
        started = time.monotonic()
        with pytest.raises(BackendTimeout) as info:
            await channel.invoke(request(method="slow", timeout=0.2), address)
    assert time.monotonic() - started < 1
    assert "200 ms" in info.value.message


async def test_grpc_no_time_left_is_a_timeout(app_address: str) -> None:
    async with grpc_channel(target="app") as channel:
        with pytest.raises(BackendTimeout):
            await channel.invoke(request(timeout=-0.1), app_address)


async def test_grpc_cached_channel_connects_once_the_target_is_up() -> None:
    app = EchoApp()
    port = free_port()
    address = f"127.0.0.1:{port}"
    async with grpc_channel(target="app") as channel:
        with pytest.raises(BackendUnavailable):
            await channel.invoke(request(timeout=2), address)
        async with serve_app(app, port=port):
            await channel.invoke(request(), address)
            await channel.invoke(request(), address)
    assert app.calls == 2


async def test_grpc_bad_verb_and_address(app_address: str) -> None:
    async with grpc_channel(target="app") as channel:
        with pytest.raises(InvalidArgument):
            await channel.invoke(request(verb="FETCH"), app_address)
        with pytest.raises(InvalidArgument):
            await channel.invoke(request(), "nowhere")


async def test_grpc_close_closes_every_channel(app_address: str, sidecar_address: str) -> None:
    channel = GrpcChannel("app")
    await channel.invoke(request(), app_address)
    await channel.invoke(request(), app_address)
    assert len(channel._channels) == 1
    await channel.close()
    assert channel._channels == {}
    await channel.close()


async def test_call_app_on_invoke(app_address: str) -> None:
    host, port = app_address.rsplit(":", 1)
    channel = Channel(host, int(port))
    try:
        response = await call_app_on_invoke(
            channel,
            request(method="m", data=b"d", headers={"x-a": "1", "rpc_request_timeout": "9"}),
            metadata={"dapr-caller-app-id": "someone", "dapr-api-token": "t"},
        )
        echo = json.loads(response.data)
        assert echo["metadata"]["x-a"] == "1"
        assert echo["metadata"]["dapr-caller-app-id"] == "someone"
        assert echo["metadata"]["dapr-api-token"] == "t"
        assert "rpc_request_timeout" not in echo["metadata"]
        assert response.headers == {"x-reply": "app"}
        with pytest.raises(TargetError) as info:
            await call_app_on_invoke(channel, request(method="fail/ABORTED"))
        assert info.value.category is ErrorCategory.ABORTED
    finally:
        channel.close()


# -- registration ---------------------------------------------------------------------------


def _spec(type_: str) -> Any:
    found = [s for s in layotto_components() if s.kind is Kind.RPC and s.type == type_]
    assert len(found) == 1
    return found[0]


def test_builtin_specs_load_lazily() -> None:
    http = _spec("http")
    model = http.metadata_model.model_validate(
        {"maxConnections": "10", "http2": "true", "keepAliveTimeout": "2s", "appIdHeader": "X-Id"}
    )
    assert (model.max_connections, model.http2, model.keep_alive_timeout) == (10, True, 2.0)
    assert model.app_id_header == "x-id"
    assert isinstance(http.create(model, ComponentContext("rpc", CALLER)), HttpChannel)

    grpc = _spec("grpc")
    model = grpc.metadata_model.model_validate({"target": " APP ", "apiToken": "t"})
    assert model.target == "app"
    assert isinstance(grpc.create(model, ComponentContext("rpc", CALLER)), GrpcChannel)
    assert grpc.metadata_model.model_validate({}).target == "sidecar"


@pytest.mark.parametrize(
    ("model", "metadata"),
    [
        (GrpcChannelMetadata, {"target": "elsewhere"}),
        (HttpChannelMetadata, {"maxConnections": "0"}),
        (HttpChannelMetadata, {"appIdHeader": " "}),
        (HttpChannelMetadata, {"keepAliveTimeout": "soon"}),
    ],
)
def test_bad_metadata(model: Any, metadata: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        model.model_validate(metadata)
