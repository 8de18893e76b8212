"""An in-process sequencer: one counter per key, ids from 1, segments in one step.

Every operation runs without awaiting, so each one is atomic with respect to the event loop.
"""

from __future__ import annotations

from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentMetadata,
    InvalidArgument,
    Segment,
    SequencerStore,
)


class InMemorySequencerMetadata(ComponentMetadata):
    pass


class InMemorySequencer(SequencerStore):
    supports_segments = True

    def __init__(self) -> None:
        self._last: dict[str, int] = {}  # key -> the last id handed out (0: none yet)

    @classmethod
    def create(cls, metadata: InMemorySequencerMetadata, context: ComponentContext) -> Component:
        return cls()

    async def next_id(self, key: str) -> int:
        value = self._last.get(key, 0) + 1
        self._last[key] = value
        return value

    async def next_segment(self, key: str, size: int) -> Segment:
        if size <= 0:
            raise InvalidArgument(f"segment size must be positive, got {size}")
        first = self._last.get(key, 0) + 1
        self._last[key] = first + size - 1
        return Segment(first, first + size - 1)

    async def ensure_bigger_than(self, key: str, value: int) -> None:
        self._last[key] = max(self._last.get(key, 0), value)
