"""Pub/sub from the app's side, for end-to-end tests and benchmarks: an app callback server,
PublishEvent that returns the message id, Dapr's BulkPublishEvent, and a SubscribeTopicEvents
subscriber.

All of it speaks real gRPC (grpclib) to a sidecar over sockets; handlers see `TopicEvent`s and
answer an `EventStatus` (raising counts as an error, which the sidecar redelivers).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, StreamTerminatedError
from grpclib.server import Server

from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.app_connection import isolated
from layotto.plugin import BulkPublishEntry
from layotto.services.cloudevents import EventStatus, TopicEvent

log = logging.getLogger(__name__)

Handler = Callable[[TopicEvent], Awaitable[EventStatus]]

PUBLISH_PATH = "/spec.proto.runtime.v1.Runtime/PublishEvent"
SUBSCRIBE_PATH = "/spec.proto.runtime.v1.Runtime/SubscribeTopicEvents"
MESSAGE_ID_HEADER = "message-id"


def event_from_pb(request: pb.TopicEventRequest) -> TopicEvent:
    return TopicEvent(
        id=request.id,
        source=request.source,
        type=request.type,
        specversion=request.spec_version,
        datacontenttype=request.data_content_type,
        data=request.data,
        topic=request.topic,
        pubsubname=request.pubsub_name,
        metadata=dict(request.metadata),
    )


async def publish(
    channel: Channel,
    pubsub_name: str,
    topic: str,
    data: bytes,
    *,
    metadata: Mapping[str, str] | None = None,
    content_type: str = "application/json",
    within: float = 10.0,
) -> str:
    """PublishEvent; returns the event id from the `message-id` response header."""
    return await isolated(
        lambda: _publish(channel, pubsub_name, topic, data, metadata, content_type, within)
    )


async def _publish(
    channel: Channel,
    pubsub_name: str,
    topic: str,
    data: bytes,
    metadata: Mapping[str, str] | None,
    content_type: str,
    within: float,
) -> str:
    request = pb.PublishEventRequest(
        pubsub_name=pubsub_name,
        topic=topic,
        data=data,
        data_content_type=content_type,
        metadata=dict(metadata or {}),
    )
    async with channel.request(
        PUBLISH_PATH, Cardinality.UNARY_UNARY, pb.PublishEventRequest, Empty, timeout=within
    ) as stream:
        await stream.send_message(request, end=True)
        await stream.recv_initial_metadata()
        headers: Mapping[str, Any] = stream.initial_metadata or {}
        await stream.recv_message()
        await stream.recv_trailing_metadata()
    message_id = headers.get(MESSAGE_ID_HEADER)
    return message_id if isinstance(message_id, str) else ""


async def publish_bulk(
    channel: Channel,
    pubsub_name: str,
    topic: str,
    entries: Sequence[BulkPublishEntry],
    *,
    within: float = 10.0,
) -> dict[str, str]:
    """Dapr's BulkPublishEvent; returns the entries that failed, entry id -> error."""
    request = dapr_pb.BulkPublishRequest(
        pubsub_name=pubsub_name,
        topic=topic,
        entries=[
            dapr_pb.BulkPublishRequestEntry(
                entry_id=e.entry_id,
                event=e.data,
                content_type=e.content_type,
                metadata=dict(e.metadata),
            )
            for e in entries
        ],
    )
    stub = dapr_pb.DaprStub(channel)
    response = await isolated(lambda: stub.bulk_publish_event(request, timeout=within))
    return {f.entry_id: f.error for f in response.failed_entries}


@dataclass
class Route:
    pubsub_name: str
    topic: str
    handler: Handler
    metadata: Mapping[str, str] = field(default_factory=dict)


class CallbackApp(pb.AppCallbackBase):
    """An app callback server: `ListTopicSubscriptions` lists `routes`; `OnTopicEvent` calls
    the route's handler. A handler that raises answers INTERNAL (the sidecar redelivers)."""

    def __init__(self, routes: list[Route] | None = None) -> None:
        self.routes: list[Route] = list(routes or [])

    async def list_topic_subscriptions(self, message: Empty) -> pb.ListTopicSubscriptionsResponse:
        return pb.ListTopicSubscriptionsResponse(
            subscriptions=[
                pb.TopicSubscription(
                    pubsub_name=r.pubsub_name, topic=r.topic, metadata=dict(r.metadata)
                )
                for r in self.routes
            ]
        )

    async def on_topic_event(self, message: pb.TopicEventRequest) -> pb.TopicEventResponse:
        for route in self.routes:
            if route.pubsub_name == message.pubsub_name and route.topic == message.topic:
                try:
                    status = await route.handler(event_from_pb(message))
                except Exception as err:
                    raise GRPCError(Status.INTERNAL, f"handler failed: {err}") from None
                return pb.TopicEventResponse(
                    status=pb.TopicEventResponseTopicEventResponseStatus(int(status))
                )
        raise GRPCError(Status.NOT_FOUND, f"no route for {message.pubsub_name}/{message.topic}")


