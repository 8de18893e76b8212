"""`configuration.apollo` on the Apollo test server: metadata, the Layotto mapping (groups,
labels, tags, `sidecar_config_tags`), read-only mode, write errors, the backup at startup, the
watch and health."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    ConfigItem,
    ConfigQuery,
    HealthStatus,
    InvalidArgument,
    Kind,
    Unsupported,
)
from layotto_apollo import TAGS_NAMESPACE, ApolloConfigStore, ApolloMetadata
from layotto_apollo.testing import ApolloTestServer
from layotto_apollo_test_support import APP_ID, HOLD, SECRET, TOKEN, StoreFactory, store_metadata
from pydantic import ValidationError

pytestmark = pytest.mark.anyio


def q(group: str = "application", label: str = "", keys: tuple[str, ...] = ()) -> ConfigQuery:
    return ConfigQuery("ignored-for-reads", group, label, keys)


def item(
    key: str, content: str, group: str = "application", label: str = "", **tags: str
) -> ConfigItem:
    return ConfigItem(key, content, group, label, tags=tags)


def releases(server: ApolloTestServer, ns: str) -> int:
    with server.state.lock:
        return len(server.state.releases.get(("DEV", APP_ID, "default", ns), []))


async def next_batch(watch: AsyncIterator[list[ConfigItem]], within: float = 3.0) -> Any:
    with anyio.fail_after(within):
        return await watch.__anext__()


# -- metadata ------------------------------------------------------------------------------


def test_metadata_layotto_spelling_and_defaults() -> None:
    m = ApolloMetadata.model_validate(
        {"address": ["http://cs:8080/"], "app_id": "app", "namespace_name": "dubbo,a.properties,"}
    )
    assert m.address == ["http://cs:8080"]
    assert m.namespace_name == ["dubbo", "a"]
    assert (m.cluster, m.env, m.is_backup_config, m.writable) == ("default", "DEV", True, False)
    assert m.long_poll_timeout == 60
    assert m.timeout == 5
    assert m.backup_dir is not None
    assert m.backup_dir.name == "app"

    m = ApolloMetadata.model_validate(
        {
            "address": "http://a:8080,http://b:8080",
            "app_id": "app",
            "env": "fat",
            "is_backup_config": "false",
            "open_api_address": "http://portal:8070",
            "open_api_token": "t",
            "open_api_user": "apollo",
            "timeout": "500ms",
        }
    )
    assert m.address == ["http://a:8080", "http://b:8080"]
    assert (m.env, m.backup_dir, m.writable, m.timeout) == ("FAT", None, True, 0.5)
    assert m.namespace_name == ["application"]


@pytest.mark.parametrize(
    ("values", "complaint"),
    [
        ({"app_id": "a"}, "address"),
        ({"address": [], "app_id": "a"}, "address"),
        ({"address": "cs:8080", "app_id": "a"}, "http://"),
        ({"address": "http://cs"}, "app_id"),
        ({"address": "http://cs", "app_id": "a", "open_api_token": "t"}, "go together"),
        ({"address": "http://cs", "app_id": "a", "timeout": "soon"}, "duration"),
    ],
)
def test_metadata_errors(values: dict[str, Any], complaint: str) -> None:
    with pytest.raises(ValidationError, match=complaint):
        ApolloMetadata.model_validate(values)


def test_secrets_never_in_repr() -> None:
    m = ApolloMetadata.model_validate(
        {"address": "http://cs", "app_id": "a", "secret": "s3", "open_api_token": "t0k",
         "open_api_address": "http://p", "open_api_user": "u"}
    )  # fmt: skip
    assert "s3" not in repr(m)
    assert "t0k" not in repr(m)


def test_entry_point_registers_configuration_apollo() -> None:
    [ep] = [ep for ep in entry_points(group="layotto") if ep.name == "apollo"]
    module = ep.load()
    [spec] = module.layotto_components()
    assert (spec.kind, spec.type, spec.qualified_type) == (
        Kind.CONFIGURATION,
        "apollo",
        "configuration.apollo",
    )
    assert spec.metadata_model is ApolloMetadata


# -- mapping -------------------------------------------------------------------------------


async def test_defaults(store: ApolloConfigStore) -> None:
    assert (store.default_group, store.default_label) == ("application", "")


async def test_labels_and_tags_mapping(store: ApolloConfigStore, apollo: ApolloTestServer) -> None:
    await store.set(
        APP_ID,
        [
            item("timeout", "100", owner="team-a", env="prod"),
            item("timeout", "200", label="blue"),
            item("url", "jdbc:x", group="db", label="v2", kind="db"),
        ],
        {},
    )
    # What Apollo holds: `key@$label` items, tags as JSON under `group@$key[@$label]`.
    assert apollo.items(APP_ID, "application") == {"timeout": "100", "timeout@$blue": "200"}
    assert apollo.items(APP_ID, "db") == {"url@$v2": "jdbc:x"}
    tags = apollo.items(APP_ID, TAGS_NAMESPACE)
    assert json.loads(tags["application@$timeout"]) == {"owner": "team-a", "env": "prod"}
    assert json.loads(tags["db@$url@$v2"]) == {"kind": "db"}
    assert "application@$timeout@$blue" not in tags

    plain = await store.get(q(keys=("timeout", "missing")))
    assert [(i.key, i.content, i.label, dict(i.tags)) for i in plain] == [
        ("timeout", "100", "", {"owner": "team-a", "env": "prod"})
    ]
    key = apollo.release_key(APP_ID, "application")
    assert plain[0].metadata == {"version": key}
    blue = await store.get(q(label="blue"))
    assert [(i.key, i.content, i.label, dict(i.tags)) for i in blue] == [
        ("timeout", "200", "blue", {})
    ]
    [url] = await store.get(q("db", "v2"))
    assert (url.key, url.group, url.content, dict(url.tags)) == (
        "url",
        "db",
        "jdbc:x",
        {"kind": "db"},
    )
    assert await store.get(q("db")) == []  # no unlabelled keys there
    assert await store.get(q(keys=("nope",))) == []


async def test_raw_apollo_data_reads_with_the_default_label(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "application", {"plain.key": "1", "with@$label": "2"})
    found = {(i.key, i.label): i.content for i in await store.get(q())}
    assert found == {("plain.key", ""): "1"}
    found = {(i.key, i.label): i.content for i in await store.get(q(label="label"))}
    assert found == {("with", "label"): "2"}


async def test_writes_release_tags_then_groups(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    before = {ns: releases(apollo, ns) for ns in ("application", "db", TAGS_NAMESPACE)}
    await store.set(APP_ID, [item("a", "1", t="x"), item("b", "2", group="db")], {})
    after = {ns: releases(apollo, ns) for ns in ("application", "db", TAGS_NAMESPACE)}
    assert {ns: after[ns] - before[ns] for ns in after} == {
        "application": 1,
        "db": 1,
        TAGS_NAMESPACE: 1,
    }
    with apollo.state.lock:
        ids = {
            ns: apollo.state.releases[("DEV", APP_ID, "default", ns)][-1].id
            for ns in ("application", TAGS_NAMESPACE)
        }
        title = apollo.state.releases[("DEV", APP_ID, "default", "db")][-1].name
    assert ids[TAGS_NAMESPACE] < ids["application"]
    assert title == time.strftime("%m-%d-%Y")

    # A re-save without tags drops the stale tags entry.
    await store.set(APP_ID, [item("a", "1")], {})
    assert "application@$a" not in apollo.items(APP_ID, TAGS_NAMESPACE)
    [a] = await store.get(q(keys=("a",)))
    assert dict(a.tags) == {}


async def test_release_names_from_the_request_metadata(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    meta = {"release_title": "rollout 42", "release_comment": "by the deploy bot"}
    await store.set(APP_ID, [item("a", "1")], meta)
    with apollo.state.lock:
        latest = apollo.state.releases[("DEV", APP_ID, "default", "application")][-1]
    assert (latest.name, latest.comment) == ("rollout 42", "by the deploy bot")
    with pytest.raises(InvalidArgument, match="release_title"):
        await store.set(APP_ID, [item("a", "1")], {"release_title": "x" * 65})


async def test_delete(store: ApolloConfigStore, apollo: ApolloTestServer) -> None:
    await store.set(APP_ID, [item("a", "1", t="x"), item("a", "2", label="l"), item("b", "3")], {})
    before = releases(apollo, "application")
    await store.delete(ConfigQuery(APP_ID, "application", "", ("a", "never-there")))
    assert apollo.items(APP_ID, "application") == {"a@$l": "2", "b": "3"}
    assert "application@$a" not in apollo.items(APP_ID, TAGS_NAMESPACE)
    assert releases(apollo, "application") == before + 1
    assert [i.key for i in await store.get(q())] == ["b"]

    # Deleting only missing keys succeeds and releases nothing.
    await store.delete(ConfigQuery(APP_ID, "application", "", ("never-there",)))
    assert releases(apollo, "application") == before + 1
    # A missing namespace is an error, not a silent success.
    with pytest.raises(ComponentError, match="namespace not found"):
        await store.delete(ConfigQuery(APP_ID, "no-such-ns", "", ("a",)))


async def test_app_id_is_ignored_for_reads_and_used_for_writes(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    apollo.add_app("Another")
    apollo.add_token(TOKEN, apps=[APP_ID, "Another"])
    await store.set("Another", [item("k", "theirs")], {})
    assert apollo.items("Another", "application") == {"k": "theirs"}
    assert await store.get(ConfigQuery("Another", "application", "", ("k",))) == []
    with pytest.raises(InvalidArgument, match="app_id"):
        await store.set("", [item("k", "v")], {})


async def test_invalid_items(store: ApolloConfigStore) -> None:
    with pytest.raises(InvalidArgument, match="delimiter"):
        await store.set(APP_ID, [item("a@$b", "v")], {})
    with pytest.raises(InvalidArgument, match="128"):
        await store.set(APP_ID, [item("k" * 120, "v", label="long-label")], {})
    with pytest.raises(InvalidArgument, match="20000"):
        await store.set(APP_ID, [item("k", "v" * 20_001)], {})


# -- sidecar_config_tags -------------------------------------------------------------------


async def test_tags_namespace_created_and_released_once(
    make_store: StoreFactory, apollo: ApolloTestServer
) -> None:
    assert apollo.state.own_namespace(APP_ID, TAGS_NAMESPACE) is None
    await make_store()
    ns = apollo.state.own_namespace(APP_ID, TAGS_NAMESPACE)
    assert ns is not None
    assert (ns.is_public, ns.format) == (False, "properties")
    assert releases(apollo, TAGS_NAMESPACE) == 1  # 200 -> released once
    await make_store()  # 400: it exists, fine
    assert releases(apollo, TAGS_NAMESPACE) == 1


async def test_tags_namespace_failures_stop_startup(
    make_store: StoreFactory, apollo: ApolloTestServer
) -> None:
    with pytest.raises(ComponentError) as caught:
        await make_store(open_api_token="wrong-token-123")
    assert caught.value.reason == "ERR_APOLLO_UNAUTHORIZED"
    assert "sidecar_config_tags" in caught.value.message
    assert "wrong-token-123" not in caught.value.message
    assert apollo.url.split("//")[1] not in caught.value.message

    # Apollo answers 400 for an unknown app too: the store checks that the namespace exists.
    apollo.add_token("every-app")
    apollo.add_app("NoTags")
    apollo.publish("NoTags", "application", {"a": "1"})
    with apollo.state.lock:
        del apollo.state.apps["NoTags"]  # readable, but no such app for the Open API
    with pytest.raises(ComponentError, match="does not exist"):
        await make_store(app_id="NoTags", open_api_token="every-app")

    apollo.fail_next("openapi", 500)
    with pytest.raises(BackendUnavailable, match="sidecar_config_tags"):
        await make_store()


# -- read-only -----------------------------------------------------------------------------


async def test_read_only_without_open_api(
    make_store: StoreFactory, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    store = await make_store(open_api_address=None, open_api_token=None, open_api_user=None)
    assert apollo.state.own_namespace(APP_ID, TAGS_NAMESPACE) is None  # nothing created
    assert [i.content for i in await store.get(q())] == ["1"]
    with pytest.raises(Unsupported, match="read-only"):
        await store.set(APP_ID, [item("a", "2")], {})
    with pytest.raises(Unsupported, match="read-only"):
        await store.delete(ConfigQuery(APP_ID, "application", "", ("a",)))


# -- write errors (a non-2xx answer is an error) -------------------------------------------


async def test_write_errors(store: ApolloConfigStore, apollo: ApolloTestServer) -> None:
    apollo.add_app("Forbidden")
    with pytest.raises(ComponentError) as caught:
        await store.set("Forbidden", [item("a", "1")], {})
    assert caught.value.reason == "ERR_APOLLO_UNAUTHORIZED"
    assert "403" in caught.value.message
    assert TOKEN not in caught.value.message
    with pytest.raises(ComponentError, match="namespace not found"):
        await store.set(APP_ID, [item("a", "1", group="no-such-ns")], {})
    apollo.fail_next("openapi", 503)
    with pytest.raises(BackendUnavailable, match="503"):
        await store.set(APP_ID, [item("a", "1")], {})
    apollo.stop()
    with pytest.raises(BackendUnavailable, match="connection refused") as down:
        await store.set(APP_ID, [item("a", "1")], {})
    assert "127.0.0.1" not in down.value.message


async def test_read_errors(make_store: StoreFactory, apollo: ApolloTestServer) -> None:
    store = await make_store(timeout="0.3")
    apollo.set_latency("configs", 1.0)
    with pytest.raises(BackendTimeout):
        await store.get(q("never-read"))
    apollo.set_latency("configs", 0)
    apollo.stop()
    with pytest.raises(BackendUnavailable):
        await store.get(q("never-read"))


# -- startup from the backup ---------------------------------------------------------------


async def test_backup_used_when_apollo_is_down_at_startup(
    make_store: StoreFactory, apollo: ApolloTestServer, tmp_path: Path
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    apollo.publish(APP_ID, "db", {"b": "2"})
    first = await make_store()
    assert (tmp_path / "backup" / f"{APP_ID}+default+application.json").exists()
    await first.close()
    apollo.stop()

    second = await make_store()  # Apollo is down: the backup answers
    assert [(i.key, i.content) for i in await second.get(q())] == [("a", "1")]
    assert [(i.key, i.content) for i in await second.get(q("db"))] == [("b", "2")]
    assert (await second.check_health()).status == HealthStatus.DOWN
    with pytest.raises(BackendUnavailable):
        await second.set(APP_ID, [item("a", "2")], {})

    apollo.start()  # back: fresh reads again, writes work (the tags namespace is made then)
    apollo.publish(APP_ID, "application", {"a": "3"})
    assert [i.content for i in await second.get(q())] == ["3"]
    await second.set(APP_ID, [item("a", "4", t="x")], {})
    [a] = await second.get(q(keys=("a",)))
    assert (a.content, dict(a.tags)) == ("4", {"t": "x"})


async def test_startup_fails_when_apollo_is_down_without_backup(
    make_store: StoreFactory, apollo: ApolloTestServer
) -> None:
    apollo.stop()
    with pytest.raises(BackendUnavailable, match="no local backup"):
        await make_store()
    with pytest.raises(BackendUnavailable):
        await make_store(is_backup_config="false")


async def test_no_backup_files_when_disabled(
    make_store: StoreFactory, apollo: ApolloTestServer, tmp_path: Path
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    await make_store(is_backup_config="false")
    assert not (tmp_path / "backup").exists()


# -- signed reads --------------------------------------------------------------------------


async def test_signed_reads(make_store: StoreFactory, apollo: ApolloTestServer) -> None:
    apollo.set_secrets(APP_ID, [SECRET])
    apollo.publish(APP_ID, "application", {"a": "1"})
    store = await make_store(secret=SECRET)
    assert [i.content for i in await store.get(q())] == ["1"]
    with pytest.raises(ComponentError, match=r"metadata\.secret") as caught:
        await make_store(secret="wrong-secret-42")
    assert "wrong-secret-42" not in caught.value.message


# -- watch ---------------------------------------------------------------------------------


@pytest.fixture
async def open_api(apollo: ApolloTestServer) -> AsyncIterator[httpx.AsyncClient]:
    """Another writer: the Open API over plain HTTP, as an operator's script would use it."""
    async with httpx.AsyncClient(
        base_url=f"{apollo.url}/openapi/v1/envs/DEV/apps/{APP_ID}/clusters/default/namespaces",
        headers={"Authorization": TOKEN},
    ) as client:
        yield client


