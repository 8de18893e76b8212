"""The HTTP port: actuator health and info, Dapr's healthz and metadata endpoints, and Dapr's
HTTP API (`api/dapr_http*.py`) when the building blocks are given."""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layotto.api.api_access import ApiAccess
from layotto.api.dapr_http import dapr_routes, fallback_route
from layotto.api.dapr_http_context import ConfigUpdates, DaprHttpContext
from layotto.api.gate import CallGate
from layotto.api.grpc_services import ApiServices
from layotto.api.http_tracing import TracingMiddleware
from layotto.health import HealthRegistry, Probe
from layotto.meter import NO_METER, Meter
from layotto.plugin import HealthStatus
from layotto.tracing import NO_TRACER, Tracer

# Readable without the API token, as daprd does for its health endpoints.
TOKEN_EXEMPT_PATHS = frozenset(
    {
        "/v1.0/healthz",
        "/v1.0/healthz/outbound",
        "/actuator/health/liveness",
        "/actuator/health/readiness",
    }
)


@dataclass(frozen=True, slots=True)
class HttpContext:
    health: HealthRegistry
    app_id: str
    info: Callable[[], dict[str, Any]]  # /actuator/info body
    metadata: Callable[[], dict[str, Any]]  # /v1.0/metadata body
    api_token: str | None = None
    # Dapr's HTTP API, served when all four are given. The gate is the one the gRPC calls
    # pass, so HTTP calls drain with them.
    services: ApiServices | None = None
    gate: CallGate | None = None
    set_metadata: Callable[[str, str], None] | None = None  # PUT /v1.0/metadata/{key}
    shutdown: Callable[[], None] | None = None  # POST /v1.0/shutdown
    config_updates: ConfigUpdates | None = None  # configuration subscriptions over HTTP
    meter: Meter = NO_METER  # Dapr's dapr_http_server_* metrics, for every request
    tracer: Tracer = NO_TRACER  # a SERVER span per API request (`http_tracing`)
    access: ApiAccess | None = None  # daprd's API allow/deny lists: refused routes do not exist

    def dapr(self) -> DaprHttpContext | None:
        if (
            self.services is None
            or self.gate is None
            or self.set_metadata is None
            or self.shutdown is None
        ):
            return None
        return DaprHttpContext(
            self.services,
            self.gate,
            self.app_id,
            self.set_metadata,
            self.shutdown,
            self.config_updates,
        )


class _TokenMiddleware:
    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self._app = app
        self._token = token.encode() if token else None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self._token is None or scope["type"] != "http" or scope["path"] in TOKEN_EXEMPT_PATHS:
            await self._app(scope, receive, send)
            return
        headers = dict(scope["headers"])
        sent = headers.get(b"dapr-api-token") or headers.get(b"layotto-api-token")
        if sent is None or not hmac.compare_digest(sent, self._token):
            await PlainTextResponse("invalid api token", status_code=401)(scope, receive, send)
            return
        await self._app(scope, receive, send)


# Methods outside this set are labelled OTHER: a client must not be able to mint label values.
_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _MetricsMiddleware:
    """Counts and times every request, labelled with its route's path template (never the
    raw path: it holds keys and ids); requests no route matched, or refused before routing
    (a bad API token), are labelled `unmatched`."""

    def __init__(self, app: ASGIApp, meter: Meter) -> None:
        self._app = app
        self._meter = meter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self._app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500  # what the server answers when the app fails before responding

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            await send(message)

        try:
            await self._app(scope, receive, sending)
        finally:
            method = scope["method"] if scope["method"] in _METHODS else "OTHER"
            path = getattr(scope.get("route"), "path", None) or "unmatched"
            self._meter.http_request(method, path, status, time.perf_counter() - started)


def build_http_app(ctx: HttpContext) -> Starlette:
    def probe(kind: Probe) -> Callable[[Request], Any]:
        async def endpoint(request: Request) -> Response:
            report = ctx.health.report(kind)
            code = 200 if report["status"] == HealthStatus.UP.value else 503
            return JSONResponse(report, status_code=code)

        return endpoint

    async def info(request: Request) -> Response:
        return JSONResponse(ctx.info())

    async def healthz(request: Request) -> Response:
        appid = request.query_params.get("appid")
        if appid is not None and appid != ctx.app_id:
            return JSONResponse(
                {
                    "errorCode": "ERR_HEALTH_APPID_NOT_MATCH",
                    "message": "dapr app-id does not match",
                },
                status_code=500,
            )
        if ctx.health.status(Probe.READINESS) is HealthStatus.UP:
            return Response(status_code=204)
        return JSONResponse(
            {"errorCode": "ERR_HEALTH_NOT_READY", "message": "dapr is not ready"}, status_code=500
        )

    async def outbound(request: Request) -> Response:
        if ctx.health.status(Probe.READINESS) is HealthStatus.UP:
            return Response(status_code=204)
        return JSONResponse(
            {"errorCode": "ERR_OUTBOUND_HEALTH_NOT_READY", "message": "dapr outbound is not ready"},
            status_code=500,
        )

    async def metadata(request: Request) -> Response:
        return JSONResponse(ctx.metadata())

    async def unknown_actuator(request: Request) -> Response:
        return JSONResponse({"error": "health type invalid"}, status_code=404)

    routes: list[BaseRoute] = [
        Route("/actuator/health/liveness", probe(Probe.LIVENESS)),
        Route("/actuator/health/readiness", probe(Probe.READINESS)),
        Route("/actuator/health/{other:path}", unknown_actuator),
        Route("/actuator/info", info),
        Route("/v1.0/healthz", healthz),
        Route("/v1.0/healthz/outbound", outbound),
        Route("/v1.0/metadata", metadata),
    ]
    dapr = ctx.dapr()
    if dapr is not None:
        routes += [*dapr_routes(dapr), fallback_route(dapr)]
    access = ctx.access
    if access is not None and access.restricts_http:
        # daprd registers no route the lists refuse, so they answer 404 like unknown ones.
        routes = [r for r in routes if not isinstance(r, Route) or access.http_allows(r.path)]
    middleware = [Middleware(_TokenMiddleware, token=ctx.api_token)]
    if ctx.meter.enabled:  # outermost, so refused (401) requests are counted too
        middleware.insert(0, Middleware(_MetricsMiddleware, meter=ctx.meter))
    if ctx.tracer.enabled:  # outside the token check, so a refused call keeps its trace
        middleware.insert(0, Middleware(TracingMiddleware, tracer=ctx.tracer))
    return Starlette(routes=routes, middleware=middleware)
