"""`bindings.http` against a real HTTP/1.1 server (uvicorn on a free port), and InvokeBinding
through the Layotto gRPC surface of an in-process sidecar.

Behaviour: components-contrib `bindings/http` (dapr-compat.md 3.6, layotto-semantics.md 11)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.binding_http import (
    OPERATIONS,
    HttpBinding,
    HttpBindingMetadata,
    canonical_header,
    parse_byte_size,
)
from layotto.config import ComponentConfig, RuntimeConfig
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    BindingRequest,
    ComponentContext,
    ComponentError,
    InvalidArgument,
    Kind,
)
from layotto.testing.runtime import run_sidecar
from layotto_core_test_helpers import read_body, serve_asgi
from pydantic import ValidationError
from starlette.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

BIG = 1024 * 1024


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # uvicorn and grpclib are asyncio-only


async def echo_app(scope: Scope, receive: Receive, send: Send) -> None:
    """Echoes the request as JSON; `/status/N` answers N; `/big` a 1 MiB body; `/slow` waits."""
    assert scope["type"] == "http"
    body = await read_body(receive)
    path: str = scope["path"]
    status, payload = 200, b""
    headers = [(b"content-type", b"application/json"), (b"x-reply", b"yes")]
    if path.startswith("/status/"):
        status = int(path.rsplit("/", 1)[1])
        payload = b"status body"
    elif path == "/big":
        payload = b"b" * BIG
    elif path == "/slow":
        await anyio.sleep(5)
    else:
        headers += [(b"set-cookie", b"a=1"), (b"set-cookie", b"b=2")]
        payload = json.dumps(
            {
                "method": scope["method"],
                "path": path,
                "query": scope["query_string"].decode(),
                "headers": [[k.decode(), v.decode()] for k, v in scope["headers"]],
                "body": body.decode("latin-1"),
            }
        ).encode()
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


@pytest.fixture(scope="module")
async def server_url() -> AsyncIterator[str]:
    async with serve_asgi(echo_app) as port:
        yield f"http://127.0.0.1:{port}"


@asynccontextmanager
async def binding(**metadata: Any) -> AsyncIterator[HttpBinding]:
    component = HttpBinding(
        HttpBindingMetadata.model_validate(metadata), ComponentContext("http", "app")
    )
    await component.init()
    try:
        yield component
    finally:
        await component.close()


def headers_of(echo: dict[str, Any]) -> dict[str, str]:
    return {name: value for name, value in echo["headers"]}


async def call(component: HttpBinding, operation: str, data: bytes = b"", **md: str) -> Any:
    return await component.invoke(BindingRequest(operation, data, md))


# -- verbs, path, body -----------------------------------------------------------------------


@pytest.mark.parametrize("operation", OPERATIONS)
async def test_every_operation_is_its_verb(server_url: str, operation: str) -> None:
    async with binding(url=server_url + "/base") as component:
        response = await call(component, operation, b"payload", path="items/1")
    verb = "POST" if operation == "create" else operation.upper()
    assert response.metadata["statusCode"] == "200"
    assert response.metadata["status"] == "200 OK"
    if verb == "HEAD":
        assert response.data == b""  # HEAD answers no body
        return
    echo = json.loads(response.data)
    assert echo["method"] == verb
    assert echo["path"] == "/base/items/1"
    # Only POST, PUT and PATCH carry the data, as upstream.
    assert echo["body"] == ("payload" if verb in ("POST", "PUT", "PATCH") else "")


@pytest.mark.parametrize(
    ("url", "path", "expected"),
    [
        ("/", "/a/b", "/a/b"),
        ("/base/", "/x", "/base/x"),
        ("/base", "x?q=1", "/base/x"),
        ("/base", "", "/base"),
    ],
)
async def test_path_is_appended(server_url: str, url: str, path: str, expected: str) -> None:
    async with binding(url=server_url + url) as component:
        response = await call(component, "get", path=path)
    echo = json.loads(response.data)
    assert echo["path"] == expected
    assert echo["query"] == ("q=1" if "?" in path else "")


# -- headers ---------------------------------------------------------------------------------


async def test_default_headers_and_metadata_headers(server_url: str) -> None:
    async with binding(url=server_url) as component:
        response = await call(
            component,
            "post",
            b"{}",
            **{
                "X-Request-Id": "r1",
                "x-lower": "not a header",
                "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
                "tracestate": "k=v",
                "path": "p",
                "Unicode-Value": "héllo",
            },
        )
    headers = headers_of(json.loads(response.data))
    assert headers["content-type"] == "application/json; charset=utf-8"
    assert headers["accept"] == "application/json; charset=utf-8"
    assert headers["x-request-id"] == "r1"
    assert "x-lower" not in headers  # lower-case keys are not headers (Dapr's rule)
    assert "path" not in headers
    assert headers["traceparent"].startswith("00-0af7")
    assert headers["tracestate"] == "k=v"
    assert headers["unicode-value"] == "héllo"  # sent as UTF-8 bytes
    assert "accept-encoding" not in headers


async def test_caller_overrides_content_type_and_accept(server_url: str) -> None:
    async with binding(url=server_url) as component:
        response = await call(
            component, "put", b"x", **{"Content-Type": "text/plain", "Accept": "*/*"}
        )
        get = await call(component, "get")
    headers = headers_of(json.loads(response.data))
    assert headers["content-type"] == "text/plain"
    assert headers["accept"] == "*/*"
    assert "content-type" not in headers_of(json.loads(get.data))  # no body, no content type


async def test_security_token_header(server_url: str) -> None:
    async with binding(
        url=server_url, securityToken="s3cret", securityTokenHeader="X-Token"
    ) as component:
        response = await call(component, "get")
    assert headers_of(json.loads(response.data))["x-token"] == "s3cret"


async def test_a_token_http_cannot_carry_is_not_quoted_back(server_url: str) -> None:
    """A token read from a secret file with its trailing newline: the call fails, and the
    answer does not repeat the token to the caller."""
    async with binding(
        url=server_url, securityToken="s3cret\n", securityTokenHeader="X-Token"
    ) as component:
        with pytest.raises(InvalidArgument) as refused:
            await call(component, "get")
    assert "s3cret" not in refused.value.message


async def test_response_metadata_has_status_and_canonical_headers(server_url: str) -> None:
    async with binding(url=server_url) as component:
        response = await call(component, "get")
    assert response.metadata["statusCode"] == "200"
    assert response.metadata["status"] == "200 OK"
    assert response.metadata["Content-Type"] == "application/json"
    assert response.metadata["X-Reply"] == "yes"
    assert response.metadata["Set-Cookie"] == "a=1, b=2"


# -- status handling -------------------------------------------------------------------------


async def test_non_2xx_is_an_error_by_default(server_url: str) -> None:
    async with binding(url=server_url) as component:
        with pytest.raises(ComponentError, match="received status code 404"):
            await call(component, "get", path="/status/404")
        ok = await call(component, "get", path="/status/204")
    assert ok.metadata["statusCode"] == "204"
    assert ok.data == b""


async def test_non_2xx_is_a_response_when_not_an_error(server_url: str) -> None:
    async with binding(url=server_url, errorIfNot2XX="false") as component:
        response = await call(component, "post", b"x", path="/status/503")
        with pytest.raises(ComponentError, match="received status code 500"):
            await call(component, "get", path="/status/500", errorIfNot2XX="true")
    assert response.metadata["statusCode"] == "503"
    assert response.metadata["status"] == "503 Service Unavailable"
    assert response.data == b"status body"


async def test_request_can_suppress_the_error(server_url: str) -> None:
    async with binding(url=server_url) as component:
        response = await call(component, "delete", path="/status/409", errorIfNot2XX="false")
    assert response.metadata["statusCode"] == "409"


# -- limits ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("limit", "expected"),
    [("10Ki", 10 * 1024), ("1000", 1000), ("0", BIG), ("-1", BIG), (None, BIG)],
)
async def test_response_body_limit(server_url: str, limit: str | None, expected: int) -> None:
    options = {} if limit is None else {"maxResponseBodySize": limit}
    async with binding(url=server_url, **options) as component:
        response = await call(component, "get", path="big")
        again = await call(component, "get", path="status/200")  # the client still works
    assert response.data == b"b" * expected
    assert again.metadata["statusCode"] == "200"


async def test_response_timeout(server_url: str) -> None:
    async with binding(url=server_url, responseTimeout="200ms") as component:
        start = anyio.current_time()
        with pytest.raises(BackendTimeout, match="responseTimeout"):
            await call(component, "get", path="slow")
    assert anyio.current_time() - start < 2


async def test_unreachable_server() -> None:
    with anyio.fail_after(10):
        async with binding(url="http://127.0.0.1:1") as component:
            with pytest.raises(BackendUnavailable, match="could not be reached") as info:
                await call(component, "get")
    assert "127.0.0.1" not in str(info.value)


async def test_closed_binding_fails_cleanly(server_url: str) -> None:
    async with binding(url=server_url) as component:
        pass
    with pytest.raises(BackendUnavailable, match="not started"):
        await call(component, "get")


# -- metadata --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("100", 100),
        (2048, 2048),
        ("1k", 1000),
        ("10Ki", 10240),
        ("1M", 10**6),
        ("100Mi", 100 * 2**20),
        ("1Gi", 2**30),
        ("-1", -1),
        ("1.5Ki", 1536),
    ],
)
def test_parse_byte_size(value: Any, expected: int) -> None:
    assert parse_byte_size(value) == expected


@pytest.mark.parametrize("value", ["", "lots", "1ki", "1KB", "Mi", True])
def test_parse_byte_size_rejects(value: Any) -> None:
    with pytest.raises(ValueError, match="size"):
        parse_byte_size(value)


@pytest.mark.parametrize(
    "metadata",
    [
        {},
        {"url": "ftp://example.com"},
        {"url": "not a url"},
        {"url": "http://x", "maxResponseBodySize": "huge"},
        {"url": "http://x", "responseTimeout": "0s"},
        {"url": "http://x", "securityToken": "t"},
        {"url": "http://x", "MTLSClientCert": "-----BEGIN CERTIFICATE-----"},
    ],
)
def test_metadata_is_validated(metadata: dict[str, str]) -> None:
    with pytest.raises(ValidationError):
        HttpBindingMetadata.model_validate(metadata)


def test_defaults() -> None:
    metadata = HttpBindingMetadata.model_validate(
        {"url": "https://example.com/api", "direction": "output"}
    )
    assert metadata.error_if_not_2xx is True
    assert metadata.max_response_body_size == 100 * 2**20
    assert metadata.response_timeout == 10.0
    assert not metadata.model_extra
    assert canonical_header("x-request-id") == "X-Request-Id"


# -- through the sidecar ---------------------------------------------------------------------


async def test_invoke_binding_through_the_layotto_api(server_url: str) -> None:
    config = RuntimeConfig(
        components=(
            ComponentConfig(
                name="web", kind=Kind.BINDINGS, type="http", metadata={"url": server_url}
            ),
        )
    )
    async with run_sidecar(config) as sidecar:
        channel = sidecar.channel()
        try:
            stub = pb.RuntimeStub(channel, timeout=10)
            response = await stub.invoke_binding(
                pb.InvokeBindingRequest(
                    name="web",
                    operation="post",
                    data=b"hello",
                    metadata={"path": "orders", "X-Id": "7"},
                )
            )
            echo = json.loads(response.data)
            assert (echo["method"], echo["path"], echo["body"]) == ("POST", "/orders", "hello")
            assert headers_of(echo)["x-id"] == "7"
            assert response.metadata["statusCode"] == "200"

            failures = {
                "missing operation": (pb.InvokeBindingRequest(name="web"), "operation"),
                "unknown operation": (
                    pb.InvokeBindingRequest(name="web", operation="list"),
                    "does not support operation list",
                ),
                "unknown binding": (
                    pb.InvokeBindingRequest(name="nope", operation="get"),
                    "couldn't find output binding nope",
                ),
                "status": (
                    pb.InvokeBindingRequest(
                        name="web", operation="get", metadata={"path": "status/404"}
                    ),
                    "error when invoke output binding web: received status code 404",
                ),
            }
            for label, (request, message) in failures.items():
                with pytest.raises(GRPCError) as info:
                    await stub.invoke_binding(request)
                assert message in (info.value.message or ""), label
                assert info.value.status is not Status.OK
        finally:
            channel.close()
