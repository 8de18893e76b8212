"""PublishEvent throughput through the sidecar against the direct publish, per component.

=========================  =================  ====================================================
scenario                   sidecar component  direct (in the load-generator process)
=========================  =================  ====================================================
``pubsub_publish_memory``  pubsub.in-memory   ``InMemoryPubSub.publish``, the component itself,
                                              created in the load generator
``pubsub_publish_redis``   pubsub.redis       redis-py ``XADD <topic> MAXLEN ~ n * data <event>
                                              metadata <json>``: the component's stream layout
                                              (``layotto_redis.pubsub.encode_fields``), through a
                                              client built with the component's settings
``pubsub_publish_kafka``   pubsub.kafka       aiokafka ``AIOKafkaProducer.send_and_wait`` with the
                                              component's producer settings (``acks="all"``,
                                              ``linger_ms=0``, no idempotence), metadata as headers
=========================  =================  ====================================================

One call publishes one event: a 128-byte JSON payload (``application/json``) with one metadata
entry, to a topic of its own per run (``<run id>-publish``). Nobody subscribes to it (the
in-memory component then drops the message, as Dapr's does: the sidecar's PublishEvent path with
a component that costs nothing). Through the sidecar the payload is wrapped in a CloudEvents
envelope on every call; direct mode publishes the same envelope, built once in ``setup_direct``
with layotto's own ``envelope()``, so both modes put the same bytes on the broker and the
per-call envelope (a uuid, a timestamp, a JSON encode) counts as sidecar work.

The helpers here (component configs, payloads, tokens) are shared with the publish -> subscriber
latency mode (``bench.pubsub_latency``).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.memory_pubsub import InMemoryPubSub
from layotto.plugin import PublishRequest
from layotto.services.cloudevents import CLOUDEVENTS_JSON, LAYOTTO_STYLE, envelope

from bench.scenario import Scenario, register

APP_ID = "bench"
PUBSUB = "bench-pubsub"
CONTENT_TYPE = "application/json"
PAYLOAD_BYTES = 128
#: Publish metadata of every event (a Redis `metadata` field, a Kafka header).
METADATA: Mapping[str, str] = {"bench": "layotto"}
#: `maxLenApprox` of the Redis stream, in both modes (nobody consumes the publish topic).
REDIS_MAX_LEN = 10_000
#: Short group timeouts, so a Kafka subscription (latency mode) joins within about a second.
KAFKA_SESSION_TIMEOUT_MS = 2000
KAFKA_HEARTBEAT_MS = 200
#: Tansu holds a consumer's fetch until the fetch wait runs out even when records arrive
#: (Apache Kafka answers at once), so the wait, in both modes, is short: what is measured is
#: the sidecar, not the test broker's fetch hold.
KAFKA_FETCH_MAX_WAIT_MS = 10
KAFKA_GROUP_METADATA: Mapping[str, str] = {
    "sessionTimeout": f"{KAFKA_SESSION_TIMEOUT_MS}ms",
    "heartbeatInterval": f"{KAFKA_HEARTBEAT_MS}ms",
    "fetchMaxWait": f"{KAFKA_FETCH_MAX_WAIT_MS}ms",
}
#: Direct Kafka producer = the component's (`layotto_kafka.pubsub.KafkaPubSub.init`).
KAFKA_PRODUCER_OPTIONS: Mapping[str, Any] = {
    "acks": "all",
    "enable_idempotence": False,
    "linger_ms": 0,
    "request_timeout_ms": 5000,
    "client_id": f"layotto-{APP_ID}",
}

COMPONENT_TYPES: Mapping[str, str] = {
    "memory": "pubsub.in-memory",
    "redis": "pubsub.redis",
    "kafka": "pubsub.kafka",
}
#: The backend each component needs from the harness.
COMPONENT_BACKENDS: Mapping[str, frozenset[str]] = {
    "memory": frozenset(),
    "redis": frozenset({"redis"}),
    "kafka": frozenset({"kafka"}),
}
#: The subscription metadata that names the consumer group, per component.
GROUP_METADATA_KEY: Mapping[str, str] = {
    "memory": "consumerGroup",
    "redis": "consumerID",
    "kafka": "consumerGroup",
}

ClientT = TypeVar("ClientT")


def payload(token: str = "") -> bytes:
    """A JSON object of :data:`PAYLOAD_BYTES` bytes carrying ``token``."""
    head = json.dumps({"token": token, "pad": ""}, separators=(",", ":"))
    pad = "x" * max(0, PAYLOAD_BYTES - len(head))
    return json.dumps({"token": token, "pad": pad}, separators=(",", ":")).encode()


def token_of_data(data: bytes) -> str:
    """The token of a delivered event's data (the JSON :func:`payload`)."""
    value = json.loads(data)
    return str(value["token"]) if isinstance(value, dict) else ""


def cloudevent(topic: str, data: bytes) -> bytes:
    """The envelope the sidecar would publish for ``data`` (layotto's own code)."""
    return envelope(
        data=data,
        content_type=CONTENT_TYPE,
        topic=topic,
        pubsub_name=PUBSUB,
        metadata=METADATA,
        style=LAYOTTO_STYLE,
        broker_expires=False,
    ).body


