"""Helpers of the configuration kit: what a subscriber or a raw watch received, and when.
Internal: plugin authors use `ConfigStoreConformance` and `ConfigUpdater`."""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.abc import TaskGroup

from layotto.errors import LayottoError
from layotto.plugin import ConfigItem, ConfigStore
from layotto.services.config_subscription import Subscription

# How often the watch scenarios look for what arrived (latencies come from arrival times).
WATCH_POLL = 0.02
CLOSE_TIMEOUT = 5.0


@dataclass(frozen=True, slots=True)
class Arrival:
    item: ConfigItem
    at: float  # time.monotonic()


@dataclass
class Received:
    """Every item a subscription (or a raw watch) delivered, in order, with arrival times."""

    name: str
    arrivals: list[Arrival] = field(default_factory=list)
    batches: int = 0
    ended: bool = False
    error: BaseException | None = None
    done: anyio.Event = field(default_factory=anyio.Event)

    def add(self, batch: Iterable[ConfigItem]) -> None:
        now = time.monotonic()
        self.batches += 1
        self.arrivals.extend(Arrival(item, now) for item in batch)

    @property
    def items(self) -> list[ConfigItem]:
        return [a.item for a in self.arrivals]

    def keyed(self, prefix: str = "") -> list[tuple[str, str, str, str]]:
        """(group, label, key, content) of every item whose key starts with `prefix`."""
        items = self.items
        return [(i.group, i.label, i.key, i.content) for i in items if i.key.startswith(prefix)]

    def has(self, expected: set[tuple[str, str, str, str]]) -> bool:
        return expected <= set(self.keyed())

    def arrival_of(self, group: str, label: str, key: str, content: str) -> float | None:
        for a in self.arrivals:
            i = a.item
            if (i.group, i.label, i.key, i.content) == (group, label, key, content):
                return a.at
        return None

    async def drain(self, subscription: Subscription) -> None:
        try:
            async for batch in subscription:
                self.add(batch)
        except LayottoError as err:
            self.error = err
        finally:
            self.ended = True
            self.done.set()


async def poll(
    check: Callable[[], Awaitable[bool]],
    *,
    deadline: float,
    what: str,
    interval: float = WATCH_POLL,
) -> float:
    """Call `check` every `interval` s until it is true; an AssertionError after `deadline` s.
    (Not `pytest.fail`: inside a task group that would reach anyio's test runner as a
    BaseExceptionGroup, which it does not report.) Returns the seconds taken."""
    start = time.monotonic()
    while True:
        if await check():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed >= deadline:
            raise AssertionError(f"{what}: not within {deadline:g} s (polled every {interval:g} s)")
        await anyio.sleep(min(interval, max(deadline - elapsed, 0.0)))


async def wait_for(
    received: Received, expected: set[tuple[str, str, str, str]], *, deadline: float, what: str
) -> None:
    async def arrived() -> bool:
        return received.has(expected)

    try:
        await poll(arrived, deadline=deadline, what=what)
    except AssertionError:
        missing = sorted(expected - set(received.keyed()))
        raise AssertionError(
            f"{what}: {len(missing)} change(s) not received within {deadline:g} s, "
            f"e.g. {missing[:3]}; received {received.keyed()[:5]}"
            + (f"; the subscription failed: {received.error!r}" if received.error else "")
        ) from None


def _leaves(group: BaseExceptionGroup[Any]) -> list[BaseException]:
    found: list[BaseException] = []
    for err in group.exceptions:
        found.extend(_leaves(err) if isinstance(err, BaseExceptionGroup) else [err])
    return found


@contextlib.asynccontextmanager
async def background() -> AsyncIterator[TaskGroup]:
    """A task group whose single failure comes out bare, not wrapped in an exception group, so
    pytest reports it plainly."""
    try:
        async with anyio.create_task_group() as tg:
            yield tg
    except BaseExceptionGroup as group:
        leaves = [e for e in _leaves(group) if not isinstance(e, anyio.get_cancelled_exc_class())]
        if len(leaves) == 1:
            raise leaves[0] from None
        raise


class Latencies:
    """Write -> arrival times of the watch scenarios, printed at the end of each (`pytest -s`
    or `-rP` shows them)."""

    def __init__(self, what: str) -> None:
        self.what = what
        self.samples: list[float] = []
        self._written: dict[tuple[str, str, str, str], float] = {}

    def written(self, group: str, label: str, key: str, content: str) -> None:
        self._written[(group, label, key, content)] = time.monotonic()

    def measure(self, *receivers: Received) -> None:
        for where, at in self._written.items():
            for received in receivers:
                arrived = received.arrival_of(*where)
                if arrived is not None:
                    self.samples.append(max(arrived - at, 0.0))

    def report(self) -> str:
        if not self.samples:
            return f"{self.what}: no samples"
        ms = sorted(s * 1000 for s in self.samples)
        p95 = ms[min(len(ms) - 1, int(len(ms) * 0.95))]
        text = (
            f"{self.what}: write -> subscriber latency over {len(ms)} deliveries: "
            f"median {statistics.median(ms):.1f} ms, p95 {p95:.1f} ms, max {ms[-1]:.1f} ms"
        )
        print(text)
        return text


@contextlib.asynccontextmanager
async def watching(store: ConfigStore, app_id: str, *, deadline: float) -> AsyncIterator[Received]:
    """A raw `store.watch(app_id)`, read by a task until the block ends. Entered once the watch
    yielded its first (empty) batch: established."""
    received = Received(f"watch({app_id!r})")
    established = anyio.Event()
    first: list[Any] = []

    async def read(task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        iterator = store.watch(app_id)
        try:
            async for batch in iterator:
                if not established.is_set():
                    first.append(batch)
                    established.set()
                    if not batch:
                        continue
                received.add(batch)
        except Exception as err:
            received.error = err
            established.set()
        finally:
            received.ended = True
            aclose = getattr(iterator, "aclose", None)
            if aclose is not None:
                with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT):
                    await aclose()

    async with background() as tg:
        tg.start_soon(read)
        with anyio.fail_after(deadline):
            await established.wait()
        if received.error is not None:
            raise AssertionError(f"watch({app_id!r}) failed: {received.error!r}")
        assert first == [[]], (
            f"the first batch of watch({app_id!r}) must be [] (established), got {first[0]!r}"
        )
        try:
            yield received
        finally:
            tg.cancel_scope.cancel()


def start_draining(tg: TaskGroup, subscription: Subscription, name: str) -> Received:
    received = Received(name)
    tg.start_soon(received.drain, subscription)
    return received
