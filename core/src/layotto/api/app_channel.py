"""What the pub/sub dispatcher needs from the app, whichever callback API the app serves
(Layotto's `spec.proto.runtime.v1.AppCallback` or Dapr's `dapr.proto.runtime.v1.AppCallback`):
the `AppChannel` protocol, the subscriptions it lists, and the one connection both share.

Errors are translated at this edge: an app that cannot be reached becomes `AppUnavailable`
(waited for, no retry used up), UNIMPLEMENTED becomes `Unsupported` (the delivery engine
treats it as DROP), any other failure propagates (a retriable delivery error).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from enum import Enum
from typing import Any, Protocol, TypeVar

import anyio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Empty
from layotto.api.cel_match import CelError, CelSyntaxError, Match, compile_match
from layotto.backoff import backoff_delay
from layotto.errors import Unsupported
from layotto.services.cloudevents import EventStatus, TopicEvent, as_envelope
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

# Dapr's APP_API_TOKEN travels in this header on every call to the app.
API_TOKEN_HEADER = "dapr-api-token"

LIST_TIMEOUT_SECONDS = 5.0
# Answers that come from the connection, not from the app's own code (grpclib reports a
# reply without gRPC headers, e.g. from a closing server, as UNKNOWN).
# An app handler that raises also answers UNKNOWN: such answers are retried a few times only.
LIST_ATTEMPTS = 8
_TRANSPORT_STATUSES = frozenset({Status.UNAVAILABLE, Status.UNKNOWN, Status.DEADLINE_EXCEEDED})
_TRANSPORT_ERRORS = (OSError, StreamTerminatedError, ProtocolError, TimeoutError)
CONNECT_POLL_SECONDS = 0.2

# Dapr's bulk subscribe defaults (BulkSubscribeConfig with zero fields).
DEFAULT_BULK_MAX_MESSAGES = 100
DEFAULT_BULK_MAX_AWAIT_MS = 1000

HEALTH_CHECK_PATH = "/dapr.proto.runtime.v1.AppCallbackHealthCheck/HealthCheck"

_T = TypeVar("_T")
_Reply = TypeVar("_Reply")


def app_call_metadata(api_token: str | None) -> dict[str, str]:
    """The gRPC metadata every call to the app carries: the app token, when one is set."""
    return {API_TOKEN_HEADER: api_token} if api_token else {}


# -- subscriptions -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RouteRule:
    """One Dapr routing rule. `compiled` is None when the expression was refused: such a
    rule never matches."""

    match: str
    path: str
    compiled: Match | None

    def matches(self, envelope: Mapping[str, Any]) -> bool:
        if self.compiled is None:
            return False
        try:
            return self.compiled(envelope)
        except CelError as err:
            # daprd would fail the delivery (and redeliver for ever); a rule that cannot be
            # evaluated for this event is skipped instead, so the next rule may route it.
            log.debug("rule %r does not apply: %s", self.match, err)
            return False


def compile_rule(match: str, path: str, where: str) -> RouteRule:
    """A routing rule, its expression compiled now: an expression outside the supported
    subset is refused with a log naming the subscription, and the rule never matches."""
    if not match.strip():
        return RouteRule(match, path, _ALWAYS)
    try:
        return RouteRule(match, path, compile_match(match))
    except CelSyntaxError as err:
        log.error(
            "%s: routing rule %r (path %r) is refused and will never match: %s",
            where,
            match,
            path,
            err,
        )
        return RouteRule(match, path, None)


_ALWAYS = Match("true", lambda _event: True)


@dataclass(frozen=True, slots=True)
class BulkSubscribe:
    max_messages: int = DEFAULT_BULK_MAX_MESSAGES
    max_await_seconds: float = DEFAULT_BULK_MAX_AWAIT_MS / 1000


@dataclass(frozen=True, slots=True)
class AppSubscription:
    pubsub_name: str
    topic: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    # Dapr routing: the rules in order, then `default_path`. No rules means every event
    # goes to `default_path` ("" unless set); with rules and no default, an event that
    # matches none is not delivered (dead-lettered when a topic is set, else dropped).
    rules: tuple[RouteRule, ...] = ()
    default_path: str = ""
    dead_letter_topic: str = ""
    bulk: BulkSubscribe | None = None

    def route(self, event: TopicEvent) -> str | None:
        """The path `event` is delivered to, or None when no route takes it."""
        if not self.rules:
            return self.default_path
        envelope = as_envelope(event)
        for rule in self.rules:
            if rule.matches(envelope):
                return rule.path
        return self.default_path or None

    def rules_info(self) -> list[dict[str, str]]:
        """Dapr's metadata shape: a flat list, empty fields left out, the default last."""
        rules = [{"match": r.match, "path": r.path} for r in self.rules]
        if self.default_path:
            rules.append({"path": self.default_path})
        return [{k: v for k, v in rule.items() if v} for rule in rules]


# -- the protocol --------------------------------------------------------------------------


class AppHealthProbe(Enum):
    HEALTHY = "healthy"
    UNHEALTHY = "unhealthy"
    NOT_OFFERED = "not offered"  # the app does not serve AppCallbackHealthCheck


