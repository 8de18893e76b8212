"""A SERVER span per gRPC call, as daprd's `GRPCTraceUnaryServerInterceptor` records it.

- Parent: the caller's `traceparent` (+ `tracestate`); none, or one that does not parse: a
  new trace. (daprd prefers OpenCensus' `grpc-trace-bin`, which grpclib cannot see: it drops
  every `grpc-*` metadata name.)
- Name: the method path (`/dapr.proto.runtime.v1.Dapr/GetState`); an invocation is renamed
  `CallLocal/{app id}/{method}` as daprd does.
- Attributes (sampled spans only, read from the request message): `rpc.system`,
  `rpc.service` (`Dapr`, `ServiceInvocation`), `dapr.api` (the path), `dapr.protocol`;
  state, secrets, bindings (and Layotto's lock, sequencer, configuration) add `db.system`,
  `db.name` (the component), `db.statement` (the path); publishing adds `messaging.system`
  and `messaging.destination.name` (the topic); invocation `net.peer.name`. Never keys or
  payloads.
- Status: an error answer sets ERROR with its message (and `rpc.grpc.status_code`).
- Response: nothing added. daprd answers `grpc-trace-bin`, a name grpclib refuses to send;
  a `traceparent` instead would cost ~40 µs a call (a new random value every time defeats
  HPACK's table, and hpack is pure Python) for a header gRPC clients do not read.

daprd gives the runtime API's spans kind CLIENT (a leftover of its OpenCensus days); they are
SERVER spans here, which is what they are.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

from grpclib import GRPCError
from grpclib.server import Stream

from layotto.api.api_access import STATE_METHODS
from layotto.tracing import (
    TRACEPARENT,
    TRACESTATE,
    Span,
    SpanContext,
    SpanKind,
    Tracer,
    active,
    ending,
    parse_headers,
)

Handler = Callable[[Stream[Any, Any]], Awaitable[None]]

# Method name -> the building block daprd (or Layotto) reports as `db.system`.
_DB_SYSTEMS: Final[dict[str, str]] = {
    **dict.fromkeys((*STATE_METHODS, "QueryStateAlpha1"), "state"),
    **dict.fromkeys(("GetSecret", "GetBulkSecret"), "secrets"),
    **dict.fromkeys(("TryLock", "Unlock", "TryLockAlpha1", "UnlockAlpha1"), "lock"),
    "GetNextId": "sequencer",
    **dict.fromkeys(
        (
            "GetConfiguration",
            "SaveConfiguration",
            "DeleteConfiguration",
            "GetConfigurationAlpha1",
        ),
        "configuration",
    ),
}
_PUBLISH: Final = frozenset(
    {"PublishEvent", "BulkPublishEvent", "BulkPublishEventAlpha1", "PublishBulkEvent"}
)
_INVOKE: Final = "InvokeService"


def incoming_context(metadata: Mapping[str, Any] | None) -> SpanContext | None:
    if not metadata:
        return None
    traceparent = metadata.get(TRACEPARENT)
    if not isinstance(traceparent, str):
        return None
    tracestate = metadata.get(TRACESTATE)
    return parse_headers(traceparent, tracestate if isinstance(tracestate, str) else None)


def annotate(span: Span, path: str, message: Any) -> None:
    """Span attributes (and an invocation's name) from the call's first request message."""
    method = path.rsplit("/", 1)[-1]
    system = _DB_SYSTEMS.get(method)
    if system is not None:
        store = getattr(message, "store_name", "")
        if isinstance(store, str) and store:
            span.set("db.system", system)
            span.set("db.name", store)
            span.set("db.statement", path)
            span.set("db.connection_string", system)
    elif method == "InvokeBinding":
        name = getattr(message, "name", "")
        if isinstance(name, str) and name:
            span.set("db.system", "bindings")
            span.set("db.name", name)
            span.set("db.statement", path)
    elif method in _PUBLISH:
        span.set("messaging.system", "pubsub")
        span.set("messaging.destination.name", str(getattr(message, "topic", "")))
        pubsub = getattr(message, "pubsub_name", "")
        if isinstance(pubsub, str) and pubsub:
            span.set("dapr.pubsub", pubsub)
    elif method == _INVOKE:
        app_id = str(getattr(message, "id", ""))
        inner = getattr(message, "message", None)
        called = str(getattr(inner, "method", "")) if inner is not None else ""
        span.rename(f"CallLocal/{app_id}/{called}")
        span.set("rpc.service", "ServiceInvocation")
        span.set("net.peer.name", app_id)


def traced(tracer: Tracer, path: str, handler: Handler) -> Handler:
    """`handler` with a SERVER span around each call, current while it runs."""
    service = "ServiceInvocation" if path.endswith("/" + _INVOKE) else "Dapr"

    async def traced_call(stream: Stream[Any, Any]) -> None:
        span = tracer.start(path, SpanKind.SERVER, incoming_context(stream.metadata))
        if span is None:  # not reached: only a recording tracer is wired in
            await handler(stream)
            return
        if span.sampled:
            span.set("rpc.system", "grpc")
            span.set("rpc.service", service)
            span.set("dapr.api", path)
            span.set("dapr.protocol", "grpc")
            _annotate_first_message(stream, span, path)
        with active(span), ending(tracer, span, _fail):
            await handler(stream)

    return traced_call


def _fail(span: Span, err: BaseException) -> None:
    if isinstance(err, GRPCError):
        span.fail(err.message or err.status.name)
        span.set("rpc.grpc.status_code", str(err.status.value))
    elif isinstance(err, asyncio.CancelledError):
        span.fail("CANCELLED")
    else:
        span.fail(type(err).__name__)


def _annotate_first_message(stream: Stream[Any, Any], span: Span, path: str) -> None:
    receive = stream.recv_message
    seen = False

    async def recv_message() -> Any:
        nonlocal seen
        message = await receive()
        if not seen and message is not None:
            seen = True
            annotate(span, path, message)
        return message

    setattr(stream, "recv_message", recv_message)  # noqa: B010 (an instance override)
