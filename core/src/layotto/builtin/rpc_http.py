"""`rpc.http`: InvokeService over HTTP to the target app, or to a mesh egress listener
(layotto-semantics.md §5, the `http` channel).

A call is `{verb, default GET} http://{address}/{method}?{query_string}` with the request data
as the body, `content-type` from the request, the caller's headers (minus hop-by-hop ones and
the sidecar's own `rpc_*` headers), the target app id in the `id` header (so a mesh listener can
route it), and `Host` from metadata `host` when set (else the address).

A 2xx answer is the response (raw body bytes, as the target sent them; its content-type; its
headers minus hop-by-hop ones). Any other status is the target's error: `TargetError` with a
category from the status and upstream's message `http response code N, body: ...`. A target that
cannot be reached, or that drops the connection before answering, is `BackendUnavailable` (the
sidecar tries the next address); a call that outlives `request.timeout` is `BackendTimeout`.

Metadata:

- `appIdHeader` (default `id`): the header that carries the target app id;
- `host` (default: the address): the `Host` header (`:authority` with HTTP/2);
- `maxConnections` (default 100): the keep-alive pool bound, across all addresses;
- `keepAliveTimeout` (default 5s): how long an idle pooled connection is kept;
- `http2` (default false): speak HTTP/2 with prior knowledge (h2c) instead of HTTP/1.1.

Proxy environment variables (`HTTP_PROXY`...) are ignored: the address is dialled directly.
"""

from __future__ import annotations

import errno
import re
import socket
from collections.abc import Mapping
from typing import Any

import anyio
import httpx
from pydantic import Field, field_validator

from layotto.errors import ErrorCategory
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentError,
    ComponentMetadata,
    InvalidArgument,
)
from layotto.plugin.addresses import split_host_port
from layotto.plugin.durations import Duration
from layotto.plugin.rpc import (
    HOP_BY_HOP,
    RpcChannel,
    RpcRequest,
    RpcResponse,
    TargetError,
    TargetUnreachable,
)

DEFAULT_APP_ID_HEADER = "id"
DEFAULT_MAX_CONNECTIONS = 100
BODY_IN_MESSAGE = 256  # characters of an error body quoted in the error message

# An HTTP field name (RFC 9110 token).
_TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]+")

HTTP_STATUS_CATEGORY: dict[int, ErrorCategory] = {
    400: ErrorCategory.INVALID_ARGUMENT,
    401: ErrorCategory.UNAUTHENTICATED,
    403: ErrorCategory.PERMISSION_DENIED,
    404: ErrorCategory.NOT_FOUND,
    409: ErrorCategory.ABORTED,
    429: ErrorCategory.RESOURCE_EXHAUSTED,
    501: ErrorCategory.UNIMPLEMENTED,
    503: ErrorCategory.UNAVAILABLE,
    504: ErrorCategory.DEADLINE_EXCEEDED,
}


def category_of_status(status: int) -> ErrorCategory:
    """The error category of a non-2xx HTTP status (INTERNAL when it has no closer match)."""
    return HTTP_STATUS_CATEGORY.get(status, ErrorCategory.INTERNAL)


class HttpChannelMetadata(ComponentMetadata):
    app_id_header: str = Field(default=DEFAULT_APP_ID_HEADER, alias="appIdHeader", min_length=1)
    host: str = ""
    max_connections: int = Field(default=DEFAULT_MAX_CONNECTIONS, ge=1, alias="maxConnections")
    keep_alive_timeout: Duration = Field(default=5.0, ge=0, alias="keepAliveTimeout")
    http2: bool = False

    @field_validator("app_id_header", "host", mode="before")
    @classmethod
    def _strip(cls, value: Any) -> Any:
        return value.strip() if isinstance(value, str) else value

    @field_validator("app_id_header")
    @classmethod
    def _lower(cls, value: str) -> str:
        return value.lower()


