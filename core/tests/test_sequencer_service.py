"""SequencerService and its segment cache: STRONG/WEAK, prefetch at the low-water mark,
uniqueness under concurrency, failing and slow backends, key prefixes, biggerThan."""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable

import anyio
import pytest
from layotto.builtin.memory_sequencer import InMemorySequencer, InMemorySequencerMetadata
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ConfigError,
    ErrorCategory,
    InvalidArgument,
    NotConfigured,
)
from layotto.plugin import ComponentSpec, Kind, Segment, SequencerStore
from layotto.services.sequencer import SequencerService

pytestmark = pytest.mark.anyio

SECRET = "redis://admin:hunter2@10.0.0.7:6379"
APP = "app1"
STORE = "sequencer"
STORED_K = "sequencer|||app1||k"


class CountingSequencer(InMemorySequencer):
    """The in-memory sequencer, counting backend calls; it can be made to fail or stall."""

    def __init__(self) -> None:
        super().__init__()
        self.segment_calls = 0
        self.id_calls = 0
        self.error: Exception | None = None
        self.delay = 0.0

    async def next_id(self, key: str) -> int:
        self.id_calls += 1
        if self.error is not None:
            raise self.error
        return await super().next_id(key)

    async def next_segment(self, key: str, size: int) -> Segment:
        self.segment_calls += 1
        if self.delay:
            await anyio.sleep(self.delay)
        else:
            await anyio.lowlevel.checkpoint()  # let other tasks run in between, as real I/O does
        if self.error is not None:
            raise self.error
        return await super().next_segment(key, size)

    def counter(self, key: str) -> int:
        return self._last.get(key, 0)


class NoSegments(SequencerStore):
    def __init__(self) -> None:
        self.last = 0

    async def next_id(self, key: str) -> int:
        self.last += 1
        return self.last

    async def ensure_bigger_than(self, key: str, value: int) -> None:
        self.last = max(self.last, value)


def built(
    name: str,
    store: SequencerStore,
    key_prefix: str | None = None,
    bigger_than: dict[str, int] | None = None,
) -> BuiltComponent:
    config = ComponentConfig(
        name=name,
        kind=Kind.SEQUENCER,
        type="fake",
        key_prefix=key_prefix,
        bigger_than=bigger_than or {},
    )
    spec = ComponentSpec(Kind.SEQUENCER, "fake", InMemorySequencerMetadata, lambda m, c: store)
    return BuiltComponent(config, spec, store)


def service(*components: BuiltComponent, app_id: str = APP, **options: float) -> SequencerService:
    registry = ComponentRegistry()
    for component in components:
        registry.add(component)
    return SequencerService(registry, app_id, **options)  # type: ignore[arg-type]


async def eventually(condition: Callable[[], bool], within: float = 5.0) -> None:
    deadline = time.monotonic() + within
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"not reached within {within} s")
        await anyio.sleep(0.005)


async def take(svc: SequencerService, n: int, key: str = "k", **kw: bool) -> list[int]:
    return [await svc.get_next_id(STORE, key, **kw) for _ in range(n)]


# -- STRONG and WEAK -----------------------------------------------------------------------


async def test_strong_calls_the_component_every_time() -> None:
    store = CountingSequencer()
    async with service(built(STORE, store)).running() as svc:
        assert await take(svc, 5, strong=True) == [1, 2, 3, 4, 5]
    assert (store.id_calls, store.segment_calls) == (5, 0)
    assert store.counter(STORED_K) == 5


async def test_weak_is_the_default_and_uses_segments() -> None:
    store = CountingSequencer()
    async with service(built(STORE, store), segment_size=100, low_water=10).running() as svc:
        assert await take(svc, 5) == [1, 2, 3, 4, 5]
    assert (store.id_calls, store.segment_calls) == (0, 1)
    assert store.counter(STORED_K) == 100  # the whole segment is reserved


