"""`configuration.etcd` against the private etcd: layout, get/set/delete, tags, watch.

A second client (aetcd's own `Client`, not the component) reads and writes etcd directly, so
the layout is checked from the outside, as an operator with etcdctl would see it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import aetcd  # type: ignore[import-untyped]
import pytest
from layotto.plugin import (
    DELETED_METADATA,
    VERSION_METADATA,
    BackendUnavailable,
    ConfigItem,
    ConfigQuery,
    HealthStatus,
    InvalidArgument,
)
from layotto_etcd import EtcdConfigStore
from layotto_etcd_test_support import ComponentFactory, EtcdServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


@pytest.fixture
async def direct(etcd_server: EtcdServer) -> AsyncIterator[aetcd.Client]:
    client = aetcd.Client(host="127.0.0.1", port=etcd_server.client_port, timeout=5)
    await client.connect()
    yield client
    await client.close()


def item(key: str, content: str, group: str = "g", label: str = "l", **tags: str) -> ConfigItem:
    return ConfigItem(key=key, content=content, group=group, label=label, tags=tags)


def plain(items: list[ConfigItem]) -> list[tuple[str, str, str, str, dict[str, str]]]:
    return [(i.group, i.label, i.key, i.content, dict(i.tags)) for i in items]


async def test_health_and_defaults(config: EtcdConfigStore) -> None:
    assert (await config.check_health()).status is HealthStatus.UP
    assert (config.default_group, config.default_label) == ("default", "default")


async def test_layout_seen_from_etcd(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    app = f"{prefix}app"
    await config.set(app, [item("k", "v1", release="1.0", feature="x")], {})
    got = await direct.get(f"/{app}/g/l/k".encode())
    assert got.value == b"v1"
    tags = await direct.get_prefix(f"/{app}/g/l/k/".encode())
    assert {kv.key.decode(): kv.value.decode() for kv in tags} == {
        f"/{app}/g/l/k/feature": "x",
        f"/{app}/g/l/k/release": "1.0",
    }


async def test_get_reads_what_etcd_holds(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    app = f"{prefix}app"
    await direct.put(f"/{app}/default/default/a".encode(), b"A")
    await direct.put(f"/{app}/default/default/a/owner".encode(), b"team-1")
    await direct.put(f"/{app}/default/prod/a".encode(), b"A-prod")
    await direct.put(f"/{app}/other/default/b".encode(), b"B")
    await direct.put(f"/{app}/default/default/orphan/tag".encode(), b"no item")  # ignored
    await direct.put(f"/{app}/too/short".encode(), b"ignored")
    await direct.put(f"/{app}/a/b/c/d/e".encode(), b"ignored")

    everything = await config.get(ConfigQuery(app, "default", "default"))
    assert plain(everything) == [("default", "default", "a", "A", {"owner": "team-1"})]
    version = everything[0].metadata[VERSION_METADATA]
    tag_kv = await direct.get(f"/{app}/default/default/a/owner".encode())
    assert version == str(tag_kv.mod_revision)  # the newest of the item and its tags

    assert plain(await config.get(ConfigQuery(app, "default", "*", ["a"]))) == [
        ("default", "default", "a", "A", {"owner": "team-1"}),
        ("default", "prod", "a", "A-prod", {}),
    ]
    assert [i.key for i in await config.get(ConfigQuery(app, "*", "*"))] == ["a", "a", "b"]
    assert await config.get(ConfigQuery(app, "default", "default", ["missing"])) == []
    assert await config.get(ConfigQuery(f"{prefix}nobody", "default", "default")) == []


async def test_get_with_keys_keeps_the_requested_order(
    config: EtcdConfigStore, prefix: str
) -> None:
    app = f"{prefix}app"
    await config.set(app, [item(k, k.upper()) for k in ("a", "b", "c")], {})
    got = await config.get(ConfigQuery(app, "g", "l", ["c", "a", "zz", "c"]))
    assert [(i.key, i.content) for i in got] == [("c", "C"), ("a", "A")]


async def test_set_replaces_content_and_tags(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    app = f"{prefix}app"
    await config.set(app, [item("k", "v1", a="1", b="2")], {})
    await config.set(app, [item("k", "v2", b="3", c="4")], {})
    assert plain(await config.get(ConfigQuery(app, "g", "l", ["k"]))) == [
        ("g", "l", "k", "v2", {"b": "3", "c": "4"})
    ]
    await config.set(app, [item("k", "v3")], {})
    got = await config.get(ConfigQuery(app, "g", "l", ["k"]))
    assert plain(got) == [("g", "l", "k", "v3", {})]
    assert not await direct.get_prefix(f"/{app}/g/l/k/".encode())


async def test_labels_are_independent(config: EtcdConfigStore, prefix: str) -> None:
    app = f"{prefix}app"
    await config.set(app, [item("k", "blue", label="blue"), item("k", "green", label="green")], {})
    blue = await config.get(ConfigQuery(app, "g", "blue", ["k"]))
    green = await config.get(ConfigQuery(app, "g", "green", ["k"]))
    assert [i.content for i in blue] == ["blue"]
    assert [i.content for i in green] == ["green"]


async def test_many_items_and_tags_span_transactions(config: EtcdConfigStore, prefix: str) -> None:
    app = f"{prefix}app"
    items = [item(f"k{n:03}", f"v{n}", t1="x", t2="y", t3="z") for n in range(100)]
    await config.set(app, items, {})  # 800 operations: several transactions
    got = await config.get(ConfigQuery(app, "g", "l"))
    assert len(got) == 100
    assert all(dict(i.tags) == {"t1": "x", "t2": "y", "t3": "z"} for i in got)
    await config.delete(ConfigQuery(app, "g", "l", [f"k{n:03}" for n in range(100)]))
    assert await config.get(ConfigQuery(app, "g", "l")) == []


async def test_delete_removes_the_item_and_its_tags_only(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    app = f"{prefix}app"
    await config.set(app, [item("k", "v", t="1"), item("kk", "neighbour", t="2")], {})
    await config.delete(ConfigQuery(app, "g", "l", ["k", "never-there"]))
    assert not await direct.get_prefix(f"/{app}/g/l/k/".encode())
    assert await direct.get(f"/{app}/g/l/k".encode()) is None
    # Upstream deleted by prefix, so deleting `k` also removed `kk`; not here.
    assert plain(await config.get(ConfigQuery(app, "g", "l"))) == [
        ("g", "l", "kk", "neighbour", {"t": "2"})
    ]


@pytest.mark.parametrize(
    ("query", "field"),
    [
        (ConfigQuery("", "g", "l"), "app_id"),
        (ConfigQuery("a/b", "g", "l"), "app_id"),
        (ConfigQuery("a", "g/h", "l"), "group"),
        (ConfigQuery("a", "g", ""), "label"),
        (ConfigQuery("a", "g", "l", ["x/y"]), "keys"),
        (ConfigQuery("a", "g", "l", [""]), "keys"),
    ],
)
async def test_bad_names_are_invalid_arguments(
    config: EtcdConfigStore, query: ConfigQuery, field: str
) -> None:
    with pytest.raises(InvalidArgument, match=field):
        await config.get(query)
    with pytest.raises(InvalidArgument, match=field):
        await config.delete(query)


async def test_bad_items_are_invalid_arguments(config: EtcdConfigStore) -> None:
    with pytest.raises(InvalidArgument, match="key"):
        await config.set("app", [item("a/b", "v")], {})
    with pytest.raises(InvalidArgument, match="tags"):
        await config.set("app", [ConfigItem("k", "v", "g", "l", tags={"x/y": "1"})], {})
    with pytest.raises(InvalidArgument, match="group"):
        await config.set("app", [item("k", "v", group="*")], {})
    many = {f"t{n}": "v" for n in range(80)}
    with pytest.raises(InvalidArgument, match="tags"):
        await config.set("app", [ConfigItem("k", "v", "g", "l", tags=many)], {})


# -- watch ---------------------------------------------------------------------------------


async def next_batch(watch: AsyncIterator[list[ConfigItem]], within: float = 5) -> list[ConfigItem]:
    async with asyncio.timeout(within):
        return await anext(watch)


async def test_watch_reports_changes_with_tags_and_deletes(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    app = f"{prefix}app"
    watch = config.watch(app)
    try:
        assert await next_batch(watch) == []  # established
        await config.set(app, [item("k", "v1", t="1")], {})
        batch = await next_batch(watch)
        assert plain(batch) == [("g", "l", "k", "v1", {"t": "1"})]
        put = await direct.get(f"/{app}/g/l/k".encode())
        assert batch[0].metadata[VERSION_METADATA] == str(put.mod_revision)

        # A write straight to etcd (no tags written): the item keeps its tags.
        await direct.put(f"/{app}/g/l/k".encode(), b"v2")
        assert plain(await next_batch(watch)) == [("g", "l", "k", "v2", {"t": "1"})]

        # A tag-only change is a change of the item.
        await direct.put(f"/{app}/g/l/k/t".encode(), b"2")
        assert plain(await next_batch(watch)) == [("g", "l", "k", "v2", {"t": "2"})]

        # Several keys in one request: one batch.
        await config.set(app, [item("a", "A"), item("b", "B", label="other")], {})
        assert plain(await next_batch(watch)) == [
            ("g", "l", "a", "A", {}),
            ("g", "other", "b", "B", {}),
        ]

        await config.delete(ConfigQuery(app, "g", "l", ["k", "a"]))
        deleted = await next_batch(watch)
        assert sorted((i.key, i.content) for i in deleted) == [("a", ""), ("k", "")]
        assert all(i.deleted and i.metadata[DELETED_METADATA] == "true" for i in deleted)

        # Other apps and keys outside the layout are not reported.
        await direct.put(f"/{prefix}other-app/g/l/k".encode(), b"x")
        await direct.put(f"/{app}/not-an-item".encode(), b"x")
        await direct.put(f"/{app}/g/l/last".encode(), b"L")
        assert plain(await next_batch(watch)) == [("g", "l", "last", "L", {})]
    finally:
        await watch.aclose()


async def test_two_watches_of_one_app_are_independent(config: EtcdConfigStore, prefix: str) -> None:
    app = f"{prefix}app"
    first, second = config.watch(app), config.watch(app)
    try:
        assert await next_batch(first) == []
        assert await next_batch(second) == []
        await config.set(app, [item("k", "1")], {})
        assert [i.content for i in await next_batch(first)] == ["1"]
        assert [i.content for i in await next_batch(second)] == ["1"]
        await first.aclose()  # closing one leaves the other alone
        await config.set(app, [item("k", "2")], {})
        assert [i.content for i in await next_batch(second)] == ["2"]
    finally:
        await first.aclose()
        await second.aclose()


async def test_live_changes_are_reported_one_by_one(config: EtcdConfigStore, prefix: str) -> None:
    """Once a watch runs, each change is read as of its own revision, even when the consumer
    is slow: three writes, three batches, in order."""
    app = f"{prefix}app"
    watch = config.watch(app)
    try:
        assert await next_batch(watch) == []
        await config.set(app, [item("k", "0")], {})
        assert [i.content for i in await next_batch(watch)] == ["0"]
        for content in ("1", "2", "3"):
            await config.set(app, [item("k", content)], {})
        await config.delete(ConfigQuery(app, "g", "l", ["k"]))
        got = [(i.content, i.deleted) for _ in range(4) for i in await next_batch(watch)]
        assert got == [("1", False), ("2", False), ("3", False), ("", True)]
    finally:
        await watch.aclose()


async def test_first_batch_is_reported_as_of_now(
    config: EtcdConfigStore, direct: aetcd.Client, prefix: str
) -> None:
    """Changes made between establishing the watch and the consumer's first read come as the
    current state (what the sidecar's resync read saw), never as an older value."""
    app = f"{prefix}app"
    watch = config.watch(app)
    try:
        assert await next_batch(watch) == []
        await direct.put(f"/{app}/g/l/k".encode(), b"old")
        await direct.put(f"/{app}/g/l/k".encode(), b"new")
        await direct.put(f"/{app}/g/l/gone".encode(), b"x")
        await direct.delete(f"/{app}/g/l/gone".encode())
        seen: dict[str, list[tuple[str, bool]]] = {}
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and len(seen.get("gone", [])) < 1:
            for i in await next_batch(watch):
                seen.setdefault(i.key, []).append((i.content, i.deleted))
        assert set(seen["k"]) == {("new", False)}
        assert set(seen["gone"]) == {("", True)}
    finally:
        await watch.aclose()


async def test_watch_resumes_after_a_broken_stream(
    make_component: ComponentFactory, own_etcd_server: EtcdServer, prefix: str
) -> None:
    """The stream breaks (etcd killed); changes made on etcd before the next watch is created
    are delivered by it, because it resumes from the last delivered revision."""
    server = own_etcd_server
    store: EtcdConfigStore = await make_component("configuration", server)
    app = f"{prefix}app"
    watch = store.watch(app)
    assert await next_batch(watch) == []
    await store.set(app, [item("k", "before")], {})
    assert [i.content for i in await next_batch(watch)] == ["before"]

    server.stop()
    with pytest.raises(BackendUnavailable, match="unavailable"):
        await next_batch(watch)
    server.start()
    # Written after the restart but before anyone watches again.
    writer = aetcd.Client(host="127.0.0.1", port=server.client_port, timeout=5)
    async with writer:
        await writer.put(f"/{app}/g/l/k".encode(), b"missed?")
        await writer.put(f"/{app}/g/l/k2".encode(), b"also")
    resumed = store.watch(app)
    try:
        assert await next_batch(resumed) == []
        seen: list[str] = []
        deadline = time.monotonic() + 5
        while len(seen) < 2 and time.monotonic() < deadline:
            seen += [i.content for i in await next_batch(resumed)]
        assert seen == ["missed?", "also"]
    finally:
        await resumed.aclose()


async def test_closing_the_store_ends_a_running_watch_with_an_error(
    make_component: ComponentFactory, etcd_server: EtcdServer, prefix: str
) -> None:
    """grpc.aio cancels the calls of a closed channel; a watch must not pass that on as a
    cancellation of its consumer's task."""
    store: EtcdConfigStore = await make_component("configuration", etcd_server)
    watch = store.watch(f"{prefix}app")
    assert await next_batch(watch) == []
    waiting = asyncio.ensure_future(next_batch(watch))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        await waiting
    with pytest.raises(BackendUnavailable, match="not started"):
        await store.get(ConfigQuery(f"{prefix}app", "g", "l"))
