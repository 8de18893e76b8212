"""The RPC SPI: how `InvokeService` reaches a target app (layotto-semantics.md §5).

A call flows: before-filters -> name resolution -> the channel -> after-filters.

- `RpcChannel` (component kind `rpc`, e.g. `rpc.http`, `rpc.grpc`): sends one request to one
  address and returns the answer; it owns its connection pools. A protocol codec (bolt, dubbo)
  is one more channel type in a plugin: core does not change.
- `NameResolver` (component kind `nameresolution`): target app id -> candidate addresses. The
  sidecar tries them round-robin and skips, for a while, an address whose call failed to
  connect (passive health). A mesh resolver answers one egress address for every id and the
  channel puts the id in a header, so Envoy or MOSN route the call.
- `InvokeFilter` (component kind `rpcfilter`, e.g. `rpcfilter.dubbo_json_rpc`), listed by
  component name in a channel's `beforeInvoke` / `afterInvoke` metadata, in order: may rewrite
  the request before the call or the response after it, or reject the call by raising a
  `LayottoError`.

Headers are lower-case names with string values. Errors: a channel raises `TargetUnreachable`
when the request certainly did not reach the target (connection refused, DNS): the sidecar
then tries the next address. `BackendUnavailable` for a connection lost after the request may
have been sent (not retried: the target may have run it), `BackendTimeout` when the deadline
passes, and `TargetError` for an answer that is itself an error (passed through to the caller
with its status).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from layotto.errors import BackendUnavailable, ErrorCategory, LayottoError
from layotto.plugin.component import Component

# Request headers with a meaning for the sidecar (Layotto's names).
TIMEOUT_HEADER = "rpc_request_timeout"  # milliseconds
TARGET_ADDRESS_HEADER = "rpc_target_address"  # host:port, bypasses name resolution
DEFAULT_TIMEOUT_SECONDS = 3.0
# Hop-by-hop headers: never forwarded in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "te",
        "trailer",
        "trailers",
        "transfer-encoding",
        "upgrade",
        "content-length",
        "host",
    }
)


@dataclass(frozen=True, slots=True)
class RpcRequest:
    app_id: str  # the target
    method: str  # for HTTP targets: the path
    data: bytes = b""
    content_type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    verb: str = ""  # HTTP verb ("" = the channel's default, GET for HTTP)
    query_string: str = ""
    timeout: float = DEFAULT_TIMEOUT_SECONDS  # seconds left for the whole call

    def with_(self, **changes: Any) -> RpcRequest:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class RpcResponse:
    data: bytes = b""
    content_type: str = ""
    headers: Mapping[str, str] = field(default_factory=dict)
    # The target's HTTP status, when the channel spoke HTTP (201, 204...): Dapr's HTTP API
    # passes it back. None: the channel has none (gRPC), answer 200.
    http_status: int | None = None

    def with_(self, **changes: Any) -> RpcResponse:
        return replace(self, **changes)


class TargetUnreachable(BackendUnavailable):
    """The request was not sent: the next address may safely be tried."""


class TargetError(LayottoError):
    """The target answered with an error: its category (from its gRPC or HTTP status) and
    message reach the caller unchanged. A channel that spoke HTTP also keeps the answer itself
    (`http_status`, `body`, `content_type`, `headers`), which Dapr's HTTP API passes through."""

    def __init__(
        self,
        category: ErrorCategory,
        message: str,
        *,
        http_status: int | None = None,
        body: bytes = b"",
        content_type: str = "",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message, reason="ERR_TARGET")
        self.category = category
        self.http_status = http_status
        self.body = body
        self.content_type = content_type
        self.headers: Mapping[str, str] = dict(headers or {})


class RpcChannel(Component):
    @abstractmethod
    async def invoke(self, request: RpcRequest, address: str) -> RpcResponse:
        """Send `request` to `address` (`host:port`) within `request.timeout` seconds."""


class NameResolver(Component):
    @abstractmethod
    async def resolve(self, app_id: str) -> Sequence[str]:
        """Candidate `host:port` addresses for `app_id`, best first; empty when unknown."""

    def headers(self, app_id: str) -> Mapping[str, str]:
        """Extra request headers this resolution needs (a mesh resolver names the target)."""
        return {}


class InvokeFilter(Component):
    """One configured filter. Both hooks default to passing things through unchanged."""

    async def before(self, request: RpcRequest) -> RpcRequest:
        return request

    async def after(self, request: RpcRequest, response: RpcResponse) -> RpcResponse:
        return response
