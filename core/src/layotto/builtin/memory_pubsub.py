"""An in-process pub/sub with the delivery semantics of a real broker, and nothing durable across
processes.

Model (as in Kafka or Redis Streams, per topic):
- A **consumer group** (subscription metadata `consumerGroup`, default the app id of the
  component's context) owns a queue. The queue is created by the group's first subscribe and
  kept after its subscription closes, so a later subscription of the group gets what the old
  one left. A message published to a topic goes to every existing group's queue; a topic with
  no group yet drops it, as Dapr's in-memory pub/sub does (subscribe before you publish).
- One subscription consumes a group's queue at a time: a second subscribe of the same (topic,
  group) while the first is open is refused with `InvalidArgument` (use another
  `consumerGroup` to get a second copy of every message). Competing consumers would break the
  order the queue promises.
- `receive` hands out the head of the queue; `Message.ack` removes the message for good;
  closing the subscription puts every received-but-unacked message back at the **head** of
  the queue, in the original order, so the next subscription gets them first. An ack that
  arrives after the close still removes its message, unless a later subscription has already
  received it again (then that one settles it).
- Order: `Message.ordering_key` is the publish metadata `partitionKey`, or `""` (one lane)
  without one, so the sidecar delivers the messages of a key in publish order. `Message.ref`
  is `m<N>`, a sequence number per group, stable across redeliveries. Publish metadata comes
  back as `Message.metadata`.
- TTL: the component declares `MESSAGE_TTL` and expires messages itself: a message published
  with `ttlInSeconds` is skipped by `receive` once that many seconds have passed (monotonic
  clock), raw payloads included.
- Bounded: a group holds at most `maxQueueLength` messages (queued plus received-but-unacked,
  default 10000); a publish that would exceed it in any group is refused, in every group,
  with `QueueFull` (RESOURCE_EXHAUSTED).
- Bulk: with `bulkPublish: true` the component declares `BULK_PUBSUB`, and `publish_bulk` runs
  every entry as `publish` would, all in one step of the event loop (a subscriber sees none of
  the batch or every entry that was accepted), listing the entries that were refused (queue
  full, a bad `ttlInSeconds`). Off by default, as Dapr's in-memory pub/sub has no bulk
  publisher: the sidecar then publishes bulk entries one by one. (Tests and benchmarks turn it
  on to compare the two paths on a component that costs nothing.)
- `close()` of the component wakes every receiver with `BackendUnavailable`; publish and
  subscribe raise it afterwards.

Every operation on the queues runs without awaiting, so each one is atomic with respect to the
event loop. Only anyio is used: the component runs on asyncio and trio alike.
"""

from __future__ import annotations

import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import anyio
from pydantic import Field

from layotto.plugin import (
    PARTITION_KEY_METADATA,
    TTL_SECONDS_METADATA,
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentMetadata,
    Health,
    InvalidArgument,
    LayottoError,
    Message,
    PublishRequest,
    PubSub,
    PubSubFeature,
    ResourceExhausted,
    SubscribeRequest,
    Subscription,
)
from layotto.plugin.pubsub import Ack, BulkPublishFailure, BulkPublishRequest

CONSUMER_GROUP_METADATA = "consumerGroup"
DEFAULT_MAX_QUEUE_LENGTH = 10_000


class QueueFull(ResourceExhausted):
    """A consumer group's queue is at `maxQueueLength`: its subscriber is not keeping up."""

    default_reason = "ERR_PUBSUB_QUEUE_FULL"


class InMemoryPubSubMetadata(ComponentMetadata):
    # Messages one consumer group may hold (queued + received but not acked).
    max_queue_length: int = Field(default=DEFAULT_MAX_QUEUE_LENGTH, ge=1, alias="maxQueueLength")
    # Declare BULK_PUBSUB (a bulk publish in one step); off: the sidecar goes entry by entry.
    bulk_publish: bool = Field(default=False, alias="bulkPublish")


@dataclass(slots=True)
class _Queued:
    seq: int
    data: bytes
    metadata: Mapping[str, str]
    ordering_key: str
    expires_at: float | None  # clock seconds; None = never


@dataclass(eq=False, slots=True)
class _Group:
    """One consumer group of one topic. Invariant: `queue` is sorted by `seq` (received
    messages come from its head, and unacked ones go back to the head in order)."""

    topic: str
    name: str
    queue: deque[_Queued] = field(default_factory=deque)
    consumer: _MemorySubscription | None = None
    next_seq: int = 0
    # Set (and replaced) whenever the queue gains messages or the component closes.
    changed: anyio.Event | None = None

    def held(self) -> int:
        return len(self.queue) + (len(self.consumer.unacked) if self.consumer else 0)

    def notify(self) -> None:
        if self.changed is not None:
            self.changed.set()
            self.changed = None

    def take(self, now: float) -> _Queued | None:
        """The head of the queue, skipping (and dropping) expired messages."""
        while self.queue:
            item = self.queue.popleft()
            if item.expires_at is None or item.expires_at > now:
                return item
        return None

    def purge_expired(self, now: float) -> None:
        if any(q.expires_at is not None and q.expires_at <= now for q in self.queue):
            self.queue = deque(q for q in self.queue if q.expires_at is None or q.expires_at > now)


