"""Sequencer conformance (conformance.md §5, component level).

Subclass `SequencerStoreConformance` in a test module (the name must start with `Test`) and
provide a `sequencer_store` fixture that yields an initialised store and closes it on teardown::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import SequencerStoreConformance

    class TestRedisSequencer(SequencerStoreConformance):
        @pytest.fixture
        async def sequencer_store(self, redis_url):
            store = RedisSequencer.create(
                RedisSequencerMetadata(redisHost=...), ComponentContext("q", "app")
            )
            await store.init()
            yield store
            await store.close()

        @pytest.fixture
        def sequencer_store_factory(self, redis_url):  # optional: cross-instance scenarios
            async def another():
                store = RedisSequencer.create(...)
                await store.init()
                return store  # the kit closes it
            return another

Without a `sequencer_store_factory` override (the `layotto` pytest plugin's default is None) the
cross-instance scenarios are skipped. Segment scenarios run when `supports_segments` is true;
otherwise the kit checks that `next_segment` raises `Unsupported`.

Knobs (class attributes):

- `consecutive_ids`: True (the default) for a counter-based store: a new key starts at 1, each id
  is the previous one plus 1 and a segment of size S advances the counter by exactly S. Set it to
  False for a generator that only promises unique, increasing ids: the kit then checks only
  order and uniqueness.
- `concurrent_tasks` x `calls_per_task`: the uniqueness-under-concurrency load (50 x 200).

The SPI has no delete, so keys cannot be cleaned up: every test uses fresh keys under a uuid4
prefix (fixture `conformance_prefix`, which a plugin fixture may use to sweep its backend).
The segment *cache* scenarios (low-water mark, background load, backend outage) and WEAK/STRONG
options are the sidecar's, tested there.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Awaitable, Callable, Sequence
from typing import ClassVar

import anyio
import pytest

from layotto.errors import ErrorCategory
from layotto.plugin import HealthStatus, Segment, SequencerStore, Unsupported
from layotto.testing.conformance._support import ConformanceBase, Names, another_instance

SequencerStoreFactory = Callable[[], Awaitable[SequencerStore]]


def assert_strictly_increasing(ids: Sequence[int], what: str) -> None:
    for before, after in itertools.pairwise(ids):
        assert after > before, f"{what}: {after} after {before}"


def assert_unique(ids: Sequence[int], what: str) -> None:
    assert len(set(ids)) == len(ids), f"{what}: {len(ids) - len(set(ids))} duplicate id(s)"


class SequencerStoreConformance(ConformanceBase):
    """conformance.md §5 against the `sequencer_store` fixture. See the module docstring."""

    consecutive_ids: ClassVar[bool] = True
    concurrent_tasks: ClassVar[int] = 50
    calls_per_task: ClassVar[int] = 200

    @pytest.fixture
    def conformance_keys(self, conformance_prefix: str) -> Names:
        """`conformance_keys("name")` is a sequencer key nobody has used before."""
        return Names(conformance_prefix)

    @staticmethod
    def require_segments(store: SequencerStore) -> None:
        if not store.supports_segments:
            pytest.skip(f"{type(store).__name__} does not support segments")

    async def take_ids_concurrently(
        self, stores: Sequence[SequencerStore], key: str, *, segments: bool = False
    ) -> list[int]:
        """`concurrent_tasks` tasks, spread over `stores`, each taking `calls_per_task` ids in
        a row (with `segments`, alternating next_id and next_segment). Every task's own ids must
        increase; returns all ids."""
        everything: list[int] = []

        async def task(number: int) -> None:
            store = stores[number % len(stores)]
            mine: list[int] = []
            for call in range(self.calls_per_task):
                if segments and call % 2:
                    size = (number + call) % 7 + 1
                    segment = await store.next_segment(key, size)
                    assert isinstance(segment, Segment)
                    assert segment.size == size, f"asked for {size} ids, got {segment}"
                    mine.extend(range(segment.first, segment.last + 1))
                else:
                    mine.append(await store.next_id(key))
            assert_strictly_increasing(mine, f"task {number}")
            everything.extend(mine)

        async with anyio.create_task_group() as tg:
            for number in range(self.concurrent_tasks):
                tg.start_soon(task, number)
        return everything

    # -- basics --------------------------------------------------------------------------------

    async def test_init_and_ping(self, sequencer_store: SequencerStore) -> None:
        assert isinstance(sequencer_store, SequencerStore)
        with anyio.fail_after(1):
            health = await sequencer_store.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_close_is_idempotent(self, sequencer_store: SequencerStore) -> None:
        with anyio.fail_after(5):
            await sequencer_store.close()
            await sequencer_store.close()  # the fixture's teardown closes it a third time

    async def test_ids_of_a_new_key_start_at_one(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        if not self.consecutive_ids:
            pytest.skip("consecutive_ids = False: ids need not start at 1")
        key = conformance_keys("fresh")
        assert [await sequencer_store.next_id(key) for _ in range(3)] == [1, 2, 3]

    async def test_next_id_is_strictly_increasing(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        key = conformance_keys("increasing")
        ids = [await sequencer_store.next_id(key) for _ in range(100)]
        assert ids[0] >= 1
        assert_strictly_increasing(ids, "consecutive next_id calls")

    async def test_unique_under_concurrency(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        ids = await self.take_ids_concurrently([sequencer_store], conformance_keys("concurrent"))
        assert len(ids) == self.concurrent_tasks * self.calls_per_task
        assert_unique(ids, "ids taken concurrently")
        if self.consecutive_ids:
            assert sorted(ids) == list(range(1, len(ids) + 1))

    async def test_keys_are_independent(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        k1, k2 = conformance_keys("k1"), conformance_keys("k2")
        ids1: list[int] = []
        ids2: list[int] = []
        for _ in range(5):
            ids1.append(await sequencer_store.next_id(k1))
            ids1.append(await sequencer_store.next_id(k1))
            ids2.append(await sequencer_store.next_id(k2))
        assert_strictly_increasing(ids1, "k1")
        assert_strictly_increasing(ids2, "k2")
        if self.consecutive_ids:
            assert ids1 == list(range(1, 11))
            assert ids2 == list(range(1, 6)), "ids of k1 consumed ids of k2"

    # -- ensure_bigger_than --------------------------------------------------------------------

    @pytest.mark.parametrize("history", [0, 3], ids=["new-key", "used-key"])
    async def test_ensure_bigger_than_raises_a_lower_counter(
        self, sequencer_store: SequencerStore, conformance_keys: Names, history: int
    ) -> None:
        key = conformance_keys("below")
        for _ in range(history):
            await sequencer_store.next_id(key)
        await sequencer_store.ensure_bigger_than(key, 1000)
        first = await sequencer_store.next_id(key)
        assert first > 1000
        assert await sequencer_store.next_id(key) > first

    async def test_ensure_bigger_than_leaves_a_higher_counter_unchanged(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        key = conformance_keys("above")
        await sequencer_store.ensure_bigger_than(key, 1500)
        before = await sequencer_store.next_id(key)
        assert before > 1500
        await sequencer_store.ensure_bigger_than(key, 1000)
        after = await sequencer_store.next_id(key)
        assert after > before
        if self.consecutive_ids:
            assert after == before + 1, "ensure_bigger_than moved a counter that was above"

    # -- two instances on one backend ----------------------------------------------------------

    async def test_ids_increase_across_instances(
        self,
        sequencer_store: SequencerStore,
        sequencer_store_factory: SequencerStoreFactory | None,
        conformance_keys: Names,
    ) -> None:
        async with another_instance(sequencer_store_factory, "sequencer_store_factory") as second:
            key = conformance_keys("alternating")
            ids = [await (sequencer_store, second)[i % 2].next_id(key) for i in range(40)]
            assert_strictly_increasing(ids, "ids taken alternately from two instances")

    async def test_unique_under_concurrency_across_instances(
        self,
        sequencer_store: SequencerStore,
        sequencer_store_factory: SequencerStoreFactory | None,
        conformance_keys: Names,
    ) -> None:
        async with another_instance(sequencer_store_factory, "sequencer_store_factory") as second:
            key = conformance_keys("two-instances")
            ids = await self.take_ids_concurrently([sequencer_store, second], key)
            assert len(ids) == self.concurrent_tasks * self.calls_per_task
            assert_unique(ids, "ids taken concurrently from two instances")

    # -- segments ------------------------------------------------------------------------------

    async def test_segment_is_contiguous_and_advances_the_counter(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        self.require_segments(sequencer_store)
        key = conformance_keys("segment")
        previous = await sequencer_store.next_id(key)
        for size in (1, 10, 1000):
            segment = await sequencer_store.next_segment(key, size)
            assert isinstance(segment, Segment)
            assert segment.size == size, f"asked for {size} ids, got {segment}"
            assert segment.first > previous, f"{segment} overlaps id {previous}"
            following = await sequencer_store.next_id(key)
            assert following > segment.last, f"id {following} falls in {segment}"
            if self.consecutive_ids:
                assert (segment.first, segment.last) == (previous + 1, previous + size)
                assert following == previous + size + 1, "the counter did not advance by S"
            previous = following

    async def test_segments_and_ids_never_collide(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        self.require_segments(sequencer_store)
        ids = await self.take_ids_concurrently(
            [sequencer_store], conformance_keys("mixed"), segments=True
        )
        assert_unique(ids, "ids from next_id and next_segment")

    async def test_segments_and_ids_never_collide_across_instances(
        self,
        sequencer_store: SequencerStore,
        sequencer_store_factory: SequencerStoreFactory | None,
        conformance_keys: Names,
    ) -> None:
        self.require_segments(sequencer_store)
        async with contextlib.AsyncExitStack() as stack:
            second = await stack.enter_async_context(
                another_instance(sequencer_store_factory, "sequencer_store_factory")
            )
            ids = await self.take_ids_concurrently(
                [sequencer_store, second], conformance_keys("mixed-two"), segments=True
            )
        assert_unique(ids, "ids from next_id and next_segment on two instances")

    async def test_without_segments(
        self, sequencer_store: SequencerStore, conformance_keys: Names
    ) -> None:
        if sequencer_store.supports_segments:
            pytest.skip(f"{type(sequencer_store).__name__} supports segments")
        with pytest.raises(Unsupported) as info:
            await sequencer_store.next_segment(conformance_keys("no-segments"), 10)
        assert info.value.category is ErrorCategory.UNIMPLEMENTED
