"""Configuration subscriptions over Dapr's HTTP API, delivered to the app as daprd does
(dapr-compat.md §3.4): `GET /v1.0/configuration/{store}/subscribe` answers `{"id"}`, then
every update reaches the app as `POST /configuration/<store>/<key>` (once per key of the
update, the whole `{"id", "items"}` event as JSON) over its app channel: HTTP for an HTTP app,
Dapr's `OnInvoke` for a gRPC app. A real app on a real socket, the sidecar in-process on the
in-memory configuration store, written to directly as an operator would."""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto.actors.config_pusher import ConfigPusher
from layotto.config import RuntimeConfig
from layotto.errors import ComponentError
from layotto.plugin import ConfigItem, ConfigQuery, ConfigStore, Kind
from layotto.plugin.rpc import RpcRequest, RpcResponse
from layotto.resiliency import NO_POLICY, Policy
from layotto.services.config_subscription import Subscription, SubscriptionScope
from layotto.testing.pubsub import serve_app
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import FakeHttpApp, until
from layotto_core_test_helpers import EchoApp, serve_asgi
from starlette.responses import Response

pytestmark = pytest.mark.anyio

APP_ID = "cfg-app"
STORE = "configstore"
QUIET = 0.3  # how long "nothing arrives" is watched for


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- apps ----------------------------------------------------------------------------------


def config(protocol: str = "http") -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "app": {"id": APP_ID, "protocol": protocol},
            "components": [{"name": STORE, "kind": "configuration", "type": "in-memory"}],
        }
    )


@asynccontextmanager
async def http_sidecar(app: FakeHttpApp) -> AsyncIterator[tuple[Sidecar, httpx.AsyncClient]]:
    async with (
        serve_asgi(app.asgi) as port,
        run_sidecar(config(), grace_period=0.5, app_port=port) as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as client,
    ):
        yield sc, client


def store_of(sc: Sidecar) -> ConfigStore:
    store = sc.runtime.components.of_kind(Kind.CONFIGURATION)[STORE].component
    assert isinstance(store, ConfigStore)
    return store


async def write(sc: Sidecar, **items: str) -> None:
    """Save `items` in one write (one update event), as an operator would."""
    store = store_of(sc)
    await store.set(
        APP_ID,
        [
            ConfigItem(key, value, store.default_group, store.default_label)
            for key, value in items.items()
        ],
        {},
    )


async def subscribe(client: httpx.AsyncClient, *keys: str, prefix: str = "/v1.0") -> str:
    response = await client.get(
        f"{prefix}/configuration/{STORE}/subscribe", params=[("key", k) for k in keys]
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"id"}
    assert isinstance(body["id"], str)
    assert body["id"]
    return str(body["id"])


def pusher_of(sc: Sidecar) -> ConfigPusher:
    pusher = sc.runtime.config_pusher
    assert pusher is not None
    return pusher


def push_tasks() -> list[asyncio.Task[Any]]:
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("config push")]


# -- an HTTP app ---------------------------------------------------------------------------


@pytest.mark.parametrize("prefix", ["/v1.0", "/v1.0-alpha1"])
async def test_an_update_reaches_the_app_as_daprd_posts_it(prefix: str) -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        sub_id = await subscribe(client, "feature", prefix=prefix)
        await write(sc, feature="on", other="ignored")
        await until(lambda: len(app.delivered()) == 1)
        await anyio.sleep(QUIET)
    (delivery,) = app.delivered()
    assert (delivery.method, delivery.path) == ("POST", f"/configuration/{STORE}/feature")
    assert delivery.headers["content-type"] == "application/json"
    event = delivery.json()
    assert event["id"] == sub_id
    assert set(event["items"]) == {"feature"}
    item = event["items"]["feature"]
    assert item["value"] == "on"
    assert item["version"]  # the store's version, also in metadata
    assert item["metadata"]["version"] == item["version"]


async def test_no_keys_subscribes_to_every_key() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        sub_id = await subscribe(client)
        await write(sc, a="1")
        await write(sc, b="2")
        await until(lambda: len(app.delivered()) == 2)
    assert [d.path for d in app.delivered()] == [
        f"/configuration/{STORE}/a",
        f"/configuration/{STORE}/b",
    ]
    assert all(d.json()["id"] == sub_id for d in app.delivered())


