"""The pub/sub SPI: a component publishes bytes to a topic and hands received messages to the
sidecar one at a time; the sidecar acks each one only after the app has answered for it.

Division of labour (at-least-once, ARCHITECTURE.md):
- The sidecar builds the CloudEvents envelope before `publish` and parses it after `receive`;
  components move opaque bytes plus string metadata (headers).
- The sidecar's delivery engine decides everything about a message after `receive`: which
  messages may run concurrently (`Message.ordering_key`), retries with backoff, dead letters,
  and when to `ack`. A component never retries a delivery itself and never acks on its own.
- A message that was received but not acked when its subscription is closed (shutdown, a
  stream that ended, a crash) must reach a later subscription of the same topic and group
  again: Kafka resumes from the last committed offset, Redis Streams re-reads the consumer's
  pending entries, the in-memory component puts it back at the head of its queue.

Message metadata: what `publish` got in `PublishRequest.metadata` should come back in
`Message.metadata` where the broker carries headers (Kafka headers, extra Redis stream fields).
Keys the sidecar itself uses (`rawPayload`, `ttlInSeconds`, `partitionKey`, ...) may be passed
too; components use what they understand and keep the rest as headers.

Bulk publish (optional, `PubSubFeature.BULK_PUBSUB`): a component whose broker takes many
messages in one go (a Kafka produce request, a Redis pipeline) declares the feature and overrides
`publish_bulk(BulkPublishRequest) -> list[BulkPublishFailure]`, as a state store declares
`TRANSACTIONAL` and overrides `multi`. The sidecar then hands it every entry of a Dapr
BulkPublishEvent at once, each already enveloped exactly as a single `publish` would be;
without the feature it calls `publish` once per entry (the base `publish_bulk` raises
`Unsupported`). The contract:
- Every entry NOT listed in the result has been accepted by the broker, with the guarantee of
  `publish` (acks=all, XADD done), by the time `publish_bulk` returns: that is what the
  sidecar reports as published, so nothing it calls published may be lost.
- Every entry that was not (or not surely) accepted is listed once, by `entry_id`, with the
  error a single `publish` of it would have raised. A listed entry may still reach subscribers
  (a timeout after the broker took it): the caller retries it, which at-least-once allows.
- Raising instead of returning fails every entry of the batch with that error (right when
  nothing could be sent, e.g. the broker is unreachable). An empty batch is never passed.
- Entries go to one topic, in the given order where the broker orders (per partition key).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from layotto.errors import LayottoError, Unsupported
from layotto.plugin.component import Component

# Publish metadata understood across components (Dapr's names).
PARTITION_KEY_METADATA = "partitionKey"
TTL_SECONDS_METADATA = "ttlInSeconds"
RAW_PAYLOAD_METADATA = "rawPayload"
# Subscription metadata read by the sidecar (Layotto's TopicSubscription has no field for them).
DEAD_LETTER_TOPIC_METADATA = "deadLetterTopic"
MAX_RETRIES_METADATA = "maxRetries"


class PubSubFeature(StrEnum):
    """Optional pub/sub features, reported as capabilities in `/v1.0/metadata`."""

    # The broker expires messages itself from `ttlInSeconds`; without it the sidecar writes an
    # `expiration` into the envelope and drops expired events before delivery.
    MESSAGE_TTL = "MESSAGE_TTL"
    # The component publishes a batch of messages to one topic in one go (`publish_bulk`),
    # reporting the entries that failed; without it the sidecar publishes entry by entry.
    BULK_PUBSUB = "BULK_PUBSUB"


@dataclass(frozen=True, slots=True)
class PublishRequest:
    topic: str
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    # The content type of `data` itself: `application/cloudevents+json` for an enveloped event,
    # the caller's type for a raw payload.
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class BulkPublishEntry:
    """One message of a bulk publish: as `PublishRequest` without the topic, named by an
    `entry_id` unique in its batch (the caller's, how it learns which entries failed)."""

    entry_id: str
    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)
    content_type: str = ""


