"""The Apollo test server speaks Apollo's protocol (apollo-protocol.md §2, §4, §5, §6), checked
with plain HTTP requests: no client of ours in between."""

from __future__ import annotations

import base64
import json
import time
from typing import Any
from urllib.parse import quote

import anyio
import httpx
import pytest
from layotto_apollo.testing import ApolloTestServer, apollo_signature
from layotto_apollo_test_support import APP_ID, HOLD, TOKEN

pytestmark = pytest.mark.anyio

NS = f"/openapi/v1/envs/DEV/apps/{APP_ID}/clusters/default/namespaces"


def notifications(**ids: int) -> str:
    body = [{"namespaceName": ns, "notificationId": nid} for ns, nid in ids.items()]
    return quote(json.dumps(body), safe="")


@pytest.fixture
async def http(apollo: ApolloTestServer) -> Any:
    async with httpx.AsyncClient(base_url=apollo.url, timeout=10) as client:
        yield client


@pytest.fixture
async def api(apollo: ApolloTestServer) -> Any:
    headers = {"Authorization": TOKEN, "Content-Type": "application/json;charset=UTF-8"}
    async with httpx.AsyncClient(base_url=apollo.url, timeout=10, headers=headers) as client:
        yield client


# -- /configs ------------------------------------------------------------------------------


