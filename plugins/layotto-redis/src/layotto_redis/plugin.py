"""The `layotto` entry point of this distribution: the component types it provides.

Models and factories are import strings, loaded only for configured components."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.STATE,
            "redis",
            "layotto_redis.state:RedisStateMetadata",
            "layotto_redis.state:RedisStateStore.create",
            description="Redis hashes in Dapr's layout, with ETags, TTL and transactions",
        ),
        ComponentSpec(
            Kind.CONFIGURATION,
            "redis",
            "layotto_redis.configuration:RedisConfigMetadata",
            "layotto_redis.configuration:RedisConfigStore.create",
            description="Dapr's value||version strings, watched through keyspace notifications",
        ),
        ComponentSpec(
            Kind.PUBSUB,
            "redis",
            "layotto_redis.settings:RedisPubSubMetadata",
            "layotto_redis.pubsub:RedisPubSub.create",
            description="Redis Streams and consumer groups; pending entries redelivered",
        ),
        ComponentSpec(
            Kind.LOCK,
            "redis",
            "layotto_redis.lock:RedisLockMetadata",
            "layotto_redis.lock:RedisLockStore.create",
            description="leases with SET NX PX; owner-checked unlock and keep-alive",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "redis",
            "layotto_redis.sequencer:RedisSequencerMetadata",
            "layotto_redis.sequencer:RedisSequencerStore.create",
            description="INCR ids, INCRBY segments, biggerThan",
        ),
        ComponentSpec(
            Kind.BINDINGS,
            "redis",
            "layotto_redis.binding:RedisBindingMetadata",
            "layotto_redis.binding:RedisBinding.create",
            description="output binding: SET (with ttlInSeconds), GET, DEL, INCR on a key",
        ),
    ]