def request_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The caller's headers that travel on: not hop-by-hop, not the sidecar's own `rpc_*`
    headers, no pseudo-headers or other names HTTP does not allow; names lower-case."""
    forwarded: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if (
            key in HOP_BY_HOP
            or key.startswith("rpc_")
            or key == "content-type"
            or not _TOKEN.fullmatch(key)
        ):
            continue
        forwarded[key] = value
    return forwarded


def response_headers(headers: httpx.Headers) -> dict[str, str]:
    """The target's headers minus hop-by-hop ones and content-type (carried on its own);
    repeated headers are joined with ', '."""
    collected: dict[str, list[str]] = {}
    for name, value in headers.multi_items():
        key = name.lower()
        if key in HOP_BY_HOP or key == "content-type":
            continue
        collected.setdefault(key, []).append(value)
    return {key: ", ".join(values) for key, values in collected.items()}


def _why_unreachable(err: BaseException) -> str:
    """A description of a connection failure without host names or addresses."""
    seen: set[int] = set()
    current: BaseException | None = err
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, socket.gaierror):
            return "its host name could not be resolved"
        if isinstance(current, ConnectionRefusedError):
            return "connection refused"
        if isinstance(current, ConnectionResetError):
            return "connection reset"
        if isinstance(current, OSError) and current.errno is not None:
            return errno.errorcode.get(current.errno, "connection failed")
        current = current.__cause__ or current.__context__
    if isinstance(err, httpx.ConnectError):
        return "connection failed"
    return "the connection closed before an answer"


class HttpChannel(RpcChannel):
    def __init__(self, metadata: HttpChannelMetadata) -> None:
        self._id_header = metadata.app_id_header
        self._host = metadata.host
        limits = httpx.Limits(
            max_connections=metadata.max_connections,
            max_keepalive_connections=metadata.max_connections,
            keepalive_expiry=metadata.keep_alive_timeout,
        )
        self._client = httpx.AsyncClient(
            limits=limits,
            # HTTP/2 over plain TCP needs prior knowledge: HTTP/1.1 off.
            http1=not metadata.http2,
            http2=metadata.http2,
            trust_env=False,
            follow_redirects=False,
        )
        # The body is passed through as the target encoded it: ask for no encoding ourselves
        # (a caller's own accept-encoding header still goes through).
        del self._client.headers["accept-encoding"]

    @classmethod
    def create(cls, metadata: HttpChannelMetadata, context: ComponentContext) -> Component:
        return cls(metadata)

    async def close(self) -> None:
        await self._client.aclose()

    def _build(self, request: RpcRequest, address: str, timeout: float) -> httpx.Request:
        try:
            split_host_port(address, example_port=8080)
        except ValueError as err:
            raise InvalidArgument(f"target address {address!r}: {err}") from None
        return outgoing_request(
            self._client,
            request,
            f"http://{address}/{request.method.lstrip('/')}",
            {self._id_header: request.app_id, "host": self._host or address},
            timeout=timeout,
        )

    async def invoke(self, request: RpcRequest, address: str) -> RpcResponse:
        if request.timeout <= 0:
            raise timeout_error(request)
        return await exchange(self._client, self._build(request, address, request.timeout), request)


def outgoing_request(
    client: httpx.AsyncClient,
    request: RpcRequest,
    url: str,
    extra_headers: Mapping[str, str],
    *,
    timeout: float,
    target: str = "",
) -> httpx.Request:
    """The HTTP request of an invocation: `url` with the caller's query string, the caller's
    headers that travel on (`request_headers`) and content type with `extra_headers` over them,
    the verb (GET by default) and the body. A URL httpx cannot call is InvalidArgument (naming
    `target` when given). Shared with the sidecar's HTTP app channel and HTTP endpoints."""
    query = request.query_string.lstrip("?")
    if query:
        url += ("&" if "?" in url else "?") + query
    headers = request_headers(request.headers)
    if request.content_type:
        headers["content-type"] = request.content_type
    headers.update(extra_headers)
    # Values as UTF-8 bytes: HTTP carries them opaquely (httpx would insist on ASCII).
    raw = [(name.encode("ascii"), value.encode("utf-8")) for name, value in headers.items()]
    try:
        return client.build_request(
            (request.verb or "GET").upper(),
            url,
            headers=raw,
            content=request.data,
            timeout=httpx.Timeout(timeout),
        )
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
        on = f" on {target!r}" if target else ""
        raise InvalidArgument(f"cannot call method {request.method!r}{on}: {err}") from None


def timeout_error(request: RpcRequest) -> BackendTimeout:
    return BackendTimeout(
        f"app {request.app_id!r} did not answer {request.method!r} within "
        f"{max(request.timeout, 0) * 1000:.0f} ms",
        reason="ERR_DIRECT_INVOKE",
    )


async def exchange(
    client: httpx.AsyncClient, outgoing: httpx.Request, request: RpcRequest
) -> RpcResponse:
    """Send `outgoing` (built for `request`) within `request.timeout` and translate the
    answer and the failures as the module docstring says; shared with the sidecar's HTTP
    app channel (`api.http_app_connection`)."""
    try:
        with anyio.fail_after(request.timeout):
            status, body, headers = await _send(client, outgoing)
    except (TimeoutError, httpx.TimeoutException):
        raise timeout_error(request) from None
    except httpx.ConnectError as err:  # nothing was sent: another address may be tried
        raise TargetUnreachable(
            f"app {request.app_id!r} could not be reached: {_why_unreachable(err)}",
            reason="ERR_DIRECT_INVOKE",
        ) from None
    except (httpx.NetworkError, httpx.RemoteProtocolError) as err:
        raise BackendUnavailable(
            f"app {request.app_id!r} could not be reached: {_why_unreachable(err)}",
            reason="ERR_DIRECT_INVOKE",
        ) from None
    except httpx.LocalProtocolError as err:
        raise InvalidArgument(
            f"the call to app {request.app_id!r} cannot be sent over HTTP: {err}"
        ) from None
    except httpx.HTTPError as err:
        raise ComponentError(
            f"calling app {request.app_id!r} failed: {type(err).__name__}",
            reason="ERR_DIRECT_INVOKE",
        ) from None
    if not 200 <= status < 300:
        text = body.decode("utf-8", errors="replace")[:BODY_IN_MESSAGE]
        raise TargetError(
            category_of_status(status),
            f"http response code {status}, body: {text}",
            http_status=status,
            body=body,
            content_type=headers.get("content-type", ""),
            headers=response_headers(headers),
        )
    return RpcResponse(
        data=body,
        content_type=headers.get("content-type", ""),
        headers=response_headers(headers),
        http_status=status,
    )


async def _send(
    client: httpx.AsyncClient, outgoing: httpx.Request
) -> tuple[int, bytes, httpx.Headers]:
    response = await client.send(outgoing, stream=True)
    try:
        body = b"".join([chunk async for chunk in response.aiter_raw()])
    finally:
        await response.aclose()
    return response.status_code, body, response.headers
