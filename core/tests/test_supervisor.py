"""Supervisor: ordered start, restarts with backoff, FATAL after too many crashes, ordered stop."""

from __future__ import annotations

import random
from collections.abc import Callable

import anyio
import anyio.lowlevel
import pytest
from anyio.abc import TaskStatus
from hypothesis import given
from hypothesis import strategies as st
from layotto.actors.base import Actor
from layotto.actors.supervisor import FatalError, Supervisor, backoff_delay, first_leaf
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health, HealthStatus

FAST = {"backoff_base": 0.001, "backoff_cap": 0.005}


# -- backoff -------------------------------------------------------------------------------


@given(
    attempt=st.one_of(st.integers(0, 80), st.integers(0, 10**30)),
    seed=st.integers(),
    base=st.floats(1e-3, 10.0),
    cap=st.floats(0.0, 3600.0),
)
def test_backoff_delay_is_equal_jitter_within_the_cap(
    attempt: int, seed: int, base: float, cap: float
) -> None:
    delay = backoff_delay(attempt, base=base, cap=cap, rng=random.Random(seed))
    # d = min(cap, base * 2**attempt); past 2**1000 the product exceeds any cap drawn here.
    d = min(cap, base * 2 ** min(attempt, 1000))
    assert isinstance(delay, float)
    assert 0.0 <= delay <= cap
    assert d / 2 <= delay <= d


@given(attempt=st.integers(0, 10**30), seed=st.integers())
def test_backoff_delay_with_the_defaults(attempt: int, seed: int) -> None:
    delay = backoff_delay(attempt, rng=random.Random(seed))
    d = min(5.0, 0.1 * 2 ** min(attempt, 1000))
    assert d / 2 <= delay <= d <= 5.0


def test_backoff_delay_is_jittered_and_grows() -> None:
    rng = random.Random(7)
    delays = {backoff_delay(3, base=1.0, cap=100.0, rng=rng) for _ in range(50)}
    assert len(delays) > 1  # jitter
    assert all(4.0 <= d <= 8.0 for d in delays)
    assert backoff_delay(0, base=1.0, cap=100.0, rng=rng) <= 1.0


def test_backoff_delay_exponent_clamp_does_not_change_the_result() -> None:
    base, cap, attempt = 1e-3, 1e9, 40
    d = min(cap, base * 2**attempt)
    assert d / 2 <= backoff_delay(attempt, base=base, cap=cap, rng=random.Random(0)) <= d


def test_first_leaf_unwraps_nested_groups() -> None:
    leaf = ValueError("x")
    assert first_leaf(ExceptionGroup("a", [ExceptionGroup("b", [leaf]), KeyError()])) is leaf
    assert first_leaf(leaf) is leaf


# -- fakes ---------------------------------------------------------------------------------


class RecordingHealth(HealthRegistry):
    """Remembers every status each indicator went through."""

    def __init__(self) -> None:
        self.history: dict[str, list[HealthStatus]] = {}
        super().__init__()

    def set(self, name: str, health: Health, probes: frozenset[Probe] = frozenset(Probe)) -> None:
        self.history.setdefault(name, []).append(health.status)
        super().set(name, health, probes)

    def update(self, name: str, health: Health) -> None:
        self.history.setdefault(name, []).append(health.status)
        super().update(name, health)


class FakeActor:
    """Serves until stopped. `fail_before_start` raises before `started()`; `crashes` is how
    many runs crash after having started (each waits for `crash_now` unless `auto_crash`)."""

    def __init__(
        self,
        name: str,
        journal: list[tuple[str, str]],
        *,
        crashes: int = 0,
        auto_crash: bool = False,
        fail_before_start: Exception | None = None,
    ) -> None:
        self.name = name
        self.journal = journal
        self.crashes = crashes
        self.auto_crash = auto_crash
        self.fail_before_start = fail_before_start
        self.runs = 0
        self.serving = False
        self._stop: anyio.Event | None = None
        self._crash: anyio.Event | None = None

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self.runs += 1
        self._stop, self._crash = anyio.Event(), anyio.Event()
        self.journal.append(("run", self.name))
        await anyio.lowlevel.checkpoint()
        if self.fail_before_start is not None:
            raise self.fail_before_start
        self.serving = True
        task_status.started()
        try:
            if self.runs <= self.crashes:
                if not self.auto_crash:
                    await self._crash.wait()
                await anyio.lowlevel.checkpoint()
                raise RuntimeError(f"{self.name} crashed (run {self.runs})")
            await self._stop.wait()
        finally:
            self.serving = False

    def crash_now(self) -> None:
        assert self._crash is not None
        self._crash.set()

    async def stop(self) -> None:
        self.journal.append(("stop", self.name))
        if self._stop is not None:
            self._stop.set()