@asynccontextmanager
async def serve_app(app: Any, host: str = "127.0.0.1", port: int = 0) -> AsyncIterator[int]:
    """Serve `app` (an AppCallback servicer); yields the bound port."""
    server = Server([app])
    await server.start(host, port)
    listener: Any = server._server  # grpclib does not expose the bound port
    bound = int(listener.sockets[0].getsockname()[1])
    try:
        yield bound
    finally:
        with anyio.CancelScope(shield=True), anyio.move_on_after(5):
            server.close()
            await server.wait_closed()


class _StreamClosed(Exception):
    """Ends a subscriber's request context, so grpclib resets the stream."""


@asynccontextmanager
async def topic_stream(
    channel: Channel,
    pubsub_name: str,
    topic: str,
    handler: Handler,
    *,
    metadata: Mapping[str, str] | None = None,
    dead_letter_topic: str | None = None,
) -> AsyncIterator[None]:
    """A SubscribeTopicEvents subscriber: returns once `initial_response` arrived; each event is
    handled (concurrently) and answered with `event_processed`; leaving the block cancels the
    stream, so events not answered yet stay un-acked."""
    # The stream lives in a task of its own (see `isolated`); this one only waits on it.
    ready = anyio.Event()
    close = anyio.Event()
    failure: list[Exception] = []

    async def run() -> None:
        try:
            async with _subscriber(
                channel, pubsub_name, topic, handler, metadata, dead_letter_topic
            ):
                ready.set()
                await close.wait()
        except _StreamClosed:
            pass
        except Exception as err:
            failure.append(err)
        finally:
            ready.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(run)
        await ready.wait()
        if failure:
            raise failure[0]
        try:
            yield
        finally:
            close.set()


@asynccontextmanager
async def _subscriber(
    channel: Channel,
    pubsub_name: str,
    topic: str,
    handler: Handler,
    metadata: Mapping[str, str] | None,
    dead_letter_topic: str | None,
) -> AsyncIterator[None]:
    async with channel.request(
        SUBSCRIBE_PATH,
        Cardinality.STREAM_STREAM,
        pb.SubscribeTopicEventsRequest,
        pb.SubscribeTopicEventsResponse,
    ) as stream:
        initial = pb.SubscribeTopicEventsRequestInitial(
            pubsub_name=pubsub_name,
            topic=topic,
            metadata=dict(metadata or {}),
            dead_letter_topic=dead_letter_topic,
        )
        await stream.send_message(pb.SubscribeTopicEventsRequest(initial_request=initial))
        first = await stream.recv_message()
        if first is None or first.initial_response is None:
            raise RuntimeError(f"expected initial_response, got {first!r}")
        send_lock = anyio.Lock()

        async def answer(request: pb.TopicEventRequest) -> None:
            try:
                status = await handler(event_from_pb(request))
            except Exception:
                log.info("handler failed for %s: answering RETRY", request.id, exc_info=True)
                status = EventStatus.RETRY
            processed = pb.SubscribeTopicEventsRequestProcessed(
                id=request.id,
                status=pb.TopicEventResponse(
                    status=pb.TopicEventResponseTopicEventResponseStatus(int(status))
                ),
            )
            async with send_lock:
                await stream.send_message(pb.SubscribeTopicEventsRequest(event_processed=processed))

        async def receive(tg: Any) -> None:
            with contextlib.suppress(StreamTerminatedError):
                while True:
                    response = await stream.recv_message()
                    if response is None:
                        return
                    if response.event_message is not None:
                        tg.start_soon(answer, response.event_message)

        async with anyio.create_task_group() as tg:
            tg.start_soon(receive, tg)
            try:
                yield
            finally:
                tg.cancel_scope.cancel()
        # Leaving the request with an error resets the HTTP/2 stream: the sidecar sees the
        # subscriber gone. (`stream.cancel()` would have grpclib cancel the calling task.)
        raise _StreamClosed