async def test_strong_after_weak_stays_unique() -> None:
    store = CountingSequencer()
    async with service(built(STORE, store), segment_size=100, low_water=10).running() as svc:
        weak = await take(svc, 3)
        strong = await take(svc, 3, strong=True)
        assert strong == [101, 102, 103]
        assert await take(svc, 2) == [4, 5]
    assert not set(weak) & set(strong)


async def test_weak_without_segment_support_calls_the_component() -> None:
    store = NoSegments()
    async with service(built(STORE, store)).running() as svc:
        assert await take(svc, 3) == [1, 2, 3]
    assert store.last == 3


# -- the segment cache ---------------------------------------------------------------------


async def test_prefetch_starts_at_the_low_water_mark() -> None:
    """conformance.md §5 with the upstream numbers: size 10 000, low water 1000."""
    store = CountingSequencer()
    async with service(built(STORE, store)).running() as svc:
        assert await take(svc, 8999) == list(range(1, 9000))
        await anyio.sleep(0.05)  # room for a (wrong) early load to show up
        assert store.segment_calls == 1
        await take(svc, 2)  # 9001 taken: 999 left
        await eventually(lambda: store.counter(STORED_K) == 20_000)
        assert store.segment_calls == 2
        ids = await take(svc, 1000)  # through the swap
        assert ids == list(range(9002, 10_002))
        assert store.segment_calls == 2  # no round trip at the swap


async def test_segments_smaller_than_the_low_water_mark() -> None:
    store = CountingSequencer()
    async with service(built(STORE, store), segment_size=3, low_water=5).running() as svc:
        assert await take(svc, 20) == list(range(1, 21))


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
async def test_ids_are_unique_under_concurrency(strong: bool) -> None:
    store = CountingSequencer()
    results: list[list[int]] = []

    async def caller(svc: SequencerService) -> None:
        results.append(await take(svc, 200, strong=strong))

    # Small segments force many swaps while 50 tasks call at once.
    async with service(built(STORE, store), segment_size=64, low_water=16).running() as svc:
        with anyio.fail_after(20):
            async with anyio.create_task_group() as tg:
                for _ in range(50):
                    tg.start_soon(caller, svc)
    everything = [i for ids in results for i in ids]
    assert len(everything) == 50 * 200
    assert len(set(everything)) == len(everything)
    for ids in results:  # increasing within one caller, in both modes
        assert ids == sorted(ids)
    if not strong:
        assert store.segment_calls < 50 * 200 / 32


async def test_two_services_on_one_backend_never_collide() -> None:
    """Two sidecar processes with their own caches over one backend."""
    store = CountingSequencer()
    results: list[int] = []

    async def caller(svc: SequencerService) -> None:
        results.extend(await take(svc, 100))

    a = service(built(STORE, store), segment_size=10, low_water=3)
    b = service(built(STORE, store), segment_size=10, low_water=3)
    async with a.running(), b.running(), anyio.create_task_group() as tg:
        for svc in (a, b) * 5:
            tg.start_soon(caller, svc)
    assert len(set(results)) == len(results) == 1000


async def test_a_failing_load_fails_the_call_in_time_and_recovers() -> None:
    store = CountingSequencer()
    async with service(built(STORE, store), segment_size=20, low_water=5).running() as svc:
        assert await take(svc, 10) == list(range(1, 11))
        store.error = ConnectionError(f"cannot reach {SECRET}")
        assert await take(svc, 10) == list(range(11, 21))  # the active segment still serves
        await eventually(lambda: store.segment_calls >= 3)  # the loader keeps retrying
        started = time.monotonic()
        with anyio.fail_after(5), pytest.raises(BackendUnavailable) as info:
            await svc.get_next_id(STORE, "k")
        elapsed = time.monotonic() - started
        assert 1.5 < elapsed < 3.0  # the 2 s swap timeout, no hang
        assert "'k'" in info.value.message
        assert SECRET not in info.value.message
        assert info.value.category is ErrorCategory.UNAVAILABLE
        store.error = None
        with anyio.fail_after(5):
            while True:  # recovers once the backend is back (the loader retries every <= 2 s)
                try:
                    first = await svc.get_next_id(STORE, "k")
                    break
                except BackendUnavailable:
                    pass
        assert first == 21
        assert await take(svc, 2) == [22, 23]


