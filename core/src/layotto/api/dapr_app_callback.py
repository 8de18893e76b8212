"""Dapr's `dapr.proto.runtime.v1.AppCallback` as an `AppChannel` (dapr-compat.md §1.4, §2.7,
§3.2): subscriptions with routing rules, dead-letter topics and bulk subscribe; `OnTopicEvent`
with the matched route as `path` and the envelope's extensions; `OnBulkTopicEvent`, falling
back to `AppCallbackAlpha/OnBulkTopicEventAlpha1` on UNIMPLEMENTED.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from grpclib import GRPCError
from grpclib.const import Status

from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Struct
from layotto.api.app_channel import (
    AppSubscription,
    BulkSubscribe,
    cloudevent_fields,
    compile_rule,
    deliver_by_route,
    delivery_errors,
    route_or_log,
    to_status,
)
from layotto.api.app_connection import AppConnection
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.tracing import current_traceparent

log = logging.getLogger(__name__)

BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"
LIST_PATH = "/dapr.proto.runtime.v1.AppCallback/ListTopicSubscriptions"
ON_TOPIC_EVENT_PATH = "/dapr.proto.runtime.v1.AppCallback/OnTopicEvent"
ON_BULK_PATH = "/dapr.proto.runtime.v1.AppCallback/OnBulkTopicEvent"
# The deprecated name, for apps built before OnBulkTopicEvent was stable.
ALPHA_BULK_PATH = "/dapr.proto.runtime.v1.AppCallbackAlpha/OnBulkTopicEventAlpha1"

# Message headers that can travel as gRPC metadata (grpclib raises on anything else); names
# gRPC reserves and the token header (ours alone) are left out.
_HEADER_KEY = re.compile(r"[0-9a-z_.\-]+")
_HEADER_VALUE = re.compile(r"[ !-~]*")
_RESERVED = frozenset({"te", "content-type", "user-agent", "dapr-api-token"})


def to_subscription(sub: dapr.TopicSubscription) -> AppSubscription:
    where = f"subscription {sub.pubsub_name}/{sub.topic}"
    routes = sub.routes or dapr.TopicRoutes()
    bulk = None
    if sub.bulk_subscribe is not None and sub.bulk_subscribe.enabled:
        bulk = BulkSubscribe.of(
            sub.bulk_subscribe.max_messages_count, sub.bulk_subscribe.max_await_duration_ms
        )
    return AppSubscription(
        sub.pubsub_name,
        sub.topic,
        dict(sub.metadata),
        rules=tuple(compile_rule(r.match, r.path, where) for r in routes.rules),
        default_path=routes.default,
        dead_letter_topic=sub.dead_letter_topic.strip(),
        bulk=bulk,
    )


def _json_value(value: Any) -> Any:
    """`value` as something google.protobuf.Value holds (envelope extensions come from JSON,
    so this only guards against the odd non-JSON value)."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Mapping):
        return {str(k): _json_value(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_value(v) for v in value]
    return str(value)


def extensions_struct(extensions: Mapping[str, Any]) -> Struct:
    return Struct.from_dict(_json_value(extensions))


def to_topic_event_request(event: TopicEvent, path: str) -> dapr.TopicEventRequest:
    return dapr.TopicEventRequest(
        **cloudevent_fields(event),
        topic=event.topic,
        pubsub_name=event.pubsubname,
        path=path,
        extensions=extensions_struct(event.extensions),
    )


def to_bulk_entry(event: TopicEvent, entry_id: str, raw: bool) -> dapr.TopicEventBulkRequestEntry:
    if raw:
        return dapr.TopicEventBulkRequestEntry(
            entry_id=entry_id,
            bytes=event.data,
            content_type=event.datacontenttype,
            metadata=dict(event.metadata),
        )
    return dapr.TopicEventBulkRequestEntry(
        entry_id=entry_id,
        cloud_event=dapr.TopicEventCeRequest(
            **cloudevent_fields(event),
            extensions=extensions_struct(event.extensions),
        ),
        content_type=event.datacontenttype,
        metadata=dict(event.metadata),
    )


def event_headers(event: TopicEvent) -> dict[str, str]:
    """The message's metadata as call headers (as daprd sends them), and its trace context:
    the delivery's span when tracing is on, else the event's `traceparent`."""
    headers: dict[str, str] = {}
    for name, value in event.metadata.items():
        key = name.lower()
        if (
            key not in _RESERVED
            and not key.startswith(("grpc-", ":"))
            and not key.endswith("-bin")
            and _HEADER_KEY.fullmatch(key)
            and isinstance(value, str)
            and _HEADER_VALUE.fullmatch(value)
        ):
            headers[key] = value
    headers.update(trace_headers(event))
    return headers


def trace_headers(event: TopicEvent) -> dict[str, str]:
    """The delivery's trace context as call headers: its span when tracing is on, else the
    event's `traceparent` (none when it has no valid one)."""
    traceparent = current_traceparent() or event.extensions.get("traceparent")
    if isinstance(traceparent, str) and _HEADER_VALUE.fullmatch(traceparent):
        return {"traceparent": traceparent}
    return {}


class DaprAppChannel:
    surface = "dapr"

    def __init__(self, connection: AppConnection, *, delivery_timeout: float) -> None:
        self._connection = connection
        self._timeout = delivery_timeout

    async def ask_subscriptions(self) -> list[AppSubscription] | None:
        """The app's subscriptions; None when it does not serve Dapr's AppCallback."""
        response = await self._connection.ask(
            LIST_PATH, dapr.ListTopicSubscriptionsResponse, "ListTopicSubscriptions (Dapr)"
        )
        if response is None:
            return None
        return [to_subscription(s) for s in response.subscriptions]

    def _call_metadata(self, event: TopicEvent) -> dict[str, str]:
        # The token last: no message header may replace it.
        return {**event_headers(event), **self._connection.metadata}

    async def deliver(self, event: TopicEvent, subscription: AppSubscription) -> EventStatus | int:
        path = route_or_log(event, subscription)
        if path is None:
            return EventStatus.DROP
        with delivery_errors("OnTopicEvent"):
            response = await self._connection.call(
                ON_TOPIC_EVENT_PATH,
                to_topic_event_request(event, path),
                dapr.TopicEventResponse,
                within=self._timeout,
                metadata=self._call_metadata(event),
            )
        return to_status(int(response.status))

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]:
        """One OnBulkTopicEvent per matched route (see `deliver_by_route`)."""
        return await deliver_by_route(events, subscription, self._bulk)

    async def _bulk(
        self,
        events: Sequence[TopicEvent],
        entry_ids: Sequence[str],
        subscription: AppSubscription,
        path: str,
    ) -> dict[str, EventStatus | int]:
        raw = subscription.raw_payload
        request = dapr.TopicEventBulkRequest(
            id=str(uuid.uuid4()),
            entries=[to_bulk_entry(e, i, raw) for e, i in zip(events, entry_ids, strict=True)],
            topic=subscription.topic,
            pubsub_name=subscription.pubsub_name,
            type=BULK_EVENT_TYPE,
            path=path,
        )
        with delivery_errors("OnBulkTopicEvent"):
            try:
                response = await self._bulk_call(ON_BULK_PATH, request)
            except GRPCError as err:
                if err.status is not Status.UNIMPLEMENTED:
                    raise
                response = await self._bulk_call(ALPHA_BULK_PATH, request)
        return {s.entry_id: to_status(int(s.status)) for s in response.statuses}

    async def _bulk_call(
        self, path: str, request: dapr.TopicEventBulkRequest
    ) -> dapr.TopicEventBulkResponse:
        return await self._connection.call(
            path, request, dapr.TopicEventBulkResponse, within=self._timeout
        )
