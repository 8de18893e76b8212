from __future__ import annotations

from layotto.builtin.memory_config import InMemoryConfigMetadata, InMemoryConfigStore
from layotto.builtin.memory_lock import InMemoryLockMetadata, InMemoryLockStore
from layotto.builtin.memory_pubsub import InMemoryPubSub, InMemoryPubSubMetadata
from layotto.builtin.memory_sequencer import InMemorySequencer, InMemorySequencerMetadata
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.STATE,
            "in-memory",
            InMemoryStateMetadata,
            InMemoryStateStore.create,
            description="process-local state with ETags, TTL and transactions",
        ),
        ComponentSpec(
            Kind.PUBSUB,
            "in-memory",
            InMemoryPubSubMetadata,
            InMemoryPubSub.create,
            description="process-local topics with consumer groups, redelivery and TTL",
        ),
        ComponentSpec(
            Kind.CONFIGURATION,
            "in-memory",
            InMemoryConfigMetadata,
            InMemoryConfigStore.create,
            description="process-local configuration with versions, tags and watches",
        ),
        ComponentSpec(
            Kind.LOCK,
            "in-memory",
            InMemoryLockMetadata,
            InMemoryLockStore.create,
            description="process-local leases with expiry",
        ),
        ComponentSpec(
            Kind.SEQUENCER,
            "in-memory",
            InMemorySequencerMetadata,
            InMemorySequencer.create,
            description="process-local per-key counters, segments supported",
        ),
    ]
