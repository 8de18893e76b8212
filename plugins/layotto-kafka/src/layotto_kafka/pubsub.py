"""`pubsub.kafka`: publish with acks=all, consume in a consumer group with manual commits of
contiguous acked offsets (at-least-once), one aiokafka consumer per subscription.

Publishing. One `AIOKafkaProducer` per component. A publish returns once every in-sync replica
has the record. It never waits out aiokafka's own timeouts when the cluster is gone: before
enqueueing (when nothing was heard from the cluster in the last second, or the producer holds no
open connection) and while waiting for the broker's ack (at once when the connections drop,
else every half second), a probe (a Metadata request with no topics, bounded to a second) asks
whether any broker answers; when none does, the publish fails at once with
`BackendUnavailable`. The whole publish is bounded by `publishTimeout`.

Consuming. A subscription joins the group, waits for its assignment and pins a position for
every assigned partition (and commits it), so that a message published after `subscribe`
returns is received even with `initialOffset: newest`, and a partition that moves to another
member later starts where this one started rather than at the then-newest offset. Each record
is delivered once from the subscription's buffer; `Message.ack` marks it done. Per partition the
commit offset is the first offset not yet acked (acked offsets above a gap wait), so a crash or
a close never skips an un-acked record. Commits run in a background task at most every 200 ms,
on close and when partitions are revoked; records of revoked partitions still buffered are
dropped, and acks for them are ignored (the new owner redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import ssl
from collections import deque
from collections.abc import Iterable, Mapping
from functools import partial
from typing import Any, cast

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaConnectionError, KafkaError
from aiokafka.protocol.metadata import MetadataRequest
from aiokafka.structs import TopicPartition
from layotto.plugin import (
    PARTITION_KEY_METADATA,
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    Health,
    LayottoError,
    Message,
    PublishRequest,
    PubSub,
    SubscribeRequest,
    Subscription,
)

from layotto_kafka.errors import CHECK_BROKERS, translate
from layotto_kafka.settings import InitialOffset, KafkaMetadata

log = logging.getLogger("layotto_kafka")

# Dapr's alternative name for the partition key.
KEY_METADATA = "__key"
# Subscription metadata that overrides the component's consumer group.
CONSUMER_GROUP_METADATA = "consumerGroup"

INIT_TIMEOUT = 10.0  # producer bootstrap at init
PROBE_TIMEOUT = 1.0  # "does any broker answer?"
HEALTH_TIMEOUT = 0.8  # check_health answers within a second
RECENT_CONTACT = 1.0  # a publish skips the pre-probe when the cluster answered this recently
DELIVERY_CHECK = 0.5  # while waiting for an ack, probe the cluster this often
DELIVERY_SLICE = 0.05  # ... and look at the connections this often
SUBSCRIBE_TIMEOUT = 30.0  # join + assignment + positions
POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 500
COMMIT_INTERVAL = 0.2
COMMIT_TIMEOUT = 5.0
COMMIT_RETRY = 1.0
CLOSE_COMMIT_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0
CLOSE_PROBE_TIMEOUT = 0.5


def _retrieve(future: asyncio.Future[Any]) -> None:
    """Done callback for a delivery nobody awaits any more: fetch its exception so asyncio
    does not log "exception was never retrieved"."""
    if not future.cancelled():
        future.exception()


class KafkaPubSub(PubSub):
    # Class attributes so that tests may shorten them.
    subscribe_timeout: float = SUBSCRIBE_TIMEOUT

    def __init__(self, metadata: KafkaMetadata, context: ComponentContext) -> None:
        self.metadata = metadata
        self.name = context.name
        self.app_id = context.app_id
        self.what = f"pubsub '{context.name}'"
        self._producer: AIOKafkaProducer | None = None
        self._ssl: ssl.SSLContext | None = None
        self._last_contact = -math.inf
        self._probe_task: asyncio.Task[bool] | None = None
        self._subscriptions: set[KafkaSubscription] = set()
        self._closed = False

    @classmethod
    def create(cls, metadata: KafkaMetadata, context: ComponentContext) -> KafkaPubSub:
        return cls(metadata, context)

    # -- lifecycle -----------------------------------------------------------------------------

    def client_options(self) -> dict[str, Any]:
        """Connection options shared by the producer and every consumer."""
        m = self.metadata
        options: dict[str, Any] = {
            "bootstrap_servers": list(m.brokers),
            "client_id": m.client_id_for(self.app_id),
            "security_protocol": m.security_protocol,
        }
        if self._ssl is not None:
            options["ssl_context"] = self._ssl
        if m.use_sasl:
            options["sasl_mechanism"] = m.sasl_mechanism
            options["sasl_plain_username"] = m.sasl_username
            options["sasl_plain_password"] = m.sasl_password.get_secret_value()
        return options

    async def init(self) -> None:
        if self._producer is not None:
            return
        try:
            self._ssl = self.metadata.ssl_context()
        except (ssl.SSLError, ValueError, OSError) as err:
            raise ComponentError(
                f"{self.what}: the TLS settings could not be loaded ({type(err).__name__}; "
                "check caCert, clientCert and clientKey)"
            ) from None
        m = self.metadata
        options = self.client_options()
        if m.max_message_bytes is not None:
            options["max_request_size"] = m.max_message_bytes
        producer = AIOKafkaProducer(
            **options,
            acks="all",
            enable_idempotence=m.idempotence,
            request_timeout_ms=max(1000, int(m.publish_timeout * 1000)),
            linger_ms=0,
        )
        try:
            await asyncio.wait_for(producer.start(), INIT_TIMEOUT)
        except BaseException as err:
            await _quietly(producer.stop(), CLOSE_TIMEOUT)
            if isinstance(err, TimeoutError | KafkaConnectionError):
                raise BackendUnavailable(
                    f"{self.what}: Kafka is unavailable (no broker could be reached at "
                    f"startup; {CHECK_BROKERS})"
                ) from None
            if isinstance(err, Exception):
                raise translate(err, self.what) from None
            raise
        self._producer = producer
        self._last_contact = asyncio.get_running_loop().time()

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        for subscription in list(self._subscriptions):
            await subscription.close()
        producer = self._producer
        if producer is not None:
            # stop() flushes what is still queued; with no broker reachable nothing can be
            # flushed, so do not wait for it.
            reachable = await self._probe(CLOSE_PROBE_TIMEOUT)
            self._producer = None
            try:
                await asyncio.wait_for(
                    producer.stop(), CLOSE_TIMEOUT if reachable else CLOSE_PROBE_TIMEOUT
                )
            except Exception as err:
                log.debug("ignored while stopping the producer: %r", err)
                await _quietly(producer.client.close(), CLOSE_TIMEOUT)
        probe = self._probe_task
        if probe is not None and not probe.done():
            await asyncio.wait((probe,), timeout=PROBE_TIMEOUT * 1.5)

    async def check_health(self) -> Health:
        if self._producer is None:
            return Health.down("closed" if self._closed else "not initialised")
        if await self._probe(HEALTH_TIMEOUT):
            return Health.up()
        return Health.down("no Kafka broker is reachable")

    # -- reachability ----------------------------------------------------------------------

    async def _probe(self, within: float) -> bool:
        """True when some broker answers a Metadata request within `within` seconds.
        Concurrent callers share one probe."""
        task = self._probe_task
        if task is None or task.done():
            task = self._probe_task = asyncio.create_task(self._run_probe(PROBE_TIMEOUT))
        try:
            return await asyncio.wait_for(asyncio.shield(task), within)
        except TimeoutError:
            return False
        except asyncio.CancelledError:
            if _cancelling():
                raise
            return False  # the probe itself was cancelled: the component is closing

    async def _run_probe(self, within: float) -> bool:
        producer = self._producer
        if producer is None:
            return False
        client = producer.client
        node_ids = [broker.nodeId for broker in client.cluster.brokers()]
        if not node_ids:
            return False

        async def ask(node_id: int) -> bool:
            try:
                await client.send(node_id, MetadataRequest([]))
            except (KafkaError, OSError, TimeoutError):
                return False
            return True

        tasks = [asyncio.create_task(ask(node_id)) for node_id in node_ids]
        try:
            for next_done in asyncio.as_completed(tasks, timeout=within):
                if await next_done:
                    self._last_contact = asyncio.get_running_loop().time()
                    return True
        except TimeoutError:
            pass
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        # Nobody answered: the next publish probes first instead of trusting an old contact.
        self._last_contact = -math.inf
        return False

    def _unavailable(self, what: str) -> BackendUnavailable:
        return BackendUnavailable(f"{what}: Kafka is unavailable (no broker is reachable)")

    # -- publish -------------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> None:
        producer = self._producer
        what = f"{self.what}: publish to {request.topic!r}"
        if producer is None:
            raise BackendUnavailable(f"{what}: the component is not initialised")
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.metadata.publish_timeout
        metadata = request.metadata
        key_text = metadata.get(PARTITION_KEY_METADATA) or metadata.get(KEY_METADATA)
        key = key_text.encode() if key_text else None
        headers = [(name, value.encode()) for name, value in metadata.items()]

        recent = loop.time() - self._last_contact <= RECENT_CONTACT
        if (not recent or not _has_connection(producer.client)) and not await self._probe(
            min(PROBE_TIMEOUT, max(0.05, deadline - loop.time()))
        ):
            raise self._unavailable(what)
        try:
            delivery = await asyncio.wait_for(
                producer.send(request.topic, request.data, key=key, headers=headers),
                max(0.05, deadline - loop.time()),
            )
        except TimeoutError:
            raise await self._timed_out(what) from None
        except Exception as err:
            raise translate(err, what) from None
        delivery.add_done_callback(_retrieve)

        next_check = loop.time() + DELIVERY_CHECK
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise await self._timed_out(what)
            await asyncio.wait((delivery,), timeout=min(DELIVERY_SLICE, remaining))
            if delivery.done():
                error = delivery.exception() if not delivery.cancelled() else None
                if error is not None:
                    raise translate(error, what) from None
                self._last_contact = loop.time()
                return
            # Not acked yet: is anybody there at all? Ask at once when the connections are
            # gone, else every DELIVERY_CHECK while nothing was heard from the cluster.
            now = loop.time()
            stale = now >= next_check and now - self._last_contact > DELIVERY_CHECK
            if stale or not _has_connection(producer.client):
                next_check = now + DELIVERY_CHECK
                if not await self._probe(min(PROBE_TIMEOUT, max(0.05, deadline - now))):
                    raise self._unavailable(what)

    async def _timed_out(self, what: str) -> LayottoError:
        if not await self._probe(PROBE_TIMEOUT / 2):
            return self._unavailable(what)
        return BackendTimeout(
            f"{what}: Kafka did not acknowledge the message within publishTimeout "
            f"({self.metadata.publish_timeout:g} s)"
        )

    # -- subscribe -----------------------------------------------------------------------------

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        if self._producer is None:
            raise BackendUnavailable(f"{self.what}: the component is not initialised")
        group = (request.metadata.get(CONSUMER_GROUP_METADATA) or "").strip()
        subscription = KafkaSubscription(
            self, request.topic, group or self.metadata.group_id(self.app_id)
        )
        await subscription.start(self.subscribe_timeout)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: KafkaSubscription) -> None:
        self._subscriptions.discard(subscription)


class _Track:
    """One assigned partition of one assignment generation: what was delivered, what is
    acked, and what may be committed. Dead once the partition is revoked."""

    __slots__ = ("alive", "commit_to", "committed", "delivered", "done", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.alive = True
        self.delivered: deque[int] = deque()  # delivered offsets, in order, not yet committable
        self.done: set[int] = set()  # acked offsets still in `delivered`
        self.commit_to: int | None = None  # the offset to commit: the first one not acked
        self.committed: int | None = None  # the last offset committed

    def deliver(self, offset: int) -> None:
        self.delivered.append(offset)

    def ack(self, offset: int) -> bool:
        """Mark `offset` done; True when the commit offset advanced."""
        if not self.alive:
            return False
        self.done.add(offset)
        advanced = False
        delivered, done = self.delivered, self.done
        while delivered and delivered[0] in done:
            first = delivered.popleft()
            done.discard(first)
            self.commit_to = first + 1
            advanced = True
        return advanced

    def pending(self) -> int | None:
        if self.alive and self.commit_to is not None and self.commit_to != self.committed:
            return self.commit_to
        return None


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._subscription.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._subscription.on_assigned(set(assigned))


class KafkaSubscription(Subscription):
    def __init__(self, owner: KafkaPubSub, topic: str, group: str) -> None:
        m = owner.metadata
        self.owner = owner
        self.topic = topic
        self.group = group
        self.what = f"{owner.what}: subscription to {topic!r} (group {group!r})"
        options = owner.client_options()
        if m.max_message_bytes is not None:
            options["max_partition_fetch_bytes"] = max(m.max_message_bytes, 1024 * 1024)
            options["fetch_max_bytes"] = max(m.max_message_bytes, 50 * 1024 * 1024)
        self._consumer = AIOKafkaConsumer(
            **options,
            group_id=group,
            enable_auto_commit=False,
            auto_offset_reset="earliest" if m.initial_offset is InitialOffset.OLDEST else "latest",
            session_timeout_ms=int(m.session_timeout * 1000),
            heartbeat_interval_ms=int(m.heartbeat * 1000),
            fetch_max_wait_ms=max(1, int(m.fetch_max_wait * 1000)),
        )
        self._tracks: dict[TopicPartition, _Track] = {}
        self._buffer: deque[tuple[_Track, Any]] = deque()
        self._commit_task: asyncio.Task[None] | None = None
        self._last_commit = -math.inf
        self._commit_failing = False
        self._started = False
        self._closed = False

    # -- start -----------------------------------------------------------------------------

    async def start(self, within: float) -> None:
        consumer = self._consumer
        consumer.subscribe([self.topic], listener=_Listener(self))
        positions: dict[TopicPartition, int] = {}
        try:
            async with asyncio.timeout(within):
                await consumer.start()
                self._started = True
                for tp in consumer.assignment():
                    with contextlib.suppress(KafkaError):  # revoked meanwhile
                        positions[tp] = int(await consumer.position(tp))
        except BaseException as err:
            self._closed = True
            await _stop_consumer(consumer)
            if isinstance(err, TimeoutError):
                raise BackendUnavailable(
                    f"{self.what}: could not join the consumer group within {within:g} s"
                ) from None
            if isinstance(err, Exception):
                raise _as_unavailable(translate(err, self.what)) from None
            raise
        # Make the starting point durable: a partition that moves to another member before
        # anything was acked then starts there, not at a newer offset.
        if positions and not await self._commit(positions, COMMIT_TIMEOUT):
            log.info("%s: could not commit the starting positions", self.what)

    # -- rebalance -------------------------------------------------------------------------

    def on_assigned(self, assigned: set[TopicPartition]) -> None:
        for tp in assigned:
            if tp not in self._tracks:
                self._tracks[tp] = _Track(tp)

    async def on_revoked(self, revoked: set[TopicPartition]) -> None:
        offsets = {
            tp: pending
            for tp in revoked
            if (track := self._tracks.get(tp)) is not None
            and (pending := track.pending()) is not None
        }
        if offsets and not self._closed:
            bound = min(COMMIT_TIMEOUT, max(1.0, self.owner.metadata.session_timeout / 2))
            await self._commit(offsets, bound)
        for tp in revoked:
            track = self._tracks.pop(tp, None)
            if track is not None:
                track.alive = False
        if self._buffer:
            kept = [item for item in self._buffer if item[0].alive]
            self._buffer.clear()
            self._buffer.extend(kept)

    # -- receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        buffer = self._buffer
        while True:
            if self._closed:
                raise BackendUnavailable(f"{self.what}: the subscription is closed")
            while buffer:
                track, record = buffer.popleft()
                if track.alive:
                    track.deliver(record.offset)
                    return self._message(track, record)
            try:
                batch = await self._consumer.getmany(
                    timeout_ms=POLL_TIMEOUT_MS, max_records=MAX_POLL_RECORDS
                )
            except ConsumerStoppedError:
                raise BackendUnavailable(f"{self.what}: the subscription is closed") from None
            except Exception as err:
                raise _as_unavailable(translate(err, self.what)) from None
            for tp, records in batch.items():
                found = self._tracks.get(tp)
                if found is None:
                    found = self._tracks[tp] = _Track(tp)
                buffer.extend((found, record) for record in records)

    def _message(self, track: _Track, record: Any) -> Message:
        metadata: dict[str, str] = {}
        for name, value in record.headers or ():
            metadata[str(name)] = value.decode("utf-8", "replace") if value is not None else ""
        partition = int(record.partition)
        offset = int(record.offset)
        return Message(
            record.topic,
            record.value if record.value is not None else b"",
            metadata=metadata,
            ordering_key=str(partition),
            ref=f"p{partition}@{offset}",
            ack=partial(self._ack, track, offset),
        )

    async def _ack(self, track: _Track, offset: int) -> None:
        if track.ack(offset) and not self._closed:
            self._schedule_commit()

    # -- commits ---------------------------------------------------------------------------

    def _pending(self) -> dict[TopicPartition, int]:
        assigned = self._consumer.assignment()
        return {
            tp: pending
            for tp, track in self._tracks.items()
            if (pending := track.pending()) is not None and tp in assigned
        }

    def _schedule_commit(self) -> None:
        task = self._commit_task
        if task is None or task.done():
            self._commit_task = asyncio.create_task(self._commit_loop())

    async def _commit_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while not self._closed:
            wait = self._last_commit + COMMIT_INTERVAL - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
            offsets = self._pending()
            if not offsets:
                return
            self._last_commit = loop.time()
            if not await self._commit(offsets, COMMIT_TIMEOUT):
                await asyncio.sleep(COMMIT_RETRY)

    async def _commit(self, offsets: Mapping[TopicPartition, int], within: float) -> bool:
        """Commit these offsets; True on success. Failures are logged, not raised: the offsets
        stay pending and are committed later (or redelivered, which at-least-once allows)."""
        tracks = {tp: self._tracks.get(tp) for tp in offsets}
        try:
            await asyncio.wait_for(self._consumer.commit(dict(offsets)), within)
        except Exception as err:  # KafkaError, TimeoutError, ...: the offsets stay pending
            level = logging.DEBUG if self._commit_failing else logging.INFO
            self._commit_failing = True
            log.log(level, "%s: commit failed (%s); will retry", self.what, type(err).__name__)
            return False
        self._commit_failing = False
        for tp, offset in offsets.items():
            track = tracks[tp]
            if track is not None and (track.committed is None or offset > track.committed):
                track.committed = offset
        return True

    # -- close -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self.owner._forget(self)
        task, self._commit_task = self._commit_task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                with contextlib.suppress(BaseException):
                    await task
            offsets = self._pending()
            # With no broker reachable the commit cannot succeed: do not wait for it (those
            # messages are redelivered, which at-least-once allows).
            if offsets and self._started and await self.owner._probe(CLOSE_PROBE_TIMEOUT):
                await self._commit(offsets, CLOSE_COMMIT_TIMEOUT)
        except Exception as err:  # never raise from close
            log.info("%s: final commit failed (%s)", self.what, type(err).__name__)
        for track in self._tracks.values():
            track.alive = False
        self._buffer.clear()
        await _stop_consumer(self._consumer)


def _as_unavailable(err: LayottoError) -> BackendUnavailable:
    """A subscription that cannot go on reports UNAVAILABLE: the sidecar then closes it, backs
    off and subscribes again."""
    if isinstance(err, BackendUnavailable):
        return err
    return BackendUnavailable(err.message)


async def _stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """`consumer.stop()`, bounded and quiet. aiokafka 0.14's `Fetcher.close()` re-raises the
    CancelledError of a fetch task it cancelled itself (aio-libs/aiokafka#647), which ends
    `stop()` before it closes the client: finish that part here."""
    try:
        await asyncio.wait_for(consumer.stop(), CLOSE_TIMEOUT)
    except asyncio.CancelledError:
        if _cancelling():
            raise
        fetcher = getattr(consumer, "_fetcher", None)
        for task in list(getattr(fetcher, "_pending_tasks", ())):
            task.cancel()
        client = getattr(consumer, "_client", None)
        if client is not None:
            await _quietly(client.close(), CLOSE_TIMEOUT)
    except Exception as err:
        log.debug("ignored while stopping a consumer: %r", err)


def _has_connection(client: Any) -> bool:
    """Whether the client holds at least one open broker connection. A broker that goes away
    closes them, so this notices an outage before any request times out. (aiokafka keeps its
    connections in a private dict; should that change, the answer is "yes" and publish relies
    on the one-second recency rule alone.)"""
    conns = getattr(client, "_conns", None)
    if not isinstance(conns, dict):
        return True
    return any(conn.connected() for conn in conns.values())


def _cancelling() -> bool:
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def _quietly(awaitable: Any, within: float) -> None:
    """Await a stop/close call, bounded, swallowing its errors (never cancellation)."""
    try:
        await asyncio.wait_for(cast("Any", awaitable), within)
    except Exception as err:
        log.debug("ignored during shutdown: %r", err)
