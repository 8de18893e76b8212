"""The Apollo client against the Apollo test server: releaseKey caching, the long poll, access-key
signing, meta-service discovery, failover, the backup, and Open API errors."""

from __future__ import annotations

import json
import time
from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx
import pytest
from layotto_apollo.client import (
    ApolloConfig,
    ApolloConnectionError,
    ApolloHTTPError,
    ApolloTimeoutError,
    Change,
    ConfigServiceClient,
    OpenApiClient,
    diff,
    long_poll_read_timeout,
    signed_headers,
)
from layotto_apollo.testing import ApolloTestServer
from layotto_apollo_test_support import APP_ID, HOLD, SECRET, TOKEN, USER

pytestmark = pytest.mark.anyio


class Recording(httpx.AsyncBaseTransport):
    """The real transport, remembering every request."""

    def __init__(self) -> None:
        self.inner = httpx.AsyncHTTPTransport()
        self.requests: list[httpx.Request] = []

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        return await self.inner.handle_async_request(request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@pytest.fixture
async def client(apollo: ApolloTestServer) -> AsyncIterator[ConfigServiceClient]:
    c = ConfigServiceClient([apollo.url], APP_ID, long_poll_timeout=HOLD)
    yield c
    await c.aclose()


@pytest.fixture
async def open_api(apollo: ApolloTestServer) -> AsyncIterator[OpenApiClient]:
    api = OpenApiClient(apollo.url, TOKEN, USER)
    yield api
    await api.aclose()


@pytest.fixture
def dead_url() -> str:
    """A URL on which nothing listens."""
    server = ApolloTestServer()
    server.start()
    server.stop()
    return server.url


# -- reads ---------------------------------------------------------------------------------


async def test_release_key_caching(client: ConfigServiceClient, apollo: ApolloTestServer) -> None:
    assert await client.get_config("application") is None  # no release: 404
    key = apollo.publish(APP_ID, "application", {"a": "1"})
    first = await client.get_config("application")
    assert first == ApolloConfig(APP_ID, "default", "application", {"a": "1"}, key)
    apollo.reset_counts()
    again = await client.get_config("application.properties")
    assert again is first  # the 304 kept the cached copy
    assert apollo.request_count("configs") == 1
    assert await client.fetch("application", key) is None  # that request was a 304

    newer = apollo.publish(APP_ID, "application", {"a": "2"})
    third = await client.get_config("application")
    assert third is not None
    assert (third.release_key, dict(third.configurations)) == (newer, {"a": "2"})


async def test_long_poll_wakes_within_100ms_of_a_release(
    client: ConfigServiceClient, open_api: OpenApiClient, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    ids = {"application": -1, "db": -1}
    for n in await client.poll(ids):  # at once: we are behind
        ids[n.namespace] = n.notification_id
    assert ids == {"application": apollo.notification_id(APP_ID, "application"), "db": -1}

    await open_api.put_item(APP_ID, "default", "db", "k", "v")
    result: list[object] = []
    done_at = 0.0

    async def poll() -> None:
        nonlocal done_at
        result.extend(await client.poll(ids))
        done_at = time.monotonic()

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.sleep(0.3)  # the poll is held by now
        assert not result
        released_at = time.monotonic()
        await open_api.publish(APP_ID, "default", "db", "release")
    latency = done_at - released_at
    assert latency < 0.1, f"the long poll answered {latency * 1000:.0f} ms after the release"
    [notification] = result
    assert notification.namespace == "db"  # type: ignore[attr-defined]


async def test_long_poll_304_after_the_hold(client: ConfigServiceClient) -> None:
    started = time.monotonic()
    assert await client.poll({"application": -1}) == []
    assert HOLD - 0.05 <= time.monotonic() - started < HOLD + 0.5
    assert long_poll_read_timeout(60) == 90
    assert long_poll_read_timeout(HOLD) > HOLD


async def test_messages_from_a_notification_go_with_the_next_read(
    apollo: ApolloTestServer,
) -> None:
    recording = Recording()
    c = ConfigServiceClient([apollo.url], APP_ID, long_poll_timeout=HOLD, transport=recording)
    try:
        apollo.publish(APP_ID, "db", {"a": "1"})
        await c.poll({"db": -1})
        await c.get_config("db")
        query = parse_qs(urlsplit(str(recording.requests[-1].url)).query)
        nid = apollo.notification_id(APP_ID, "db")
        assert json.loads(query["messages"][0]) == {"details": {f"{APP_ID}+default+db": nid}}
    finally:
        await c.aclose()


# -- access keys ---------------------------------------------------------------------------


def test_signed_headers_match_the_test_vector() -> None:
    headers = signed_headers(
        "100004458",
        "df23df3f59884980844ff3dada30fa97",
        "/configs/100004458/default/application?ip=10.0.0.1",
        now_ms=1576478257344,
    )
    assert headers == {
        "Timestamp": "1576478257344",
        "Authorization": "Apollo 100004458:EoKyziXvKqzHgwx+ijDJwgVTDgE=",
    }


async def test_signed_requests_accepted_bad_signature_rejected(apollo: ApolloTestServer) -> None:
    apollo.set_secrets(APP_ID, [SECRET])
    apollo.publish(APP_ID, "application", {"a": "1"})
    good = ConfigServiceClient(
        [apollo.url], APP_ID, secret=SECRET, ip="10.0.0.1", long_poll_timeout=HOLD
    )
    bad = ConfigServiceClient([apollo.url], APP_ID, secret="not-the-secret")
    unsigned = ConfigServiceClient([apollo.url], APP_ID)
    try:
        config = await good.get_config("application")
        assert config is not None
        assert dict(config.configurations) == {"a": "1"}
        assert await good.poll({"application": -1})  # notifications are signed too
        # Characters that need encoding: signed as sent, so accepted (404: no such release).
        assert await good.get_config("odd name+1/ü") is None
        with pytest.raises(ApolloHTTPError) as caught:
            await bad.fetch("application")
        assert caught.value.status == 401
        assert "check metadata.secret" in caught.value.message
        assert "not-the-secret" not in caught.value.message
        with pytest.raises(ApolloHTTPError) as caught:
            await unsigned.poll({"application": -1})
        assert caught.value.status == 401
        assert "set metadata.secret" in caught.value.message
    finally:
        for c in (good, bad, unsigned):
            await c.aclose()


# -- discovery and failover ----------------------------------------------------------------


async def test_meta_service_discovery(apollo: ApolloTestServer) -> None:
    """The meta server names another config service; reads go there."""
    with ApolloTestServer() as meta:
        meta.config_service_urls = [f"{apollo.url}/"]
        apollo.publish(APP_ID, "application", {"where": "config service"})
        c = ConfigServiceClient([meta.url], APP_ID, meta_server=True)
        try:
            config = await c.get_config("application")
            assert config is not None
            assert config.configurations == {"where": "config service"}
            assert await c.config_services() == [apollo.url]
            assert meta.request_count("services") == 1
            assert meta.request_count("configs") == 0
        finally:
            await c.aclose()


async def test_meta_service_rediscovers_when_config_services_fail(
    apollo: ApolloTestServer, dead_url: str
) -> None:
    with ApolloTestServer() as meta:
        meta.config_service_urls = [f"{dead_url}/"]
        apollo.publish(APP_ID, "application", {"a": "1"})
        c = ConfigServiceClient([meta.url], APP_ID, meta_server=True)
        try:
            assert await c.config_services() == [dead_url]
            meta.config_service_urls = [f"{apollo.url}/"]  # the replica moved
            config = await c.get_config("application")
            assert config is not None
            assert meta.request_count("services") == 2
        finally:
            await c.aclose()


async def test_several_addresses_fail_over(apollo: ApolloTestServer, dead_url: str) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    c = ConfigServiceClient([dead_url, apollo.url], APP_ID)
    try:
        assert await c.get_config("application") is not None
        assert c._current == 1  # sticks to the one that answered
    finally:
        await c.aclose()


async def test_errors_are_typed_and_host_free(apollo: ApolloTestServer, dead_url: str) -> None:
    down = ConfigServiceClient([dead_url], APP_ID)
    slow = ConfigServiceClient([apollo.url], APP_ID, read_timeout=0.2)
    try:
        with pytest.raises(ApolloConnectionError) as refused:
            await down.fetch("application")
        assert "connection refused" in refused.value.message
        assert "127.0.0.1" not in refused.value.message
        apollo.set_latency("configs", 1.0)
        with pytest.raises(ApolloTimeoutError):
            await slow.fetch("application")
    finally:
        await down.aclose()
        await slow.aclose()


# -- backup and fallback -------------------------------------------------------------------


async def test_backup_file_and_fallback(apollo: ApolloTestServer, tmp_path: Path) -> None:
    key = apollo.publish(APP_ID, "application", {"a": "1"})
    first = ConfigServiceClient([apollo.url], APP_ID, backup_dir=tmp_path)
    try:
        await first.get_config("application")
        [backup] = [path async for path in anyio.Path(tmp_path).iterdir()]
        assert backup.name == f"{APP_ID}+default+application.json"
        assert json.loads(await backup.read_text())["releaseKey"] == key

        apollo.fail_next("configs", 503)  # a 5xx: the cached copy answers
        config = await first.get_config("application")
        assert config is not None
        assert config.release_key == key
        apollo.stop()
        config = await first.get_config("application")  # memory
        assert config is not None
        assert config.release_key == key
    finally:
        await first.aclose()

    second = ConfigServiceClient([apollo.url], APP_ID, backup_dir=tmp_path)
    try:
        config = await second.get_config("application")  # a new process: the file
        assert config is not None
        assert (config.release_key, dict(config.configurations)) == (key, {"a": "1"})
        with pytest.raises(ApolloConnectionError):
            await second.get_config("application", fallback=False)
        with pytest.raises(ApolloConnectionError):
            await second.get_config("db")  # nothing saved for it
    finally:
        await second.aclose()


async def test_polls_recover_after_a_server_restart(
    client: ConfigServiceClient, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    ids = {"application": -1}
    for n in await client.poll(ids):
        ids[n.namespace] = n.notification_id

    failures: list[Exception] = []

    async def poll() -> None:
        try:
            await client.poll(ids)
        except Exception as err:
            failures.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        await anyio.sleep(0.2)
        apollo.stop()  # a crash while the poll is held
    assert [type(e) for e in failures] == [ApolloConnectionError]
    apollo.start()
    apollo.publish(APP_ID, "application", {"a": "2"})
    [n] = await client.poll(ids)
    assert n.notification_id == apollo.notification_id(APP_ID, "application")


# -- Open API ------------------------------------------------------------------------------


async def test_open_api_round_trip(open_api: OpenApiClient, apollo: ApolloTestServer) -> None:
    await open_api.put_item(APP_ID, "default", "db", "path/like@$key", "v")
    await open_api.put_item(APP_ID, "default", "db", "a b@$c", "w")
    assert apollo.items(APP_ID, "db") == {"path/like@$key": "v", "a b@$c": "w"}
    item = await open_api.get_item(APP_ID, "default", "db", "path/like@$key")
    assert (item["value"], item["dataChangeCreatedBy"]) == ("v", USER)
    page = await open_api.list_items(APP_ID, "default", "db")
    assert page["total"] == 2
    release = await open_api.publish(APP_ID, "default", "db", "05-06-2024", "from a test")
    assert release["configurations"] == {"path/like@$key": "v", "a b@$c": "w"}
    latest = await open_api.latest_release(APP_ID, "default", "db")
    assert latest is not None
    assert latest["name"] == "05-06-2024"
    await open_api.delete_item(APP_ID, "default", "db", "path/like@$key")
    assert apollo.items(APP_ID, "db") == {"a b@$c": "w"}
    created = await open_api.create_app_namespace(APP_ID, "extra")
    assert created["name"] == "extra"


async def test_open_api_errors_surface(apollo: ApolloTestServer, dead_url: str) -> None:
    apollo.add_app("Other")
    bad_token = OpenApiClient(apollo.url, "wrong-token-xyz", USER)
    api = OpenApiClient(apollo.url, TOKEN, USER)
    down = OpenApiClient(dead_url, TOKEN, USER)
    try:
        with pytest.raises(ApolloHTTPError) as caught:
            await bad_token.put_item(APP_ID, "default", "application", "k", "v")
        assert caught.value.status == 401
        assert "open_api_token is not accepted" in caught.value.message
        assert "wrong-token-xyz" not in caught.value.message
        with pytest.raises(ApolloHTTPError) as caught:
            await api.put_item("Other", "default", "application", "k", "v")
        assert caught.value.status == 403
        with pytest.raises(ApolloHTTPError) as caught:
            await api.publish(APP_ID, "default", "missing", "t")
        assert (caught.value.status, caught.value.detail) == (
            404,
            f"namespace not found for {APP_ID} default missing",
        )
        with pytest.raises(ApolloHTTPError) as caught:
            await api.create_app_namespace(APP_ID, "db")
        assert caught.value.status == 400
        with pytest.raises(ApolloHTTPError) as caught:
            await api.delete_item(APP_ID, "default", "application", "never-there")
        assert caught.value.status == 404
        with pytest.raises(ApolloHTTPError) as caught:
            await api.put_item(APP_ID, "default", "application", "k" * 129, "v")
        assert caught.value.status == 400
        with pytest.raises(ApolloConnectionError):
            await down.publish(APP_ID, "default", "application", "t")
    finally:
        for c in (bad_token, api, down):
            await c.aclose()


def test_diff() -> None:
    old = {"same": "1", "changed": "a", "gone": "x"}
    new = {"same": "1", "changed": "b", "added": "y"}
    assert diff(old, new) == [
        Change("changed", "a", "b"),
        Change("added", None, "y"),
        Change("gone", "x", None),
    ]
    assert diff(old, new)[-1].deleted