def _parse_ttl(metadata: Mapping[str, str]) -> int | None:
    raw = metadata.get(TTL_SECONDS_METADATA)
    if raw is None or raw == "":
        return None
    try:
        seconds = int(raw)
    except ValueError:
        raise InvalidArgument(
            f"field 'metadata.{TTL_SECONDS_METADATA}' must be an integer number of seconds, "
            f"got {raw!r}"
        ) from None
    if seconds < 0:
        raise InvalidArgument(
            f"field 'metadata.{TTL_SECONDS_METADATA}' must not be negative, got {seconds}"
        )
    return seconds


class InMemoryPubSub(PubSub):
    features = frozenset({PubSubFeature.MESSAGE_TTL})

    def __init__(
        self,
        *,
        app_id: str = "",
        max_queue_length: int = DEFAULT_MAX_QUEUE_LENGTH,
        bulk_publish: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if bulk_publish:
            self.features = self.features | {PubSubFeature.BULK_PUBSUB}
        self._app_id = app_id
        self._max = max_queue_length
        self._clock = clock  # injectable, so tests can move time without sleeping
        self._topics: dict[str, dict[str, _Group]] = {}
        self._closed = False

    @classmethod
    def create(cls, metadata: InMemoryPubSubMetadata, context: ComponentContext) -> Component:
        return cls(
            app_id=context.app_id,
            max_queue_length=metadata.max_queue_length,
            bulk_publish=metadata.bulk_publish,
        )

    async def check_health(self) -> Health:
        return Health.down("closed") if self._closed else Health.up()

    async def close(self) -> None:
        self._closed = True
        for groups in self._topics.values():
            for group in groups.values():
                group.notify()

    def _check_open(self) -> None:
        if self._closed:
            raise BackendUnavailable("the in-memory pub/sub is closed")

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> None:
        self._publish_now(request)

    async def publish_bulk(self, request: BulkPublishRequest) -> list[BulkPublishFailure]:
        self._check_open()
        failures: list[BulkPublishFailure] = []
        for entry_id, single in request.requests():  # no await: one step of the event loop
            try:
                self._publish_now(single)
            except LayottoError as err:
                failures.append(BulkPublishFailure(entry_id, err))
        return failures

    def _publish_now(self, request: PublishRequest) -> None:
        self._check_open()
        if not request.topic:
            raise InvalidArgument("field 'topic' must not be empty")
        ttl = _parse_ttl(request.metadata)
        now = self._clock()
        groups = list(self._topics.get(request.topic, {}).values())
        for group in groups:  # all groups or none
            if group.held() >= self._max:
                group.purge_expired(now)
                if group.held() >= self._max:
                    raise QueueFull(
                        f"topic {request.topic!r}: consumer group {group.name!r} holds "
                        f"{self._max} messages (maxQueueLength); its subscriber is not keeping up"
                    )
        metadata = dict(request.metadata)
        key = metadata.get(PARTITION_KEY_METADATA, "")
        native_ttl = PubSubFeature.MESSAGE_TTL in self.features  # a subclass may drop it
        expires_at = None if ttl is None or not native_ttl else now + ttl
        for group in groups:
            group.next_seq += 1
            group.queue.append(_Queued(group.next_seq, request.data, metadata, key, expires_at))
            group.notify()

    # -- subscribe -------------------------------------------------------------------------

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        self._check_open()
        if not request.topic:
            raise InvalidArgument("field 'topic' must not be empty")
        name = request.metadata.get(CONSUMER_GROUP_METADATA) or self._app_id
        groups = self._topics.setdefault(request.topic, {})
        group = groups.get(name)
        if group is None:
            group = groups[name] = _Group(request.topic, name)
        if group.consumer is not None:
            raise InvalidArgument(
                f"topic {request.topic!r} is already subscribed by consumer group {name!r}: "
                f"close that subscription first, or subscribe with another "
                f"'{CONSUMER_GROUP_METADATA}'"
            )
        subscription = _MemorySubscription(self, group)
        group.consumer = subscription
        return subscription

    # -- used by subscriptions -------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self._closed

    def now(self) -> float:
        return self._clock()


class _MemorySubscription(Subscription):
    def __init__(self, pubsub: InMemoryPubSub, group: _Group) -> None:
        self._pubsub = pubsub
        self._group = group
        self._closed = False
        self.unacked: dict[int, _Queued] = {}  # seq -> message, in receive (= seq) order

    async def receive(self) -> Message:
        group = self._group
        while True:
            if self._pubsub.closed:
                raise BackendUnavailable("the in-memory pub/sub is closed")
            if self._closed:
                raise BackendUnavailable("the subscription is closed")
            item = group.take(self._pubsub.now())
            if item is not None:
                self.unacked[item.seq] = item
                return Message(
                    group.topic,
                    item.data,
                    metadata=dict(item.metadata),
                    ordering_key=item.ordering_key,
                    ref=f"m{item.seq}",
                    ack=self._acker(item.seq),
                )
            if group.changed is None:
                group.changed = anyio.Event()
            await group.changed.wait()

    def _acker(self, seq: int) -> Ack:
        async def ack() -> None:
            self._ack(seq)

        return ack

    def _ack(self, seq: int) -> None:
        if self.unacked.pop(seq, None) is not None:
            return
        # Acked after our close put it back: remove it, unless a later subscription has
        # received it again already (then that one settles it).
        queue = self._group.queue
        for index, item in enumerate(queue):
            if item.seq == seq:
                del queue[index]
                return

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        group = self._group
        if group.consumer is self:
            group.consumer = None
        if self.unacked:
            group.queue.extendleft(reversed(self.unacked.values()))
            self.unacked.clear()
        group.notify()  # a receive still waiting here ends; the next subscriber sees them
