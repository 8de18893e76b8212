"""`pubsub.kafka`: publish with acks=all, consume in a consumer group with manual commits of
contiguous acked offsets (at-least-once), one aiokafka consumer per subscription.

The producer, the reachability probe and the consumer are `KafkaClient`'s and
`KafkaSubscription`'s (shared with `bindings.kafka`): see `client.py` and `consumer.py`.

Bulk publish (`BULK_PUBSUB`): every entry becomes a record as in `publish` (key from
`partitionKey`/`__key`, metadata as headers) and all are handed to the producer at once, then
acknowledged together within one `publishTimeout` (`KafkaClient.publish_many`); an entry whose
record was refused or not acknowledged in time is listed with its own error.
"""

from __future__ import annotations

from collections.abc import Mapping

from layotto.plugin import (
    PARTITION_KEY_METADATA,
    BulkPublishFailure,
    BulkPublishRequest,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)

from layotto_kafka.client import KafkaComponent, Record
from layotto_kafka.consumer import KafkaSubscription
from layotto_kafka.settings import KafkaMetadata

# Dapr's alternative name for the partition key.
KEY_METADATA = "__key"
# Subscription metadata that overrides the component's consumer group.
CONSUMER_GROUP_METADATA = "consumerGroup"

__all__ = ["KafkaPubSub", "KafkaSubscription"]


class KafkaPubSub(KafkaComponent[KafkaMetadata], PubSub):
    noun = "pubsub"

    features = frozenset({PubSubFeature.BULK_PUBSUB})

    async def publish(self, request: PublishRequest) -> None:
        record = _record(request.data, request.metadata)
        await self.client.publish(
            request.topic, record.data, key=record.key, headers=record.headers
        )

    async def publish_bulk(self, request: BulkPublishRequest) -> list[BulkPublishFailure]:
        records = [_record(entry.data, entry.metadata) for entry in request.entries]
        errors = await self.client.publish_many(request.topic, records)
        return [
            BulkPublishFailure(entry.entry_id, error)
            for entry, error in zip(request.entries, errors, strict=True)
            if error is not None
        ]

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        group = (request.metadata.get(CONSUMER_GROUP_METADATA) or "").strip()
        return await self.client.subscribe(
            [request.topic],
            group or self.metadata.group_id(self.app_id),
            within=self.subscribe_timeout,
        )


def _record(data: bytes, metadata: Mapping[str, str]) -> Record:
    key_text = metadata.get(PARTITION_KEY_METADATA) or metadata.get(KEY_METADATA)
    return Record(
        data,
        key_text.encode() if key_text else None,
        [(name, value.encode()) for name, value in metadata.items()],
    )
