"""`pubsub.redis`: Redis Streams with consumer groups, in Dapr's layout.

- A topic is a stream. `publish` is `XADD <topic> [MAXLEN ~ n] * data <bytes> [metadata <json>]`:
  the payload in `data` and the publish metadata as a JSON object in `metadata`, which is what
  Dapr's `pubsub.redis` writes and reads, so either sidecar reads what the other published.
- `consumerID` (default: the app id) names the consumer group and, unless `consumerName` says
  otherwise, the consumer in it. `subscribe` creates the group at `0` with MKSTREAM (an existing
  group is fine) and returns once it exists.
- `receive` first re-reads this consumer's own pending entries (`XREADGROUP ... 0`): whatever
  an earlier subscription received but never acked is delivered again at once. Then it reads
  new entries (`>`) with `BLOCK`, on a connection of its own. Every `redeliverInterval` it runs
  `XAUTOCLAIM` for entries pending longer than `processingTimeout` (another consumer died with
  them, or our own ack failed) and delivers them again, skipping those this subscription has
  in flight (received and not yet acked). Entries deleted from the stream while pending are
  acked away.
- Bulk publish (`BULK_PUBSUB`): one non-transactional pipeline of the same `XADD`s, one round
  trip; an entry whose `XADD` the server refused is listed with that error, and a pipeline that
  fails as a whole (connection lost, timeout) fails every entry (some may have been added: they
  are listed all the same, at-least-once).
- A message is acked (`XACK`) only when the sidecar says so. Closing a subscription acks
  nothing: its entries stay pending and come back to the next subscription of that consumer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any

from layotto.plugin import (
    BackendUnavailable,
    BulkPublishFailure,
    BulkPublishRequest,
    Component,
    ComponentContext,
    InvalidArgument,
    LayottoError,
    Message,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)
from redis import exceptions as rx
from redis.asyncio import Redis

from layotto_redis.base import RedisComponent, close_quietly
from layotto_redis.errors import Translator, connection_reason, translate
from layotto_redis.settings import RedisPubSubMetadata, create_client

log = logging.getLogger(__name__)

DATA_FIELD = "data"
METADATA_FIELD = "metadata"  # Dapr's: the publish metadata as a JSON object of strings
CONSUMER_ID_METADATA = "consumerID"  # subscription metadata: another consumer group
CONSUMER_NAME_METADATA = "consumerName"  # subscription metadata: another consumer name

BLOCK_MS = 1000  # one blocking XREADGROUP waits at most this long
RECEIVE_RETRY_WINDOW = 2.0  # receive retries a lost connection this long, then gives up
RETRY_DELAY_MIN = 0.05
RETRY_DELAY_MAX = 0.5
CLOSE_TIMEOUT = 1.0
NOGROUP_RECREATES = 3  # consecutive group re-creations before receive gives up
_END_CURSOR = "0-0"
MIN_REDELIVERY_VERSION = (6, 2)  # XAUTOCLAIM
MIN_STREAMS_VERSION = (5, 0)


def _text(raw: bytes | str) -> str:
    return raw if isinstance(raw, str) else raw.decode("utf-8", "replace")


def decode_fields(fields: Mapping[Any, Any]) -> tuple[bytes, dict[str, str]]:
    """(data, metadata) of a stream entry. `metadata` (Dapr's JSON object) gives the publish
    metadata; any other field (an entry written by hand or by another producer) is kept as
    metadata too, under its own name. A JSON value wins over a plain field of the same name."""
    data = b""
    plain: dict[str, str] = {}
    published: dict[str, str] = {}
    for raw_key, raw_value in fields.items():
        key = _text(raw_key)
        if key == DATA_FIELD:
            data = raw_value if isinstance(raw_value, bytes) else str(raw_value).encode()
            continue
        value = _text(raw_value) if isinstance(raw_value, bytes | str) else str(raw_value)
        if key == METADATA_FIELD:
            try:
                decoded = json.loads(value)
            except ValueError:
                decoded = None
            if isinstance(decoded, dict):
                published = {
                    str(k): v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()
                }
                continue
        plain[key] = value
    return data, {**plain, **published}


def encode_fields(request: PublishRequest) -> dict[str, bytes | str]:
    fields: dict[str, bytes | str] = {DATA_FIELD: request.data}
    if request.metadata:
        fields[METADATA_FIELD] = json.dumps(dict(request.metadata), separators=(",", ":"))
    return fields


def parse_version(text: str) -> tuple[int, ...]:
    parts: list[int] = []
    for part in text.split(".")[:2]:
        if not part.isdigit():
            break
        parts.append(int(part))
    return tuple(parts)


def _is_nogroup(err: BaseException) -> bool:
    return isinstance(err, rx.ResponseError) and str(err).startswith("NOGROUP")


def _is_busygroup(err: BaseException) -> bool:
    return isinstance(err, rx.ResponseError) and str(err).startswith("BUSYGROUP")


class RedisPubSub(RedisComponent, PubSub):
    label = "pub/sub"
    features = frozenset({PubSubFeature.BULK_PUBSUB})

    def __init__(self, settings: RedisPubSubMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self.settings: RedisPubSubMetadata = settings
        self.consumer_id = settings.consumer_id or context.app_id
        self.consumer_name = settings.consumer_name or self.consumer_id
        self._subscriptions: set[RedisSubscription] = set()

    @classmethod
    def create(cls, metadata: RedisPubSubMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def init(self) -> None:
        if not self.consumer_id:
            raise InvalidArgument(
                f"{self._what}: metadata.consumerID is required when the sidecar has no app "
                "id (--app-id)"
            )
        await super().init()
        try:
            await self._check_version()
        except BaseException:
            await super().close()
            raise

    async def _check_version(self) -> None:
        """Streams need Redis 5; redelivery (XAUTOCLAIM) needs 6.2. Skipped when INFO is not
        allowed (an ACL without +info): a missing command then fails where it is used."""
        try:
            with self.errors():
                info = await self.client.info("server")
        except LayottoError as err:
            if isinstance(err.__cause__, rx.ResponseError):
                log.info("%s: cannot read the server version (INFO not allowed)", self._what)
                return
            raise
        text = str(info.get("redis_version", ""))
        version = parse_version(text)
        if not version:
            return
        if version < MIN_STREAMS_VERSION:
            raise self.failure(f"Redis Streams need Redis 5.0 or later, the server is {text}")
        if version < MIN_REDELIVERY_VERSION and self.settings.redelivery:
            raise self.failure(
                f"redelivery (XAUTOCLAIM) needs Redis 6.2 or later, the server is {text}: "
                "set metadata.redeliverInterval to 0 to run without it"
            )

    async def close(self) -> None:
        subscriptions, self._subscriptions = self._subscriptions, set()
        for subscription in subscriptions:
            await subscription.close()
        await super().close()

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, request: PublishRequest) -> None:
        if not request.topic:
            raise InvalidArgument("field 'topic' must not be empty")
        client = self.client
        with self.errors():
            await client.xadd(
                request.topic,
                encode_fields(request),  # type: ignore[arg-type]
                maxlen=self.settings.max_len,
                approximate=True,
            )

    async def publish_bulk(self, request: BulkPublishRequest) -> list[BulkPublishFailure]:
        if not request.topic:
            raise InvalidArgument("field 'topic' must not be empty")
        requests = request.requests()
        with self.errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for _, single in requests:
                    pipe.xadd(
                        request.topic,
                        encode_fields(single),  # type: ignore[arg-type]
                        maxlen=self.settings.max_len,
                        approximate=True,
                    )
                replies: list[Any] = await pipe.execute(raise_on_error=False)
        return [
            BulkPublishFailure(entry_id, translate(reply, self._what, self._secrets))
            for (entry_id, _), reply in zip(requests, replies, strict=True)
            if isinstance(reply, Exception)
        ]

    # -- subscribe -------------------------------------------------------------------------

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        if not request.topic:
            raise InvalidArgument("field 'topic' must not be empty")
        group = request.metadata.get(CONSUMER_ID_METADATA, "").strip() or self.consumer_id
        consumer = request.metadata.get(CONSUMER_NAME_METADATA, "").strip() or (
            self.settings.consumer_name or group
        )
        await create_group(self.client, request.topic, group, self.errors())
        subscription = RedisSubscription(self, request.topic, group, consumer)
        self._subscriptions.add(subscription)
        return subscription

    def _forget(self, subscription: RedisSubscription) -> None:
        self._subscriptions.discard(subscription)


async def create_group(
    client: Redis, topic: str, group: str, errors: contextlib.AbstractContextManager[None]
) -> None:
    """XGROUP CREATE <topic> <group> 0 MKSTREAM; an existing group is fine. A new group starts
    at the beginning of the stream, as in Dapr."""
    try:
        with errors:
            await client.xgroup_create(topic, group, id="0", mkstream=True)
    except LayottoError as err:
        if not _is_busygroup(err.__cause__ or err):
            raise


class RedisSubscription(Subscription):
    """One topic, one consumer of one group, one dedicated connection for the blocking reads.
    Used by one task at a time (`receive`), while acks may come from any task."""

    retry_window = RECEIVE_RETRY_WINDOW

    def __init__(self, owner: RedisPubSub, topic: str, group: str, consumer: str) -> None:
        settings = owner.settings
        self._owner = owner
        self.topic = topic
        self.group = group
        self.consumer = consumer
        self.concurrency = settings.concurrency
        self._ordering_key: str | None = "" if settings.concurrency == 1 else None
        self._count = settings.queue_depth
        self._min_idle_ms = int(settings.processing_timeout * 1000)
        self._interval = settings.redeliver_interval
        self._redelivery = settings.redelivery
        self._what = f"{owner._what} topic {topic!r}"
        self._secrets = owner._secrets
        self._errors = Translator(self._what, self._secrets)
        # The blocking read must not time out on the socket before BLOCK ends; no retries of
        # its own (receive decides), one connection.
        blocking = settings.model_copy(
            update={
                "read_timeout": settings.socket_timeout + BLOCK_MS / 1000,
                "write_timeout": None,
            }
        )
        self._conn = create_client(blocking, max_retries=0, pool_size=1)
        self._buffer: deque[Message] = deque()
        # Entry ids received (buffered or handed out) and not yet acked: never delivered twice
        # at once by a re-read or a reclaim.
        self._known: set[str] = set()
        # Not None: re-read our own pending entries after this id before reading new ones (at
        # the start, and after a read whose reply may have been lost).
        self._reread_from: str | None = "0"
        self._claim_cursor = _END_CURSOR
        self._next_reclaim = 0.0  # the first reclaim runs at once, as in Dapr
        self._closed = False

    # -- receive ---------------------------------------------------------------------------

    async def receive(self) -> Message:
        failing_since: float | None = None
        attempt = 0
        recreated = 0
        while True:
            if self._closed:
                raise BackendUnavailable(f"{self._what}: the subscription is closed")
            if self._buffer:
                return self._buffer.popleft()
            try:
                await self._fill()
            except (rx.ConnectionError, rx.TimeoutError, OSError) as err:
                self._reread_from = "0"
                if self._closed:
                    continue
                now = time.monotonic()
                if failing_since is None:
                    failing_since = now
                if now - failing_since >= self.retry_window:
                    reason = (
                        "Redis did not answer in time"
                        if isinstance(err, rx.TimeoutError | TimeoutError)
                        and not str(err).startswith("Timeout connecting")
                        else f"Redis is unavailable ({connection_reason(err)})"
                    )
                    raise BackendUnavailable(f"{self._what}: {reason}") from err
                await asyncio.sleep(min(RETRY_DELAY_MIN * 2**attempt, RETRY_DELAY_MAX))
                attempt += 1
                continue
            except rx.ResponseError as err:
                if not _is_nogroup(err) or recreated >= NOGROUP_RECREATES:
                    raise translate(err, self._what, self._secrets) from err
                # The stream or group is gone (a restarted server that lost its data, a
                # deleted key): create it again, as Dapr does, and go on.
                log.warning(
                    "%s: consumer group %r is missing, creating it again", self._what, self.group
                )
                recreated += 1
                await create_group(self._conn, self.topic, self.group, self._errors)
                self._reread_from = "0"
                continue
            except Exception as err:
                if self._closed:
                    continue
                raise translate(err, self._what, self._secrets) from err
            failing_since = None
            attempt = 0
            recreated = 0

    async def _fill(self) -> None:
        """One round trip that may put entries into the buffer."""
        if self._reread_from is not None:
            entries = await self._read(self._reread_from)
            if not entries:
                self._reread_from = None
                return
            self._reread_from = _text(entries[-1][0])
            await self._take(entries)
            return
        now = time.monotonic()
        block_ms = BLOCK_MS
        if self._redelivery:
            if now >= self._next_reclaim:
                await self._reclaim(now)
                return
            block_ms = max(1, min(BLOCK_MS, int((self._next_reclaim - now) * 1000) + 1))
        # Should this reply be lost (connection error, cancellation), the entries it handed to
        # this consumer are pending: re-read them before anything else.
        self._reread_from = "0"
        entries = await self._read(">", block_ms)
        self._reread_from = None
        await self._take(entries)

    async def _read(self, after: str, block_ms: int | None = None) -> Sequence[Any]:
        # RESP2 (the client's protocol): [[stream, [(id, fields), ...]]], or None on timeout.
        reply: Any = await self._conn.xreadgroup(
            self.group, self.consumer, {self.topic: after}, count=self._count, block=block_ms
        )
        if not reply:
            return []
        entries: Sequence[Any] = reply[0][1] or []
        return entries

    async def _reclaim(self, now: float) -> None:
        reply = await self._conn.xautoclaim(
            self.topic,
            self.group,
            self.consumer,
            self._min_idle_ms,
            start_id=self._claim_cursor,
            count=self._count,
        )
        cursor = _text(reply[0])
        entries: Sequence[Any] = reply[1] or []
        deleted = [_text(raw) for raw in (reply[2] if len(reply) > 2 else [])]
        if cursor in ("0", _END_CURSOR):
            self._claim_cursor = _END_CURSOR
            self._next_reclaim = now + self._interval
        else:
            self._claim_cursor = cursor  # more to look at: go on at the next fill
        taken = await self._take(entries, deleted)
        if taken:
            log.info("%s: redelivering %d entries pending too long", self._what, taken)

    async def _take(self, entries: Sequence[Any], deleted: Sequence[str] = ()) -> int:
        """Buffer the entries not already known; ack away deleted ones. -> how many were new."""
        taken = 0
        gone = list(deleted)
        for raw_id, fields in entries:
            if raw_id is None:
                continue
            entry_id = _text(raw_id)
            if not fields:  # pending, but deleted from the stream (XDEL, MAXLEN trimming)
                gone.append(entry_id)
                continue
            if entry_id in self._known:
                continue
            self._known.add(entry_id)
            self._buffer.append(self._message(entry_id, fields))
            taken += 1
        if gone:
            log.info("%s: acking %d pending entries that were deleted", self._what, len(gone))
            await self._conn.xack(self.topic, self.group, *gone)
        return taken

    def _message(self, entry_id: str, fields: Mapping[Any, Any]) -> Message:
        data, metadata = decode_fields(fields)

        async def ack() -> None:
            self._known.discard(entry_id)  # done here, acked or not (a failed ack is reclaimed)
            client = self._owner.client
            with self._errors:
                await client.xack(self.topic, self.group, entry_id)

        return Message(
            self.topic,
            data,
            metadata=metadata,
            ordering_key=self._ordering_key,
            ref=entry_id,
            ack=ack,
        )

    # -- close -----------------------------------------------------------------------------

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buffer.clear()  # un-acked: pending in Redis, re-read by the next subscription
        self._owner._forget(self)
        with contextlib.suppress(Exception):
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await close_quietly(self._conn)

    def __repr__(self) -> str:
        return (
            f"RedisSubscription(topic={self.topic!r}, group={self.group!r}, "
            f"consumer={self.consumer!r})"
        )


__all__ = [
    "RedisPubSub",
    "RedisPubSubMetadata",
    "RedisSubscription",
    "decode_fields",
    "encode_fields",
]