async def test_a_stalled_load_times_out_the_waiting_callers_together() -> None:
    """Callers queued behind the swap share its deadline: none waits for the others'."""
    store = CountingSequencer()
    store.delay = 30
    errors: list[Exception] = []

    async def caller(svc: SequencerService) -> None:
        try:
            await svc.get_next_id(STORE, "k")
        except BackendTimeout as err:
            errors.append(err)

    svc = service(built(STORE, store), swap_timeout=0.3)
    started = time.monotonic()
    # Leaving `running()` cancels the stalled load.
    with anyio.fail_after(5):
        async with svc.running(), anyio.create_task_group() as tg:
            for _ in range(20):
                tg.start_soon(caller, svc)
    assert time.monotonic() - started < 2
    assert len(errors) == 20
    assert "not loaded within 0.3 s" in errors[0].args[0]
    assert store.segment_calls == 1  # one load for everybody


async def test_weak_calls_need_a_started_service() -> None:
    svc = service(built(STORE, CountingSequencer()))
    with pytest.raises(RuntimeError, match="start"):
        await svc.get_next_id(STORE, "k")
    assert await svc.get_next_id(STORE, "k", strong=True) == 1


async def test_start_with_a_task_group_of_the_caller() -> None:
    store = CountingSequencer()
    svc = service(built(STORE, store, bigger_than={"k": 7}))
    async with anyio.create_task_group() as tg:
        await svc.start(tg)
        assert await svc.get_next_id(STORE, "k") == 8
        tg.cancel_scope.cancel()


# -- independence and key prefixes ---------------------------------------------------------


async def test_keys_are_independent() -> None:
    async with service(built(STORE, CountingSequencer())).running() as svc:
        assert await take(svc, 3, key="k1") == [1, 2, 3]
        assert await take(svc, 2, key="k2") == [1, 2]
        assert await take(svc, 2, key="k1", strong=True) == [10_001, 10_002]


async def test_two_stores_with_the_same_key_are_independent() -> None:
    """The cache is keyed by (store, key), not by key alone as upstream."""
    shared = CountingSequencer()
    svc = service(built("a", shared, key_prefix="none"), built("b", shared, key_prefix="none"))
    async with svc.running():
        assert await svc.get_next_id("a", "k") == 1
        # Same stored key on the same backend: b reserves its own segment, never a's ids.
        assert await svc.get_next_id("b", "k") == 10_001
        assert await svc.get_next_id("a", "k") == 2
    separate = service(built("a", CountingSequencer()), built("b", CountingSequencer()))
    async with separate.running():
        assert [await separate.get_next_id(s, "k") for s in ("a", "b", "a")] == [1, 1, 2]


async def test_two_app_ids_have_independent_sequences() -> None:
    store = CountingSequencer()
    a = service(built(STORE, store), app_id="a")
    b = service(built(STORE, store), app_id="b")
    async with a.running(), b.running():
        assert await a.get_next_id(STORE, "k", strong=True) == 1
        assert await b.get_next_id(STORE, "k", strong=True) == 1
        assert await a.get_next_id(STORE, "k") == 2
    assert store.counter("sequencer|||a||k") == 10_001
    assert store.counter("sequencer|||b||k") == 1


@pytest.mark.parametrize(
    ("strategy", "app_id", "stored"),
    [
        (None, "app1", "sequencer|||app1||k"),
        (None, "", "sequencer|||k"),
        ("none", "app1", "sequencer|||k"),
        ("name", "app1", "sequencer|||sequencer||k"),
        ("tenant", "app1", "sequencer|||tenant||k"),
    ],
)
async def test_stored_key(strategy: str | None, app_id: str, stored: str) -> None:
    store = CountingSequencer()
    async with service(built(STORE, store, strategy), app_id=app_id).running() as svc:
        await svc.get_next_id(STORE, "k", strong=True)
    assert store.counter(stored) == 1


