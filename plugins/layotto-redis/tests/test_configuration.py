"""configuration.redis against a private redis-server: Dapr's layout both ways, group/label/tags
mapping, keyspace-notification setup, and the watch (events, batches, deletes, outages)."""

from __future__ import annotations

import asyncio
import json
import statistics
import time
from collections.abc import AsyncIterator

import pytest
from layotto.plugin import (
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    ConfigItem,
    ConfigQuery,
    InvalidArgument,
)
from layotto_redis import RedisConfigMetadata, RedisConfigStore
from layotto_redis.configuration import TAGS_KEY, KeyLayout, split_value
from layotto_redis_test_support import ComponentFactory, RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]

APP = "app"


def q(*keys: str, group: str = "default", label: str = "default") -> ConfigQuery:
    return ConfigQuery(APP, group, label, keys)


def item(key: str, content: str, group: str = "default", label: str = "default", **tags: str):
    return ConfigItem(key, content, group, label, tags=tags)


async def raw(store: RedisConfigStore, key: str) -> bytes | None:
    value: bytes | None = await store.client.get(key)
    return value


class Watch:
    """A running `watch`, read with deadlines; items are collected per (group, label, key)."""

    def __init__(self, iterator: AsyncIterator[list[ConfigItem]]) -> None:
        self.iterator = iterator

    async def next(self, within: float = 3.0) -> list[ConfigItem]:
        async with asyncio.timeout(within):
            return await anext(self.iterator)

    async def until(self, prefix: str, count: int, within: float = 3.0) -> list[ConfigItem]:
        """The next `count` items whose key starts with `prefix` (other keys are skipped)."""
        got: list[ConfigItem] = []
        deadline = time.monotonic() + within
        while len(got) < count:
            batch = await self.next(max(deadline - time.monotonic(), 0.01))
            got += [i for i in batch if i.key.startswith(prefix)]
        return got

    async def quiet(self, prefix: str, seconds: float = 0.3) -> None:
        """Nothing about `prefix` arrives within `seconds`."""
        deadline = time.monotonic() + seconds
        while (left := deadline - time.monotonic()) > 0:
            try:
                batch = await self.next(left)
            except TimeoutError:
                return
            assert not [i for i in batch if i.key.startswith(prefix)], batch

    async def close(self) -> None:
        await self.iterator.aclose()  # type: ignore[attr-defined]


@pytest.fixture
async def watch(config: RedisConfigStore) -> AsyncIterator[Watch]:
    w = Watch(config.watch(APP))
    assert await w.next() == []  # established
    yield w
    await w.close()


# -- mapping -------------------------------------------------------------------------------


def test_key_layout() -> None:
    layout = KeyLayout("default", "default")
    assert layout.stored("default", "default", "k") == "k"
    assert layout.stored("g", "default", "k") == "g||default||k"
    assert layout.stored("default", "l", "a|b") == "default||l||a|b"
    assert layout.parse("k") == ("default", "default", "k")
    assert layout.parse("g||l||k") == ("g", "l", "k")
    assert layout.parse("g||l|||k") == ("g", "l", "|k")
    # Not items: state keys (<prefix>||<key>), lock/sequencer keys, the tags hash, defaults
    # spelled out, keys with `||`.
    for other in ("app||k", "lock|||app||res", "sequencer|||k", TAGS_KEY, "default||default||k"):
        assert layout.parse(other) is None, other
    assert layout.parse("g||l||a||b") is None
    assert layout.pattern("default", "default") == "*"
    assert layout.pattern("g*", "l") == "g\\*||l||*"
    with pytest.raises(InvalidArgument, match="must not contain"):
        layout.stored("default", "default", "a||b")
    with pytest.raises(InvalidArgument, match="group"):
        layout.stored("a|b", "default", "k")
    with pytest.raises(InvalidArgument, match="must not be empty"):
        layout.stored("default", "default", "")


def test_split_value() -> None:
    assert split_value(b"v||3") == ("v", "3")
    assert split_value(b"plain") == ("plain", "")
    assert split_value(b"a||b||2") == ("a||b", "2")
    assert split_value(b"||1") == ("", "1")


# -- layout --------------------------------------------------------------------------------