async def test_configs_404_before_release_then_200_then_304(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    r = await http.get(f"/configs/{APP_ID}/default/application")
    assert r.status_code == 404
    assert "Could not load configurations with appId: SampleApp" in r.text

    key = apollo.publish(APP_ID, "application", {"timeout": "100", "batch": "200"})
    r = await http.get(f"/configs/{APP_ID}/default/application")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.json() == {
        "appId": APP_ID,
        "cluster": "default",
        "namespaceName": "application",
        "configurations": {"timeout": "100", "batch": "200"},
        "releaseKey": key,
    }
    assert key[:14].isdigit()
    assert (key[14], len(key)) == ("-", 31)

    r = await http.get(f"/configs/{APP_ID}/default/application", params={"releaseKey": key})
    assert r.status_code == 304
    assert r.content == b""


async def test_configs_names_suffix_case_and_cluster_fallback(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "db", {"url": "jdbc:x"})
    r = await http.get(f"/configs/{APP_ID}/some-cluster/DB.properties")
    assert r.status_code == 200
    body = r.json()
    assert body["namespaceName"] == "DB.properties"  # echoed as requested
    assert body["cluster"] == "default"  # found there after the fallback
    assert body["configurations"] == {"url": "jdbc:x"}


async def test_configs_public_namespace_is_merged(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    apollo.add_app("Owner")
    apollo.add_public_namespace("Owner", "shared")
    public_key = apollo.publish("Owner", "shared", {"a": "public", "b": "public"})
    r = await http.get(f"/configs/{APP_ID}/default/shared")
    assert r.status_code == 200
    assert r.json()["configurations"] == {"a": "public", "b": "public"}
    assert r.json()["releaseKey"] == public_key


async def test_configfiles_json_and_properties(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    assert (await http.get(f"/configfiles/json/{APP_ID}/default/application")).status_code == 404
    apollo.publish(APP_ID, "application", {"a": "1", "b c": "x=y"})
    r = await http.get(f"/configfiles/json/{APP_ID}/default/application")
    assert r.json() == {"a": "1", "b c": "x=y"}
    r = await http.get(f"/configfiles/{APP_ID}/default/application")
    assert r.text == "a=1\nb\\ c=x=y\n"


async def test_meta_service(http: httpx.AsyncClient, apollo: ApolloTestServer) -> None:
    r = await http.get("/services/config", params={"appId": APP_ID, "ip": "10.0.0.1"})
    assert r.status_code == 200
    [service] = r.json()
    assert service["appName"] == "apollo-configservice"
    assert service["homepageUrl"] == f"{apollo.url}/"


# -- /notifications/v2 ---------------------------------------------------------------------


async def test_notifications_bad_list_is_400(http: httpx.AsyncClient) -> None:
    base = f"/notifications/v2?appId={APP_ID}&cluster=default&notifications="
    for bad in ("", "not-json", quote("[]"), quote('{"a":1}')):
        assert (await http.get(base + bad)).status_code == 400


async def test_notifications_answer_at_once_when_behind(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    apollo.publish(APP_ID, "db", {"b": "1"})
    nid = apollo.notification_id(APP_ID, "db")
    url = f"/notifications/v2?appId={APP_ID}&cluster=default&notifications="
    r = await http.get(url + notifications(**{"application.properties": -1, "db": nid}))
    assert r.status_code == 200
    assert r.json() == [
        {
            "namespaceName": "application",
            "notificationId": apollo.notification_id(APP_ID, "application"),
            "messages": {"details": {f"{APP_ID}+default+application": 1}},
        }
    ]


async def test_notifications_hold_then_304(http: httpx.AsyncClient) -> None:
    url = f"/notifications/v2?appId={APP_ID}&cluster=default&notifications="
    started = time.monotonic()
    r = await http.get(url + notifications(application=-1))  # never released: held
    elapsed = time.monotonic() - started
    assert r.status_code == 304
    assert HOLD - 0.05 <= elapsed < HOLD + 0.5


async def test_release_wakes_held_polls_at_once(
    http: httpx.AsyncClient, apollo: ApolloTestServer
) -> None:
    """Every waiter on the key wakes; ids rise globally, not per namespace."""
    apollo.publish("Other", "application", {"x": "1"})  # another app's message takes an id
    url = f"/notifications/v2?appId={APP_ID}&cluster=default&notifications="
    answers: list[tuple[float, Any]] = []

    async def poll() -> None:
        r = await http.get(url + notifications(application=-1, db=-1))
        answers.append((time.monotonic(), r))

    async with anyio.create_task_group() as tg:
        tg.start_soon(poll)
        tg.start_soon(poll)
        await anyio.sleep(0.2)
        released = time.monotonic()
        apollo.publish(APP_ID, "db", {"k": "v"})
    assert len(answers) == 2
    for at, r in answers:
        assert r.status_code == 200
        assert at - released < 0.1
        assert r.json() == [
            {
                "namespaceName": "db",
                "notificationId": 2,
                "messages": {"details": {f"{APP_ID}+default+db": 2}},
            }
        ]
    assert apollo.state.waiters == {}  # every waiter left every key


# -- access keys ---------------------------------------------------------------------------


def test_signature_test_vector() -> None:
    signature = apollo_signature(
        "df23df3f59884980844ff3dada30fa97",
        "1576478257344",
        "/configs/100004458/default/application?ip=10.0.0.1",
    )
    assert signature == "EoKyziXvKqzHgwx+ijDJwgVTDgE="


async def test_access_keys(http: httpx.AsyncClient, apollo: ApolloTestServer) -> None:
    apollo.set_secrets(APP_ID, ["s3cret"])
    apollo.publish(APP_ID, "application", {"a": "1"})
    path = f"/configs/{APP_ID}/default/application?ip=10.0.0.1&label=a%20b"

    def signed(secret: str, skew_ms: int = 0, path_signed: str = path) -> dict[str, str]:
        ts = str(int(time.time() * 1000) + skew_ms)
        return {
            "Timestamp": ts,
            "Authorization": f"Apollo {APP_ID}:{apollo_signature(secret, ts, path_signed)}",
        }

    assert (await http.get(path, headers=signed("s3cret"))).status_code == 200
    assert (await http.get(path)).status_code == 401
    r = await http.get(path, headers=signed("wrong"))
    assert (r.status_code, r.json()["message"]) == (401, "Unauthorized")
    r = await http.get(path, headers=signed("s3cret", skew_ms=-61_000))
    assert (r.status_code, r.json()["message"]) == (401, "RequestTimeTooSkewed")
    # The signature covers the query as sent (still encoded).
    unencoded = path.replace("%20", " ")
    r = await http.get(path, headers=signed("s3cret", path_signed=unencoded))
    assert r.status_code == 401
    # Notifications take the appId from the query; a missing one is 400.
    r = await http.get("/notifications/v2?cluster=default&notifications=x")
    assert (r.status_code, r.json()["message"]) == (400, "InvalidAppId")
    # An app without secrets is not checked.
    apollo.set_secrets(APP_ID, [])
    assert (await http.get(path)).status_code == 200


# -- Open API ------------------------------------------------------------------------------


async def test_open_api_token_checks(apollo: ApolloTestServer, api: httpx.AsyncClient) -> None:
    r = await api.get(f"{NS}/application/items", headers={"Authorization": "nope"})
    assert r.status_code == 401
    apollo.add_app("NotGranted")
    r = await api.get("/openapi/v1/envs/DEV/apps/NotGranted/clusters/default/namespaces")
    assert r.status_code == 403
    apollo.add_token("all-apps")
    r = await api.get(f"{NS}/missing/items", headers={"Authorization": "all-apps"})
    assert r.status_code == 404
    body = r.json()
    assert set(body) == {"status", "message", "timestamp", "exception"}
    r = await api.get(f"{NS.replace('/DEV/', '/NOPE/')}/application/items")
    assert r.status_code == 400


async def test_open_api_items(apollo: ApolloTestServer, api: httpx.AsyncClient) -> None:
    item = f"{NS}/application/items"
    body = {"key": "k", "value": "v", "dataChangeCreatedBy": "apollo"}
    r = await api.post(item, json=body)
    assert r.status_code == 200
    assert r.json()["key"] == "k"
    assert (await api.post(item, json=body)).status_code == 400  # exists

    # PUT rules: body key must equal the path key; createIfNotExists needs the creator.
    put = {"key": "a@$b", "value": "1", "dataChangeLastModifiedBy": "apollo"}
    path = f"{item}/{quote('a@$b', safe='')}"
    assert (await api.put(path, json=put)).status_code == 404
    r = await api.put(path, params={"createIfNotExists": "true"}, json=put)
    assert r.status_code == 400
    r = await api.put(
        path, params={"createIfNotExists": "true"}, json={**put, "dataChangeCreatedBy": "apollo"}
    )
    assert (r.status_code, r.content) == (200, b"")
    assert (await api.put(f"{item}/other", json=put)).status_code == 400  # key mismatch
    bad_user = {**put, "dataChangeLastModifiedBy": "nobody"}
    assert (await api.put(path, json=bad_user)).status_code == 400
    assert (
        await api.put(path, json={**put, "key": "a@$b", "value": "x" * 20_001})
    ).status_code == 400

    r = await api.get(path)
    assert r.json()["value"] == "1"
    r = await api.get(item, params={"page": 0, "size": 1})
    assert (r.json()["total"], len(r.json()["content"]), r.json()["size"]) == (2, 1, 1)

    # Edits are invisible to clients until a release.
    assert apollo.release_key(APP_ID, "application") is None
    encoded = base64.urlsafe_b64encode(b"a@$b").decode().rstrip("=")
    assert (await api.get(f"{NS}/application/encodedItems/{encoded}")).json()["key"] == "a@$b"
    assert (await api.get(f"{NS}/application/encodedItems/!!!")).status_code == 400

    assert (await api.delete(path)).status_code == 400  # operator is required
    assert (await api.delete(path, params={"operator": "apollo"})).status_code == 200
    assert (await api.delete(path, params={"operator": "apollo"})).status_code == 404
    assert apollo.items(APP_ID, "application") == {"k": "v"}


async def test_open_api_release_publishes_and_wakes(
    apollo: ApolloTestServer, api: httpx.AsyncClient, http: httpx.AsyncClient
) -> None:
    await api.put(
        f"{NS}/db/items/k",
        params={"createIfNotExists": "true"},
        json={"key": "k", "value": "v", "dataChangeCreatedBy": "apollo",
              "dataChangeLastModifiedBy": "apollo"},
    )  # fmt: skip
    releases = f"{NS}/db/releases"
    assert (await api.post(releases, json={"releasedBy": "apollo"})).status_code == 400
    assert (await api.get(f"{releases}/latest")).content == b""
    before = apollo.notification_id(APP_ID, "db")
    r = await api.post(releases, json={"releaseTitle": "05-06-2024", "releasedBy": "apollo"})
    assert r.status_code == 200
    dto = r.json()
    assert (dto["name"], dto["configurations"]) == ("05-06-2024", {"k": "v"})
    assert apollo.notification_id(APP_ID, "db") > before
    assert (await api.get(f"{releases}/latest")).json()["configurations"] == {"k": "v"}
    r = await http.get(f"/configs/{APP_ID}/default/db")
    assert r.json()["configurations"] == {"k": "v"}

    # A rollback makes the previous release (none here) active and notifies again.
    previous = apollo.notification_id(APP_ID, "db")
    r = await api.put(
        f"/openapi/v1/envs/DEV/releases/{dto['id']}/rollback", params={"operator": "apollo"}
    )
    assert r.status_code == 200
    assert apollo.notification_id(APP_ID, "db") > previous
    assert (await http.get(f"/configs/{APP_ID}/default/db")).status_code == 404


async def test_open_api_app_namespaces(apollo: ApolloTestServer, api: httpx.AsyncClient) -> None:
    url = f"/openapi/v1/apps/{APP_ID}/appnamespaces"
    body = {
        "name": "sidecar_config_tags",
        "appId": APP_ID,
        "format": "properties",
        "isPublic": "false",
        "dataChangeCreatedBy": "apollo",
    }
    r = await api.post(url, json=body)
    assert r.status_code == 200
    assert (r.json()["name"], r.json()["isPublic"]) == ("sidecar_config_tags", False)
    assert (await api.post(url, json=body)).status_code == 400  # exists
    assert (await api.get(f"{NS}/sidecar_config_tags")).status_code == 200
    assert (await api.get(f"{NS}/sidecar_config_tags/lock")).json()["isLocked"] is False
    r = await api.post(url, json={**body, "name": "conf", "format": "json"})
    assert r.json()["name"] == "conf.json"
    r = await api.post(url, json={**body, "appId": "Other"})
    assert r.status_code == 400
    r = await api.get(f"/openapi/v1/apps/{APP_ID}/envclusters")
    assert r.json() == [{"env": "DEV", "clusters": ["default"]}]


# -- hooks and restarts --------------------------------------------------------------------


async def test_hooks_fail_next_latency_counts(
    apollo: ApolloTestServer, http: httpx.AsyncClient
) -> None:
    apollo.publish(APP_ID, "application", {"a": "1"})
    apollo.reset_counts()
    apollo.fail_next("configs", 500, times=2)
    url = f"/configs/{APP_ID}/default/application"
    assert [(await http.get(url)).status_code for _ in range(3)] == [500, 500, 200]
    assert apollo.request_count("configs") == 3
    apollo.set_latency("configs", 0.2)
    started = time.monotonic()
    await http.get(url)
    assert time.monotonic() - started >= 0.2


async def test_state_survives_a_restart_on_the_same_port(apollo: ApolloTestServer) -> None:
    key = apollo.publish(APP_ID, "application", {"a": "1"})
    port = apollo.port
    apollo.stop()
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):
            await client.get(f"{apollo.url}/configs/{APP_ID}/default/application")
        apollo.start()
        assert apollo.port == port
        r = await client.get(f"{apollo.url}/configs/{APP_ID}/default/application")
        assert r.json()["releaseKey"] == key