# -- biggerThan ----------------------------------------------------------------------------


@pytest.mark.parametrize("strong", [False, True], ids=["weak", "strong"])
async def test_bigger_than_is_applied_at_start(strong: bool) -> None:
    store = CountingSequencer()
    async with service(built(STORE, store, bigger_than={"k": 1000})).running() as svc:
        assert await svc.get_next_id(STORE, "k", strong=strong) == 1001
        assert await svc.get_next_id(STORE, "other", strong=strong) == 1


async def test_bigger_than_leaves_a_higher_counter_alone() -> None:
    store = CountingSequencer()
    await store.ensure_bigger_than(STORED_K, 5000)
    async with service(built(STORE, store, bigger_than={"k": 1000})).running() as svc:
        assert await svc.get_next_id(STORE, "k", strong=True) == 5001


async def test_bigger_than_without_segments() -> None:
    store = NoSegments()
    async with service(built(STORE, store, bigger_than={"k": 41})).running() as svc:
        assert await svc.get_next_id(STORE, "k") == 42


class BrokenBiggerThan(CountingSequencer):
    async def ensure_bigger_than(self, key: str, value: int) -> None:
        raise ConnectionError(f"cannot reach {SECRET}")


@pytest.mark.parametrize(
    ("store", "bigger_than", "expected"),
    [
        (BrokenBiggerThan(), {"k": 1}, "the sequencer failed"),
        (CountingSequencer(), {"a||b": 1}, r"\|\|"),
    ],
    ids=["backend-error", "bad-key"],
)
async def test_a_bigger_than_failure_stops_startup(
    store: SequencerStore, bigger_than: dict[str, int], expected: str
) -> None:
    svc = service(built(STORE, store, bigger_than=bigger_than))
    with pytest.raises(ConfigError, match=expected) as info:
        async with svc.running():
            pytest.fail("started")
    assert "biggerThan" in str(info.value)
    assert SECRET not in str(info.value)


# -- validation and errors -----------------------------------------------------------------


async def test_no_sequencer_is_not_configured() -> None:
    async with service().running() as svc:
        with pytest.raises(NotConfigured, match="sequencer store is not configured") as info:
            await svc.get_next_id(STORE, "k")
    assert info.value.category is ErrorCategory.FAILED_PRECONDITION


Call = Callable[[SequencerService], Awaitable[int]]


@pytest.mark.parametrize(
    ("call", "expected"),
    [
        (lambda svc: svc.get_next_id(STORE, ""), "field 'key' must not be empty"),
        (lambda svc: svc.get_next_id(STORE, "a||b", strong=True), r"'key'.*\|\|"),
        (lambda svc: svc.get_next_id("nope", "k"), "sequencer store 'nope' is not found"),
        (lambda svc: svc.get_next_id("nope", ""), "field 'key'"),  # the key is checked first
    ],
    ids=["empty-key", "separator", "unknown-store", "order"],
)
async def test_invalid_requests(call: Call, expected: str) -> None:
    async with service(built(STORE, CountingSequencer())).running() as svc:
        with pytest.raises(InvalidArgument, match=expected):
            await call(svc)


async def test_strong_errors_are_translated() -> None:
    store = CountingSequencer()
    store.error = BackendUnavailable(f"{STORED_K} is on a node that is down")
    async with service(built(STORE, store)).running() as svc:
        with pytest.raises(BackendUnavailable) as info:
            await svc.get_next_id(STORE, "k", strong=True)
    assert info.value.message == "k is on a node that is down"


def test_settings_are_checked() -> None:
    for options in ({"segment_size": 0}, {"low_water": -1}, {"swap_timeout": 0}):
        with pytest.raises(ValueError, match=next(iter(options))):
            service(**options)


def test_a_component_that_is_not_a_sequencer_is_rejected() -> None:
    registry = ComponentRegistry()
    bogus = built(STORE, CountingSequencer())
    registry.add(BuiltComponent(bogus.config, bogus.spec, object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match=STORE):
        SequencerService(registry, APP)
