"""`PublishEvent` and `SubscribeTopicEvents` of `spec.proto.runtime.v1.Runtime`.

PublishEvent answers `google.protobuf.Empty` (the wire schema), and gives the published event's
id back in the `message-id` response header: the id the subscriber sees in
`TopicEventRequest.id`.

SubscribeTopicEvents (bidi, pull style; layotto-semantics.md §4.4, dapr-compat.md §2.5): the first
message must be `initial_request`; the sidecar subscribes, answers `initial_response`, then sends
each event as `event_message` and waits for `event_processed` with the same id. The status is
applied as for the app callback (SUCCESS acks, DROP drops or dead-letters, RETRY redelivers with
backoff; no answer within `pubsub.app_timeout` counts as a failure, so the event is sent again).
When the stream ends (EOF, cancel, error) every event not yet acknowledged stays un-acked at the
broker and comes back to the next subscription. When the sidecar drains, no new event goes out,
answers for events already sent are still taken until the grace period ends, then the stream
ends with UNAVAILABLE.
"""

from __future__ import annotations

from collections import defaultdict, deque
from typing import Any

import anyio
from grpclib.server import Stream

from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.app_callback import to_status, to_topic_event_request
from layotto.api.stream_errors import reraise_stream_failure
from layotto.errors import InvalidArgument, ShuttingDown
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub import PubSubService
from layotto.services.pubsub_delivery import CLOSE_TIMEOUT_SECONDS

MESSAGE_ID_HEADER = "message-id"
TRACEPARENT_HEADER = "traceparent"

PublishStream = Stream[pb.PublishEventRequest, Empty]
TopicStream = Stream[pb.SubscribeTopicEventsRequest, pb.SubscribeTopicEventsResponse]


def _header(stream: Stream[Any, Any], name: str) -> str | None:
    value = stream.metadata.get(name) if stream.metadata else None
    return value if isinstance(value, str) else None


class PublishHandler:
    def __init__(self, service: PubSubService) -> None:
        self._service = service

    async def handle(self, stream: PublishStream) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends a unary call without a message itself
        published = await self._service.publish(
            request.pubsub_name,
            request.topic,
            request.data,
            content_type=request.data_content_type,
            metadata=request.metadata,
            traceparent=_header(stream, TRACEPARENT_HEADER),
        )
        await stream.send_initial_metadata(metadata={MESSAGE_ID_HEADER: published.id})
        await stream.send_message(Empty())


class _Acks:
    """Events sent on the stream and waiting for their `event_processed`, by event id."""

    def __init__(self) -> None:
        self._waiting: defaultdict[str, deque[tuple[anyio.Event, list[int]]]] = defaultdict(deque)

    def expect(self, event_id: str) -> tuple[anyio.Event, list[int]]:
        entry: tuple[anyio.Event, list[int]] = (anyio.Event(), [])
        self._waiting[event_id].append(entry)
        return entry

    def forget(self, event_id: str, entry: tuple[anyio.Event, list[int]]) -> None:
        waiters = self._waiting.get(event_id)
        if waiters is not None and entry in waiters:
            waiters.remove(entry)
            if not waiters:
                del self._waiting[event_id]

    def answer(self, event_id: str, status: int) -> None:
        """An answer for an id nobody waits for (answered twice, or too late) is ignored."""
        waiters = self._waiting.get(event_id)
        if not waiters:
            return
        done, result = waiters.popleft()
        if not waiters:
            del self._waiting[event_id]
        result.append(status)
        done.set()


class TopicEventStreams:
    def __init__(self, service: PubSubService, drain_started: anyio.Event) -> None:
        self._service = service
        self._drain_started = drain_started

    async def handle(self, stream: TopicStream) -> None:
        first = await stream.recv_message()
        initial = first.initial_request if first is not None else None
        if initial is None:
            raise InvalidArgument("initial request is required")
        if not initial.pubsub_name:
            raise InvalidArgument("pubsubName is required")
        if not initial.topic:
            raise InvalidArgument("topic is required")
        acks = _Acks()
        send_lock = anyio.Lock()

        async def deliver(event: TopicEvent) -> EventStatus | int:
            entry = acks.expect(event.id)
            try:
                message = pb.SubscribeTopicEventsResponse(
                    event_message=to_topic_event_request(event)
                )
                async with send_lock:
                    await stream.send_message(message)
                # Unanswered for too long: counts as a failure, so the event is sent again.
                with anyio.fail_after(self._service.policy.app_timeout):
                    await entry[0].wait()
            finally:
                acks.forget(event.id, entry)
            return entry[1][0]

        loop = self._service.delivery(
            initial.pubsub_name,
            initial.topic,
            deliver,
            metadata=initial.metadata,
            dead_letter_topic=initial.dead_letter_topic or None,
        )
        async with self._service.exclusive(initial.pubsub_name, initial.topic):
            subscription = await loop.open()
            ended_by_drain = False

            async def read_answers() -> None:
                async for request in stream:
                    if request.initial_request is not None:
                        raise InvalidArgument("duplicate initial request received")
                    processed = request.event_processed
                    if processed is None:
                        continue
                    # No status at all is an empty reply: SUCCESS, as for the callback.
                    answer = processed.status
                    acks.answer(processed.id, int(to_status(answer)) if answer else 0)
                # EOF: the client unsubscribed; what it did not answer stays un-acked.
                tg.cancel_scope.cancel()

            async def drain() -> None:
                nonlocal ended_by_drain
                await self._drain_started.wait()
                ended_by_drain = True
                loop.stop()

            try:
                await stream.send_message(
                    pb.SubscribeTopicEventsResponse(
                        initial_response=pb.SubscribeTopicEventsResponseInitial()
                    )
                )
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await subscription.close()
                raise
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_answers)
                    tg.start_soon(drain)
                    await loop.consume(subscription)
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                reraise_stream_failure(group)
            if ended_by_drain:
                raise ShuttingDown("the sidecar is shutting down; subscribe again")
