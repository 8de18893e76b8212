"""ConfigurationService: store lookup, blank group/label defaulting, pass-through of app id and
metadata, validation, error translation, and subscriptions with Dapr's unsubscribe-by-id
(layotto-semantics.md §3.1, §3.2; dapr-compat.md §2.6, §3.4). On asyncio and trio."""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from layotto.actors.config_watcher import WatchSettings
from layotto.actors.config_watchers import ConfigWatchers
from layotto.builtin.memory_config import InMemoryConfigMetadata, InMemoryConfigStore
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import (
    BackendTimeout,
    ComponentError,
    ErrorCategory,
    InvalidArgument,
    NotConfigured,
    Unsupported,
)
from layotto.health import HealthRegistry
from layotto.plugin import ComponentSpec, ConfigItem, ConfigQuery, ConfigStore, Kind
from layotto.services.configuration import ConfigurationService

pytestmark = pytest.mark.anyio

STORE = "configstore"
SECRET = "etcd://root:hunter2@10.0.0.7:2379"


class RecordingStore(InMemoryConfigStore):
    """The in-memory store with its own defaults, recording what reaches it."""

    default_group = "g0"
    default_label = "l0"

    def __init__(self) -> None:
        super().__init__()
        self.queries: list[ConfigQuery] = []
        self.saved: list[tuple[str, list[ConfigItem], dict[str, str]]] = []

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        self.queries.append(query)
        return await super().get(query)

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        self.saved.append((app_id, list(items), dict(metadata)))
        await super().set(app_id, items, metadata)

    async def delete(self, query: ConfigQuery) -> None:
        self.queries.append(query)
        await super().delete(query)


class ReadOnlyStore(ConfigStore):
    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        return []

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        yield []
        await anyio.sleep_forever()


class BrokenStore(ReadOnlyStore):
    def __init__(self, failure: BaseException | None = None, delay: float = 0.0) -> None:
        self.failure = failure
        self.delay = delay

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        await anyio.sleep(self.delay)
        if self.failure is not None:
            raise self.failure
        return []


def built(name: str, store: ConfigStore) -> BuiltComponent:
    config = ComponentConfig(name=name, kind=Kind.CONFIGURATION, type="fake")
    spec = ComponentSpec(Kind.CONFIGURATION, "fake", InMemoryConfigMetadata, lambda m, c: store)
    return BuiltComponent(config, spec, store)


@pytest.fixture
async def hub() -> AsyncIterator[ConfigWatchers]:
    async with ConfigWatchers(HealthRegistry(), WatchSettings(backoff_cap=0.2)).running() as h:
        yield h


def service(
    hub: ConfigWatchers, *stores: tuple[str, ConfigStore], call_timeout: float = 10.0
) -> ConfigurationService:
    registry = ComponentRegistry()
    for name, store in stores:
        registry.add(built(name, store))
    return ConfigurationService(registry, hub, call_timeout=call_timeout)


# -- store lookup ----------------------------------------------------------------------------


async def test_no_store_is_not_configured(hub: ConfigWatchers) -> None:
    svc = service(hub)
    calls: list[Any] = [
        svc.get(STORE, "app", "", "", ["k"]),
        svc.save(STORE, "app", [ConfigItem("k", "v", "", "")]),
        svc.delete(STORE, "app", "", "", ["k"]),
        svc.subscribe(STORE, "app", "", "", ["k"]),
    ]
    for call in calls:
        with pytest.raises(NotConfigured) as info:
            await call
        assert info.value.category is ErrorCategory.FAILED_PRECONDITION
        assert info.value.reason == "ERR_CONFIGURATION_STORE_NOT_CONFIGURED"