async def test_two_keys_in_one_update_are_two_posts_of_the_whole_event() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        sub_id = await subscribe(client, "a", "b")
        await write(sc, a="1", b="2")
        await until(lambda: len(app.delivered()) == 2)
        await anyio.sleep(QUIET)
    assert sorted(d.path for d in app.delivered()) == [
        f"/configuration/{STORE}/a",
        f"/configuration/{STORE}/b",
    ]
    first, second = (d.json() for d in app.delivered())
    assert first == second
    assert first["id"] == sub_id
    assert {k: v["value"] for k, v in first["items"].items()} == {"a": "1", "b": "2"}


async def test_a_deleted_key_is_posted_without_a_value() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        await write(sc, gone="x")
        await subscribe(client, "gone")
        store = store_of(sc)
        await store.delete(
            ConfigQuery(APP_ID, store.default_group, store.default_label, ("gone",), {})
        )
        await until(lambda: len(app.delivered()) == 1)
    item = app.delivered()[0].json()["items"]["gone"]
    assert "value" not in item  # Go's omitempty, as daprd sends an empty item


async def test_unsubscribe_stops_deliveries() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        sub_id = await subscribe(client, "k")
        await write(sc, k="1")
        await until(lambda: len(app.delivered()) == 1)
        response = await client.get(f"/v1.0/configuration/{STORE}/{sub_id}/unsubscribe")
        assert response.status_code == 200
        assert response.json() == {"ok": True}
        await until(lambda: not pusher_of(sc).subscription_ids)
        await write(sc, k="2")
        await anyio.sleep(QUIET)
        again = await client.get(f"/v1.0-alpha1/configuration/{STORE}/{sub_id}/unsubscribe")
    assert len(app.delivered()) == 1
    assert again.status_code == 500
    assert again.json() == {
        "message": f"failed to unsubscribe to configuration request {sub_id}: "
        "subscription does not exist"
    }


async def test_unsubscribe_over_grpc_ends_an_http_subscription() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        sub_id = await subscribe(client, "k")
        channel = sc.channel()
        try:
            reply = await dapr_pb.DaprStub(channel).unsubscribe_configuration(
                dapr_pb.UnsubscribeConfigurationRequest(store_name=STORE, id=sub_id), timeout=5
            )
        finally:
            channel.close()
        assert reply.ok
        await until(lambda: not pusher_of(sc).subscription_ids)
        await write(sc, k="2")
        await anyio.sleep(QUIET)
    assert app.delivered() == []


async def test_unknown_id_and_unknown_store_are_daprd_errors() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (_, client):
        unknown = await client.get(f"/v1.0/configuration/{STORE}/nope/unsubscribe")
        no_store = await client.get("/v1.0/configuration/other/subscribe")
        no_store_unsub = await client.get("/v1.0/configuration/other/nope/unsubscribe")
    assert unknown.status_code == 500
    assert "ok" not in unknown.json()  # omitempty
    assert "nope" in unknown.json()["message"]
    for response in (no_store, no_store_unsub):
        assert response.status_code == 400
        assert response.json()["errorCode"] == "ERR_CONFIGURATION_STORE_NOT_FOUND"
        assert response.json()["message"] == "configuration store other not found"


async def test_without_an_app_port_subscribing_is_refused() -> None:
    async with (
        run_sidecar(config()) as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as client,
    ):
        response = await client.get(f"/v1.0/configuration/{STORE}/subscribe")
    assert response.status_code == 500
    body = response.json()
    assert body["errorCode"] == "ERR_APP_CHANNEL_NIL"
    assert body["message"].startswith("app channel is not initialized")
    assert "no app port" in body["message"]


async def test_an_app_error_is_logged_and_the_next_update_still_arrives(
    caplog: pytest.LogCaptureFixture,
) -> None:
    app = FakeHttpApp()
    path = f"/configuration/{STORE}/k"
    app.answers[path] = lambda call, n: Response(status_code=500)
    caplog.set_level(logging.ERROR, logger="layotto.actors.config_pusher")
    async with http_sidecar(app) as (sc, client):
        await subscribe(client, "k")
        await write(sc, k="1")
        await until(lambda: len(app.delivered()) == 1)
        del app.answers[path]
        await write(sc, k="2")
        await until(lambda: len(app.delivered()) == 2)
    assert [d.json()["items"]["k"]["value"] for d in app.to(path)] == ["1", "2"]
    failures = [r.getMessage() for r in caplog.records if "not delivered" in r.getMessage()]
    assert len(failures) == 1, failures
    for fragment in ("'k'", repr(STORE), "status 500"):
        assert fragment in failures[0], failures[0]


