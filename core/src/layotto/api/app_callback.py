"""The sidecar as a client of the app's callback service.

`AppCallbackClient` is the `AppChannel` the dispatcher uses. It serves the app through the
API the app speaks (`app.protocol`): Layotto's `spec.proto.runtime.v1.AppCallback` (here) or
Dapr's `dapr.proto.runtime.v1.AppCallback` (`dapr_app_callback`). With `auto` it asks Dapr's
`ListTopicSubscriptions` first and Layotto's when that is UNIMPLEMENTED (the service is not
served); the surface that answered delivers. Both share the app connection
(`app_connection`), so every call carries the app token. OnTopicEvent carries the delivery's
trace context as `traceparent` metadata on both (`trace_headers`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.app_channel import AppSubscription, cloudevent_fields, delivery_errors
from layotto.api.app_channel import to_status as _to_status
from layotto.api.app_connection import AppConnection
from layotto.api.dapr_app_callback import DaprAppChannel, trace_headers
from layotto.errors import Unsupported
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_delivery import AppUnavailable

__all__ = [
    "AppCallbackClient",
    "AppSubscription",
    "LayottoAppChannel",
    "to_status",
    "to_topic_event_request",
]

log = logging.getLogger(__name__)

AppProtocol = Literal["auto", "dapr", "layotto"]

LIST_PATH = "/spec.proto.runtime.v1.AppCallback/ListTopicSubscriptions"
ON_TOPIC_EVENT_PATH = "/spec.proto.runtime.v1.AppCallback/OnTopicEvent"


def to_topic_event_request(event: TopicEvent) -> pb.TopicEventRequest:
    return pb.TopicEventRequest(
        **cloudevent_fields(event),
        topic=event.topic,
        pubsub_name=event.pubsubname,
        metadata=dict(event.metadata),
    )


def to_status(response: pb.TopicEventResponse) -> EventStatus | int:
    """The app's status; an unknown number stays an int (the dispatcher redelivers it)."""
    return _to_status(int(response.status))


class LayottoAppChannel:
    """Layotto's AppCallback: no routing, no bulk delivery."""

    surface = "layotto"

    def __init__(self, connection: AppConnection, *, delivery_timeout: float) -> None:
        self._connection = connection
        self._timeout = delivery_timeout

    async def ask_subscriptions(self) -> list[AppSubscription] | None:
        """The app's subscriptions; None when it does not serve Layotto's AppCallback."""
        response = await self._connection.ask(
            LIST_PATH, pb.ListTopicSubscriptionsResponse, "ListTopicSubscriptions (Layotto)"
        )
        if response is None:
            return None
        return [
            AppSubscription(s.pubsub_name, s.topic, dict(s.metadata))
            for s in response.subscriptions
        ]

    async def deliver(self, event: TopicEvent, subscription: AppSubscription) -> EventStatus | int:
        with delivery_errors("OnTopicEvent"):
            response = await self._connection.call(
                ON_TOPIC_EVENT_PATH,
                to_topic_event_request(event),
                pb.TopicEventResponse,
                within=self._timeout,
                # The token last: no trace header may replace it.
                metadata={**trace_headers(event), **self._connection.metadata},
            )
        return to_status(response)

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]:
        """Layotto has no bulk callback: one OnTopicEvent per event. An app that cannot be
        reached fails the whole batch (every event waits for it)."""
        statuses: list[EventStatus | int] = []
        for event in events:
            try:
                statuses.append(await self.deliver(event, subscription))
            except Unsupported:
                statuses.append(EventStatus.DROP)
            except AppUnavailable:
                raise
            except Exception as err:
                log.warning("delivering event %s failed: %s", event.id, err)
                statuses.append(EventStatus.RETRY)
        return statuses


class AppCallbackClient:
    """The app's callback service, through the surface the app serves, over the shared
    connection (which the runtime owns and closes)."""

    def __init__(
        self,
        connection: AppConnection,
        *,
        protocol: AppProtocol = "auto",
        delivery_timeout: float = 60.0,
    ) -> None:
        self._protocol = protocol
        self._layotto = LayottoAppChannel(connection, delivery_timeout=delivery_timeout)
        self._dapr = DaprAppChannel(connection, delivery_timeout=delivery_timeout)
        self._selected: LayottoAppChannel | DaprAppChannel = (
            self._layotto if protocol == "layotto" else self._dapr
        )

    @property
    def surface(self) -> str:
        return self._selected.surface

    async def list_subscriptions(self) -> list[AppSubscription]:
        """The app's subscriptions (UNIMPLEMENTED means none); with `auto`, also picks the
        surface that answered."""
        candidates: list[LayottoAppChannel | DaprAppChannel] = [self._dapr, self._layotto]
        if self._protocol != "auto":
            candidates = [self._selected]
        for channel in candidates:
            subscriptions = await channel.ask_subscriptions()
            if subscriptions is not None:
                self._selected = channel
                log.info(
                    "the app serves %s's AppCallback",
                    channel.surface.capitalize(),
                    extra={"app_protocol": channel.surface},
                )
                return subscriptions
        log.info(
            "the app answers no ListTopicSubscriptions (%s): no subscriptions",
            " nor ".join(c.surface for c in candidates),
            extra={"app_protocol": self._selected.surface},
        )
        return []

    async def deliver(self, event: TopicEvent, subscription: AppSubscription) -> EventStatus | int:
        return await self._selected.deliver(event, subscription)

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]:
        return await self._selected.deliver_bulk(events, subscription)