async def test_empty_store_name_is_invalid(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    with pytest.raises(InvalidArgument, match="store_name"):
        await svc.get("", "app", "", "", [])


@pytest.mark.parametrize("operation", ["get", "save", "delete", "subscribe"])
async def test_unknown_store_is_invalid_and_named(hub: ConfigWatchers, operation: str) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    calls = {
        "get": lambda: svc.get("nope", "app", "", "", ["k"]),
        "save": lambda: svc.save("nope", "app", [ConfigItem("k", "v", "", "")]),
        "delete": lambda: svc.delete("nope", "app", "", "", ["k"]),
        "subscribe": lambda: svc.subscribe("nope", "app", "", "", ["k"]),
    }
    with pytest.raises(InvalidArgument) as info:
        await calls[operation]()
    assert "'nope'" in info.value.message
    assert info.value.reason == "ERR_CONFIGURATION_STORE_NOT_FOUND"


# -- defaults and pass-through ---------------------------------------------------------------


@pytest.mark.parametrize(("group", "label"), [("", ""), ("  ", "\t"), (" \n", "")])
async def test_blank_group_and_label_become_the_store_defaults(
    hub: ConfigWatchers, group: str, label: str
) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    await svc.save(STORE, "app", [ConfigItem("k", "v", group, label)])
    assert [(i.group, i.label) for i in store.saved[0][1]] == [("g0", "l0")]
    items = await svc.get(STORE, "app", group, label, ["k"])
    assert [(i.key, i.content, i.group, i.label) for i in items] == [("k", "v", "g0", "l0")]
    assert (store.queries[-1].group, store.queries[-1].label) == ("g0", "l0")
    async with await svc.subscribe(STORE, "app", group, label, ["k"]) as sub:
        assert (sub.scope.group, sub.scope.label) == ("g0", "l0")
        await svc.save(STORE, "app", [ConfigItem("k", "v2", group, label)])
        with anyio.fail_after(5):
            batch = await sub.__anext__()
        assert [(i.key, i.content, i.group, i.label) for i in batch] == [("k", "v2", "g0", "l0")]
    await svc.delete(STORE, "app", group, label, ["k"])
    assert (store.queries[-1].group, store.queries[-1].label) == ("g0", "l0")
    assert await svc.get(STORE, "app", "g0", "l0", ["k"]) == []


async def test_given_group_and_label_are_kept(hub: ConfigWatchers) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    await svc.save(STORE, "app", [ConfigItem("k", "v", "grp", "lbl")])
    assert await svc.get(STORE, "app", "", "", ["k"]) == []
    (item,) = await svc.get(STORE, "app", "grp", "lbl", ["k"])
    assert (item.group, item.label) == ("grp", "lbl")


@pytest.mark.parametrize("app_id", ["app", "", "other-app"])
async def test_app_id_reaches_the_store_unchanged(hub: ConfigWatchers, app_id: str) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    await svc.save(STORE, app_id, [ConfigItem("k", "v", "", "")])
    await svc.get(STORE, app_id, "", "", [])
    await svc.delete(STORE, app_id, "", "", ["k"])
    assert store.saved[0][0] == app_id
    assert [q.app_id for q in store.queries] == [app_id, app_id]


async def test_save_forwards_request_metadata_and_items_as_given(hub: ConfigWatchers) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    item = ConfigItem("k", "v", "g", "l", tags={"t": "1"}, metadata={"m": "2"})
    await svc.save(STORE, "app", [item], {"release": "yes"})
    assert store.saved == [("app", [item], {"release": "yes"})]
    (found,) = await svc.get(STORE, "app", "g", "l", ["k"], {"x": "y"})
    assert dict(found.tags) == {"t": "1"}
    assert store.queries[-1].metadata == {"x": "y"}


async def test_get_of_missing_keys_is_empty(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    assert await svc.get(STORE, "app", "", "", ["missing"]) == []


# -- validation ------------------------------------------------------------------------------


async def test_validation(hub: ConfigWatchers) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    with pytest.raises(InvalidArgument, match=r"items\[1\]\.key"):
        await svc.save(STORE, "app", [ConfigItem("k", "v", "", ""), ConfigItem("", "v", "", "")])
    with pytest.raises(InvalidArgument, match="'keys'"):
        await svc.delete(STORE, "app", "", "", [])
    with pytest.raises(InvalidArgument, match=r"keys\[0\]"):
        await svc.get(STORE, "app", "", "", [""])
    with pytest.raises(InvalidArgument, match=r"keys\[1\]"):
        await svc.subscribe(STORE, "app", "", "", ["a", ""])
    assert store.saved == []
    await svc.save(STORE, "app", [])  # nothing to save: the store is not called
    assert store.saved == []


# -- errors ----------------------------------------------------------------------------------


async def test_read_only_store_answers_unimplemented(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, ReadOnlyStore()))
    with pytest.raises(Unsupported) as info:
        await svc.save(STORE, "app", [ConfigItem("k", "v", "", "")])
    assert info.value.category is ErrorCategory.UNIMPLEMENTED
    with pytest.raises(Unsupported):
        await svc.delete(STORE, "app", "", "", ["k"])
    assert await svc.get(STORE, "app", "", "", ["k"]) == []


async def test_a_slow_store_times_out(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, BrokenStore(delay=5)), call_timeout=0.05)
    with anyio.fail_after(2), pytest.raises(BackendTimeout, match="did not answer in time"):
        await svc.get(STORE, "app", "", "", ["k"])


