"""A SERVER span per Dapr HTTP API request, as daprd's `HTTPTraceMiddleware` records it.

- Parent: the caller's `traceparent` (+ `tracestate`); none, or one that does not parse: a
  new trace. Health endpoints (`/healthz`, `/actuator/*`) are not traced, as in daprd.
- The response carries `traceparent` (and `tracestate`) naming the span, unless the handler
  set one (an invocation passes the target's back), as daprd does.
- Name: the route's path template (`/v1.0/state/{store}/{key:path}`: daprd names it by the raw
  path, which holds keys); an invocation `CallLocal/{app id}/{method}` as daprd.
- Attributes (sampled spans only): `dapr.api` (`GET /v1.0/state/{store}/{key:path}`),
  `dapr.protocol`, `dapr.status_code`; state, secrets and bindings add `db.system`, `db.name`
  (the component), `db.statement`; publishing `messaging.system`,
  `messaging.destination.name`; invocation `rpc.service`, `net.peer.name`.
- Status: 4xx/5xx is ERROR with daprd's description (`Code(404): Not Found`).
"""

from __future__ import annotations

from http import HTTPStatus
from typing import Any, Final

from starlette.requests import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from layotto.api.dapr_http_invoke import target_and_method
from layotto.tracing import (
    TRACEPARENT,
    TRACESTATE,
    Span,
    SpanKind,
    Tracer,
    active,
    parse_headers,
)

_TRACEPARENT: Final = TRACEPARENT.encode()
_TRACESTATE: Final = TRACESTATE.encode()

# The first path segment after the version -> (db.system, the path parameter naming the
# component).
_DB_SYSTEMS: Final[dict[str, tuple[str, str]]] = {
    "state": ("state", "store"),
    "secrets": ("secrets", "store"),
    "bindings": ("bindings", "name"),
    "lock": ("lock", "store"),
    "unlock": ("lock", "store"),
    "configuration": ("configuration", "store"),
}


def _untraced(path: str) -> bool:
    return "/healthz" in path or path.startswith("/actuator/")


def error_description(status: int) -> str:
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    return f"Code({status}): {phrase}"


def annotate(span: Span, scope: Scope, method: str, status: int) -> None:
    route = getattr(scope.get("route"), "path", None) or "unmatched"
    params: dict[str, Any] = scope.get("path_params") or {}
    api = f"{method} {route}"
    span.set("dapr.api", api)
    span.set("dapr.protocol", "http")
    span.set("dapr.status_code", str(status))
    segments = route.split("/")
    block = segments[2] if len(segments) > 2 else ""
    if block == "invoke" or route == "/{rest:path}":
        found = target_and_method(Request(scope))
        if found is not None:
            app_id, called = found
            span.rename(f"CallLocal/{app_id}/{called}")
            span.set("rpc.service", "ServiceInvocation")
            span.set("net.peer.name", app_id)
        return
    span.rename(route)
    if block == "publish":
        span.set("messaging.system", "pubsub")
        span.set("messaging.destination.name", str(params.get("topic", "")))
        return
    db = _DB_SYSTEMS.get(block)
    if db is not None and params.get(db[1]):
        span.set("db.system", db[0])
        span.set("db.name", str(params[db[1]]))
        span.set("db.statement", api)


class TracingMiddleware:
    def __init__(self, app: ASGIApp, tracer: Tracer) -> None:
        self._app = app
        self._tracer = tracer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or _untraced(scope["path"]):
            await self._app(scope, receive, send)
            return
        traceparent: str | None = None
        tracestate: str | None = None
        for name, value in scope["headers"]:
            if name == _TRACEPARENT:
                traceparent = value.decode("latin-1")
            elif name == _TRACESTATE:
                tracestate = value.decode("latin-1")
        tracer = self._tracer
        span = tracer.start(scope["path"], SpanKind.SERVER, parse_headers(traceparent, tracestate))
        if span is None:  # not reached: only a recording tracer is wired in
            await self._app(scope, receive, send)
            return
        status = 500  # what the server answers when the app fails before responding

        async def sending(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = list(message.get("headers", ()))
                if not any(name.lower() == _TRACEPARENT for name, _ in headers):
                    headers.append((_TRACEPARENT, span.traceparent.encode()))
                    if span.tracestate:
                        headers.append((_TRACESTATE, span.tracestate.encode()))
                    message = {**message, "headers": headers}
            await send(message)

        try:
            with active(span):
                await self._app(scope, receive, sending)
        finally:
            if status >= 400:
                span.fail(error_description(status))
            if span.sampled:
                annotate(span, scope, scope["method"], status)
            tracer.end(span)
