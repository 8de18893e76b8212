"""The RPC building block: InvokeService (layotto-semantics.md §5).

A call: validate -> an external target (`external`: a Dapr HTTPEndpoint's name or an
`http(s)://` URL, tried first, as daprd does) -> the target's channel (`rpc.app_channels`, else
the default) -> its before-filters -> addresses (`rpc_target_address` header, else the name
resolver) -> the channel, trying the addresses round-robin and skipping, for
`rpc.eject_seconds`, one that could not be reached -> after-filters. The whole call is bounded
by `rpc_request_timeout` (ms, default 3000) -> DEADLINE_EXCEEDED. A target's own error status
comes back unchanged (`TargetError`). With tracing on, the call's span (the current one) goes
to the target as its parent: `traceparent` / `tracestate` replace the caller's.
"""

from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol

import anyio

from layotto.components import ComponentRegistry
from layotto.config import RpcConfig
from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ErrorCategory,
    InvalidArgument,
    LayottoError,
    NotConfigured,
)
from layotto.plugin import Kind
from layotto.plugin.rpc import (
    DEFAULT_TIMEOUT_SECONDS,
    TARGET_ADDRESS_HEADER,
    TIMEOUT_HEADER,
    InvokeFilter,
    NameResolver,
    RpcChannel,
    RpcRequest,
    RpcResponse,
    TargetError,
    TargetUnreachable,
)
from layotto.resiliency import is_retriable
from layotto.tracing import TRACESTATE, current_span

log = logging.getLogger(__name__)


# gRPC status numbers of our categories, for a retry policy's `matching.gRPCStatusCodes`.
GRPC_CODES: dict[ErrorCategory, int] = {
    ErrorCategory.INVALID_ARGUMENT: 3,
    ErrorCategory.DEADLINE_EXCEEDED: 4,
    ErrorCategory.NOT_FOUND: 5,
    ErrorCategory.PERMISSION_DENIED: 7,
    ErrorCategory.RESOURCE_EXHAUSTED: 8,
    ErrorCategory.FAILED_PRECONDITION: 9,
    ErrorCategory.ABORTED: 10,
    ErrorCategory.UNIMPLEMENTED: 12,
    ErrorCategory.INTERNAL: 13,
    ErrorCategory.UNAVAILABLE: 14,
    ErrorCategory.UNAUTHENTICATED: 16,
}


class _ErrorAnswer(Exception):
    """A target's HTTP answer outside 200-399 while a retry policy applies."""

    def __init__(self, response: RpcResponse) -> None:
        super().__init__(f"the target answered {response.http_status}")
        self.response = response
        self.status = response.http_status or 0


def timeout_of(headers: Mapping[str, str]) -> float:
    """`rpc_request_timeout` in milliseconds -> seconds (default 3 s)."""
    raw = headers.get(TIMEOUT_HEADER)
    if raw is None or raw.strip() == "":
        return DEFAULT_TIMEOUT_SECONDS
    try:
        millis = int(raw.strip())
    except ValueError:
        millis = 0
    if millis <= 0:
        raise InvalidArgument(
            f"header {TIMEOUT_HEADER!r} must be a positive number of milliseconds, got {raw!r}"
        )
    return millis / 1000


@dataclass
class AddressPool:
    """Round-robin over a target's addresses with passive health: an address that could not
    be reached is skipped until `eject_seconds` have passed (unless every one is ejected)."""

    eject_seconds: float
    _ejected: dict[str, float] = field(default_factory=dict)
    _turns: itertools.count[int] = field(default_factory=itertools.count)

    def order(self, addresses: Sequence[str]) -> list[str]:
        if not addresses:
            return []
        start = next(self._turns) % len(addresses)
        rotated = [*addresses[start:], *addresses[:start]]
        now = time.monotonic()
        healthy = [a for a in rotated if self._ejected.get(a, 0.0) <= now]
        ejected = [a for a in rotated if self._ejected.get(a, 0.0) > now]
        return healthy + ejected  # the ejected ones only as a last resort

    def failed(self, address: str) -> None:
        self._ejected[address] = time.monotonic() + self.eject_seconds

    def succeeded(self, address: str) -> None:
        self._ejected.pop(address, None)


@dataclass(frozen=True, slots=True)
class _Route:
    name: str
    channel: RpcChannel
    before: tuple[InvokeFilter, ...]
    after: tuple[InvokeFilter, ...]


