"""The Sequencer building block: validation, `sequencer|||` key prefixes, `biggerThan` at start,
STRONG ids from the component, WEAK ids from a per-(store, key) segment cache.

The cache is keyed by store as well as key (upstream keys it by key only, so two stores with
the same key would share ids). Its background loads run in a task group the owner of the
service passes to `start` (the runtime's, or the one `running()` opens).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Coroutine
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup

from layotto.components import ComponentRegistry
from layotto.errors import ConfigError, InvalidArgument, LayottoError, NotConfigured
from layotto.meter import ComponentMeter
from layotto.plugin import Kind, Segment, SequencerStore
from layotto.resiliency import Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.keys import BlockKeys
from layotto.services.segment_cache import SegmentCache

BLOCK = "sequencer"
COMPONENT = "the sequencer"

DEFAULT_SEGMENT_SIZE = 10_000
DEFAULT_LOW_WATER = 1_000
DEFAULT_SWAP_TIMEOUT = 2.0


@dataclass(frozen=True, slots=True)
class _Store:
    name: str
    store: SequencerStore
    keys: BlockKeys
    bigger_than: dict[str, int]
    policy: Policy  # the store's outbound resiliency policy
    meter: ComponentMeter | None = None  # its call metrics


class SequencerService:
    def __init__(
        self,
        registry: ComponentRegistry,
        app_id: str,
        *,
        default_key_prefix: str = "appid",
        segment_size: int = DEFAULT_SEGMENT_SIZE,
        low_water: int = DEFAULT_LOW_WATER,
        swap_timeout: float = DEFAULT_SWAP_TIMEOUT,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        if segment_size < 1:
            raise ValueError(f"segment_size must be at least 1, got {segment_size}")
        if low_water < 0:
            raise ValueError(f"low_water must not be negative, got {low_water}")
        if swap_timeout <= 0:
            raise ValueError(f"swap_timeout must be positive, got {swap_timeout}")
        self._segment_size = segment_size
        self._low_water = low_water
        self._swap_timeout = swap_timeout
        self._call_timeout = call_timeout
        self._stores: dict[str, _Store] = {}
        for name, built in registry.of_kind(Kind.SEQUENCER).items():
            if not isinstance(built.component, SequencerStore):
                raise TypeError(f"sequencer component {name!r} is not a SequencerStore")
            keys = BlockKeys.resolve(
                BLOCK,
                built.config.key_prefix,
                default=default_key_prefix,
                app_id=app_id,
                store_name=name,
            )
            self._stores[name] = _Store(
                name,
                built.component,
                keys,
                dict(built.config.bigger_than),
                registry.outbound_policy(Kind.SEQUENCER, name),
                registry.component_meter(Kind.SEQUENCER, name),
            )
        self._caches: dict[tuple[str, str], SegmentCache] = {}
        self._task_group: TaskGroup | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def start(self, task_group: TaskGroup) -> None:
        """Apply every store's `biggerThan` (fail fast: a ConfigError stops startup), then take
        `task_group` as the owner of the background segment loads."""
        await self._apply_bigger_than()
        self._task_group = task_group

    @asynccontextmanager
    async def running(self) -> AsyncIterator[SequencerService]:
        """`start` with a task group of its own, cancelled (background loads stopped) on exit."""
        await self._apply_bigger_than()  # before the task group: a ConfigError comes out bare
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            try:
                yield self
            finally:
                self._task_group = None
                tg.cancel_scope.cancel()

    async def _apply_bigger_than(self) -> None:
        for s in self._stores.values():
            for key, value in s.bigger_than.items():
                await self._ensure_bigger_than(s, key, value)

    async def _ensure_bigger_than(self, s: _Store, key: str, value: int) -> None:
        where = f"sequencer {s.name!r}: biggerThan[{key!r}]"
        try:
            stored = s.keys.apply(key)
            await call_component(
                f"biggerThan {key!r} in sequencer {s.name!r}",
                COMPONENT,
                s.keys,
                self._call_timeout,
                lambda: s.store.ensure_bigger_than(stored, value),
                policy=s.policy,
                meter=s.meter,
                operation="bigger_than",
            )
        except LayottoError as err:
            raise ConfigError(f"{where} could not be applied: {err.message}") from None

    def _spawn(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._task_group is None:
            raise RuntimeError("SequencerService.start() has not run")
        self._task_group.start_soon(task)

    # -- ids -------------------------------------------------------------------------------

    def _resolve(self, store_name: str, key: str) -> tuple[_Store, str]:
        """The store and the stored key. Upstream's order: configured at all, the key, then
        the store."""
        if not self._stores:
            raise NotConfigured(
                "sequencer store is not configured", reason="ERR_SEQUENCER_NOT_CONFIGURED"
            )
        if not key:
            raise InvalidArgument("field 'key' must not be empty")
        found = self._stores.get(store_name)
        if found is None:
            raise InvalidArgument(
                f"sequencer store {store_name!r} is not found",
                reason="ERR_SEQUENCER_STORE_NOT_FOUND",
            )
        return found, found.keys.apply(key)

    async def get_next_id(self, store_name: str, key: str, *, strong: bool = False) -> int:
        """STRONG: the component every call (strictly increasing across all callers). WEAK: the
        segment cache when the component hands out segments, else the component."""
        s, stored = self._resolve(store_name, key)
        if strong or not s.store.supports_segments:
            return await call_component(
                f"next id for {key!r} from sequencer {store_name!r}",
                COMPONENT,
                s.keys,
                self._call_timeout,
                lambda: s.store.next_id(stored),
                policy=s.policy,
                meter=s.meter,
                operation="next_id",
            )
        return await self._cache(s, key, stored).next_id()

    def _cache(self, s: _Store, key: str, stored: str) -> SegmentCache:
        cache = self._caches.get((s.name, stored))
        if cache is None:
            what = f"sequencer {s.name!r}, key {key!r}"
            size = self._segment_size

            async def load() -> Segment:
                return await call_component(
                    f"next segment for {key!r} from sequencer {s.name!r}",
                    COMPONENT,
                    s.keys,
                    self._call_timeout,
                    lambda: s.store.next_segment(stored, size),
                    policy=s.policy,
                    meter=s.meter,
                    operation="next_segment",
                )

            cache = SegmentCache(
                load,
                self._spawn,
                low_water=self._low_water,
                swap_timeout=self._swap_timeout,
                what=what,
            )
            self._caches[(s.name, stored)] = cache
        return cache


__all__ = ["SequencerService"]
