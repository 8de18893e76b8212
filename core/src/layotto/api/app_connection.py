"""The sidecar's one connection to its app, shared by every caller: the pub/sub callbacks (either
callback API), input binding events, the app health checks and invocations of the sidecar's own
app id. grpclib multiplexes the calls over one HTTP/2 connection; every call carries the app
token (Dapr's APP_API_TOKEN as `dapr-api-token`, `app_call_metadata`).

`call_unary` is the one way to make a call to the app: it sees through grpclib's trailers-only
answers, so an app that does not serve a method answers UNIMPLEMENTED, whatever its gRPC
library (see `_trailers_only_error`).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Mapping
from enum import Enum
from typing import Any, TypeVar

import anyio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Empty
from layotto.backoff import backoff_delay
from layotto.plugin.rpc import RpcRequest, RpcResponse

log = logging.getLogger(__name__)

# Dapr's APP_API_TOKEN travels in this header on every call to the app.
API_TOKEN_HEADER = "dapr-api-token"
HEALTH_CHECK_PATH = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"

# Startup questions (which topics, which input bindings): each attempt is bounded; a transport
# failure (the app restarting, not listening yet) is asked again this many times. Answers that
# come from the connection, not from the app's own code: grpclib reports a reply without gRPC
# headers, e.g. from a closing server, as UNKNOWN. An app handler that raises also answers
# UNKNOWN: such answers are retried a few times only.
ASK_TIMEOUT_SECONDS = 5.0
ASK_ATTEMPTS = 8
_TRANSPORT_STATUSES = frozenset({Status.UNAVAILABLE, Status.UNKNOWN, Status.DEADLINE_EXCEEDED})
TRANSPORT_ERRORS = (
    OSError,  # TimeoutError included
    StreamTerminatedError,
    ProtocolError,
    anyio.BrokenResourceError,
)
CONNECT_POLL_SECONDS = 0.2

_T = TypeVar("_T")
_Reply = TypeVar("_Reply")


def app_call_metadata(api_token: str | None) -> dict[str, str]:
    """The gRPC metadata every call to the app carries: the app token, when one is set."""
    return {API_TOKEN_HEADER: api_token} if api_token else {}


class AppHealthProbe(Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NOT_OFFERED = "not offered"  # the app does not serve AppCallbackHealthCheck


def _trailers_only_error(stream: Any, err: GRPCError) -> GRPCError:
    """The status a trailers-only answer really carried. grpclib's client rejects such an
    answer without a content-type header as UNKNOWN before reading its `grpc-status`, and
    grpclib's server sends exactly that for a method it does not serve: without this, an
    app on grpclib would look broken (retry) instead of not serving the method
    (UNIMPLEMENTED: none, or drop)."""
    if err.status is not Status.UNKNOWN:
        return err
    headers = getattr(getattr(stream, "_stream", None), "headers", None) or []
    found = dict(headers)
    try:
        status = Status(int(found["grpc-status"]))
    except (KeyError, ValueError):
        return err
    return GRPCError(status, found.get("grpc-message") or err.message)


async def call_unary(
    channel: Channel,
    path: str,
    request: Any,
    reply_type: type[_Reply],
    *,
    within: float,
    metadata: Mapping[str, str],
) -> _Reply:
    """One unary call to the app, bounded by `within` seconds (grpclib's deadline)."""
    async with channel.request(
        path,
        Cardinality.UNARY_UNARY,
        type(request),
        reply_type,
        timeout=within,
        metadata=dict(metadata),
    ) as stream:
        await stream.send_message(request, end=True)
        try:
            await stream.recv_initial_metadata()
        except GRPCError as err:
            raise _trailers_only_error(stream, err) from None
        reply = await stream.recv_message()
    if reply is None:
        raise GRPCError(Status.UNKNOWN, "the app ended the call without an answer")
    return reply


class AppConnection:
    """One HTTP/2 connection to the app, shared by every call of every caller (grpclib
    multiplexes), with the app token on each (`metadata`)."""

    def __init__(self, host: str, port: int, *, api_token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.metadata = app_call_metadata(api_token)
        self.channel = Channel(host, port)

    # Shown as `healthCheckPath` in the metadata: daprd has none for gRPC apps.
    health_check_path = ""

    def close(self) -> None:
        self.channel.close()

    async def aclose(self) -> None:
        self.close()

    async def invoke(self, request: RpcRequest) -> RpcResponse:
        """An invocation of the app itself: Dapr's `AppCallback/OnInvoke`."""
        # A component module (`rpc.grpc`): loaded only when there is an app to invoke.
        from layotto.builtin.rpc_grpc import call_app_on_invoke

        return await call_app_on_invoke(self.channel, request, metadata=self.metadata)

    async def call(
        self,
        path: str,
        request: Any,
        reply_type: type[_Reply],
        *,
        within: float,
        metadata: Mapping[str, str] | None = None,
    ) -> _Reply:
        """`call_unary` on this connection; `metadata` defaults to the app token alone."""
        return await call_unary(
            self.channel,
            path,
            request,
            reply_type,
            within=within,
            metadata=self.metadata if metadata is None else metadata,
        )

    async def wait_until_listening(self) -> None:
        await wait_until_listening(self.host, self.port)

    async def ask(self, path: str, reply_type: type[_Reply], what: str) -> _Reply | None:
        """A startup question to the app (an `Empty` request): its answer, or None when the
        app answers UNIMPLEMENTED (it does not serve that service). A transport failure (the
        app restarting, not listening yet) is asked again with backoff, a few times, so the
        sidecar does not start without subscriptions because the app blinked; any other error
        the app answers counts as UNIMPLEMENTED, as upstream."""
        attempt = 0
        while True:
            try:
                return await self.call(path, Empty(), reply_type, within=ASK_TIMEOUT_SECONDS)
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED:
                    return None
                if err.status not in _TRANSPORT_STATUSES or attempt >= ASK_ATTEMPTS:
                    log.warning("%s failed (%s: %s)", what, err.status.name, err.message)
                    return None
                reason = f"{err.status.name}: {err.message}"
            except TRANSPORT_ERRORS as err:
                if attempt >= ASK_ATTEMPTS:
                    log.warning("%s failed (%s)", what, type(err).__name__)
                    return None
                reason = type(err).__name__
            log.info("%s failed (%s); asking the app again", what, reason)
            await anyio.sleep(backoff_delay(attempt, base=0.1, cap=2.0))
            attempt += 1
            await self.wait_until_listening()

    async def check_health(self, within: float) -> AppHealthProbe:
        """Dapr's `AppCallbackHealthCheck/HealthCheck`, which an app of either callback API
        may serve, once, within `within` seconds."""
        try:
            await isolated(
                lambda: self.call(
                    HEALTH_CHECK_PATH, Empty(), dapr.HealthCheckResponse, within=within
                )
            )
        except GRPCError as err:
            if err.status is Status.UNIMPLEMENTED:
                return AppHealthProbe.NOT_OFFERED
            log.debug("app health check: %s %s", err.status.name, err.message)
            return AppHealthProbe.UNHEALTHY
        except TRANSPORT_ERRORS as err:
            log.debug("app health check: %s", type(err).__name__)
            return AppHealthProbe.UNHEALTHY
        return AppHealthProbe.HEALTHY


async def wait_until_listening(host: str, port: int) -> None:
    """Poll the app's port until it accepts connections (the app may start after us)."""
    logged = False
    while True:
        try:
            with anyio.fail_after(1.0):
                stream = await anyio.connect_tcp(host, port)
            await stream.aclose()
            return
        except (OSError, TimeoutError, socket.gaierror):
            if not logged:
                log.info("waiting for the app's callback port %s:%d", host, port)
                logged = True
            await anyio.sleep(CONNECT_POLL_SECONDS)


async def isolated(call: Callable[[], Awaitable[_T]]) -> _T:
    """Run a grpclib client call in a task of its own and return (or raise) its result here.

    grpclib wakes the tasks waiting on a stream by cancelling them (`grpclib.utils.Wrapper`),
    and after an error such a cancel can arrive late, at the caller's next await, where it
    breaks the caller's anyio cancel scopes. A throwaway task absorbs it: a long-lived caller
    (the health prober, a test's task group) must not receive it."""
    outcome: list[_T] = []
    failure: list[Exception] = []

    async def run() -> None:
        try:
            outcome.append(await call())
        except Exception as err:  # handed to the caller below, not swallowed
            failure.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
    if failure:
        raise failure[0]
    if not outcome:
        raise StreamTerminatedError("the call was cancelled")
    return outcome[0]
