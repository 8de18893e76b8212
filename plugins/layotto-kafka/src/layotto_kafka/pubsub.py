"""`pubsub.kafka`: publish with acks=all, consume in a consumer group with manual commits of
contiguous acked offsets (at-least-once), one aiokafka consumer per subscription.

The producer, the reachability probe and the consumer are `KafkaClient`'s and
`KafkaSubscription`'s (shared with `bindings.kafka`): see `client.py` and `consumer.py`.
"""

from __future__ import annotations

from layotto.plugin import (
    PARTITION_KEY_METADATA,
    ComponentContext,
    Health,
    PublishRequest,
    PubSub,
    SubscribeRequest,
    Subscription,
)

from layotto_kafka.client import KafkaClient
from layotto_kafka.consumer import KafkaSubscription
from layotto_kafka.settings import KafkaMetadata

# Dapr's alternative name for the partition key.
KEY_METADATA = "__key"
# Subscription metadata that overrides the component's consumer group.
CONSUMER_GROUP_METADATA = "consumerGroup"

SUBSCRIBE_TIMEOUT = 30.0  # join + assignment + positions

__all__ = ["KafkaPubSub", "KafkaSubscription"]


class KafkaPubSub(PubSub):
    # Class attributes so that tests may shorten them.
    subscribe_timeout: float = SUBSCRIBE_TIMEOUT

    def __init__(self, metadata: KafkaMetadata, context: ComponentContext) -> None:
        self.metadata = metadata
        self.name = context.name
        self.app_id = context.app_id
        self.what = f"pubsub '{context.name}'"
        self.client = KafkaClient(metadata, context.app_id, self.what)

    @classmethod
    def create(cls, metadata: KafkaMetadata, context: ComponentContext) -> KafkaPubSub:
        return cls(metadata, context)

    async def init(self) -> None:
        await self.client.start()

    async def close(self) -> None:
        await self.client.close()

    async def check_health(self) -> Health:
        return await self.client.check_health()

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
