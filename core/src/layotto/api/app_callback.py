"""The sidecar as a client of the app's callback service.

`AppCallbackClient` is the `AppChannel` the dispatcher uses. It serves the app through the
API the app speaks (`app.protocol`): Layotto's `spec.proto.runtime.v1.AppCallback` (here) or
Dapr's `dapr.proto.runtime.v1.AppCallback` (`dapr_app_callback`). With `auto` it asks Dapr's
`ListTopicSubscriptions` first and Layotto's when that is UNIMPLEMENTED (the service is not
served); the surface that answered delivers. Every call carries the app token
(`app_call_metadata`, Dapr's APP_API_TOKEN as `dapr-api-token`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Literal

from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.app_channel import (
    LIST_TIMEOUT_SECONDS,
    AppConnection,
    AppHealthProbe,
    AppSubscription,
    app_call_metadata,
    call_unary,
    delivery_errors,
)
from layotto.api.app_channel import to_status as _to_status
from layotto.api.dapr_app_callback import DaprAppChannel
from layotto.errors import Unsupported
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_delivery import AppUnavailable

__all__ = [
    "AppCallbackClient",
    "AppSubscription",
    "LayottoAppChannel",
    "app_call_metadata",
    "to_status",
    "to_topic_event_request",
]

log = logging.getLogger(__name__)

AppProtocol = Literal["auto", "dapr", "layotto"]

LIST_PATH = "/spec.proto.runtime.v1.AppCallback/ListTopicSubscriptions"
ON_TOPIC_EVENT_PATH = "/spec.proto.runtime.v1.AppCallback/OnTopicEvent"


def to_topic_event_request(event: TopicEvent) -> pb.TopicEventRequest:
    return pb.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.specversion,
        data_content_type=event.datacontenttype,
        data=event.data,
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
        connection = self._connection
        response = await connection.ask(
            lambda: call_unary(
                connection.channel,
                LIST_PATH,
                Empty(),
                pb.ListTopicSubscriptionsResponse,
                within=LIST_TIMEOUT_SECONDS,
                metadata=connection.metadata,
            ),
            "ListTopicSubscriptions (Layotto)",
        )
        if response is None:
            return None
        return [
            AppSubscription(s.pubsub_name, s.topic, dict(s.metadata))
            for s in response.subscriptions
        ]

    async def deliver(self, event: TopicEvent, subscription: AppSubscription) -> EventStatus | int:
        with delivery_errors("OnTopicEvent"):
            response = await call_unary(
                self._connection.channel,
                ON_TOPIC_EVENT_PATH,
                to_topic_event_request(event),
                pb.TopicEventResponse,
                within=self._timeout,
                metadata=self._connection.metadata,
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
    """The app's callback service over one connection, through the surface the app serves."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        protocol: AppProtocol = "auto",
        api_token: str | None = None,
        delivery_timeout: float = 60.0,
    ) -> None:
        self._connection = AppConnection(host, port, api_token=api_token)
        self._protocol = protocol
        self._layotto = LayottoAppChannel(self._connection, delivery_timeout=delivery_timeout)
        self._dapr = DaprAppChannel(self._connection, delivery_timeout=delivery_timeout)
        self._selected: LayottoAppChannel | DaprAppChannel = (
            self._layotto if protocol == "layotto" else self._dapr
        )

    @property
    def host(self) -> str:
        return self._connection.host

    @property
    def port(self) -> int:
        return self._connection.port

    @property
    def surface(self) -> str:
        return self._selected.surface

    def close(self) -> None:
        self._connection.close()

    async def wait_until_listening(self) -> None:
        await self._connection.wait_until_listening()

    async def check_health(self, within: float) -> AppHealthProbe:
        return await self._connection.check_health(within)

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