def _only(kind: str, named: Mapping[str, object], wanted: str) -> str:
    if wanted:
        if wanted not in named:
            raise ConfigError(
                f"rpc: no {kind} component named {wanted!r} (configured: {sorted(named) or 'none'})"
            )
        return wanted
    return next(iter(named)) if len(named) == 1 else ""


LocalApp = Callable[[RpcRequest], Awaitable[RpcResponse]]


class ExternalTargets(Protocol):
    """Targets outside the sidecars' mesh, called directly (Dapr's HTTPEndpoints and full
    URLs, `api.http_endpoints`)."""

    def handles(self, app_id: str) -> bool: ...

    async def invoke(self, request: RpcRequest) -> RpcResponse: ...


class InvokeService:
    """`own_app_id` + `local_app`: a call addressed to this sidecar's own app (typically from
    another sidecar's `rpc.grpc` channel) goes straight to the app (Dapr's `OnInvoke`)."""

    def __init__(
        self,
        registry: ComponentRegistry,
        config: RpcConfig,
        *,
        own_app_id: str = "",
        local_app: LocalApp | None = None,
        external: ExternalTargets | None = None,
    ) -> None:
        self._config = config
        self._own_app_id = own_app_id
        self._local_app = local_app
        self._external = external
        self._resiliency = registry.resiliency
        channels: dict[str, RpcChannel] = {}
        for name, built in registry.of_kind(Kind.RPC).items():
            if not isinstance(built.component, RpcChannel):
                raise TypeError(f"rpc component {name!r} is not an RpcChannel")
            channels[name] = built.component
        resolvers = {n: b.component for n, b in registry.of_kind(Kind.NAMERESOLUTION).items()}
        filters = {n: b.component for n, b in registry.of_kind(Kind.RPCFILTER).items()}
        self._routes: dict[str, _Route] = {}
        for name, channel in channels.items():
            chain = config.filters.get(name)
            self._routes[name] = _Route(
                name,
                channel,
                self._filters(filters, chain.before if chain else [], name),
                self._filters(filters, chain.after if chain else [], name),
            )
        for channel_name in config.filters:
            _only("rpc", channels, channel_name)
        self._default = _only("rpc", channels, config.default_channel)
        for app, channel_name in config.app_channels.items():
            if channel_name not in channels:
                raise ConfigError(
                    f"rpc.app_channels.{app}: no rpc component named {channel_name!r}"
                )
        resolver_name = _only("nameresolution", resolvers, config.resolver)
        resolver = resolvers.get(resolver_name) if resolver_name else None
        if resolver is not None and not isinstance(resolver, NameResolver):
            raise TypeError(f"nameresolution component {resolver_name!r} is not a NameResolver")
        self._resolver: NameResolver | None = resolver
        self._pools: dict[str, AddressPool] = {}

    @staticmethod
    def _filters(
        filters: Mapping[str, object], names: Sequence[str], channel: str
    ) -> tuple[InvokeFilter, ...]:
        chain: list[InvokeFilter] = []
        for name in names:
            found = filters.get(name)
            if not isinstance(found, InvokeFilter):
                raise ConfigError(
                    f"rpc.filters.{channel}: no rpcfilter component named {name!r} "
                    f"(configured: {sorted(filters) or 'none'})"
                )
            chain.append(found)
        return tuple(chain)

    def _route(self, app_id: str) -> _Route:
        name = self._config.app_channels.get(app_id) or self._default
        if not name:
            if not self._routes:
                raise NotConfigured(
                    "rpc is not configured: add an rpc component (e.g. type rpc.http)",
                    reason="ERR_INVOKE_NOT_CONFIGURED",
                )
            raise NotConfigured(
                f"no rpc channel for app {app_id!r}: set rpc.default_channel or "
                f"rpc.app_channels (channels: {sorted(self._routes)})",
                reason="ERR_INVOKE_NOT_CONFIGURED",
            )
        return self._routes[name]

    async def _addresses(self, request: RpcRequest) -> tuple[list[str], RpcRequest]:
        direct = request.headers.get(TARGET_ADDRESS_HEADER, "").strip()
        if direct:
            return [direct], request
        if self._resolver is None:
            raise NotConfigured(
                f"no name resolver to find app {request.app_id!r}: configure a nameresolution "
                f"component or send the {TARGET_ADDRESS_HEADER!r} header",
                reason="ERR_INVOKE_NOT_CONFIGURED",
            )
        addresses = list(await self._resolver.resolve(request.app_id))
        if not addresses:
            raise BackendUnavailable(
                f"app {request.app_id!r} has no known address", reason="ERR_DIRECT_INVOKE"
            )
        extra = self._resolver.headers(request.app_id)
        if extra:
            request = request.with_(headers={**request.headers, **extra})
        return addresses, request

    async def invoke(self, request: RpcRequest) -> RpcResponse:
        if not request.app_id:
            raise InvalidArgument("field 'id' must not be empty")
        if request.method == "" and request.verb == "":
            raise InvalidArgument("field 'message.method' must not be empty")
        span = current_span()
        if span is not None:
            headers = {k: v for k, v in request.headers.items() if k != TRACESTATE}
            request = request.with_(headers={**headers, **span.headers()})
        if self._external is not None and self._external.handles(request.app_id):
            external = self._external
            return await self._invoke_direct(
                lambda r: self._resilient(r.app_id, lambda: external.invoke(r)),
                request,
                f"endpoint {request.app_id!r}",
            )
        if self._local_app is not None and request.app_id == self._own_app_id:
            return await self._invoke_direct(self._local_app, request, "this sidecar's app")
        route = self._route(request.app_id)
        started = time.monotonic()
        try:
            with anyio.fail_after(request.timeout):
                for before in route.before:
                    request = await before.before(request)
                response = await self._resilient(
                    request.app_id, lambda: self._remote(route, request, started)
                )
                for after in route.after:
                    response = await after.after(request, response)
                return response
        except TimeoutError:
            raise BackendTimeout(
                f"invoking {request.method!r} on app {request.app_id!r}: no answer within "
                f"{request.timeout * 1000:.0f} ms",
                reason="ERR_DIRECT_INVOKE",
            ) from None

    async def _remote(self, route: _Route, request: RpcRequest, started: float) -> RpcResponse:
        addresses, request = await self._addresses(request)
        return await self._call(route, request, addresses, started)

    async def _resilient(
        self, target: str, call: Callable[[], Awaitable[RpcResponse]]
    ) -> RpcResponse:
        """`call` under the target's Dapr resiliency policy (`targets.apps.<id>` or the app
        defaults). With a retry policy, an answer outside 200-399 counts as failed, as in
        daprd: retried when `matching.httpStatusCodes` allows (all, unset), and passed back
        unchanged once retries are used up; a target's gRPC error is matched by its code."""
        policy = self._resiliency.app(target)
        if not policy:
            return await call()
        retry = policy.retry

        async def attempt() -> RpcResponse:
            response = await call()
            status = response.http_status
            if retry is not None and status is not None and not 200 <= status <= 399:
                raise _ErrorAnswer(response)
            return response

        def retriable(err: BaseException) -> bool:
            if isinstance(err, _ErrorAnswer):
                return retry is None or retry.retries_http_status(err.status)
            if isinstance(err, TargetError):
                if retry is None:
                    return True  # the target failed: a breaker counts it
                if err.http_status is not None:
                    return retry.retries_http_status(err.http_status)
                return retry.retries_grpc_code(GRPC_CODES[err.category])
            return is_retriable(err)

        try:
            return await policy.run(attempt, retriable=retriable)
        except _ErrorAnswer as answered:
            return answered.response

    @staticmethod
    async def _invoke_direct(call: LocalApp, request: RpcRequest, target: str) -> RpcResponse:
        """A call that needs no channel or resolver, bounded by the request's timeout."""
        try:
            with anyio.fail_after(request.timeout):
                return await call(request)
        except TimeoutError:
            raise BackendTimeout(
                f"invoking {request.method!r} on {target}: no answer within "
                f"{request.timeout * 1000:.0f} ms",
                reason="ERR_DIRECT_INVOKE",
            ) from None

    async def _call(
        self, route: _Route, request: RpcRequest, addresses: list[str], started: float
    ) -> RpcResponse:
        pool = self._pools.setdefault(request.app_id, AddressPool(self._config.eject_seconds))
        last: LayottoError | None = None
        for address in pool.order(addresses):
            left = request.timeout - (time.monotonic() - started)
            try:
                response = await route.channel.invoke(request.with_(timeout=left), address)
            except TargetUnreachable as err:
                # Not sent, so safe to send elsewhere (a call lost mid-way is not retried).
                log.info("app %s at an address failed (%s): next", request.app_id, err.message)
                pool.failed(address)
                last = err
                continue
            pool.succeeded(address)
            return response
        assert last is not None
        raise last
