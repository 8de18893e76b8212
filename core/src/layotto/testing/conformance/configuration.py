"""Configuration-store conformance (conformance.md §3, component level).

Subclass `ConfigStoreConformance` in a test module (the name must start with `Test`) and
provide two fixtures: `config_store`, an initialised store (closed on teardown), and
`config_updater`, a `ConfigUpdater` that writes **straight to the backend** (Redis commands,
etcd puts, Apollo Open API + release), not through the store, so the kit checks that the
store's reads and watch see changes made by anyone::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import ConfigStoreConformance

    class EtcdUpdater:  # implements layotto.testing.conformance.ConfigUpdater
        def __init__(self, client): self.client = client
        async def write(self, app_id, group, label, key, content):
            await self.client.put(f"/{app_id}/{group}/{label}/{key}", content)
        async def remove(self, app_id, group, label, key):
            await self.client.delete(f"/{app_id}/{group}/{label}/{key}")

    class TestEtcdConfig(ConfigStoreConformance):
        @pytest.fixture
        async def config_store(self, etcd_url):
            store = EtcdConfigStore.create(EtcdConfigMetadata(...), ComponentContext("c", "app"))
            await store.init()
            yield store
            await store.close()

        @pytest.fixture
        async def config_updater(self, etcd_url):
            async with connect(etcd_url) as client:
                yield EtcdUpdater(client)

Optional fixtures (override in the class): `config_app_id` (default: a fresh app id per test,
`<conformance_prefix>app`; a store bound to one app id, such as Apollo, returns that one),
`config_groups` (two distinct groups; default two fresh ones, override with two existing Apollo
namespaces), `config_labels` (two distinct labels for the label scenario; default
`("label-a", "label-b")`), `config_label` (the label of every other scenario; default the
store's `default_label`).

Knobs (class attributes): `has_versions` (default True: items from `get` and `watch` carry
`metadata["version"]`), `writable` (default True: `set`/`delete` work and tags round trip; False:
they must raise `Unsupported`), `has_tags` (default True, with `writable`), `watch_deadline`
(seconds a change may take to reach a subscriber, default 5), `settle_time` (seconds the kit
waits for stray deliveries before checking that nothing unexpected arrived, default 0.3).

Subscriptions go through the sidecar's own watcher (`layotto.actors.config_watchers`), which
runs one `store.watch(app_id)` and filters per subscription, exactly as in the sidecar; the raw
`watch` is tested on its own too. The watch scenarios print their write -> subscriber latency
(`pytest -s` or `-rP` shows it). Keys are unique per test (`conformance_prefix`) and removed
through the updater afterwards. Blank group/label defaulting is the sidecar's, tested there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable
from contextlib import suppress
from dataclasses import dataclass, field
from typing import ClassVar, Protocol, runtime_checkable

import anyio
import pytest

from layotto.actors.config_watcher import WatchSettings
from layotto.actors.config_watchers import ConfigWatchers
from layotto.errors import ErrorCategory
from layotto.health import HealthRegistry
from layotto.plugin import (
    VERSION_METADATA,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    HealthStatus,
    Unsupported,
)
from layotto.services.config_subscription import Subscription, SubscriptionScope
from layotto.testing.conformance._config_support import (
    WATCH_POLL,
    Latencies,
    background,
    poll,
    start_draining,
    wait_for,
    watching,
)
from layotto.testing.conformance._support import ConformanceBase

KEYS_PER_GROUP = 10
CLEANUP_TIMEOUT = 20.0

Entry = tuple[str, str, str, str]  # (group, label, key, content)


@runtime_checkable
class ConfigUpdater(Protocol):
    """Writes straight to the backend of the store under test (not through the store)."""

    async def write(self, app_id: str, group: str, label: str, key: str, content: str) -> None:
        """Create or update one item; it must become visible to the store's `get` and `watch`
        (for Apollo: after the release)."""

    async def remove(self, app_id: str, group: str, label: str, key: str) -> None:
        """Delete one item; removing a missing item succeeds."""


@dataclass
class ConfigNames:
    """The unique keys of one test and every (group, label, key) written, for cleanup."""

    prefix: str
    app_id: str
    groups: tuple[str, str]
    label: str
    written: set[tuple[str, str, str]] = field(default_factory=set)

    def key(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def group_keys(self, group_index: int) -> list[str]:
        return [self.key(f"g{group_index + 1}-k{i:02d}") for i in range(KEYS_PER_GROUP)]


@dataclass
class Seeded:
    """Two groups of `KEYS_PER_GROUP` keys, each with content `<key>=v1`."""

    names: ConfigNames
    keys: tuple[list[str], list[str]]

    def entries(self, group_index: int, content: str = "v1") -> set[Entry]:
        group = self.names.groups[group_index]
        return {(group, self.names.label, k, f"{k}={content}") for k in self.keys[group_index]}


class ConfigStoreConformance(ConformanceBase):
    """conformance.md §3 against the `config_store` and `config_updater` fixtures. See the
    module docstring."""

    has_versions: ClassVar[bool] = True
    writable: ClassVar[bool] = True
    has_tags: ClassVar[bool] = True
    watch_deadline: ClassVar[float] = 5.0
    settle_time: ClassVar[float] = 0.3

    # -- fixtures ------------------------------------------------------------------------------

    @pytest.fixture
    def config_app_id(self, conformance_prefix: str) -> str:
        return f"{conformance_prefix}app"

    @pytest.fixture
    def config_groups(self, conformance_prefix: str) -> tuple[str, str]:
        return (f"{conformance_prefix}group-1", f"{conformance_prefix}group-2")

    @pytest.fixture
    def config_labels(self) -> tuple[str, str]:
        return ("label-a", "label-b")

    @pytest.fixture
    def config_label(self, config_store: ConfigStore) -> str:
        return config_store.default_label

    @pytest.fixture
    async def config_names(
        self,
        config_updater: ConfigUpdater,
        conformance_prefix: str,
        config_app_id: str,
        config_groups: tuple[str, str],
        config_label: str,
    ) -> AsyncIterator[ConfigNames]:
        names = ConfigNames(conformance_prefix, config_app_id, config_groups, config_label)
        yield names
        with anyio.move_on_after(CLEANUP_TIMEOUT):
            for group, label, key in sorted(names.written):
                with suppress(Exception):
                    await config_updater.remove(names.app_id, group, label, key)

    @pytest.fixture
    async def config_hub(self) -> AsyncIterator[ConfigWatchers]:
        """The sidecar's subscription machinery, on its own health registry."""
        settings = WatchSettings(
            connect_timeout=self.watch_deadline, backoff_cap=1.0, call_timeout=self.watch_deadline
        )
        async with ConfigWatchers(HealthRegistry(), settings).running() as hub:
            yield hub

    @pytest.fixture
    async def seeded(
        self, config_store: ConfigStore, config_updater: ConfigUpdater, config_names: ConfigNames
    ) -> Seeded:
        """conformance.md §3 "insert initial keys": two groups of 10 keys, readable."""
        keys = (config_names.group_keys(0), config_names.group_keys(1))
        seeded = Seeded(config_names, keys)
        for index in (0, 1):
            for key in keys[index]:
                await self.write(config_updater, config_names, index, key, f"{key}=v1")
        for index in (0, 1):
            await self.wait_readable(config_store, seeded, index, seeded.entries(index))
        return seeded

    # -- helpers -------------------------------------------------------------------------------

    @staticmethod
    async def write(
        updater: ConfigUpdater,
        names: ConfigNames,
        group_index: int,
        key: str,
        content: str,
        *,
        label: str | None = None,
        latencies: Latencies | None = None,
    ) -> None:
        group = names.groups[group_index]
        label = names.label if label is None else label
        names.written.add((group, label, key))
        if latencies is not None:
            latencies.written(group, label, key, content)
        with anyio.fail_after(CLEANUP_TIMEOUT):
            await updater.write(names.app_id, group, label, key, content)

    @staticmethod
    async def remove(
        updater: ConfigUpdater,
        names: ConfigNames,
        group_index: int,
        key: str,
        *,
        latencies: Latencies | None = None,
    ) -> None:
        group = names.groups[group_index]
        if latencies is not None:
            latencies.written(group, names.label, key, "")
        with anyio.fail_after(CLEANUP_TIMEOUT):
            await updater.remove(names.app_id, group, names.label, key)

    @staticmethod
    def query(
        names: ConfigNames, group_index: int, keys: Iterable[str] = (), label: str | None = None
    ) -> ConfigQuery:
        return ConfigQuery(
            names.app_id,
            names.groups[group_index],
            names.label if label is None else label,
            tuple(keys),
        )

    @staticmethod
    def entries(items: Iterable[ConfigItem], prefix: str = "") -> set[Entry]:
        return {(i.group, i.label, i.key, i.content) for i in items if i.key.startswith(prefix)}

    async def wait_readable(
        self, store: ConfigStore, seeded: Seeded, group_index: int, expected: set[Entry]
    ) -> None:
        """Backends may publish writes with a delay (Apollo's config service): poll `get`."""
        query = self.query(seeded.names, group_index, seeded.keys[group_index])

        async def visible() -> bool:
            return self.entries(await store.get(query)) == expected

        await poll(visible, deadline=self.watch_deadline, what="seeded keys readable")

    def check_versions(self, items: Iterable[ConfigItem]) -> None:
        if self.has_versions:
            for item in items:
                assert item.metadata.get(VERSION_METADATA), f"{item.key}: no version in {item}"

    async def subscribe(
        self,
        hub: ConfigWatchers,
        store: ConfigStore,
        names: ConfigNames,
        group_index: int,
        keys: Iterable[str] = (),
        *,
        initial: bool = False,
    ) -> Subscription:
        scope = SubscriptionScope.of(
            "store-under-test", names.app_id, names.groups[group_index], names.label, list(keys)
        )
        with anyio.fail_after(self.watch_deadline):
            return await hub.subscribe(store, scope, initial=initial)

    async def settle(self) -> None:
        await anyio.sleep(self.settle_time)

    def skip_unless_writable(self) -> None:
        if not self.writable:
            pytest.skip("the store is read-only (writable = False)")

    # -- basics --------------------------------------------------------------------------------

    async def test_init_and_ping(self, config_store: ConfigStore) -> None:
        assert isinstance(config_store, ConfigStore)
        with anyio.fail_after(1):
            health = await config_store.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_defaults(self, config_store: ConfigStore) -> None:
        assert isinstance(config_store.default_group, str)
        assert config_store.default_group.strip(), "default_group must not be blank"
        assert isinstance(config_store.default_label, str)

    async def test_close_is_idempotent(self, config_store: ConfigStore) -> None:
        with anyio.fail_after(5):
            await config_store.close()
            await config_store.close()  # the fixture's teardown closes it a third time

    # -- reads ---------------------------------------------------------------------------------

    async def test_get_with_a_key_list(self, config_store: ConfigStore, seeded: Seeded) -> None:
        wanted = seeded.keys[0][:5]
        items = await config_store.get(self.query(seeded.names, 0, wanted))
        assert sorted(i.key for i in items) == sorted(wanted)
        assert self.entries(items) == {e for e in seeded.entries(0) if e[2] in wanted}
        self.check_versions(items)

    async def test_get_all_keys_of_a_group(self, config_store: ConfigStore, seeded: Seeded) -> None:
        for index in (0, 1):
            items = await config_store.get(self.query(seeded.names, index))
            # A shared group (an Apollo namespace) may hold other keys: look at ours only.
            assert self.entries(items, seeded.names.prefix) == seeded.entries(index)
            self.check_versions(items)

    async def test_get_missing_keys_is_empty(
        self, config_store: ConfigStore, config_names: ConfigNames
    ) -> None:
        missing = [config_names.key("missing-1"), config_names.key("missing-2")]
        assert await config_store.get(self.query(config_names, 0, missing)) == []

    async def test_get_leaves_out_missing_keys(
        self, config_store: ConfigStore, seeded: Seeded
    ) -> None:
        present = seeded.keys[1][0]
        query = self.query(seeded.names, 1, [seeded.names.key("missing"), present])
        items = await config_store.get(query)
        assert [i.key for i in items] == [present]

    async def test_same_key_under_two_labels_is_independent(
        self,
        config_store: ConfigStore,
        config_updater: ConfigUpdater,
        config_names: ConfigNames,
        config_labels: tuple[str, str],
    ) -> None:
        key = config_names.key("labelled")
        first, second = config_labels
        await self.write(config_updater, config_names, 0, key, "for-a", label=first)
        await self.write(config_updater, config_names, 0, key, "for-b", label=second)
        group = config_names.groups[0]

        async def both_visible() -> bool:
            a = await config_store.get(self.query(config_names, 0, [key], first))
            b = await config_store.get(self.query(config_names, 0, [key], second))
            return self.entries(a) == {(group, first, key, "for-a")} and self.entries(b) == {
                (group, second, key, "for-b")
            }

        await poll(both_visible, deadline=self.watch_deadline, what="both labels readable")
        with anyio.fail_after(CLEANUP_TIMEOUT):
            await config_updater.remove(config_names.app_id, group, first, key)

        async def only_the_first_removed() -> bool:
            a = await config_store.get(self.query(config_names, 0, [key], first))
            b = await config_store.get(self.query(config_names, 0, [key], second))
            return a == [] and self.entries(b) == {(group, second, key, "for-b")}

        await poll(
            only_the_first_removed, deadline=self.watch_deadline, what="one label removed alone"
        )

    # -- writes through the store --------------------------------------------------------------

    async def test_set_then_get_with_tags(
        self, config_store: ConfigStore, config_names: ConfigNames
    ) -> None:
        self.skip_unless_writable()
        key = config_names.key("tagged")
        group = config_names.groups[0]
        tags = {"owner": "conformance", "tier": "gold"} if self.has_tags else {}
        item = ConfigItem(key, "tagged-value", group, config_names.label, tags=tags)
        config_names.written.add((group, config_names.label, key))
        await config_store.set(config_names.app_id, [item], {})

        async def readable() -> bool:
            found = await config_store.get(self.query(config_names, 0, [key]))
            return len(found) == 1 and found[0].content == "tagged-value"

        await poll(readable, deadline=self.watch_deadline, what="saved item readable")
        (found,) = await config_store.get(self.query(config_names, 0, [key]))
        assert (found.key, found.group, found.label) == (key, group, config_names.label)
        if self.has_tags:
            assert dict(found.tags) == tags
        self.check_versions([found])

    async def test_set_changes_the_version(
        self, config_store: ConfigStore, config_names: ConfigNames
    ) -> None:
        self.skip_unless_writable()
        if not self.has_versions:
            pytest.skip("the store has no versions (has_versions = False)")
        key = config_names.key("versioned")
        group = config_names.groups[0]
        config_names.written.add((group, config_names.label, key))
        versions = []
        for content in ("one", "two"):
            item = ConfigItem(key, content, group, config_names.label)
            await config_store.set(config_names.app_id, [item], {})

            async def readable(content: str = content) -> bool:
                found = await config_store.get(self.query(config_names, 0, [key]))
                return [i.content for i in found] == [content]

            await poll(readable, deadline=self.watch_deadline, what=f"{content!r} saved")
            (found,) = await config_store.get(self.query(config_names, 0, [key]))
            versions.append(found.metadata.get(VERSION_METADATA))
        assert versions[0]
        assert versions[1]
        assert versions[0] != versions[1]

    async def test_delete_through_the_store(
        self, config_store: ConfigStore, seeded: Seeded
    ) -> None:
        self.skip_unless_writable()
        names = seeded.names
        doomed = seeded.keys[0][:2]
        missing = names.key("never-written")
        await config_store.delete(self.query(names, 0, [*doomed, missing]))

        async def gone() -> bool:
            return await config_store.get(self.query(names, 0, doomed)) == []

        await poll(gone, deadline=self.watch_deadline, what="deleted keys gone")
        rest = await config_store.get(self.query(names, 0, seeded.keys[0]))
        assert sorted(i.key for i in rest) == sorted(seeded.keys[0][2:])

    async def test_read_only_store_refuses_writes(
        self, config_store: ConfigStore, config_names: ConfigNames
    ) -> None:
        if self.writable:
            pytest.skip("the store is writable (writable = True)")
        item = ConfigItem(config_names.key("k"), "v", config_names.groups[0], config_names.label)
        with pytest.raises(Unsupported) as info:
            await config_store.set(config_names.app_id, [item], {})
        assert info.value.category is ErrorCategory.UNIMPLEMENTED
        with pytest.raises(Unsupported):
            await config_store.delete(self.query(config_names, 0, [item.key]))

    # -- the raw watch -------------------------------------------------------------------------

    async def test_watch_sees_backend_writes_and_deletes(
        self, config_store: ConfigStore, config_updater: ConfigUpdater, config_names: ConfigNames
    ) -> None:
        key = config_names.key("watched")
        group = config_names.groups[0]
        label = config_names.label
        latencies = Latencies("raw watch")
        async with watching(
            config_store, config_names.app_id, deadline=self.watch_deadline
        ) as received:
            await self.write(config_updater, config_names, 0, key, "w1", latencies=latencies)
            await wait_for(
                received,
                {(group, label, key, "w1")},
                deadline=self.watch_deadline,
                what="watch reports the write",
            )
            changed = [i for i in received.items if i.key == key]
            self.check_versions(changed)
            await self.remove(config_updater, config_names, 0, key, latencies=latencies)

            async def deleted() -> bool:
                return any(i.key == key and i.deleted for i in received.items)

            await poll(
                deleted,
                deadline=self.watch_deadline,
                what="watch reports the delete",
                interval=WATCH_POLL,
            )
        notice = next(i for i in received.items if i.key == key and i.deleted)
        assert notice.content == ""
        assert (notice.group, notice.label) == (group, label)
        latencies.measure(received)
        latencies.report()

    # -- subscribers (through the sidecar's watcher) -------------------------------------------

    async def test_subscribers_receive_exactly_their_changes(
        self,
        config_store: ConfigStore,
        config_updater: ConfigUpdater,
        config_hub: ConfigWatchers,
        seeded: Seeded,
    ) -> None:
        names = seeded.names
        latencies = Latencies("subscribers")
        async with background() as tg:
            subs = [
                await self.subscribe(config_hub, config_store, names, 0, seeded.keys[0]),
                await self.subscribe(config_hub, config_store, names, 1, seeded.keys[1]),
                await self.subscribe(config_hub, config_store, names, 0),  # all keys
                await self.subscribe(config_hub, config_store, names, 1),  # all keys
            ]
            got = [start_draining(tg, s, f"subscriber {n + 1}") for n, s in enumerate(subs)]
            added = (names.key("g1-new"), names.key("g2-new"))
            for index in (0, 1):
                for key in seeded.keys[index]:
                    await self.write(
                        config_updater, names, index, key, f"{key}=v2", latencies=latencies
                    )
                await self.write(
                    config_updater,
                    names,
                    index,
                    added[index],
                    f"{added[index]}=v1",
                    latencies=latencies,
                )
            new = [{(names.groups[i], names.label, added[i], f"{added[i]}=v1")} for i in (0, 1)]
            expected = [
                seeded.entries(0, "v2"),
                seeded.entries(1, "v2"),
                seeded.entries(0, "v2") | new[0],
                seeded.entries(1, "v2") | new[1],
            ]
            for received, wanted in zip(got, expected, strict=True):
                await wait_for(received, wanted, deadline=self.watch_deadline, what=received.name)
            await self.settle()
            tg.cancel_scope.cancel()
        for sub in subs:
            sub.close()
        for received, wanted in zip(got, expected, strict=True):
            ours = received.keyed(names.prefix)
            assert set(ours) == wanted, f"{received.name} received other items"
            assert len(ours) == len(wanted), f"{received.name} received a change twice"
            assert received.error is None, received.error
        self.check_versions(got[2].items)
        latencies.measure(*got)
        latencies.report()

    async def test_deletes_notify_as_empty_content(
        self,
        config_store: ConfigStore,
        config_updater: ConfigUpdater,
        config_hub: ConfigWatchers,
        seeded: Seeded,
    ) -> None:
        names = seeded.names
        latencies = Latencies("deletes")
        async with background() as tg:
            subs = [
                await self.subscribe(config_hub, config_store, names, 0, seeded.keys[0]),
                await self.subscribe(config_hub, config_store, names, 1, seeded.keys[1]),
                await self.subscribe(config_hub, config_store, names, 1),
            ]
            got = [start_draining(tg, s, f"subscriber {n + 1}") for n, s in enumerate(subs)]
            for key in seeded.keys[1]:
                await self.remove(config_updater, names, 1, key, latencies=latencies)
            deleted = {(names.groups[1], names.label, k, "") for k in seeded.keys[1]}
            for received in got[1:]:
                await wait_for(received, deleted, deadline=self.watch_deadline, what=received.name)
            await self.settle()
            tg.cancel_scope.cancel()
        for sub in subs:
            sub.close()
        assert got[0].items == [], "group-1 subscriber got group-2 deletes"
        for received in got[1:]:
            assert set(received.keyed(names.prefix)) == deleted
            assert len(received.keyed(names.prefix)) == len(deleted)
            assert all(i.deleted for i in received.items if i.key.startswith(names.prefix))
        latencies.measure(*got)
        latencies.report()

    async def test_unsubscribe_stops_delivery(
        self,
        config_store: ConfigStore,
        config_updater: ConfigUpdater,
        config_hub: ConfigWatchers,
        seeded: Seeded,
    ) -> None:
        names = seeded.names
        async with background() as tg:
            subs = [
                await self.subscribe(config_hub, config_store, names, 0, seeded.keys[0]),
                await self.subscribe(config_hub, config_store, names, 1, seeded.keys[1]),
                await self.subscribe(config_hub, config_store, names, 0),
            ]
            got = [start_draining(tg, s, f"subscriber {n + 1}") for n, s in enumerate(subs)]
            # Witnesses that stay subscribed: when they have a change, the others would too.
            witnesses = [
                start_draining(
                    tg, await self.subscribe(config_hub, config_store, names, i), f"witness {i}"
                )
                for i in (0, 1)
            ]
            assert config_hub.unsubscribe("no-such-subscription") is False
            for number, (sub, received) in enumerate(zip(subs, got, strict=True)):
                assert config_hub.unsubscribe(sub.id) is True
                with anyio.fail_after(self.watch_deadline):
                    await received.done.wait()
                index = 0 if sub.scope.group == names.groups[0] else 1
                key = seeded.keys[index][number]
                content = f"{key}=after-unsubscribe"
                await self.write(config_updater, names, index, key, content)
                entry = {(names.groups[index], names.label, key, content)}
                await wait_for(
                    witnesses[index], entry, deadline=self.watch_deadline, what="witness"
                )
                await self.settle()
                assert not received.has(entry), f"{received.name} received after unsubscribe"
                assert received.error is None, received.error
            tg.cancel_scope.cancel()

    async def test_initial_values_come_first(
        self,
        config_store: ConfigStore,
        config_updater: ConfigUpdater,
        config_hub: ConfigWatchers,
        seeded: Seeded,
    ) -> None:
        names = seeded.names
        async with background() as tg:
            sub = await self.subscribe(
                config_hub, config_store, names, 0, seeded.keys[0], initial=True
            )
            received = start_draining(tg, sub, "subscriber")
            await wait_for(
                received, seeded.entries(0), deadline=self.watch_deadline, what="initial values"
            )
            key = seeded.keys[0][0]
            await self.write(config_updater, names, 0, key, f"{key}=v2")
            change = {(names.groups[0], names.label, key, f"{key}=v2")}
            await wait_for(received, change, deadline=self.watch_deadline, what="the change")
            tg.cancel_scope.cancel()
        sub.close()
        ours = received.keyed(names.prefix)
        assert set(ours[:KEYS_PER_GROUP]) == seeded.entries(0)  # one batch, first
        assert ours[KEYS_PER_GROUP:] == sorted(change)

    async def test_subscriber_sees_writes_through_the_store(
        self, config_store: ConfigStore, config_hub: ConfigWatchers, config_names: ConfigNames
    ) -> None:
        self.skip_unless_writable()
        key = config_names.key("via-store")
        group, label = config_names.groups[0], config_names.label
        config_names.written.add((group, label, key))
        async with background() as tg:
            sub = await self.subscribe(config_hub, config_store, config_names, 0, [key])
            received = start_draining(tg, sub, "subscriber")
            await config_store.set(config_names.app_id, [ConfigItem(key, "s1", group, label)], {})
            await wait_for(
                received,
                {(group, label, key, "s1")},
                deadline=self.watch_deadline,
                what="a set through the store",
            )
            await config_store.delete(self.query(config_names, 0, [key]))
            await wait_for(
                received,
                {(group, label, key, "")},
                deadline=self.watch_deadline,
                what="a delete through the store",
            )
            tg.cancel_scope.cancel()
        sub.close()


__all__ = ["ConfigStoreConformance", "ConfigUpdater"]