async def test_round_trip_and_dapr_layout(config: RedisConfigStore, prefix: str) -> None:
    key = prefix + "k"
    await config.set(APP, [item(key, "v1")], {})
    assert await raw(config, key) == b"v1||1"  # Dapr's value||version, the key unprefixed
    await config.set(APP, [item(key, "v2")], {})
    assert await raw(config, key) == b"v2||2"
    [got] = await config.get(q(key))
    assert (got.key, got.content, got.group, got.label) == (key, "v2", "default", "default")
    assert got.metadata == {"version": "2"}
    assert got.tags == {}


async def test_reads_and_extends_what_dapr_wrote(config: RedisConfigStore, prefix: str) -> None:
    # What a Dapr user writes for configuration.redis: SET key "value||version".
    await config.client.set(prefix + "a", "hello||7")
    await config.client.set(prefix + "b", "no-version")
    await config.client.set(prefix + "c", "x||not-a-number")
    got = {i.key: i for i in await config.get(q(prefix + "a", prefix + "b", prefix + "c"))}
    assert (got[prefix + "a"].content, got[prefix + "a"].metadata) == ("hello", {"version": "7"})
    assert (got[prefix + "b"].content, got[prefix + "b"].metadata) == ("no-version", {})
    assert got[prefix + "c"].metadata == {"version": "not-a-number"}
    await config.set(APP, [item(prefix + "a", "bye"), item(prefix + "c", "y")], {})
    assert await raw(config, prefix + "a") == b"bye||8"  # the version Dapr knows, plus one
    assert await raw(config, prefix + "c") == b"y||1"


async def test_content_with_separator_round_trips(config: RedisConfigStore, prefix: str) -> None:
    await config.set(APP, [item(prefix + "k", "a||b")], {})
    [got] = await config.get(q(prefix + "k"))
    assert got.content == "a||b"
    assert got.metadata == {"version": "1"}


async def test_groups_labels_and_tags(config: RedisConfigStore, prefix: str) -> None:
    key = prefix + "k"
    await config.set(
        APP,
        [
            item(key, "plain"),
            item(key, "blue", group="g", label="blue", env="prod", team="x"),
            item(key, "green", group="g", label="green"),
        ],
        {},
    )
    assert await raw(config, key) == b"plain||1"
    assert await raw(config, f"g||blue||{key}") == b"blue||1"
    assert await raw(config, f"g||green||{key}") == b"green||1"
    tags = await config.client.hget(TAGS_KEY, f"g||blue||{key}")
    assert json.loads(tags) == {"env": "prod", "team": "x"}

    [blue] = await config.get(q(key, group="g", label="blue"))
    assert (blue.content, blue.group, blue.label) == ("blue", "g", "blue")
    assert blue.tags == {"env": "prod", "team": "x"}
    [green] = await config.get(q(key, group="g", label="green"))
    assert (green.content, green.tags) == ("green", {})
    # Rewriting without tags drops them.
    await config.set(APP, [item(key, "blue2", group="g", label="blue")], {})
    [blue] = await config.get(q(key, group="g", label="blue"))
    assert (blue.content, blue.tags, blue.metadata) == ("blue2", {}, {"version": "2"})
    assert await config.client.hget(TAGS_KEY, f"g||blue||{key}") is None


async def test_app_id_does_not_scope_keys(config: RedisConfigStore, prefix: str) -> None:
    await config.set("one", [item(prefix + "k", "v")], {})
    [got] = await config.get(ConfigQuery("two", "default", "default", (prefix + "k",)))
    assert got.content == "v"


async def test_get_every_key(config: RedisConfigStore, prefix: str) -> None:
    group = prefix.rstrip("-")
    await config.set(APP, [item(f"k{i}", str(i), group=group, label="l") for i in range(7)], {})
    await config.set(APP, [item("other", "x", group=group, label="m")], {})
    got = await config.get(q(group=group, label="l"))
    assert [(i.key, i.content) for i in got] == [(f"k{i}", str(i)) for i in range(7)]
    # The default group and label: every plain string key (minus non-items) of the database.
    await config.set(APP, [item(prefix + "d1", "1"), item(prefix + "d2", "2")], {})
    await config.client.hset(prefix + "hash", "data", "x")  # a state.redis key: not an item
    await config.client.set(f"{prefix}state||k", "x||1")  # a prefixed state-like key
    everything = await config.get(q())
    mine = [(i.key, i.content) for i in everything if i.key.startswith(prefix)]
    assert mine == [(prefix + "d1", "1"), (prefix + "d2", "2")]