@dataclass(frozen=True, slots=True)
class BulkPublishRequest:
    """Many messages for one topic (see "Bulk publish" in the module docstring)."""

    topic: str
    entries: Sequence[BulkPublishEntry]

    def requests(self) -> list[tuple[str, PublishRequest]]:
        """(entry id, the single `PublishRequest` of that entry), in order: for components
        that reuse their `publish` encoding."""
        return [
            (e.entry_id, PublishRequest(self.topic, e.data, e.metadata, e.content_type))
            for e in self.entries
        ]


@dataclass(frozen=True, slots=True)
class BulkPublishFailure:
    """An entry of a bulk publish the broker did not (surely) accept, and why."""

    entry_id: str
    error: LayottoError


@dataclass(frozen=True, slots=True)
class SubscribeRequest:
    topic: str
    metadata: Mapping[str, str] = field(default_factory=dict)


Ack = Callable[[], Awaitable[None]]


async def _no_ack() -> None:
    return None


class Message:
    """One received message. `ordering_key` says what must stay in order: messages with the
    same key are delivered one after the other, in receive order (a Kafka partition, say);
    `None` means this message may be delivered concurrently with any other. `ref` names the
    message in logs (`"p3@1041"`, a stream entry id) and, where stable across redeliveries,
    gives a raw (non-CloudEvents) payload a stable event id."""

    __slots__ = ("_ack", "data", "metadata", "ordering_key", "ref", "topic")

    def __init__(
        self,
        topic: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        ordering_key: str | None = None,
        ref: str = "",
        ack: Ack = _no_ack,
    ) -> None:
        self.topic = topic
        self.data = data
        self.metadata: Mapping[str, str] = metadata or {}
        self.ordering_key = ordering_key
        self.ref = ref
        self._ack = ack

    async def ack(self) -> None:
        """Mark the message done at the broker (commit, XACK, remove). Called at most once, only
        after the app answered SUCCESS or DROP (or the message went to a dead-letter topic).
        An ack after the subscription closed may be lost: the message is then redelivered,
        which at-least-once allows."""
        await self._ack()

    def __repr__(self) -> str:
        return f"Message(topic={self.topic!r}, ref={self.ref!r}, {len(self.data)} bytes)"


class Subscription(ABC):
    """A live subscription to one topic, consumed by one sidecar task."""

    # How many deliveries the component wants in flight at once (Redis `concurrency`);
    # None leaves it to the sidecar's setting.
    concurrency: int | None = None

    @abstractmethod
    async def receive(self) -> Message:
        """The next message, waiting as long as it takes (the sidecar cancels the wait when it
        stops). Reconnect quietly where the client library does; raise `BackendUnavailable` when
        the subscription cannot go on: the sidecar then closes it, backs off and subscribes
        again."""

    @abstractmethod
    async def close(self) -> None:
        """Stop consuming and release the consumer (commit what was acked, leave the group,
        close connections). Idempotent, quick (the sidecar bounds it), never raises."""


class PubSub(Component):
    features: frozenset[PubSubFeature] = frozenset()

    @abstractmethod
    async def publish(self, request: PublishRequest) -> None:
        """Return once the broker has the message (acks=all, XADD done). Raise
        `BackendUnavailable` quickly when the broker cannot be reached: callers are waiting."""

    async def publish_bulk(self, request: BulkPublishRequest) -> list[BulkPublishFailure]:
        """Publish every entry to `request.topic` in one go; return the entries that failed
        (empty: all accepted). Needs `PubSubFeature.BULK_PUBSUB`; see "Bulk publish" in the
        module docstring for the contract."""
        raise Unsupported("this pub/sub component does not publish in bulk")

    @abstractmethod
    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        """Start consuming `request.topic`; return once established (consumer group joined,
        stream group created), so that a message published after this returns is received."""
