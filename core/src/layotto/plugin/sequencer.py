"""The sequencer SPI: per-key ids, unique and increasing, optionally handed out in segments."""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass

from layotto.errors import Unsupported
from layotto.plugin.component import Component


@dataclass(frozen=True, slots=True)
class Segment:
    """Ids `first..last`, both included, reserved for the caller alone."""

    first: int
    last: int

    def __post_init__(self) -> None:
        if self.last < self.first:
            raise ValueError(f"empty segment {self.first}..{self.last}")

    @property
    def size(self) -> int:
        return self.last - self.first + 1


class SequencerStore(Component):
    """Keys arrive already prefixed by the sidecar. Ids start at 1 for a new key."""

    # True when `next_segment` is implemented; the sidecar then serves WEAK ids from a cache.
    supports_segments: bool = False

    @abstractmethod
    async def next_id(self, key: str) -> int:
        """The next id for `key`: greater than every id handed out for it before."""

    async def next_segment(self, key: str, size: int) -> Segment:
        """Reserve the next `size` ids for `key` in one backend round trip."""
        raise Unsupported("this sequencer does not hand out segments")

    @abstractmethod
    async def ensure_bigger_than(self, key: str, value: int) -> None:
        """Make every future id for `key` greater than `value` (no-op when it already is)."""