def _check_protocol(actor: FakeActor) -> Actor:
    return actor  # FakeActor must satisfy the Actor protocol (checked by mypy)


async def wait_until(predicate: Callable[[], bool], within: float = 3.0) -> None:
    """Poll a condition that other tasks change."""
    with anyio.fail_after(within):
        while not predicate():  # noqa: ASYNC110 - polling, bounded by fail_after
            await anyio.sleep(0.002)


def leaves(err: BaseException) -> list[BaseException]:
    if isinstance(err, BaseExceptionGroup):
        return [leaf for sub in err.exceptions for leaf in leaves(sub)]
    return [err]


# -- supervision (backend-neutral: both backends) ---------------------------------------------


@pytest.mark.anyio
async def test_actors_start_in_order_and_report_up() -> None:
    journal: list[tuple[str, str]] = []
    health = RecordingHealth()
    actors = [FakeActor(n, journal) for n in ("http", "checker", "api")]
    supervisor = Supervisor(health, **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, actors)
            # run() reports started only when every actor serves
            assert all(a.serving for a in actors)
            assert journal == [("run", "http"), ("run", "checker"), ("run", "api")]
            for a in actors:
                assert health.get(f"actor:{a.name}") == Health.up()
                assert health.history[f"actor:{a.name}"] == [HealthStatus.INIT, HealthStatus.UP]
            report = health.report(Probe.LIVENESS)["components"]
            assert {"actor:http", "actor:checker", "actor:api"} <= set(report)
            await supervisor.stop()


@pytest.mark.anyio
async def test_each_actor_starts_only_after_the_previous_one_serves() -> None:
    journal: list[tuple[str, str]] = []
    first = FakeActor("first", journal)
    seen_serving: list[bool] = []

    class Second(FakeActor):
        async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            seen_serving.append(first.serving)
            await super().run(task_status=task_status)

    supervisor = Supervisor(HealthRegistry(), **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [first, Second("second", journal)])
            await supervisor.stop()
    assert seen_serving == [True]


@pytest.mark.anyio
async def test_a_crashed_actor_is_restarted_and_goes_down_then_up() -> None:
    journal: list[tuple[str, str]] = []
    health = RecordingHealth()
    steady = FakeActor("steady", journal)
    flaky = FakeActor("flaky", journal, crashes=1)
    supervisor = Supervisor(health, max_crashes=3, **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [steady, flaky])
            assert health.get("actor:flaky") == Health.up()
            flaky.crash_now()
            await wait_until(lambda: flaky.runs == 2 and flaky.serving)
            await wait_until(lambda: health.get("actor:flaky") == Health.up())
            assert health.history["actor:flaky"] == [
                HealthStatus.INIT,
                HealthStatus.UP,
                HealthStatus.DOWN,
                HealthStatus.UP,
            ]
            assert steady.runs == 1  # the others are left alone
            assert health.history["actor:steady"] == [HealthStatus.INIT, HealthStatus.UP]
            await supervisor.stop()
    assert flaky.runs == 2


@pytest.mark.anyio
async def test_the_down_health_of_a_crashed_actor_says_why() -> None:
    journal: list[tuple[str, str]] = []
    health = HealthRegistry()
    flaky = FakeActor("flaky", journal, crashes=1)
    # A long backoff keeps the actor DOWN long enough to look at it.
    supervisor = Supervisor(health, max_crashes=3, backoff_base=10.0, backoff_cap=10.0)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [flaky])
            flaky.crash_now()
            await wait_until(lambda: health.get("actor:flaky") != Health.up())
            down = health.get("actor:flaky")
            assert down is not None
            assert down.status is HealthStatus.DOWN
            assert "flaky crashed (run 1)" in down.details["reason"]
            assert health.status(Probe.READINESS) is HealthStatus.DOWN
            assert health.status(Probe.LIVENESS) is HealthStatus.DOWN
            tg.cancel_scope.cancel()


