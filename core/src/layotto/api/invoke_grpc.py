"""`InvokeService` of `spec.proto.runtime.v1.Runtime`: gRPC request (and its metadata) in,
the service's answer out, with the target's response headers as our response headers.

Incoming metadata is forwarded to the target as headers (layotto-semantics.md §5), except what
belongs to this hop: HTTP/2 and gRPC transport headers and the sidecar's API token. Only
`Any.value` of the request data is used (upstream ignores `type_url` too).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from grpclib.server import Stream

from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.grpc_guard import TOKEN_HEADERS
from layotto.plugin.rpc import HOP_BY_HOP, RpcRequest
from layotto.services.invoke import InvokeService, timeout_of

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


class InvokeHandler:
    def __init__(self, service: InvokeService) -> None:
        self._service = service

    async def handle(self, stream: InvokeStream) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends a unary call without a message itself
        headers = incoming_headers(stream.metadata)
        message = request.message or pb.CommonInvokeRequest()
        extension = message.http_extension
        verb = ""
        if extension is not None and extension.verb != pb.HttpExtensionVerb.NONE:
            verb = extension.verb.name or ""
        response = await self._service.invoke(
            RpcRequest(
                app_id=request.id,
                method=message.method,
                data=message.data.value if message.data is not None else b"",
                content_type=message.content_type,
                headers=headers,
                verb=verb,
                query_string=extension.querystring if extension is not None else "",
                timeout=timeout_of(headers),
            )
        )
        await stream.send_initial_metadata(metadata=outgoing_headers(response.headers))
        await stream.send_message(
            pb.InvokeResponse(data=PbAny(value=response.data), content_type=response.content_type)
        )