async def test_a_foreign_error_does_not_leak(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, BrokenStore(ConnectionError(f"cannot reach {SECRET}"))))
    with pytest.raises(ComponentError) as info:
        await svc.get(STORE, "app", "", "", ["k"])
    assert "hunter2" not in info.value.message
    assert "ConnectionError" in info.value.message


# -- subscriptions ---------------------------------------------------------------------------


async def next_batch(sub: Any, within: float = 5.0) -> list[ConfigItem]:
    with anyio.fail_after(within):
        batch: list[ConfigItem] = await sub.__anext__()
        return batch


async def test_subscribe_delivers_changes_only(hub: ConfigWatchers) -> None:
    store = RecordingStore()
    svc = service(hub, (STORE, store))
    await svc.save(STORE, "app", [ConfigItem("a", "1", "", ""), ConfigItem("b", "1", "", "")])
    async with await svc.subscribe(STORE, "app", "", "", ["a"]) as sub:
        assert sub.id
        await svc.save(STORE, "app", [ConfigItem("b", "2", "", ""), ConfigItem("a", "2", "", "")])
        batch = await next_batch(sub)
        assert [(i.key, i.content) for i in batch] == [("a", "2")]
        await svc.delete(STORE, "app", "", "", ["a", "b"])
        (deleted,) = await next_batch(sub)
        assert (deleted.key, deleted.content, deleted.deleted) == ("a", "", True)


async def test_subscribe_with_initial_values(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    await svc.save(STORE, "app", [ConfigItem("a", "1", "", ""), ConfigItem("b", "1", "", "")])
    async with await svc.subscribe(STORE, "app", "", "", [], initial=True) as sub:
        first = await next_batch(sub)
        assert sorted((i.key, i.content) for i in first) == [("a", "1"), ("b", "1")]
        await svc.save(STORE, "app", [ConfigItem("c", "1", "", "")])
        assert [(i.key, i.content) for i in await next_batch(sub)] == [("c", "1")]


async def test_initial_values_of_an_empty_scope_send_nothing(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    async with await svc.subscribe(STORE, "app", "", "", ["x"], initial=True) as sub:
        await svc.save(STORE, "app", [ConfigItem("x", "1", "", "")])
        assert [(i.key, i.content) for i in await next_batch(sub)] == [("x", "1")]


async def test_unsubscribe_by_id_ends_the_subscription(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, RecordingStore()))
    sub = await svc.subscribe(STORE, "app", "", "", ["a"])
    other = await svc.subscribe(STORE, "app", "", "", ["a"])
    assert sub.id != other.id
    ended = anyio.Event()
    received: list[list[ConfigItem]] = []

    async def read() -> None:
        async for batch in sub:
            received.append(batch)
        ended.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(read)
        await anyio.lowlevel.checkpoint()
        assert svc.unsubscribe(sub.id) is True
        with anyio.fail_after(5):
            await ended.wait()
    assert svc.unsubscribe(sub.id) is False  # gone
    assert svc.unsubscribe("no-such-id") is False
    await svc.save(STORE, "app", [ConfigItem("a", "1", "", "")])
    assert [(i.key, i.content) for i in await next_batch(other)] == [("a", "1")]
    assert received == []
    other.close()


async def test_subscription_to_a_failing_store_raises(hub: ConfigWatchers) -> None:
    svc = service(hub, (STORE, BrokenStore(ConnectionError(SECRET))))
    with pytest.raises(ComponentError) as info:
        await svc.subscribe(STORE, "app", "", "", ["k"])
    assert "hunter2" not in info.value.message
    assert hub.info() == []
