"""ConfigWatcher and ConfigWatchers: one backend watch per (store, app id) fanned out to
subscribers, slow subscribers dropped without slowing the others, reconnect with backoff and a
resync that neither misses nor repeats a change, watch health in readiness, lifecycle and info.
On asyncio and trio."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from layotto.actors.config_changes import ChangeTracker
from layotto.actors.config_watcher import ConfigWatcher, WatchSettings, watch_indicator
from layotto.actors.config_watchers import ConfigWatchers
from layotto.builtin.memory_config import InMemoryConfigStore
from layotto.errors import (
    BackendUnavailable,
    ComponentError,
    ErrorCategory,
    ShuttingDown,
    SubscriberTooSlow,
)
from layotto.health import HealthRegistry, Probe
from layotto.plugin import ConfigItem, ConfigQuery, ConfigStore, HealthStatus
from layotto.services.config_subscription import Subscription, SubscriptionScope

pytestmark = pytest.mark.anyio

STORE = "configstore"
APP = "app"
FAST = WatchSettings(backoff_base=0.01, backoff_cap=0.05, connect_timeout=1.0)


class FlakyStore(InMemoryConfigStore):
    """The in-memory store whose watch can be cut (`kill`), refused for a number of attempts,
    held before it is established, and made to replay old batches after (re)connecting."""

    def __init__(self) -> None:
        super().__init__()
        self.watch_calls = 0
        self.refusals = 0
        self.replay: list[list[ConfigItem]] = []
        self.hold: anyio.Event | None = None
        self.established = 0

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        self.watch_calls += 1
        if self.refusals > 0:
            self.refusals -= 1
            raise BackendUnavailable("connection refused")
        if self.hold is not None:
            await self.hold.wait()
        async with contextlib.aclosing(super().watch(app_id)) as inner:
            async for batch in inner:
                if not batch:
                    self.established += 1
                yield batch
                if not batch:
                    for old in self.replay:
                        yield old

    def kill(self) -> None:
        """Cut every open watch: each raises BackendUnavailable."""
        for streams in self._watches.values():
            for stream in list(streams):
                stream.close()

    def open_watches(self, app_id: str = APP) -> int:
        return len(self._watches.get(app_id, ()))

    async def put(self, key: str, content: str, group: str = "g", label: str = "l") -> None:
        await self.set(APP, [ConfigItem(key, content, group, label)], {})

    async def remove(self, key: str, group: str = "g", label: str = "l") -> None:
        await self.delete(ConfigQuery(APP, group, label, (key,)))


def scope(keys: list[str], group: str = "g", label: str = "l") -> SubscriptionScope:
    return SubscriptionScope.of(STORE, APP, group, label, keys)


class Reader:
    """Drains a subscription in the background, recording (key, content) pairs."""

    def __init__(self, sub: Subscription) -> None:
        self.sub = sub
        self.items: list[ConfigItem] = []
        self.batches: list[list[ConfigItem]] = []
        self.error: BaseException | None = None
        self.done = anyio.Event()
        self._changed = anyio.Event()

    async def run(self) -> None:
        try:
            async for batch in self.sub:
                self.batches.append(batch)
                self.items.extend(batch)
                self._changed.set()
                self._changed = anyio.Event()
        except Exception as err:
            self.error = err
        finally:
            self.done.set()
            self._changed.set()

    @property
    def pairs(self) -> list[tuple[str, str]]:
        return [(i.key, i.content) for i in self.items]

    async def wait_for(self, count: int, within: float = 5.0) -> None:
        with anyio.fail_after(within):
            while len(self.items) < count and not self.done.is_set():
                await self._changed.wait()
        assert len(self.items) >= count, (self.pairs, self.error)


@pytest.fixture
def health() -> HealthRegistry:
    return HealthRegistry()


@pytest.fixture
async def hub(health: HealthRegistry) -> AsyncIterator[ConfigWatchers]:
    async with ConfigWatchers(health, FAST).running() as pool:
        yield pool


@pytest.fixture
def store() -> FlakyStore:
    return FlakyStore()


async def wait_until(check: Any, within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while True:
            if check():
                return
            await anyio.sleep(0.005)


def watch_health(health: HealthRegistry) -> HealthStatus | None:
    found = health.get(watch_indicator(STORE, APP))
    return None if found is None else found.status


# -- fan-out -------------------------------------------------------------------------------


async def test_one_backend_watch_fans_out_by_scope(hub: ConfigWatchers, store: FlakyStore) -> None:
    subs = [
        await hub.subscribe(store, scope(["a", "b"])),
        await hub.subscribe(store, scope(["c"])),
        await hub.subscribe(store, scope([])),  # every key of (g, l)
        await hub.subscribe(store, scope([], group="other")),
    ]
    readers = [Reader(s) for s in subs]
    async with anyio.create_task_group() as tg:
        for r in readers:
            tg.start_soon(r.run)
        await wait_until(lambda: store.established == 1)
        assert store.watch_calls == 1  # one backend watch for four subscribers
        await store.set(
            APP,
            [
                ConfigItem("a", "1", "g", "l"),
                ConfigItem("c", "1", "g", "l"),
                ConfigItem("a", "1", "other", "l"),
                ConfigItem("a", "1", "g", "other-label"),
            ],
            {},
        )
        await readers[2].wait_for(2)
        await readers[3].wait_for(1)
        await readers[0].wait_for(1)
        await readers[1].wait_for(1)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert readers[0].pairs == [("a", "1")]
    assert readers[1].pairs == [("c", "1")]
    assert readers[2].pairs == [("a", "1"), ("c", "1")]
    assert len(readers[2].batches) == 1  # one backend batch -> one batch per subscriber
    assert [(i.key, i.group) for i in readers[3].items] == [("a", "other")]
    for s in subs:
        s.close()


async def test_concurrent_subscriptions_never_see_each_others_keys(
    hub: ConfigWatchers, store: FlakyStore
) -> None:
    a = Reader(await hub.subscribe(store, scope(["a1", "a2"])))
    b = Reader(await hub.subscribe(store, scope(["b1"])))
    c = Reader(await hub.subscribe(store, scope(["a1"], label="l2")))
    async with anyio.create_task_group() as tg:
        for r in (a, b, c):
            tg.start_soon(r.run)

        async def writer(keys: list[str], label: str = "l") -> None:
            for n in range(30):
                for key in keys:
                    await store.put(key, str(n), label=label)
                await anyio.lowlevel.checkpoint()

        async with anyio.create_task_group() as writers:
            writers.start_soon(writer, ["a1", "a2"])
            writers.start_soon(writer, ["b1", "x"])
            writers.start_soon(writer, ["a1"], "l2")
        await a.wait_for(60)
        await b.wait_for(30)
        await c.wait_for(30)
        tg.cancel_scope.cancel()
    assert {i.key for i in a.items} == {"a1", "a2"}
    assert {(i.key, i.label) for i in b.items} == {("b1", "l")}
    assert {(i.key, i.label) for i in c.items} == {("a1", "l2")}
    for r in (a, b, c):
        values = [int(i.content) for i in r.items if i.key == r.items[0].key]
        assert values == list(range(30)), r.pairs  # every change, in order, once
        r.sub.close()


# -- slow subscribers ----------------------------------------------------------------------


async def test_a_subscriber_that_does_not_read_is_dropped_without_slowing_the_others(
    health: HealthRegistry, store: FlakyStore
) -> None:
    settings = WatchSettings(buffer_size=4, slow_timeout=0.3, backoff_cap=0.05)
    async with ConfigWatchers(health, settings).running() as hub:
        stuck = await hub.subscribe(store, scope(["k"]))
        fast = Reader(await hub.subscribe(store, scope(["k", "j"])))
        lags: list[float] = []
        async with anyio.create_task_group() as tg:
            tg.start_soon(fast.run)
            # 6 changes for both: 4 fill the stuck one's buffer, 2 wait behind it (no overflow).
            writes = [("k", str(n)) for n in range(6)] + [("j", str(n)) for n in range(40)]
            for n, (key, content) in enumerate(writes):
                before = time.monotonic()
                await store.put(key, content)
                await fast.wait_for(n + 1)
                lags.append(time.monotonic() - before)
                await anyio.sleep(0.01)
            # By now the stuck one's buffer has been full for longer than slow_timeout.
            await wait_until(lambda: len(hub.info()) == 1, within=1)
            assert hub.info()[0]["keys"] == ["j", "k"]
            tg.cancel_scope.cancel()
        assert max(lags) < 0.1, lags  # never held up by the stuck subscriber
        assert fast.pairs == writes
        received: list[list[ConfigItem]] = []

        async def read_all() -> None:
            async for batch in stuck:
                received.append(batch)

        with pytest.raises(SubscriberTooSlow) as info:
            await read_all()
        assert info.value.category is ErrorCategory.RESOURCE_EXHAUSTED
        assert "read nothing for 0.3 s" in info.value.message
        assert "subscribe again" in info.value.message
        assert received == []  # the error comes first: the client must resubscribe
        stuck.close()
        fast.sub.close()


async def test_an_overflowing_subscriber_is_dropped_at_once(
    health: HealthRegistry, store: FlakyStore
) -> None:
    settings = WatchSettings(buffer_size=2, slow_timeout=30, backoff_cap=0.05)
    async with ConfigWatchers(health, settings).running() as hub:
        stuck = await hub.subscribe(store, scope([]))
        other = Reader(await hub.subscribe(store, scope([])))
        async with anyio.create_task_group() as tg:
            tg.start_soon(other.run)
            await wait_until(lambda: store.established == 1)
            for n in range(6):  # 2 buffered + 2 queued, then overflow
                await store.put(f"k{n}", "v")
                await anyio.lowlevel.checkpoint()
            await other.wait_for(6, within=2)
            tg.cancel_scope.cancel()
        assert hub.info()[0]["subscribers"] == 1
        with anyio.fail_after(1), pytest.raises(SubscriberTooSlow, match="unread"):
            await stuck.__anext__()
        stuck.close()
        other.sub.close()


# -- reconnect and resync ------------------------------------------------------------------


async def test_reconnect_resyncs_exactly_the_missed_changes(
    hub: ConfigWatchers, store: FlakyStore, health: HealthRegistry
) -> None:
    await store.put("a", "1")
    await store.put("b", "1")
    sub = await hub.subscribe(store, scope([]))
    reader = Reader(sub)
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)
        await wait_until(lambda: store.established == 1)
        assert watch_health(health) is HealthStatus.UP
        store.refusals = 3
        store.hold = anyio.Event()  # the next successful watch waits until released
        store.kill()
        await wait_until(lambda: watch_health(health) is HealthStatus.DOWN)
        assert health.status(Probe.READINESS) is HealthStatus.DOWN  # the watch counts
        details = health.get(watch_indicator(STORE, APP))
        assert details is not None
        assert details.details["store"] == STORE
        # Changed while nobody watched: update, delete, add, and a change undone.
        await store.put("a", "2")
        await store.remove("b")
        await store.put("c", "1")
        await store.put("d", "1")
        await store.remove("d")
        await wait_until(lambda: store.watch_calls >= 5)  # 3 refusals, then held
        store.hold.set()
        await reader.wait_for(3)
        await wait_until(lambda: watch_health(health) is HealthStatus.UP)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert sorted((i.key, i.content, i.deleted) for i in reader.items) == [
        ("a", "2", False),
        ("b", "", True),
        ("c", "1", False),
    ]
    watcher = hub.watcher(STORE, APP)
    assert watcher is not None
    assert watcher.reconnects == 1
    assert watch_health(health) is HealthStatus.UP
    sub.close()


async def test_a_replayed_change_is_not_repeated(hub: ConfigWatchers, store: FlakyStore) -> None:
    reader = Reader(await hub.subscribe(store, scope(["a", "b"])))
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)
        await wait_until(lambda: store.established == 1)
        await store.put("a", "1")
        await reader.wait_for(1)
        replayed = reader.batches[-1]
        store.kill()
        await store.put("b", "1")  # missed by the watch, found by the resync
        await wait_until(lambda: store.established == 2)
        # Some backends resend what they already sent (or the resync found) after a reconnect.
        store.replay = [replayed, await store.get(ConfigQuery(APP, "g", "l", ("b",)))]
        store.kill()
        await wait_until(lambda: store.established == 3)
        await store.put("a", "2")
        await reader.wait_for(3)
        await anyio.sleep(0.05)
        tg.cancel_scope.cancel()
    assert reader.pairs == [("a", "1"), ("b", "1"), ("a", "2")]
    reader.sub.close()


async def test_no_change_is_missed_or_repeated_across_many_reconnects(
    hub: ConfigWatchers, store: FlakyStore
) -> None:
    reader = Reader(await hub.subscribe(store, scope(["k"])))
    last = 200
    async with anyio.create_task_group() as tg:
        tg.start_soon(reader.run)

        async def cut() -> None:
            while True:
                await anyio.sleep(0.003)
                store.kill()

        async with anyio.create_task_group() as chaos:
            chaos.start_soon(cut)
            for n in range(1, last + 1):
                await store.put("k", str(n))
                await anyio.sleep(0.001)
            chaos.cancel_scope.cancel()

        await wait_until(lambda: bool(reader.items) and reader.items[-1].content == str(last))
        tg.cancel_scope.cancel()
    values = [int(c) for _, c in reader.pairs]
    # Values written while the watch was down collapse into the resync's one change, but
    # every delivered value is newer than the one before, and the last one always arrives.
    assert values == sorted(set(values)), values
    assert values[-1] == last
    assert store.established > 5
    reader.sub.close()


async def test_subscribing_while_the_watch_is_down(
    hub: ConfigWatchers, store: FlakyStore, health: HealthRegistry
) -> None:
    store.refusals = 1_000_000
    first = await hub.subscribe(store, scope(["k"]))
    await wait_until(lambda: watch_health(health) is HealthStatus.DOWN)
    # Reads work, so a subscription can still start; its changes come once the watch is back.
    second = Reader(await hub.subscribe(store, scope(["k"])))
    await store.put("k", "1")
    store.refusals = 0
    async with anyio.create_task_group() as tg:
        tg.start_soon(second.run)
        await second.wait_for(1)
        tg.cancel_scope.cancel()
    assert second.pairs == [("k", "1")]
    first.close()
    second.sub.close()


async def test_a_watch_that_never_establishes_is_down(
    health: HealthRegistry, store: FlakyStore
) -> None:
    store.hold = anyio.Event()
    settings = WatchSettings(connect_timeout=0.05, backoff_base=0.01, backoff_cap=0.02)
    async with ConfigWatchers(health, settings).running() as hub:
        sub = await hub.subscribe(store, scope(["k"]))
        await wait_until(lambda: watch_health(health) is HealthStatus.DOWN)
        found = health.get(watch_indicator(STORE, APP))
        assert found is not None
        assert "not established within" in found.details["reason"]
        store.hold.set()
        await wait_until(lambda: watch_health(health) is HealthStatus.UP)
        sub.close()


# -- lifecycle and info --------------------------------------------------------------------


async def test_watcher_starts_on_first_subscription_and_stops_after_the_last(
    hub: ConfigWatchers, store: FlakyStore, health: HealthRegistry
) -> None:
    assert hub.watcher(STORE, APP) is None
    one = await hub.subscribe(store, scope(["a"]))
    two = await hub.subscribe(store, scope(["a"]))
    await wait_until(lambda: store.open_watches() == 1)
    assert hub.watcher(STORE, APP) is not None
    one.close()
    one.close()  # idempotent
    assert hub.watcher(STORE, APP) is not None
    assert hub.unsubscribe(two.id) is True
    assert hub.watcher(STORE, APP) is None
    await wait_until(lambda: store.open_watches() == 0)  # the backend watch is closed
    await wait_until(lambda: health.get(watch_indicator(STORE, APP)) is None)
    # And a new subscription starts a new one.
    three = await hub.subscribe(store, scope(["a"]))
    await wait_until(lambda: store.open_watches() == 1)
    three.close()


async def test_a_watcher_per_store_and_app_id(hub: ConfigWatchers) -> None:
    first, second = FlakyStore(), FlakyStore()
    subs = [
        await hub.subscribe(first, scope(["a"])),
        await hub.subscribe(second, SubscriptionScope.of("other", APP, "g", "l", ["a"])),
        await hub.subscribe(first, SubscriptionScope.of(STORE, "app-2", "g", "l", ["a"])),
    ]
    await wait_until(lambda: first.open_watches(APP) == 1 and first.open_watches("app-2") == 1)
    await wait_until(lambda: second.open_watches(APP) == 1)
    for s in subs:
        s.close()


async def test_info_lists_scopes_with_subscriber_counts(
    hub: ConfigWatchers, store: FlakyStore
) -> None:
    subs = [
        await hub.subscribe(store, scope(["b", "a", "a"])),
        await hub.subscribe(store, scope(["a", "b"])),
        await hub.subscribe(store, scope([])),
    ]
    base = {"store": STORE, "app_id": APP, "group": "g", "label": "l"}
    assert hub.info() == [
        {**base, "keys": [], "subscribers": 1},
        {**base, "keys": ["a", "b"], "subscribers": 2},
    ]
    for s in subs:
        s.close()
    assert hub.info() == []


async def test_closing_the_pool_ends_open_subscriptions(
    health: HealthRegistry, store: FlakyStore
) -> None:
    async with ConfigWatchers(health, FAST).running() as hub:
        sub = await hub.subscribe(store, scope(["k"]))
        await wait_until(lambda: store.open_watches() == 1)
    assert store.open_watches() == 0
    with pytest.raises(ShuttingDown):
        await sub.__anext__()
    sub.close()
    with pytest.raises(ShuttingDown):
        await hub.subscribe(store, scope(["k"]))


async def test_a_failed_subscription_leaves_nothing_behind(
    hub: ConfigWatchers, health: HealthRegistry
) -> None:
    class Unreadable(FlakyStore):
        async def get(self, query: ConfigQuery) -> list[ConfigItem]:
            raise BackendUnavailable("down")

    store: ConfigStore = Unreadable()
    with pytest.raises(BackendUnavailable):
        await hub.subscribe(store, scope(["k"]))
    assert hub.info() == []
    assert hub.watcher(STORE, APP) is None
    await wait_until(lambda: health.get(watch_indicator(STORE, APP)) is None)


async def test_a_failing_watcher_ends_its_subscriptions_not_the_pool(
    hub: ConfigWatchers, store: FlakyStore, monkeypatch: pytest.MonkeyPatch
) -> None:
    boom = anyio.Event()
    original = ConfigWatcher._watch_loop

    async def broken(self: ConfigWatcher) -> None:
        await boom.wait()
        raise RuntimeError("a bug")

    monkeypatch.setattr(ConfigWatcher, "_watch_loop", broken)
    sub = await hub.subscribe(store, scope(["k"]))
    boom.set()
    with anyio.fail_after(5), pytest.raises(ComponentError, match="subscribe again"):
        await sub.__anext__()
    await wait_until(lambda: hub.watcher(STORE, APP) is None)
    monkeypatch.setattr(ConfigWatcher, "_watch_loop", original)
    again = Reader(await hub.subscribe(store, scope(["k"])))
    async with anyio.create_task_group() as tg:
        tg.start_soon(again.run)
        await wait_until(lambda: store.established == 1)
        await store.put("k", "1")
        await again.wait_for(1)
        tg.cancel_scope.cancel()
    assert again.pairs == [("k", "1")]
    sub.close()
    again.sub.close()
    assert hub.info() == []


# -- ChangeTracker (pure) --------------------------------------------------------------------


def ci(key: str, content: str, version: str = "", deleted: bool = False) -> ConfigItem:
    metadata = {"version": version} if version else {}
    if deleted:
        metadata["deleted"] = "true"
    return ConfigItem(key, content, "g", "l", metadata=metadata)


def test_tracker_reports_real_changes_once() -> None:
    tracker = ChangeTracker()
    tracker.track(scope(["a", "b"]))
    assert tracker.observe([ci("a", "1", "1"), ci("x", "1", "2")]) == [ci("a", "1", "1")]
    assert tracker.observe([ci("a", "1", "1")]) == []  # the same again
    assert tracker.observe([ci("a", "1", "3")]) == [ci("a", "1", "3")]  # rewritten: new version
    assert tracker.observe([ci("a", "0", "2")]) == []  # an older (decimal) version: stale
    # Versions that are not decimal are compared for equality only.
    assert tracker.observe([ci("b", "1", "rk-b")]) == [ci("b", "1", "rk-b")]
    assert tracker.observe([ci("b", "2", "rk-a")]) == [ci("b", "2", "rk-a")]


def test_tracker_deletions_and_tombstones() -> None:
    tracker = ChangeTracker()
    tracker.track(scope([]))
    assert tracker.observe([ci("never", "", "1", deleted=True)]) == []  # nothing to delete
    tracker.observe([ci("a", "1", "5")])
    (notice,) = tracker.observe([ci("a", "", "6", deleted=True)])
    assert (notice.key, notice.content, notice.deleted, notice.metadata["version"]) == (
        "a",
        "",
        True,
        "6",
    )
    assert tracker.observe([ci("a", "", "6", deleted=True)]) == []  # deleted once
    assert tracker.observe([ci("a", "1", "5")]) == []  # a stale replay after the delete
    assert tracker.observe([ci("a", "2", "7")]) == [ci("a", "2", "7")]  # recreated


def test_tracker_resync_diffs_against_what_was_seen() -> None:
    tracker = ChangeTracker()
    tracker.track(scope([]))
    tracker.observe([ci("a", "1", "1"), ci("b", "1", "2"), ci("c", "1", "3")])
    read = tracker.reads()[0]
    changes = tracker.resync(read, [ci("a", "1", "1"), ci("b", "2", "4"), ci("d", "1", "5")])
    assert [(i.key, i.content, i.deleted) for i in changes] == [
        ("b", "2", False),
        ("d", "1", False),
        ("c", "", True),
    ]
    assert tracker.resync(read, [ci("a", "1", "1"), ci("b", "2", "4"), ci("d", "1", "5")]) == []


def test_tracker_reads_cover_every_scope_with_the_fewest_gets() -> None:
    tracker = ChangeTracker()
    tracker.track(scope(["b", "a"]))
    tracker.track(scope(["c"]))
    tracker.track(scope(["x"], group="h"))
    tracker.track(scope([], group="h"))
    assert [(r.group, r.label, r.keys) for r in tracker.reads()] == [
        ("g", "l", ("a", "b", "c")),
        ("h", "l", ()),
    ]


def test_tracker_forgets_what_no_scope_covers() -> None:
    tracker = ChangeTracker()
    keys_a = scope(["a"])
    tracker.track(keys_a)
    tracker.track(keys_a)
    tracker.observe([ci("a", "1", "1")])
    tracker.untrack(keys_a)
    assert tracker.observe([ci("a", "1", "1")]) == []  # still tracked once: seen
    tracker.untrack(keys_a)
    assert tracker.reads() == []
    tracker.track(keys_a)
    assert tracker.observe([ci("a", "1", "1")]) == [ci("a", "1", "1")]  # forgotten: new again


async def test_a_subscription_racing_the_shutdown_is_refused(health: HealthRegistry) -> None:
    class SlowRead(FlakyStore):
        reading = anyio.Event()

        async def get(self, query: ConfigQuery) -> list[ConfigItem]:
            self.reading.set()
            await anyio.sleep(0.2)
            return await super().get(query)

    store = SlowRead()
    outcome: list[BaseException] = []

    async def subscribe(hub: ConfigWatchers) -> None:
        try:
            await hub.subscribe(store, scope(["k"]))
        except ShuttingDown as err:
            outcome.append(err)

    async with anyio.create_task_group() as tg, ConfigWatchers(health, FAST).running() as hub:
        tg.start_soon(subscribe, hub)
        with anyio.fail_after(5):
            await store.reading.wait()
        # The pool closed while the subscription was reading its baseline.
    assert len(outcome) == 1
