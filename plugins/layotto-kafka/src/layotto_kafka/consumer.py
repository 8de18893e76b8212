"""The at-least-once consumer shared by `pubsub.kafka` and `bindings.kafka`: one aiokafka
consumer in a consumer group, manual commits of contiguous acked offsets.

A subscription joins the group, waits for its assignment and pins a position for every assigned
partition (and commits it), so that a message published after `subscribe` returns is received
even with `initialOffset: newest`, and a partition that moves to another member later starts
where this one started rather than at the then-newest offset. Each record is delivered once from
the subscription's buffer; `Message.ack` marks it done. Per partition the commit offset is the
first offset not yet acked (acked offsets above a gap wait), so a crash or a close never skips an
un-acked record. Commits run in a background task at most every 200 ms, on close and when
partitions are revoked; records of revoked partitions still buffered are dropped, and acks for
them are ignored (the new owner redelivers them).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener
from aiokafka.errors import ConsumerStoppedError, KafkaError
from aiokafka.structs import TopicPartition
from layotto.plugin import (
    BackendUnavailable,
    LayottoError,
    Message,
    Subscription,
)

from layotto_kafka.aio import cancelling, quietly
from layotto_kafka.errors import translate
from layotto_kafka.settings import InitialOffset

if TYPE_CHECKING:
    from layotto_kafka.client import KafkaClient

log = logging.getLogger("layotto_kafka")

POLL_TIMEOUT_MS = 200
MAX_POLL_RECORDS = 500
COMMIT_INTERVAL = 0.2
COMMIT_TIMEOUT = 5.0
COMMIT_RETRY = 1.0
CLOSE_COMMIT_TIMEOUT = 3.0
CLOSE_TIMEOUT = 5.0
CLOSE_PROBE_TIMEOUT = 0.5


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


class KafkaMessage(Message):
    """A received record: the `Message` plus where it came from. `current` turns False once its
    partition was revoked from this member; an ack is then ignored (the new owner redelivers
    the record), so there is no point in delivering it again."""

    __slots__ = ("_track", "key", "offset", "partition", "timestamp_ms")

    def __init__(
        self,
        topic: str,
        data: bytes,
        track: _Track,
        *,
        metadata: Mapping[str, str],
        ordering_key: str,
        ref: str,
        ack: Any,
        offset: int,
        key: bytes | None,
        timestamp_ms: int,
    ) -> None:
        super().__init__(
            topic, data, metadata=metadata, ordering_key=ordering_key, ref=ref, ack=ack
        )
        self._track = track
        self.partition = int(track.tp.partition)
        self.offset = offset
        self.key = key
        self.timestamp_ms = timestamp_ms

    @property
    def current(self) -> bool:
        return self._track.alive


class _Listener(ConsumerRebalanceListener):  # type: ignore[misc]  # aiokafka is untyped (Any)
    def __init__(self, subscription: KafkaSubscription) -> None:
        self._subscription = subscription

    async def on_partitions_revoked(self, revoked: Iterable[TopicPartition]) -> None:
        await self._subscription.on_revoked(set(revoked))

    async def on_partitions_assigned(self, assigned: Iterable[TopicPartition]) -> None:
        self._subscription.on_assigned(set(assigned))


class KafkaSubscription(Subscription):
    def __init__(self, owner: KafkaClient, topics: Sequence[str], group: str) -> None:
        m = owner.metadata
        self.owner = owner
        self.topics = list(topics)
        self.group = group
        names = ", ".join(repr(topic) for topic in self.topics)
        self.what = f"{owner.what}: subscription to {names} (group {group!r})"
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
        consumer.subscribe(self.topics, listener=_Listener(self))
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

    def _message(self, track: _Track, record: Any) -> KafkaMessage:
        metadata: dict[str, str] = {}
        for name, value in record.headers or ():
            metadata[str(name)] = value.decode("utf-8", "replace") if value is not None else ""
        partition = int(record.partition)
        offset = int(record.offset)
        # One topic: the partition orders; several: the same number is another partition.
        lane = str(partition) if len(self.topics) == 1 else f"{record.topic}/{partition}"
        return KafkaMessage(
            record.topic,
            record.value if record.value is not None else b"",
            track,
            metadata=metadata,
            ordering_key=lane,
            ref=f"p{partition}@{offset}" if len(self.topics) == 1 else f"{lane}@{offset}",
            ack=partial(self._ack, track, offset),
            offset=offset,
            key=record.key,
            timestamp_ms=int(record.timestamp or 0),
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
        self.owner.forget(self)
        task, self._commit_task = self._commit_task, None
        try:
            if task is not None and not task.done():
                task.cancel()
                # Waited for, not awaited: its own end is of no interest, and a cancellation
                # of close() itself must not be swallowed here.
                await asyncio.wait((task,), timeout=CLOSE_COMMIT_TIMEOUT)
            offsets = self._pending()
            # With no broker reachable the commit cannot succeed: do not wait for it (those
            # messages are redelivered, which at-least-once allows).
            if offsets and self._started and await self.owner.probe(CLOSE_PROBE_TIMEOUT):
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
        if cancelling():
            raise
        fetcher = getattr(consumer, "_fetcher", None)
        for task in list(getattr(fetcher, "_pending_tasks", ())):
            task.cancel()
        client = getattr(consumer, "_client", None)
        if client is not None:
            await quietly(client.close(), CLOSE_TIMEOUT)
    except Exception as err:
        log.debug("ignored while stopping a consumer: %r", err)