@pytest.mark.anyio
async def test_an_actor_whose_run_returns_is_treated_as_crashed() -> None:
    health = RecordingHealth()
    returned_once = False

    class Quitter(FakeActor):
        async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
            nonlocal returned_once
            if not returned_once:
                returned_once = True
                self.runs += 1
                task_status.started()
                await anyio.lowlevel.checkpoint()
                return
            await super().run(task_status=task_status)

    quitter = Quitter("quitter", [])
    supervisor = Supervisor(health, max_crashes=3, **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [quitter])
            await wait_until(lambda: quitter.serving)
            await supervisor.stop()
    assert HealthStatus.DOWN in health.history["actor:quitter"][:-1]


@pytest.mark.anyio
async def test_too_many_crashes_in_the_window_is_fatal() -> None:
    health = HealthRegistry()
    journal: list[tuple[str, str]] = []
    doomed = FakeActor("doomed", journal, crashes=100, auto_crash=True)
    steady = FakeActor("steady", journal)
    supervisor = Supervisor(health, max_crashes=3, crash_window=60.0, **FAST)

    async def serve() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [steady, doomed])
            await anyio.sleep_forever()

    with anyio.fail_after(5), pytest.raises(BaseExceptionGroup) as info:
        await serve()
    fatal = [e for e in leaves(info.value) if isinstance(e, FatalError)]
    assert len(fatal) == 1, leaves(info.value)
    assert "doomed" in str(fatal[0])
    assert "crashed" in str(fatal[0])
    assert doomed.runs == 3  # crashes 1 and 2 were restarted, crash 3 gave up
    assert not steady.serving  # the rest was torn down
    down = health.get("actor:doomed")
    assert down is not None
    assert down.status is HealthStatus.DOWN


@pytest.mark.anyio
async def test_crashes_outside_the_window_are_forgiven() -> None:
    journal: list[tuple[str, str]] = []
    # Each restart waits >= base/2 = 5 ms, far longer than the 1 ms window.
    flaky = FakeActor("flaky", journal, crashes=4, auto_crash=True)
    supervisor = Supervisor(
        HealthRegistry(), max_crashes=2, crash_window=0.001, backoff_base=0.01, backoff_cap=0.01
    )
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [flaky])
            await wait_until(lambda: flaky.runs == 5 and flaky.serving)
            await supervisor.stop()
    assert flaky.runs == 5


@pytest.mark.anyio
async def test_an_actor_failing_before_its_first_start_propagates() -> None:
    journal: list[tuple[str, str]] = []
    first = FakeActor("first", journal)
    broken = FakeActor("broken", journal, fail_before_start=OSError("address already in use"))
    never = FakeActor("never", journal)
    supervisor = Supervisor(HealthRegistry(), max_crashes=5, **FAST)

    async def start() -> None:
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, [first, broken, never])
            pytest.fail("run() reported started although an actor failed to start")

    with anyio.fail_after(5), pytest.raises((OSError, BaseExceptionGroup)) as info:
        await start()
    errors = leaves(info.value)
    assert [type(e) for e in errors] == [OSError]
    assert str(errors[0]) == "address already in use"
    assert broken.runs == 1  # not retried: a startup failure is not a crash
    assert never.runs == 0
    assert not first.serving


@pytest.mark.anyio
async def test_stop_stops_actors_in_reverse_order() -> None:
    journal: list[tuple[str, str]] = []
    health = HealthRegistry()
    actors = [FakeActor(n, journal) for n in ("a", "b", "c")]
    supervisor = Supervisor(health, **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, actors)
            await supervisor.stop()
    # The task group ended on its own: run() returns once every actor has stopped.
    assert [e for e in journal if e[0] == "stop"] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert all(a.runs == 1 and not a.serving for a in actors)
    for a in actors:
        assert health.get(f"actor:{a.name}") == Health.down("stopped")


@pytest.mark.anyio
async def test_a_failing_stop_does_not_keep_the_others_running() -> None:
    journal: list[tuple[str, str]] = []

    class BadStop(FakeActor):
        async def stop(self) -> None:
            await super().stop()
            raise RuntimeError("stop failed")

    actors = [FakeActor("a", journal), BadStop("b", journal), FakeActor("c", journal)]
    supervisor = Supervisor(HealthRegistry(), **FAST)
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            await tg.start(supervisor.run, actors)
            await supervisor.stop()
    assert [e for e in journal if e[0] == "stop"] == [("stop", "c"), ("stop", "b"), ("stop", "a")]
    assert not any(a.serving for a in actors)