class AppChannel(Protocol):
    """The app as the dispatcher sees it. `deliver*` answer the app's status per event (an
    unknown number stays an int, which is redelivered) or raise as the module docstring
    says."""

    @property
    def surface(self) -> str:
        """Which callback API is used: "dapr" or "layotto"."""
        ...

    async def wait_until_listening(self) -> None: ...

    async def check_health(self, within: float) -> AppHealthProbe:
        """Dapr's `AppCallbackHealthCheck/HealthCheck`, which an app of either API may serve."""
        ...

    async def list_subscriptions(self) -> list[AppSubscription]: ...

    async def deliver(
        self, event: TopicEvent, subscription: AppSubscription
    ) -> EventStatus | int: ...

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]: ...

    def close(self) -> None: ...


def to_status(value: int) -> EventStatus | int:
    """The app's status; an unknown number stays an int (the engine redelivers it)."""
    try:
        return EventStatus(value)
    except ValueError:
        return value


@contextmanager
def delivery_errors(what: str) -> Iterator[None]:
    """Translate a delivery call's failure (see the module docstring)."""
    try:
        yield
    except GRPCError as err:
        if err.status is Status.UNIMPLEMENTED:
            raise Unsupported(f"the app does not implement {what}") from None
        if err.status is Status.UNAVAILABLE:
            raise AppUnavailable(err.message or "UNAVAILABLE") from None
        raise
    except (ConnectionError, OSError, StreamTerminatedError, ProtocolError) as err:
        raise AppUnavailable(f"{type(err).__name__}: {err}") from None


# -- the connection ------------------------------------------------------------------------


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
    """One HTTP/2 connection to the app, shared by every call of every surface (grpclib
    multiplexes), with the app token on each."""

    def __init__(self, host: str, port: int, *, api_token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.metadata = app_call_metadata(api_token)
        self.channel = Channel(host, port)

    def close(self) -> None:
        self.channel.close()

    async def wait_until_listening(self) -> None:
        """Poll the app's port until it accepts connections (the app may start after us)."""
        logged = False
        while True:
            try:
                with anyio.fail_after(1.0):
                    stream = await anyio.connect_tcp(self.host, self.port)
                await stream.aclose()
                return
            except (OSError, TimeoutError, socket.gaierror):
                if not logged:
                    log.info("waiting for the app's callback port %s:%d", self.host, self.port)
                    logged = True
                await anyio.sleep(CONNECT_POLL_SECONDS)

    async def ask(self, call: Callable[[], Awaitable[_T]], what: str) -> _T | None:
        """A startup question to the app: its answer, or None when the app answers
        UNIMPLEMENTED (it does not serve that service). A transport failure (the app
        restarting, not listening yet) is asked again with backoff, so the sidecar does not
        start without subscriptions because the app blinked; any other error the app
        answers counts as UNIMPLEMENTED, as upstream."""
        attempt = 0
        while True:
            try:
                return await call()
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED:
                    return None
                if err.status not in _TRANSPORT_STATUSES or attempt >= LIST_ATTEMPTS:
                    log.warning("%s failed (%s: %s)", what, err.status.name, err.message)
                    return None
                reason = f"{err.status.name}: {err.message}"
            except (*_TRANSPORT_ERRORS, anyio.BrokenResourceError) as err:
                reason = type(err).__name__
            log.info("%s failed (%s); asking the app again", what, reason)
            await anyio.sleep(backoff_delay(attempt, base=0.1, cap=2.0))
            attempt += 1
            await self.wait_until_listening()

    async def check_health(self, within: float) -> AppHealthProbe:
        """Dapr's `AppCallbackHealthCheck/HealthCheck`, once, within `within` seconds."""
        try:
            await _isolated(
                lambda: call_unary(
                    self.channel,
                    HEALTH_CHECK_PATH,
                    Empty(),
                    dapr.HealthCheckResponse,
                    within=within,
                    metadata=self.metadata,
                )
            )
        except GRPCError as err:
            if err.status is Status.UNIMPLEMENTED:
                return AppHealthProbe.NOT_OFFERED
            log.debug("app health check: %s %s", err.status.name, err.message)
            return AppHealthProbe.UNHEALTHY
        except (*_TRANSPORT_ERRORS, anyio.BrokenResourceError) as err:
            log.debug("app health check: %s", type(err).__name__)
            return AppHealthProbe.UNHEALTHY
        return AppHealthProbe.HEALTHY


async def _isolated(call: Callable[[], Awaitable[_T]]) -> _T:
    """Run a grpclib call in a throwaway task: grpclib wakes a stream's waiters by cancelling
    them, and after an error such a cancel can arrive late, at the caller's next await. A
    long-lived caller (the health prober) must not receive it."""
    outcome: list[_T] = []
    failure: list[Exception] = []

    async def run() -> None:
        try:
            outcome.append(await call())
        except Exception as err:
            failure.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
    if failure:
        raise failure[0]
    if not outcome:
        raise StreamTerminatedError("the call was cancelled")
    return outcome[0]
