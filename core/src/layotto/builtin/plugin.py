from __future__ import annotations

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
    ]
