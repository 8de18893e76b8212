"""`bindings.kafka`: Dapr's Kafka binding, both sides, over the plugin's shared `KafkaClient`
(the same connection and auth metadata, producer and consumer as `pubsub.kafka`).

Output: `create` produces the data to `publishTopic` with acks=all. The record key comes from
request metadata `partitionKey` (or Dapr's `__key`, or `key`); every metadata entry travels as a
record header.

Input: `read` joins `consumerGroup` (default: the app id) for every topic in `topics` and hands
each record to the handler, with the record headers plus Dapr's `__key`, `__topic`,
`__partition`, `__offset` and `__timestamp` (ms) as metadata. Records of one partition go one
after the other; partitions run side by side. A record is committed only after the handler
returned (at-least-once). When the handler raises, the record is handed to it again after a
capped, jittered backoff (from `consumeRetryInterval`, up to 10 s), for as long as this member
owns the partition: nothing after it in that partition is committed meanwhile, so a restart or
a rebalance redelivers it from the broker. (Upstream's binding turns consumer retries off by
default and then marks a failed record consumed; here nothing is lost.)

`direction` (`input`, `output`, or both) says which sides the sidecar uses; with `input`,
`topics` is required, with `output`, `publishTopic`.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Mapping
from typing import Annotated, Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from layotto.plugin import (
    PARTITION_KEY_METADATA,
    BindingEvent,
    BindingHandler,
    BindingRequest,
    BindingResponse,
    InputBinding,
    InvalidArgument,
    OutputBinding,
)
from layotto.plugin.addresses import comma_list
from layotto.plugin.durations import Duration
from pydantic import BeforeValidator, Field, model_validator

from layotto_kafka.client import KafkaComponent
from layotto_kafka.consumer import KafkaMessage, KafkaSubscription
from layotto_kafka.settings import KafkaMetadata

log = logging.getLogger("layotto_kafka")

OPERATIONS = ("create",)
# Request metadata naming the record key, in the order they are looked at.
KEY_METADATA = (PARTITION_KEY_METADATA, "__key", "key")
RETRY_CAP = 10.0
LANE_BUFFER = 64  # records received per partition ahead of the handler
CLOSE_TIMEOUT = 10.0  # the consumer's final commit and leave, shielded


def _directions(value: str) -> set[str]:
    return {part.strip().lower() for part in value.split(",") if part.strip()}


class KafkaBindingMetadata(KafkaMetadata):
    topics: Annotated[list[str], BeforeValidator(comma_list)] = Field(default_factory=list)
    publish_topic: str = Field(default="", alias="publishTopic")
    # The first redelivery of a record the handler failed waits about this long; each next
    # one twice as long, up to 10 s.
    consume_retry_interval: Duration = Field(default=0.1, gt=0, alias="consumeRetryInterval")
    # Read by the sidecar (which side of the binding it uses); checked here against the rest.
    direction: str = ""

    @model_validator(mode="after")
    def _check_sides(self) -> KafkaBindingMetadata:
        sides = _directions(self.direction)
        unknown = sides - {"input", "output"}
        if unknown:
            raise ValueError(f"direction: use 'input', 'output' or both, not {sorted(unknown)}")
        if "input" in sides and not self.topics:
            raise ValueError("topics is required when direction includes 'input'")
        if "output" in sides and not self.publish_topic.strip():
            raise ValueError("publishTopic is required when direction includes 'output'")
        return self


def retry_delay(attempt: int, base: float, cap: float = RETRY_CAP) -> float:
    """Equal-jitter exponential backoff: in [d/2, d], d = min(cap, base * 2**attempt)."""
    ceiling = min(cap, base * 2.0 ** min(attempt, 64))
    return ceiling / 2 + random.uniform(0, ceiling / 2)


def event_metadata(message: KafkaMessage) -> dict[str, str]:
    """Dapr's input metadata for a record: key, offset, topic, timestamp and partition, then
    the record headers (which win on a clash, as upstream)."""
    metadata: dict[str, str] = {}
    if message.key is not None:
        metadata["__key"] = message.key.decode("utf-8", "replace")
    metadata["__offset"] = str(message.offset)
    metadata["__topic"] = message.topic
    metadata["__timestamp"] = str(message.timestamp_ms)
    metadata["__partition"] = str(message.partition)
    metadata.update(message.metadata)
    return metadata


class KafkaBinding(KafkaComponent[KafkaBindingMetadata], OutputBinding, InputBinding):
    noun = "binding"

    # -- output ----------------------------------------------------------------------------

    def operations(self) -> tuple[str, ...]:
        return OPERATIONS

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        if request.operation not in OPERATIONS:
            raise InvalidArgument(f"{self.what}: invalid operation: {request.operation}")
        topic = self.metadata.publish_topic.strip()
        if not topic:
            raise InvalidArgument(f"{self.what}: metadata.publishTopic is not set")
        await self.client.publish(
            topic,
            request.data,
            key=_record_key(request.metadata),
            headers=[(name, value.encode()) for name, value in request.metadata.items()],
        )
        return BindingResponse()

    # -- input -----------------------------------------------------------------------------

    async def read(self, handler: BindingHandler) -> None:
        topics = [topic for topic in self.metadata.topics if topic]
        if not topics:
            log.warning("%s: no topics are set: the input binding has nothing to read", self.what)
            return
        subscription = await self.client.subscribe(
            topics, self.metadata.group_id(self.app_id), within=self.subscribe_timeout
        )
        try:
            await self._consume(subscription, handler)
        finally:
            # Commit what the handler finished and leave the group, even when cancelled.
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                await subscription.close()

    async def _consume(self, subscription: KafkaSubscription, handler: BindingHandler) -> None:
        lanes: dict[str, MemoryObjectSendStream[KafkaMessage]] = {}
        try:
            async with anyio.create_task_group() as tg:
                while True:
                    message = await subscription.receive()
                    if not isinstance(message, KafkaMessage):  # pragma: no cover - always is
                        raise TypeError(f"unexpected message type {type(message).__name__}")
                    key = message.ordering_key or ""
                    lane = lanes.get(key)
                    if lane is None:
                        lane, receive = anyio.create_memory_object_stream[KafkaMessage](LANE_BUFFER)
                        lanes[key] = lane
                        tg.start_soon(self._lane, receive, handler)
                    await lane.send(message)
        finally:
            for lane in lanes.values():
                lane.close()

    async def _lane(
        self, messages: MemoryObjectReceiveStream[KafkaMessage], handler: BindingHandler
    ) -> None:
        async with messages:
            async for message in messages:
                await self._deliver(message, handler)

    async def _deliver(self, message: KafkaMessage, handler: BindingHandler) -> None:
        event = BindingEvent(message.data, event_metadata(message))
        attempt = 0
        while message.current:  # a revoked partition's record is the new owner's to deliver
            try:
                await handler(event)
            except Exception as err:
                delay = retry_delay(attempt, self.metadata.consume_retry_interval)
                level = logging.WARNING if attempt % 10 == 0 else logging.DEBUG
                log.log(
                    level,
                    "%s: record %s/%s was not processed (%s); delivering it again in %.2f s",
                    self.what,
                    message.topic,
                    message.ref,
                    _describe(err),
                    delay,
                )
                attempt += 1
                await anyio.sleep(delay)
                continue
            await message.ack()
            return


def _record_key(metadata: Mapping[str, str]) -> bytes | None:
    for name in KEY_METADATA:
        value = metadata.get(name)
        if value:
            return value.encode()
    return None


def _describe(err: Any) -> str:
    message = getattr(err, "message", None) or str(err)
    return f"{type(err).__name__}: {message}" if message else type(err).__name__
