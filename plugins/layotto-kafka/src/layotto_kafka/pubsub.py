"""`pubsub.kafka`: publish with acks=all, consume in a consumer group with manual commits of
contiguous acked offsets (at-least-once), one aiokafka consumer per subscription.

The producer, the reachability probe and the consumer are `KafkaClient`'s and
`KafkaSubscription`'s (shared with `bindings.kafka`): see `client.py` and `consumer.py`.
"""

from __future__ import annotations

from layotto.plugin import (
    PARTITION_KEY_METADATA,
    PublishRequest,
    PubSub,
    SubscribeRequest,
    Subscription,
)

from layotto_kafka.client import KafkaComponent
from layotto_kafka.consumer import KafkaSubscription
from layotto_kafka.settings import KafkaMetadata

# Dapr's alternative name for the partition key.
KEY_METADATA = "__key"
# Subscription metadata that overrides the component's consumer group.
CONSUMER_GROUP_METADATA = "consumerGroup"

__all__ = ["KafkaPubSub", "KafkaSubscription"]


class KafkaPubSub(KafkaComponent[KafkaMetadata], PubSub):
    noun = "pubsub"

    async def publish(self, request: PublishRequest) -> None:
        metadata = request.metadata
        key_text = metadata.get(PARTITION_KEY_METADATA) or metadata.get(KEY_METADATA)
        await self.client.publish(
            request.topic,
            request.data,
            key=key_text.encode() if key_text else None,
            headers=[(name, value.encode()) for name, value in metadata.items()],
        )

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        group = (request.metadata.get(CONSUMER_GROUP_METADATA) or "").strip()
        return await self.client.subscribe(
            [request.topic],
            group or self.metadata.group_id(self.app_id),
            within=self.subscribe_timeout,
        )
