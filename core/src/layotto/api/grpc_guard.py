"""Wraps every gRPC handler of every service: API token, drain gate, error mapping.

Doing it at the handler-mapping level (rather than per servicer method) covers unary and
streaming calls alike, and the health and reflection services too. With a meter, every call is
counted and timed here as it ends (a stream when it ends), with the status it was answered with
(Dapr's `dapr_grpc_io_server_*` metrics; the method path tells the two APIs apart). With a
tracer, every call gets a SERVER span (`grpc_tracing`) but the health probes and server streams.

A `LayottoError` is answered with its status and message plus rich details (`ErrorInfo` with
its reason, see `rich_errors`). Paths in `tokenless_paths` may come without a token (never
with a wrong one): the Dapr SDKs send none on server-streaming calls (dapr-compat.md 2.3).
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import logging
import time
from collections.abc import Awaitable, Callable, Mapping
from contextlib import nullcontext
from typing import Any

import anyio
import grpclib.const
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.server import Stream

from layotto.api.api_access import ApiAccess
from layotto.api.gate import CallGate
from layotto.api.grpc_status import GRPC_STATUS
from layotto.api.grpc_tracing import traced
from layotto.errors import LayottoError
from layotto.meter import NO_METER, Meter
from layotto.tracing import NO_TRACER, Tracer

log = logging.getLogger(__name__)

TOKEN_HEADERS = ("dapr-api-token", "layotto-api-token")
# Probes must work without credentials, as Dapr's /v1.0/healthz does, and keep answering
# (NOT_SERVING) while the sidecar drains: they are not held up by, nor counted in, the gate.
PROBE_SERVICES = frozenset({"grpc.health.v1.Health"})

TRAILERS_TIMEOUT_SECONDS = 1.0

Handler = Callable[[Stream[Any, Any]], Awaitable[None]]


async def _not_available(stream: Stream[Any, Any]) -> None:
    """A method the API allow/deny lists refuse, answered as daprd answers it."""
    raise GRPCError(Status.UNIMPLEMENTED, "requested endpoint is not available")


class GuardedService:
    """Presents `service`'s handler mapping with each handler wrapped by the guard."""

    def __init__(self, service: Any, guard: CallGuard, describe: Callable[[str], str]) -> None:
        self._service = service
        self._guard = guard
        self._describe = describe  # RPC name -> what is missing, for UNIMPLEMENTED answers

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: Mapping[str, grpclib.const.Handler] = self._service.__mapping__()
        return {
            path: handler._replace(
                func=self._guard.wrap(
                    path,
                    handler.func,
                    self._describe(path.rsplit("/", 1)[-1]),
                    streaming=handler.cardinality.server_streaming,
                )
            )
            for path, handler in mapping.items()
        }


class CallGuard:
    def __init__(
        self,
        gate: CallGate,
        api_token: str | None,
        *,
        tokenless_paths: frozenset[str] = frozenset(),
        meter: Meter = NO_METER,
        tracer: Tracer = NO_TRACER,
        access: ApiAccess | None = None,
    ) -> None:
        self._access = access
        self._gate = gate
        self._meter = meter
        self._tracer = tracer
        self._token = api_token.encode() if api_token else None
        self._tokenless = tokenless_paths

    def _check_token(self, path: str, stream: Stream[Any, Any]) -> None:
        if self._token is None:
            return
        if path.split("/")[1] in PROBE_SERVICES:
            return
        for header in TOKEN_HEADERS:
            sent = stream.metadata.get(header) if stream.metadata else None
            if sent is not None:
                if isinstance(sent, bytes) or not hmac.compare_digest(sent.encode(), self._token):
                    raise GRPCError(
                        Status.UNAUTHENTICATED, "authentication error: api token mismatch"
                    )
                return
        if path in self._tokenless:
            return
        raise GRPCError(Status.UNAUTHENTICATED, "missing api token in request metadata")

    def wrap(self, path: str, func: Handler, missing: str, *, streaming: bool = False) -> Handler:
        """`streaming` (the server streams its answer): not traced, as daprd leaves its own
        API's streams (subscriptions) without a span."""
        if self._access is not None and not self._access.grpc_allows(path):
            # Decided once per method: a refused one never reaches its servicer.
            func = _not_available
        handler = self._measured(path, func, missing)
        if self._tracer.enabled and not streaming and path.split("/")[1] not in PROBE_SERVICES:
            return traced(self._tracer, path, handler)
        return handler

    def _measured(self, path: str, func: Handler, missing: str) -> Handler:
        method = path.rsplit("/", 1)[-1]
        admit = nullcontext if path.split("/")[1] in PROBE_SERVICES else self._gate.call

        async def guarded(stream: Stream[Any, Any]) -> None:
            self._check_token(path, stream)
            try:
                async with admit():
                    await func(stream)
            except LayottoError as err:
                raise GRPCError(GRPC_STATUS[err.category], err.message, details=err) from None
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED and not err.message:
                    raise GRPCError(
                        Status.UNIMPLEMENTED,
                        f"{method}: the {missing} is not available in this sidecar yet",
                    ) from None
                raise
            except Exception:
                log.exception("unexpected error in %s", path)
                raise GRPCError(Status.INTERNAL, "internal error") from None
            except asyncio.CancelledError:
                # Cut off at the end of the grace period (grpclib cancels the handler): answer,
                # or the client would wait for its deadline on a stream nobody will finish.
                # When the client is gone (it cancelled, the connection dropped) there is no
                # one to answer: the failed send must not mask the cancellation.
                with (
                    anyio.move_on_after(TRAILERS_TIMEOUT_SECONDS),
                    contextlib.suppress(Exception),
                ):
                    await stream.send_trailing_metadata(
                        status=Status.UNAVAILABLE,
                        status_message="the sidecar shut down before the call finished",
                    )
                raise

        record = self._meter.grpc_method(path)
        if record is None:
            return guarded

        async def measured(stream: Stream[Any, Any]) -> None:
            started = time.perf_counter()
            status = "OK"
            try:
                await guarded(stream)
            except GRPCError as err:
                status = err.status.name
                raise
            except asyncio.CancelledError:
                status = "CANCELLED"
                raise
            except BaseException:
                status = "UNKNOWN"
                raise
            finally:
                record(status, time.perf_counter() - started)

        return measured
