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

The streaming engine (`TopicStreamEngine`) knows no message types: a `TopicStreamMessages`
reads and builds them, so Layotto's SubscribeTopicEvents and Dapr's SubscribeTopicEventsAlpha1
(the same protocol in other messages) share it.
"""

from __future__ import annotations

from collections import defaultdict, deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

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

RequestT = TypeVar("RequestT")
ResponseT = TypeVar("ResponseT")
RequestT_contra = TypeVar("RequestT_contra", contravariant=True)
ResponseT_co = TypeVar("ResponseT_co", covariant=True)

MESSAGE_ID_HEADER = "message-id"
TRACEPARENT_HEADER = "traceparent"

PublishStream = Stream[pb.PublishEventRequest, Empty]


def text_header(stream: Stream[Any, Any], name: str) -> str | None:
    """A text request header, None when absent (or binary)."""
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
            traceparent=text_header(stream, TRACEPARENT_HEADER),
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


@dataclass(frozen=True, slots=True)
class StreamOpen:
    """What an initial request asks for, whichever API it came in."""

    pubsub_name: str
    topic: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    dead_letter_topic: str | None = None

    @classmethod
    def of(cls, initial: _InitialRequest | None) -> StreamOpen | None:
        """The `initial_request` of either API's stream message; None when there is none."""
        if initial is None:
            return None
        return cls(
            initial.pubsub_name,
            initial.topic,
            dict(initial.metadata),
            initial.dead_letter_topic or None,
        )


class _InitialRequest(Protocol):
    """Layotto's and Dapr's `initial_request`: the same fields in two messages."""

    @property
    def pubsub_name(self) -> str: ...
    @property
    def topic(self) -> str: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def dead_letter_topic(self) -> str | None: ...


@dataclass(frozen=True, slots=True)
class StreamAck:
    """An `event_processed`: the event id and the app's verdict."""

    event_id: str
    status: EventStatus | int  # an unknown number stays an int (redelivered, like RETRY)


def event_status(value: int) -> EventStatus | int:
    try:
        return EventStatus(value)
    except ValueError:
        return value


class TopicStreamMessages(Protocol[RequestT_contra, ResponseT_co]):
    """One API's messages for the topic-event stream."""

    def opening(self, request: RequestT_contra) -> StreamOpen | None:
        """The initial request in `request`, None when it is something else."""
        ...

    def ack(self, request: RequestT_contra) -> StreamAck | None:
        """The `event_processed` in `request`, None when it is something else."""
        ...

    def initial_response(self) -> ResponseT_co: ...

    def event_message(self, event: TopicEvent) -> ResponseT_co: ...


class LayottoTopicMessages:
    """`spec.proto.runtime.v1.SubscribeTopicEvents`."""

    def opening(self, request: pb.SubscribeTopicEventsRequest) -> StreamOpen | None:
        return StreamOpen.of(request.initial_request)

    def ack(self, request: pb.SubscribeTopicEventsRequest) -> StreamAck | None:
        processed = request.event_processed
        if processed is None:
            return None
        # No status at all is an empty reply: SUCCESS, as for the callback.
        answer = processed.status
        return StreamAck(
            processed.id, to_status(answer) if answer is not None else EventStatus.SUCCESS
        )

    def initial_response(self) -> pb.SubscribeTopicEventsResponse:
        return pb.SubscribeTopicEventsResponse(
            initial_response=pb.SubscribeTopicEventsResponseInitial()
        )

    def event_message(self, event: TopicEvent) -> pb.SubscribeTopicEventsResponse:
        return pb.SubscribeTopicEventsResponse(event_message=to_topic_event_request(event))


class TopicStreamEngine(Generic[RequestT, ResponseT]):
    """Serves topic-event streams of one API, whose messages `messages` reads and builds."""

    def __init__(
        self,
        service: PubSubService,
        drain_started: anyio.Event,
        messages: TopicStreamMessages[RequestT, ResponseT],
    ) -> None:
        self._service = service
        self._drain_started = drain_started
        self._messages = messages
        self._open: list[StreamOpen] = []

    @property
    def subscriptions(self) -> list[StreamOpen]:
        """The streams subscribed right now (for the metadata APIs)."""
        return list(self._open)

    async def handle(self, stream: Stream[RequestT, ResponseT]) -> None:
        messages = self._messages
        first = await stream.recv_message()
        initial = messages.opening(first) if first is not None else None
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
                message = messages.event_message(event)
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
            dead_letter_topic=initial.dead_letter_topic,
        )
        async with self._service.exclusive(initial.pubsub_name, initial.topic):
            subscription = await loop.open()
            ended_by_drain = False

            async def read_answers() -> None:
                async for request in stream:
                    if messages.opening(request) is not None:
                        raise InvalidArgument("duplicate initial request received")
                    processed = messages.ack(request)
                    if processed is None:
                        continue
                    acks.answer(processed.event_id, int(processed.status))
                # EOF: the client unsubscribed; what it did not answer stays un-acked.
                tg.cancel_scope.cancel()

            async def drain() -> None:
                nonlocal ended_by_drain
                await self._drain_started.wait()
                ended_by_drain = True
                loop.stop()

            try:
                await stream.send_message(messages.initial_response())
            except BaseException:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                    await subscription.close()
                raise
            self._open.append(initial)
            try:
                async with anyio.create_task_group() as tg:
                    tg.start_soon(read_answers)
                    tg.start_soon(drain)
                    await loop.consume(subscription)
                    tg.cancel_scope.cancel()
            except BaseExceptionGroup as group:
                reraise_stream_failure(group)
            finally:
                self._open.remove(initial)
            if ended_by_drain:
                raise ShuttingDown("the sidecar is shutting down; subscribe again")


class TopicEventStreams(
    TopicStreamEngine[pb.SubscribeTopicEventsRequest, pb.SubscribeTopicEventsResponse]
):
    """Layotto's `SubscribeTopicEvents`."""

    def __init__(self, service: PubSubService, drain_started: anyio.Event) -> None:
        super().__init__(service, drain_started, LayottoTopicMessages())