def token_of_cloudevent(body: bytes) -> str:
    """The token of a broker message holding a :func:`cloudevent`."""
    event = json.loads(body)
    data = event.get("data") if isinstance(event, dict) else None
    return str(data.get("token", "")) if isinstance(data, dict) else ""


def component_config(component: str, backends: Mapping[str, str]) -> dict[str, Any]:
    """The pub/sub component :data:`PUBSUB` of the given kind (``memory``, ``redis``,
    ``kafka``) on the harness's backend."""
    metadata: dict[str, Any] = {}
    if component == "redis":
        metadata = {"redisHost": backends["redis"], "maxLenApprox": REDIS_MAX_LEN}
    elif component == "kafka":
        metadata = {"brokers": backends["kafka"], **KAFKA_GROUP_METADATA}
    config: dict[str, Any] = {"name": PUBSUB, "type": COMPONENT_TYPES[component]}
    if metadata:
        config["metadata"] = metadata
    return config


def sidecar_config(
    component: str, backends: Mapping[str, str], app_port: int | None = None
) -> dict[str, Any]:
    """A native config with one pub/sub component; ``app_port``: the app's callback port."""
    app: dict[str, Any] = {"id": APP_ID}
    if app_port is not None:
        app["port"] = app_port
    return {"app": app, "components": [component_config(component, backends)]}


def publish_request(topic: str, data: bytes) -> pb.PublishEventRequest:
    return pb.PublishEventRequest(
        pubsub_name=PUBSUB,
        topic=topic,
        data=data,
        data_content_type=CONTENT_TYPE,
        metadata=dict(METADATA),
    )


class _Publish(Scenario[ClientT]):
    component: ClassVar[str]

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topic = f"{self.context.run_id}-publish"
        self.data = payload("publish")
        self.request = publish_request(self.topic, self.data)
        self.event = cloudevent(self.topic, self.data)

    def sidecar_config(self) -> Mapping[str, Any]:
        return sidecar_config(self.component, self.context.backends)

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        await stub.publish_event(self.request)  # creates the topic (Kafka) / stream (Redis)

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        await stub.publish_event(self.request)


@register
class PublishMemory(_Publish[InMemoryPubSub]):
    name = "pubsub_publish_memory"
    description = (
        f"PublishEvent of a {PAYLOAD_BYTES}-byte JSON event, pubsub.in-memory, no subscriber "
        "(dropped); direct: InMemoryPubSub.publish of the envelope"
    )
    component = "memory"

    async def make_direct_client(self) -> InMemoryPubSub:
        pubsub = InMemoryPubSub(app_id=APP_ID)
        await pubsub.init()
        return pubsub

    async def close_direct_client(self, client: InMemoryPubSub) -> None:
        await client.close()

    async def direct_call(self, client: InMemoryPubSub, i: int) -> None:
        await client.publish(PublishRequest(self.topic, self.event, METADATA, CLOUDEVENTS_JSON))


@register
class PublishRedis(_Publish[Any]):
    name = "pubsub_publish_redis"
    description = (
        f"PublishEvent of a {PAYLOAD_BYTES}-byte JSON event, pubsub.redis (Streams, "
        f"maxLenApprox {REDIS_MAX_LEN}); direct: redis-py XADD data + metadata, same layout"
    )
    component = "redis"
    requires = frozenset({"redis"})

    async def make_direct_client(self) -> Any:
        from layotto_redis.pubsub import encode_fields
        from layotto_redis.settings import RedisPubSubMetadata, create_client

        settings = RedisPubSubMetadata.model_validate(
            {"redisHost": self.backend("redis"), "maxLenApprox": REDIS_MAX_LEN}
        )
        client = create_client(settings)
        await client.ping()
        # Exactly the fields the component writes for this publish.
        self.fields = encode_fields(
            PublishRequest(self.topic, self.event, METADATA, CLOUDEVENTS_JSON)
        )
        return client

    async def close_direct_client(self, client: Any) -> None:
        await client.aclose()

    async def setup_direct(self, client: Any) -> None:
        await self.direct_call(client, 0)

    async def direct_call(self, client: Any, i: int) -> None:
        await client.xadd(self.topic, self.fields, maxlen=REDIS_MAX_LEN, approximate=True)


@register
class PublishKafka(_Publish[Any]):
    name = "pubsub_publish_kafka"
    description = (
        f"PublishEvent of a {PAYLOAD_BYTES}-byte JSON event, pubsub.kafka (acks=all); "
        "direct: aiokafka send_and_wait, acks=all, metadata as headers"
    )
    component = "kafka"
    requires = frozenset({"kafka"})

    async def make_direct_client(self) -> Any:
        from aiokafka import AIOKafkaProducer

        producer = AIOKafkaProducer(
            bootstrap_servers=self.backend("kafka"), **KAFKA_PRODUCER_OPTIONS
        )
        await producer.start()
        self.headers = [(name, value.encode()) for name, value in METADATA.items()]
        return producer

    async def close_direct_client(self, client: Any) -> None:
        await client.stop()

    async def setup_direct(self, client: Any) -> None:
        await self.direct_call(client, 0)

    async def direct_call(self, client: Any, i: int) -> None:
        await client.send_and_wait(self.topic, self.event, headers=self.headers)