async def test_missing_keys_and_other_types(config: RedisConfigStore, prefix: str) -> None:
    assert await config.get(q(prefix + "nothing")) == []
    await config.client.hset(prefix + "hash", "data", "x")
    assert await config.get(q(prefix + "hash")) == []  # not a configuration item (as Dapr)
    # A write never replaces another type, and a failed write writes nothing.
    with pytest.raises(ComponentError, match="holds a hash"):
        await config.set(APP, [item(prefix + "new", "v"), item(prefix + "hash", "v")], {})
    assert await raw(config, prefix + "new") is None
    await config.delete(q(prefix + "hash"))
    assert await config.client.type(prefix + "hash") == b"hash"


async def test_delete(config: RedisConfigStore, prefix: str) -> None:
    await config.set(APP, [item(prefix + "a", "1", t="x"), item(prefix + "b", "2")], {})
    await config.delete(q(prefix + "a", prefix + "missing"))
    assert [i.key for i in await config.get(q(prefix + "a", prefix + "b"))] == [prefix + "b"]
    assert await config.client.hget(TAGS_KEY, prefix + "a") is None


async def test_validation(config: RedisConfigStore) -> None:
    with pytest.raises(InvalidArgument, match=r"items\[0\]\.key"):
        await config.set(APP, [item("a||b", "v")], {})
    with pytest.raises(InvalidArgument, match=r"keys\[1\]"):
        await config.get(q("ok", "a||b"))
    with pytest.raises(InvalidArgument, match="label"):
        await config.get(q("k", label="x|y"))


# -- keyspace notifications ----------------------------------------------------------------


