"""Dapr's pub/sub RPCs: PublishEvent, BulkPublishEvent(Alpha1), SubscribeTopicEventsAlpha1.

Published events get Dapr's envelope (`source` = this app id, `type` = `com.dapr.event.sent`,
`.bulk` for bulk entries; dapr-compat.md 3.2). A bulk publish sends each entry with its own
content type and metadata over the request's, and lists the entries that failed rather than
failing the call. The topic stream is the shared streaming engine (`api/pubsub_grpc.py`) with
Dapr's messages; delivered events carry the envelope's other keys as `extensions`.
"""

from __future__ import annotations

import logging

import anyio
from grpclib.server import Stream

from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto._proto.google.protobuf import Empty
from layotto.api.dapr_app_callback import to_topic_event_request
from layotto.api.pubsub_grpc import (
    TRACEPARENT_HEADER,
    StreamAck,
    StreamOpen,
    TopicStreamEngine,
    event_status,
    text_header,
)
from layotto.api.rich_errors import about
from layotto.services.cloudevents import EnvelopeStyle, EventStatus, TopicEvent, dapr_style
from layotto.services.pubsub import BulkEntry, PubSubService

log = logging.getLogger(__name__)

BULK_EVENT_TYPE = "com.dapr.event.sent.bulk"
RESOURCE = "pubsub"

PublishStream = Stream[pb.PublishEventRequest, Empty]


class DaprPublishHandler:
    """PublishEvent; a stream handler so the caller's `traceparent` header reaches the
    envelope."""

    def __init__(self, service: PubSubService, app_id: str) -> None:
        self._service = service
        self._style = dapr_style(app_id)

    async def handle(self, stream: PublishStream) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends a unary call without a message itself
        with about(RESOURCE, request.pubsub_name):
            await self._service.publish(
                request.pubsub_name,
                request.topic,
                request.data,
                content_type=request.data_content_type,
                metadata=request.metadata,
                style=self._style,
                traceparent=text_header(stream, TRACEPARENT_HEADER),
            )
        await stream.send_message(Empty())


class DaprBulkPublisher:
    def __init__(self, service: PubSubService, app_id: str) -> None:
        self._service = service
        self._style = EnvelopeStyle(app_id, BULK_EVENT_TYPE)

    async def publish(self, request: pb.BulkPublishRequest) -> pb.BulkPublishResponse:
        entries = [
            BulkEntry(e.entry_id, e.event, e.content_type, dict(e.metadata))
            for e in request.entries
        ]
        with about(RESOURCE, request.pubsub_name):
            failures = await self._service.publish_bulk(
                request.pubsub_name,
                request.topic,
                entries,
                metadata=request.metadata,
                style=self._style,
            )
        if failures:
            log.warning(
                "bulk publish to %s/%s: %d of %d entries failed",
                request.pubsub_name,
                request.topic,
                len(failures),
                len(entries),
            )
        return pb.BulkPublishResponse(
            failed_entries=[
                pb.BulkPublishResponseFailedEntry(entry_id=f.entry_id, error=f.error)
                for f in failures
            ]
        )


class DaprTopicMessages:
    """`SubscribeTopicEventsAlpha1`'s messages."""

    def opening(self, request: pb.SubscribeTopicEventsRequestAlpha1) -> StreamOpen | None:
        return StreamOpen.of(request.initial_request)

    def ack(self, request: pb.SubscribeTopicEventsRequestAlpha1) -> StreamAck | None:
        processed = request.event_processed
        if processed is None:
            return None
        # No status is an empty reply: SUCCESS (dapr-compat.md 0.5).
        status = processed.status
        return StreamAck(
            processed.id,
            event_status(int(status.status)) if status is not None else EventStatus.SUCCESS,
        )

    def initial_response(self) -> pb.SubscribeTopicEventsResponseAlpha1:
        return pb.SubscribeTopicEventsResponseAlpha1(
            initial_response=pb.SubscribeTopicEventsResponseInitialAlpha1()
        )

    def event_message(self, event: TopicEvent) -> pb.SubscribeTopicEventsResponseAlpha1:
        # A streaming subscription has no routes: the path is empty.
        return pb.SubscribeTopicEventsResponseAlpha1(
            event_message=to_topic_event_request(event, path="")
        )


class DaprTopicEventStreams(
    TopicStreamEngine[pb.SubscribeTopicEventsRequestAlpha1, pb.SubscribeTopicEventsResponseAlpha1]
):
    def __init__(self, service: PubSubService, drain_started: anyio.Event) -> None:
        super().__init__(service, drain_started, DaprTopicMessages())
