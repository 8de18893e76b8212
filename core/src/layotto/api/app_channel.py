"""What the pub/sub dispatcher needs from the app, whichever callback API the app serves
(Layotto's `spec.proto.runtime.v1.AppCallback` or Dapr's `dapr.proto.runtime.v1.AppCallback`):
the `AppChannel` protocol and the subscriptions it lists. Both APIs share the one
`AppConnection` (`app_connection`); an app on Dapr's HTTP app channel is another
`AppChannel` (`http_app_channel`, with errors translated in `http_app_connection`).

Errors are translated at this edge (`delivery_errors`): an app that cannot be reached becomes
`AppUnavailable` (waited for, no retry used up), UNIMPLEMENTED becomes `Unsupported` (the
delivery engine treats it as DROP), any other failure propagates (a retriable delivery error),
an answer later than the delivery timeout included.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Protocol

from grpclib import GRPCError
from grpclib.const import Status
from grpclib.exceptions import ProtocolError, StreamTerminatedError

from layotto.api.cel_match import CelError, CelSyntaxError, Match, compile_match
from layotto.config_subscriptions import DeclaredSubscription
from layotto.errors import Unsupported
from layotto.plugin import RAW_PAYLOAD_METADATA
from layotto.services.cloudevents import EventStatus, TopicEvent, as_envelope
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

# Dapr's bulk subscribe defaults (BulkSubscribeConfig with zero fields).
DEFAULT_BULK_MAX_MESSAGES = 100
DEFAULT_BULK_MAX_AWAIT_MS = 1000


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

    @classmethod
    def of(cls, max_messages: int, max_await_ms: int) -> BulkSubscribe:
        """Dapr's bulk settings, a count or wait that is not positive meaning the default."""
        return cls(
            max_messages=max_messages if max_messages > 0 else DEFAULT_BULK_MAX_MESSAGES,
            max_await_seconds=(max_await_ms if max_await_ms > 0 else DEFAULT_BULK_MAX_AWAIT_MS)
            / 1000,
        )


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
    # Dapr's subscription type, as metadata shows it: the app listed it (PROGRAMMATIC) or the
    # operator declared it (DECLARATIVE).
    origin: str = "PROGRAMMATIC"
    # Whether events go to the app as raw payloads (not CloudEvents), read once from metadata.
    raw_payload: bool = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        raw = (self.metadata.get(RAW_PAYLOAD_METADATA) or "").strip().lower()
        object.__setattr__(self, "raw_payload", raw in ("1", "true", "yes", "on"))

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


def declared_subscription(declared: DeclaredSubscription) -> AppSubscription:
    """A declarative subscription as the dispatcher delivers it: like one the app listed."""
    where = f"{declared.source}: subscription {declared.name!r}"
    bulk = None
    if declared.bulk is not None:
        bulk = BulkSubscribe.of(declared.bulk.max_messages, declared.bulk.max_await_ms)
    return AppSubscription(
        declared.pubsub_name,
        declared.topic,
        dict(declared.metadata),
        rules=tuple(compile_rule(r.match, r.path, where) for r in declared.rules),
        default_path=declared.default_path,
        dead_letter_topic=declared.dead_letter_topic,
        bulk=bulk,
        origin="DECLARATIVE",
    )


# -- the protocol --------------------------------------------------------------------------


class AppChannel(Protocol):
    """The app as the dispatcher sees it. `deliver*` answer the app's status per event (an
    unknown number stays an int, which is redelivered) or raise as the module docstring
    says."""

    @property
    def surface(self) -> str:
        """Which callback API is used: "dapr", "layotto" (gRPC) or "http" (Dapr's HTTP app
        channel, `http_app_channel`)."""
        ...

    async def list_subscriptions(self) -> list[AppSubscription]: ...

    async def deliver(
        self, event: TopicEvent, subscription: AppSubscription
    ) -> EventStatus | int: ...

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]: ...


def route_or_log(event: TopicEvent, subscription: AppSubscription) -> str | None:
    """`subscription.route(event)`, logged when no route takes the event."""
    path = subscription.route(event)
    if path is None:
        log.info(
            "event %s on %s/%s matches no route: not delivered",
            event.id,
            subscription.pubsub_name,
            subscription.topic,
        )
    return path


# A bulk delivery to one route: its events and an entry id for each, answering the app's
# status per entry id it answered for.
BulkDelivery = Callable[
    [Sequence[TopicEvent], Sequence[str], AppSubscription, str],
    Awaitable[Mapping[str, EventStatus | int]],
]


async def deliver_by_route(
    events: Sequence[TopicEvent], subscription: AppSubscription, deliver: BulkDelivery
) -> list[EventStatus | int]:
    """A bulk delivery: `deliver` called once per matched route (usually one) with that
    route's events, statuses answered in `events`' order; an event no route takes is DROP,
    an entry the app does not answer for is RETRY."""
    statuses: list[EventStatus | int] = [EventStatus.DROP] * len(events)
    by_path: dict[str, list[int]] = {}
    for index, event in enumerate(events):
        path = route_or_log(event, subscription)
        if path is not None:
            by_path.setdefault(path, []).append(index)
    for path, indexes in by_path.items():
        entry_ids = [str(uuid.uuid4()) for _ in indexes]
        answered = await deliver([events[i] for i in indexes], entry_ids, subscription, path)
        for index, entry_id in zip(indexes, entry_ids, strict=True):
            statuses[index] = answered.get(entry_id, EventStatus.RETRY)
    return statuses


def cloudevent_fields(event: TopicEvent) -> dict[str, Any]:
    """The CloudEvent attributes as the callback protos (Layotto's and Dapr's) name them."""
    return {
        "id": event.id,
        "source": event.source,
        "type": event.type,
        "spec_version": event.specversion,
        "data_content_type": event.datacontenttype,
        "data": event.data,
    }


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
    except TimeoutError:
        # An app too slow to answer is a failed delivery that uses up a retry, not an app
        # that cannot be reached (TimeoutError is an OSError).
        raise
    except (OSError, StreamTerminatedError, ProtocolError) as err:
        raise AppUnavailable(f"{type(err).__name__}: {err}") from None