async def test_init_enables_keyspace_events(
    make_component: ComponentFactory, own_redis_server: RedisServer
) -> None:
    own_redis_server.command("CONFIG", "SET", "notify-keyspace-events", "")
    store = await make_component("configuration", own_redis_server)
    flags = (await store.client.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    assert set("K$gxe") <= set(flags)
    # Already enough: left as it is.
    await store.client.config_set("notify-keyspace-events", "KEA")
    await make_component("configuration", own_redis_server)
    flags = (await store.client.config_get("notify-keyspace-events"))["notify-keyspace-events"]
    assert set(flags) == set("AKE")


async def test_config_not_permitted(own_redis_server: RedisServer) -> None:
    server = own_redis_server
    reply = server.command("ACL", "SETUSER", "limited", "on", ">pw", "~*", "+@all", "-config")
    assert reply.startswith(b"+OK"), reply
    server.command("CONFIG", "SET", "notify-keyspace-events", "")

    def store(**extra: str) -> RedisConfigStore:
        metadata = {"redisHost": server.address, "redisUsername": "limited"}
        metadata |= {"redisPassword": "pw", **extra}
        return RedisConfigStore(
            RedisConfigMetadata.model_validate(metadata), ComponentContext("c", APP)
        )

    failing = store()
    with pytest.raises(ComponentError) as info:
        await failing.init()
    message = info.value.message
    assert "CONFIG GET is not permitted" in message
    assert "notify-keyspace-events" in message
    assert "K$gxe" in message
    assert "pw" not in message.replace("permitted", "")
    assert failing._client is None  # nothing left open

    # Set on the server by its admin: with enableKeyspaceEvents=false the component trusts it.
    server.command("CONFIG", "SET", "notify-keyspace-events", "K$gxe")
    trusting = store(enableKeyspaceEvents="false")
    await trusting.init()
    await trusting.close()


async def test_events_off_and_not_to_be_changed(
    make_component: ComponentFactory, own_redis_server: RedisServer
) -> None:
    own_redis_server.command("CONFIG", "SET", "notify-keyspace-events", "")
    with pytest.raises(ComponentError, match="enableKeyspaceEvents is false"):
        await make_component("configuration", own_redis_server, enableKeyspaceEvents="false")


# -- watch ---------------------------------------------------------------------------------


async def test_watch_sees_direct_writes_and_deletes(
    config: RedisConfigStore, watch: Watch, prefix: str
) -> None:
    await config.client.set(prefix + "k", "v||5")  # straight to Redis, as Dapr users do
    [got] = await watch.until(prefix, 1)
    assert (got.key, got.content, got.metadata) == (prefix + "k", "v", {"version": "5"})
    await config.set(APP, [item(prefix + "k", "w", group="g", label="l", t="1")], {})
    [got] = await watch.until(prefix, 1)
    assert (got.content, got.group, got.label, got.tags) == ("w", "g", "l", {"t": "1"})
    await config.client.delete(prefix + "k")
    [gone] = await watch.until(prefix, 1)
    assert gone.deleted
    assert (gone.key, gone.content, gone.group) == (prefix + "k", "", "default")


async def test_watch_expiry_and_rename(config: RedisConfigStore, watch: Watch, prefix: str) -> None:
    await config.client.set(prefix + "ttl", "v||1", px=100)
    first = await watch.until(prefix, 1)
    assert first[0].content == "v"
    [expired] = await watch.until(prefix, 1, within=5)
    assert expired.deleted
    await config.client.set(prefix + "a", "x||1")
    await watch.until(prefix, 1)
    await config.client.rename(prefix + "a", prefix + "b")
    got = {i.key: i for i in await watch.until(prefix, 2)}
    assert got[prefix + "a"].deleted
    assert got[prefix + "b"].content == "x"


async def test_watch_ignores_what_is_not_an_item(
    config: RedisConfigStore, watch: Watch, prefix: str
) -> None:
    await config.client.hset(f"{prefix}state||k", mapping={"data": "x", "version": 1})
    await config.client.set(f"lock|||{prefix}||res", "owner", px=10_000)
    await config.client.incr(f"sequencer|||{prefix}")
    await watch.quiet(prefix)


async def test_watch_batches_a_burst(config: RedisConfigStore, watch: Watch, prefix: str) -> None:
    async with config.client.pipeline(transaction=False) as pipe:
        for i in range(50):
            pipe.set(f"{prefix}{i}", f"{i}||1")
        await pipe.execute()
    batches = 0
    seen: set[str] = set()
    while len(seen) < 50:
        batch = await watch.next()
        batches += 1
        seen |= {i.key for i in batch if i.key.startswith(prefix)}
    assert batches < 50  # read together, not one round trip per event


async def test_watch_latency(config: RedisConfigStore, watch: Watch, prefix: str) -> None:
    latencies = []
    for n in range(50):
        start = time.perf_counter()
        await config.client.set(prefix + "k", f"v{n}||{n}")
        [got] = await watch.until(prefix, 1)
        latencies.append(time.perf_counter() - start)
        assert got.content == f"v{n}"
    p50 = statistics.median(latencies) * 1000
    p99 = sorted(latencies)[int(len(latencies) * 0.99) - 1] * 1000
    print(f"\nconfiguration.redis watch (component): p50 {p50:.2f} ms, p99 {p99:.2f} ms")
    assert p99 < 100


async def test_watch_ends_when_redis_goes_away(
    make_component: ComponentFactory, own_redis_server: RedisServer, prefix: str
) -> None:
    store: RedisConfigStore = await make_component("configuration", own_redis_server)
    w = Watch(store.watch(APP))
    assert await w.next() == []
    own_redis_server.stop()
    start = time.monotonic()
    with pytest.raises(BackendUnavailable) as info:
        await w.next()
    assert time.monotonic() - start < 2
    assert "127.0.0.1" not in info.value.message
    with pytest.raises(BackendUnavailable):
        await anext(store.watch(APP))  # cannot start either
    # A restarted server has lost notify-keyspace-events: the next watch sets it again.
    own_redis_server.start()
    w = Watch(store.watch(APP))
    assert await w.next() == []
    await store.client.set(prefix + "k", "back||1")
    [got] = await w.until(prefix, 1)
    assert got.content == "back"
    await w.close()


async def test_watch_ends_on_close(
    make_component: ComponentFactory, redis_server: RedisServer
) -> None:
    store: RedisConfigStore = await make_component("configuration", redis_server)
    w = Watch(store.watch(APP))
    assert await w.next() == []
    pending = asyncio.ensure_future(w.next(within=5))
    await asyncio.sleep(0.05)
    await store.close()
    with pytest.raises(BackendUnavailable):
        await pending
    with pytest.raises(BackendUnavailable, match="not started"):
        await anext(store.watch(APP))