async def release(api: httpx.AsyncClient, ns: str, **items: str | None) -> None:
    for key, value in items.items():
        if value is None:
            r = await api.delete(f"/{ns}/items/{key}", params={"operator": "apollo"})
        else:
            body = {"key": key, "value": value, "dataChangeCreatedBy": "apollo",
                    "dataChangeLastModifiedBy": "apollo"}  # fmt: skip
            r = await api.put(f"/{ns}/items/{key}", params={"createIfNotExists": "true"}, json=body)
        r.raise_for_status()
    r = await api.post(f"/{ns}/releases", json={"releaseTitle": "t", "releasedBy": "apollo"})
    r.raise_for_status()


async def test_watch_yields_changes_with_release_keys(
    store: ApolloConfigStore, apollo: ApolloTestServer, open_api: httpx.AsyncClient
) -> None:
    await store.set(APP_ID, [item("keep", "1"), item("gone", "x"), item("t", "1", a="b")], {})
    watch = store.watch("any-app")
    try:
        assert await next_batch(watch) == []  # established
        await release(open_api, "application", t="2", new="n", gone=None)
        batch = await next_batch(watch)
        key = apollo.release_key(APP_ID, "application")
        got = sorted((i.key, i.content, i.deleted, sorted(i.tags.items())) for i in batch)
        assert got == [
            ("gone", "", True, []),
            ("new", "n", False, []),
            ("t", "2", False, [("a", "b")]),
        ]
        assert all(i.metadata["version"] == key for i in batch)
        assert all(i.group == "application" for i in batch)

        # Versions only move with the item: `keep` still has its first release key.
        items = {i.key: i.metadata["version"] for i in await store.get(q())}
        assert items["t"] == key
        assert items["keep"] != key

        # Labels come back split.
        await release(open_api, "db", **{"url@$blue": "u"})
        [url] = await next_batch(watch)
        assert (url.key, url.label, url.group, url.content) == ("url", "blue", "db", "u")
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_reports_a_change_once_whoever_reads_it_first(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    watch = store.watch(APP_ID)
    try:
        assert await next_batch(watch) == []
        apollo.publish(APP_ID, "application", {"a": "1"})
        assert [i.content for i in await store.get(q())] == ["1"]  # get sees it first
        [a] = await next_batch(watch)
        assert (a.key, a.content) == ("a", "1")
        with pytest.raises(TimeoutError):
            await next_batch(watch, within=HOLD + 0.5)  # and nothing more
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_covers_groups_read_later(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    apollo.add_app(APP_ID, namespaces=["extra"])
    watch = store.watch(APP_ID)
    try:
        assert await next_batch(watch) == []
        assert await store.get(q("extra")) == []  # a subscriber's resync reads the group
        await anyio.sleep(0.1)
        apollo.publish(APP_ID, "extra", {"e": "1"})
        [e] = await next_batch(watch)
        assert (e.group, e.key, e.content) == ("extra", "e", "1")
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_latency_after_a_release(
    store: ApolloConfigStore, open_api: httpx.AsyncClient
) -> None:
    watch = store.watch(APP_ID)
    try:
        assert await next_batch(watch) == []
        await anyio.sleep(0.2)  # the long poll is held
        started = time.monotonic()
        await release(open_api, "db", k="v")
        [k] = await next_batch(watch)
        assert k.content == "v"
        assert time.monotonic() - started < 0.1
    finally:
        await watch.aclose()  # type: ignore[attr-defined]


async def test_watch_fails_when_apollo_goes_away(
    store: ApolloConfigStore, apollo: ApolloTestServer
) -> None:
    watch = store.watch(APP_ID)
    try:
        assert await next_batch(watch) == []
        await anyio.sleep(0.2)
        apollo.stop()
        with pytest.raises(BackendUnavailable):
            await next_batch(watch)
    finally:
        await watch.aclose()  # type: ignore[attr-defined]
    with pytest.raises(BackendUnavailable):  # and cannot be established while it is away
        await next_batch(store.watch(APP_ID))


async def test_watch_ends_when_the_store_closes(store: ApolloConfigStore) -> None:
    watch = store.watch(APP_ID)
    assert await next_batch(watch) == []
    await store.close()
    with pytest.raises(BackendUnavailable):
        await next_batch(watch)
    await watch.aclose()  # type: ignore[attr-defined]


# -- health --------------------------------------------------------------------------------


async def test_health(store: ApolloConfigStore, apollo: ApolloTestServer) -> None:
    assert (await store.check_health()).status == HealthStatus.UP
    apollo.set_secrets(APP_ID, ["changed"])
    health = await store.check_health()
    assert health.status == HealthStatus.DOWN
    assert "401" in health.details["reason"]
    apollo.set_secrets(APP_ID, [])
    apollo.stop()
    health = await store.check_health()
    assert health.status == HealthStatus.DOWN
    assert "unavailable" in health.details["reason"]
    apollo.start()
    assert (await store.check_health()).status == HealthStatus.UP


async def test_not_started(apollo: ApolloTestServer, tmp_path: Path) -> None:
    store = ApolloConfigStore(
        ApolloMetadata.model_validate(store_metadata(apollo, tmp_path)),
        ComponentContext("apollo", "app"),
    )
    assert (await store.check_health()).status == HealthStatus.DOWN
    with pytest.raises(BackendUnavailable):
        await store.get(q())
    await store.close()
    await store.close()  # idempotent
