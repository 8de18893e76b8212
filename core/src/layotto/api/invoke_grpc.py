"""`InvokeService` (Layotto's `spec.proto.runtime.v1.Runtime` and Dapr's
`dapr.proto.runtime.v1.Dapr`): gRPC request (and its metadata) in, the service's answer out,
with the target's response headers as our response headers. `InvokeEdge` does the transport
part; each API gives it a request reader and a response builder for its messages.

Incoming metadata is forwarded to the target as headers (layotto-semantics.md §5), except what
belongs to this hop: HTTP/2 and gRPC transport headers and the sidecar's API token. Only
`Any.value` of the request data is used (upstream ignores `type_url` too).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from enum import IntEnum
from typing import Any, Generic, TypeVar

from grpclib.server import Stream

from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.grpc_guard import TOKEN_HEADERS
from layotto.plugin.rpc import HOP_BY_HOP, RpcRequest, RpcResponse
from layotto.services.invoke import InvokeService, timeout_of

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")

InvokeStream = Stream[pb.InvokeServiceRequest, pb.InvokeResponse]

_NOT_FORWARDED = frozenset({"te", "content-type", "user-agent", *TOKEN_HEADERS, *HOP_BY_HOP})


def _forwardable(name: str) -> bool:
    return not (name in _NOT_FORWARDED or name.startswith(("grpc-", ":")) or name.endswith("-bin"))


def incoming_headers(metadata: Any) -> dict[str, str]:
    """The caller's gRPC metadata that travels on to the target (text values only)."""
    headers: dict[str, str] = {}
    for name, value in (metadata or {}).items():
        key = name.lower()
        if isinstance(value, str) and _forwardable(key):
            headers[key] = value
    return headers


def outgoing_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """The target's response headers that may go back as gRPC response metadata."""
    return {
        name.lower(): value
        for name, value in headers.items()
        if _forwardable(name.lower()) and value.isascii() and name.isascii()
    }


def verb_name(verb: IntEnum) -> str:
    """An `HTTPExtension.Verb` as the channel takes it: "" for NONE (the channel's default)."""
    return "" if int(verb) == 0 else (verb.name or "")


class InvokeEdge(Generic[RequestT, ResponseT]):
    """`to_request(message, headers, seconds_left)`: the call to make, from the request
    message, the forwardable request headers and the caller's gRPC deadline (None without
    one). `to_response`: the answer message."""

    def __init__(
        self,
        service: InvokeService,
        to_request: Callable[[RequestT, dict[str, str], float | None], RpcRequest],
        to_response: Callable[[RpcResponse], ResponseT],
    ) -> None:
        self._service = service
        self._to_request = to_request
        self._to_response = to_response

    async def handle(self, stream: Stream[RequestT, ResponseT]) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends a unary call without a message itself
        headers = incoming_headers(stream.metadata)
        left = stream.deadline.time_remaining() if stream.deadline is not None else None
        response = await self._service.invoke(self._to_request(request, headers, left))
        await stream.send_initial_metadata(metadata=outgoing_headers(response.headers))
        await stream.send_message(self._to_response(response))


def rpc_request(
    app_id: str,
    message: pb.CommonInvokeRequest | dapr_common.InvokeRequest,
    headers: dict[str, str],
    timeout: float,
) -> RpcRequest:
    """The call an invoke message of either API (the same fields) describes."""
    extension = message.http_extension
    return RpcRequest(
        app_id=app_id,
        method=message.method,
        # For raw bytes the Any has no type_url; only the value is used (as upstream).
        data=message.data.value if message.data is not None else b"",
        content_type=message.content_type,
        headers=headers,
        verb=verb_name(extension.verb) if extension is not None else "",
        query_string=extension.querystring if extension is not None else "",
        timeout=timeout,
    )


def layotto_request(
    request: pb.InvokeServiceRequest, headers: dict[str, str], seconds_left: float | None
) -> RpcRequest:
    """Layotto's timeout is the `rpc_request_timeout` header (layotto-semantics.md §5)."""
    message = request.message or pb.CommonInvokeRequest()
    return rpc_request(request.id, message, headers, timeout_of(headers))


def layotto_response(response: RpcResponse) -> pb.InvokeResponse:
    return pb.InvokeResponse(data=PbAny(value=response.data), content_type=response.content_type)


class InvokeHandler(InvokeEdge[pb.InvokeServiceRequest, pb.InvokeResponse]):
    """Layotto's `InvokeService`."""

    def __init__(self, service: InvokeService) -> None:
        super().__init__(service, layotto_request, layotto_response)