async def test_shutdown_with_an_active_subscription_leaves_no_task() -> None:
    app = FakeHttpApp()
    async with http_sidecar(app) as (sc, client):
        await subscribe(client, "k")
        await subscribe(client)
        pusher = pusher_of(sc)
        assert len(pusher.subscription_ids) == 2
        assert len(push_tasks()) == 2
        await sc.stop()
        assert pusher.subscription_ids == []
        assert push_tasks() == []
        watchers = sc.runtime.config_watchers
    assert watchers is None  # the subscription pool is closed too


# -- a Dapr gRPC app -----------------------------------------------------------------------


async def test_a_grpc_app_gets_the_update_through_on_invoke() -> None:
    app = EchoApp()
    async with (
        serve_app(app) as port,
        run_sidecar(config("dapr"), grace_period=0.5, app_port=port) as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as client,
    ):
        sub_id = await subscribe(client, "k")
        await write(sc, k="v")
        await until(lambda: len(app.received) == 1)
    (message,) = app.received
    # daprd's method, leading slash included, with the HTTP extension POST.
    assert message.method == f"/configuration/{STORE}/k"
    assert message.http_extension is not None
    assert message.http_extension.verb.name == "POST"
    assert message.content_type == "application/json"
    assert message.data is not None
    event = json.loads(message.data.value)
    assert event["id"] == sub_id
    assert event["items"]["k"]["value"] == "v"


async def test_a_layotto_app_cannot_take_updates() -> None:
    app = EchoApp()
    async with (
        serve_app(app) as port,
        run_sidecar(config("layotto"), grace_period=0.5, app_port=port) as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as client,
    ):
        response = await client.get(f"/v1.0/configuration/{STORE}/subscribe")
    assert response.status_code == 501
    assert response.json()["errorCode"] == "ERR_CONFIGURATION_SUBSCRIBE"
    assert "OnInvoke" in response.json()["message"]


# -- the pusher alone: a store watch that fails --------------------------------------------


class RecordingInvoker:
    def __init__(self) -> None:
        self.requests: list[RpcRequest] = []

    async def invoke(self, request: RpcRequest) -> RpcResponse:
        self.requests.append(request)
        return RpcResponse(http_status=200)


class OneSubscriptionService:
    """Hands out one subscription whose sending end the test holds."""

    def __init__(self) -> None:
        self.send, receive = anyio.create_memory_object_stream[list[ConfigItem]](4)
        scope = SubscriptionScope.of(STORE, APP_ID, "g", "l", [])
        self.subscription = Subscription("sub-1", scope, receive, self.send.close)

    async def subscribe(self, *args: Any, **kwargs: Any) -> Subscription:
        return self.subscription

    def inbound_policy(self, store_name: str) -> Policy:
        return NO_POLICY


async def test_a_failed_watch_ends_the_subscription_with_a_log(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = OneSubscriptionService()
    app = RecordingInvoker()
    pusher = ConfigPusher(service, app, APP_ID)  # type: ignore[arg-type]
    caplog.set_level(logging.ERROR, logger="layotto.actors.config_pusher")
    async with anyio.create_task_group() as tg:
        await tg.start(pusher.run)
        assert await pusher.subscribe(STORE, [], {}) == "sub-1"
        await service.send.send([ConfigItem("k", "v", "g", "l")])
        await until(lambda: len(app.requests) == 1)
        service.subscription.fail(ComponentError("the watch on the backend broke"))
        service.send.close()
        await until(lambda: not pusher.subscription_ids)
        await pusher.stop()
    assert app.requests[0].method == f"/configuration/{STORE}/k"
    assert app.requests[0].verb == "POST"
    assert service.subscription.closed
    (record,) = [r for r in caplog.records if "ended" in r.getMessage()]
    message = record.getMessage()
    assert "sub-1" in message
    assert "the watch on the backend broke" in message
