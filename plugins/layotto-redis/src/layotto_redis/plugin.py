"""The `layotto` entry point of this distribution: the component types it provides."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl

from layotto_redis.configuration import RedisConfigMetadata, RedisConfigStore
from layotto_redis.lock import RedisLockMetadata, RedisLockStore
from layotto_redis.sequencer import RedisSequencerMetadata, RedisSequencerStore
from layotto_redis.state import RedisStateMetadata, RedisStateStore


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.STATE,
            "redis",
            RedisStateMetadata,
            RedisStateStore.create,
            description="Redis hashes in Dapr's layout, with ETags, TTL and transactions",
        ),
        ComponentSpec(
            Kind.CONFIGURATION,
            "redis",
            RedisConfigMetadata,
            RedisConfigStore.create,
            description="Dapr's value||version strings, watched through keyspace notifications",
        ),
        ComponentSpec(
            Kind.LOCK,
            "redis",
            RedisLockMetadata,
            RedisLockStore.create,
            description="leases with SET NX PX; owner-checked unlock and keep-alive",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "redis",
            RedisSequencerMetadata,
            RedisSequencerStore.create,
            description="INCR ids, INCRBY segments, biggerThan",
        ),
    ]
