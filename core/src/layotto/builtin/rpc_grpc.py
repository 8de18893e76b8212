"""`rpc.grpc`: InvokeService over gRPC, to the target's sidecar or straight to the target app.

Metadata `target`:

- `sidecar` (default): call the other sidecar's `spec.proto.runtime.v1.Runtime/InvokeService`
  with the same app id, method, data (`Any.value`), content type and HTTP extension; that
  sidecar delivers the call to its app. Our remaining deadline travels as the
  `rpc_request_timeout` header, so the other sidecar does not give up sooner (or later).
- `app`: call the target app's Dapr `dapr.proto.runtime.v1.AppCallback/OnInvoke` with a
  `dapr.proto.common.v1.InvokeRequest`.

Metadata `apiToken` (optional): sent as `dapr-api-token` (the other sidecar's API token, or
the app token an app checks, as Dapr's `APP_API_TOKEN`).

The caller's headers go as gRPC metadata (lower-case; hop-by-hop headers, the sidecar's own
`rpc_*` headers, binary `-bin` headers and names gRPC reserves are left out), with
`dapr-caller-app-id` (this sidecar's app) and `dapr-callee-app-id` (the target) set, as Dapr
does. The answer's initial metadata comes back as the response headers.

One grpclib `Channel` (one HTTP/2 connection, multiplexed) per address, opened on first use
and closed by `close()`.

Errors: a target that cannot be reached, or whose connection ends before it answered, is
`BackendUnavailable` (the next address is tried); a call past its deadline is `BackendTimeout`;
a gRPC error status from the target is `TargetError` with that status's category and the
target's message. `call_app_on_invoke` does the same for the sidecar's own app.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any, Literal, TypeVar

import anyio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError
from pydantic import Field, SecretStr, field_validator

from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.spec.proto.runtime import v1 as spec
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
from layotto.plugin.rpc import (
    HOP_BY_HOP,
    TIMEOUT_HEADER,
    RpcChannel,
    RpcRequest,
    RpcResponse,
    TargetError,
    TargetUnreachable,
)

SIDECAR_INVOKE_PATH = "/spec.proto.runtime.v1.Runtime/InvokeService"
APP_ON_INVOKE_PATH = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
API_TOKEN_HEADER = "dapr-api-token"
CALLER_APP_ID_HEADER = "dapr-caller-app-id"
CALLEE_APP_ID_HEADER = "dapr-callee-app-id"

GRPC_STATUS_CATEGORY: dict[Status, ErrorCategory] = {
    Status.CANCELLED: ErrorCategory.UNAVAILABLE,
    Status.UNKNOWN: ErrorCategory.INTERNAL,
    Status.INVALID_ARGUMENT: ErrorCategory.INVALID_ARGUMENT,
    Status.DEADLINE_EXCEEDED: ErrorCategory.DEADLINE_EXCEEDED,
    Status.NOT_FOUND: ErrorCategory.NOT_FOUND,
    Status.ALREADY_EXISTS: ErrorCategory.ABORTED,
    Status.PERMISSION_DENIED: ErrorCategory.PERMISSION_DENIED,
    Status.RESOURCE_EXHAUSTED: ErrorCategory.RESOURCE_EXHAUSTED,
    Status.FAILED_PRECONDITION: ErrorCategory.FAILED_PRECONDITION,
    Status.ABORTED: ErrorCategory.ABORTED,
    Status.OUT_OF_RANGE: ErrorCategory.INVALID_ARGUMENT,
    Status.UNIMPLEMENTED: ErrorCategory.UNIMPLEMENTED,
    Status.INTERNAL: ErrorCategory.INTERNAL,
    Status.UNAVAILABLE: ErrorCategory.UNAVAILABLE,
    Status.DATA_LOSS: ErrorCategory.INTERNAL,
    Status.UNAUTHENTICATED: ErrorCategory.UNAUTHENTICATED,
}

# What grpclib accepts as metadata (it raises on anything else) and the names gRPC reserves.
_KEY = re.compile(r"[0-9a-z_.\-]+")
_VALUE = re.compile(r"[ !-~]+")
_RESERVED = frozenset({"te", "content-type", "user-agent"})

_Reply = TypeVar("_Reply")


def category_of_status(status: Status) -> ErrorCategory:
    return GRPC_STATUS_CATEGORY.get(status, ErrorCategory.INTERNAL)


def grpc_metadata(headers: Mapping[str, str]) -> dict[str, str]:
    """Request headers that can travel as gRPC metadata (see the module docstring)."""
    metadata: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if (
            key in HOP_BY_HOP
            or key in _RESERVED
            or key.startswith(("grpc-", ":", "rpc_"))
            or key.endswith("-bin")
            or not _KEY.fullmatch(key)
            or not _VALUE.fullmatch(value)
        ):
            continue
        metadata[key] = value
    return metadata


def _response_headers(metadata: Any) -> dict[str, str]:
    collected: dict[str, list[str]] = {}
    for name, value in (metadata or {}).items():
        key = str(name).lower()
        if isinstance(value, str) and key not in HOP_BY_HOP:
            collected.setdefault(key, []).append(value)
    return {key: ", ".join(values) for key, values in collected.items()}


def _verb_name(request: RpcRequest) -> str:
    verb = request.verb.strip().upper()
    if verb and verb not in dapr_common.HttpExtensionVerb.__members__:
        raise InvalidArgument(f"HTTP verb {request.verb!r} cannot be sent over gRPC")
    return verb


def to_dapr_invoke_request(request: RpcRequest) -> dapr_common.InvokeRequest:
    verb = _verb_name(request)
    extension = None
    if verb or request.query_string:
        extension = dapr_common.HttpExtension(
            verb=dapr_common.HttpExtensionVerb[verb or "NONE"],
            querystring=request.query_string.lstrip("?"),
        )
    return dapr_common.InvokeRequest(
        method=request.method,
        data=PbAny(value=request.data),
        content_type=request.content_type,
        http_extension=extension,
    )


def to_invoke_service_request(request: RpcRequest) -> spec.InvokeServiceRequest:
    verb = _verb_name(request)
    extension = None
    if verb or request.query_string:
        extension = spec.HttpExtension(
            verb=spec.HttpExtensionVerb[verb or "NONE"],
            querystring=request.query_string.lstrip("?"),
        )
    return spec.InvokeServiceRequest(
        id=request.app_id,
        message=spec.CommonInvokeRequest(
            method=request.method,
            data=PbAny(value=request.data),
            content_type=request.content_type,
            http_extension=extension,
        ),
    )


def _timeout_error(request: RpcRequest, who: str) -> BackendTimeout:
    return BackendTimeout(
        f"{who} did not answer {request.method!r} within {max(request.timeout, 0) * 1000:.0f} ms",
        reason="ERR_DIRECT_INVOKE",
    )


async def _unary(
    channel: Channel,
    path: str,
    message: Any,
    reply_type: type[_Reply],
    request: RpcRequest,
    metadata: Mapping[str, str],
    who: str,
) -> tuple[_Reply, dict[str, str]]:
    """One unary call with errors translated: (the reply, the initial metadata as headers)."""
    if request.timeout <= 0:
        raise _timeout_error(request, who)
    try:
        with anyio.fail_after(request.timeout):
            async with channel.request(
                path,
                Cardinality.UNARY_UNARY,
                type(message),
                reply_type,
                timeout=request.timeout,
                metadata=dict(metadata),
            ) as stream:
                await stream.send_message(message, end=True)
                await stream.recv_initial_metadata()
                headers = _response_headers(stream.initial_metadata)
                reply = await stream.recv_message()
    except GRPCError as err:
        raise TargetError(category_of_status(err.status), err.message or err.status.name) from None
    except TimeoutError:
        raise _timeout_error(request, who) from None
    except ConnectionRefusedError:  # nothing was sent: another address may be tried
        raise TargetUnreachable(
            f"{who} could not be reached: connection refused", reason="ERR_DIRECT_INVOKE"
        ) from None
    except (OSError, StreamTerminatedError, ProtocolError) as err:
        raise BackendUnavailable(
            f"{who} could not be reached: {type(err).__name__}", reason="ERR_DIRECT_INVOKE"
        ) from None
    if reply is None:
        raise ComponentError(f"{who} ended the call without an answer", reason="ERR_DIRECT_INVOKE")
    return reply, headers


def _response(data: PbAny | None, content_type: str, headers: dict[str, str]) -> RpcResponse:
    return RpcResponse(
        data=data.value if data is not None else b"",
        content_type=content_type,
        headers=headers,
    )


async def call_app_on_invoke(
    channel: Channel,
    request: RpcRequest,
    *,
    metadata: Mapping[str, str] | None = None,
    api_token: str | None = None,
) -> RpcResponse:
    """Deliver `request` to an app through Dapr's `AppCallback/OnInvoke` on `channel`, within
    `request.timeout`. The request's headers go as metadata (filtered as `grpc_metadata`),
    then `metadata` (trusted, e.g. `dapr-caller-app-id`) on top, then `api_token` (the app
    token, Dapr's APP_API_TOKEN) as `dapr-api-token`, which no header may replace. Errors as
    the `rpc.grpc` channel raises them."""
    sent = grpc_metadata(request.headers)
    sent.update(metadata or {})
    if api_token:
        sent[API_TOKEN_HEADER] = api_token
    reply, headers = await _unary(
        channel,
        APP_ON_INVOKE_PATH,
        to_dapr_invoke_request(request),
        dapr_common.InvokeResponse,
        request,
        sent,
        f"app {request.app_id!r}",
    )
    return _response(reply.data, reply.content_type, headers)


MAX_CHANNELS = 256


class GrpcChannelMetadata(ComponentMetadata):
    target: Literal["sidecar", "app"] = "sidecar"
    api_token: SecretStr = Field(default=SecretStr(""), alias="apiToken")

    @field_validator("target", mode="before")
    @classmethod
    def _target(cls, value: Any) -> Any:
        return value.strip().lower() if isinstance(value, str) else value


class GrpcChannel(RpcChannel):
    def __init__(
        self,
        target: Literal["sidecar", "app"] = "sidecar",
        *,
        app_id: str = "",
        api_token: str = "",
    ) -> None:
        self._target = target
        self._app_id = app_id  # this sidecar's app: the caller
        self._api_token = api_token
        # One HTTP/2 connection per address, least recently used first; bounded, because
        # `rpc_target_address` lets callers name any address.
        self._channels: OrderedDict[str, Channel] = OrderedDict()

    @classmethod
    def create(cls, metadata: GrpcChannelMetadata, context: ComponentContext) -> Component:
        return cls(
            metadata.target,
            app_id=context.app_id,
            api_token=metadata.api_token.get_secret_value(),
        )

    async def close(self) -> None:
        channels, self._channels = self._channels, OrderedDict()
        for channel in channels.values():
            channel.close()

    def _channel(self, address: str) -> Channel:
        channel = self._channels.get(address)
        if channel is None:
            try:
                host, port = split_host_port(address, example_port=34904)
            except ValueError as err:
                raise InvalidArgument(f"target address {address!r}: {err}") from None
            channel = self._channels[address] = Channel(host, port)
            if len(self._channels) > MAX_CHANNELS:
                _, oldest = self._channels.popitem(last=False)
                oldest.close()
        else:
            self._channels.move_to_end(address)
        return channel

    def _metadata(self, request: RpcRequest) -> dict[str, str]:
        metadata = grpc_metadata(request.headers)
        if self._app_id:
            metadata[CALLER_APP_ID_HEADER] = self._app_id
        metadata[CALLEE_APP_ID_HEADER] = request.app_id
        if self._api_token:
            metadata[API_TOKEN_HEADER] = self._api_token
        if self._target == "sidecar":
            metadata[TIMEOUT_HEADER] = str(max(1, math.ceil(request.timeout * 1000)))
        return metadata

    async def invoke(self, request: RpcRequest, address: str) -> RpcResponse:
        channel = self._channel(address)
        metadata = self._metadata(request)
        if self._target == "app":
            return await call_app_on_invoke(channel, request, metadata=metadata)
        reply, headers = await _unary(
            channel,
            SIDECAR_INVOKE_PATH,
            to_invoke_service_request(request),
            spec.InvokeResponse,
            request,
            metadata,
            f"the sidecar of app {request.app_id!r}",
        )
        return _response(reply.data, reply.content_type, headers)
