"""Dapr's publish API over HTTP (`/v1.0/publish/...`, bulk at `/v1.0-alpha1/publish/bulk/...`):
what reaches the broker (the in-memory pub/sub, read through its SPI) and the answers."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from layotto.config import AppConfig, RuntimeConfig, embedded_default_components
from layotto.plugin import Kind, Message, PubSub, SubscribeRequest
from layotto.runtime import Runtime
from layotto.testing.runtime import run_sidecar
from layotto_api_test_helpers import assert_error

pytestmark = pytest.mark.anyio

CONFIG = RuntimeConfig(app=AppConfig(id="publisher"), components=embedded_default_components())


@pytest.fixture
def runtime_options() -> dict[str, Any]:
    return {"config": CONFIG}


class Broker:
    def __init__(self, runtime: Runtime) -> None:
        pubsub = runtime.components.of_kind(Kind.PUBSUB)["pubsub"].component
        assert isinstance(pubsub, PubSub)
        self._pubsub = pubsub

    @asynccontextmanager
    async def topic(self, topic: str) -> AsyncIterator[Any]:
        subscription = await self._pubsub.subscribe(SubscribeRequest(topic))
        try:
            yield subscription
        finally:
            await subscription.close()


@pytest.fixture
def broker(runtime: Runtime) -> Broker:
    return Broker(runtime)


async def receive(subscription: Any) -> Message:
    with anyio.fail_after(5):
        message: Message = await subscription.receive()
    return message


async def test_publish_wraps_json_in_a_dapr_cloudevent(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    async with broker.topic("orders") as sub:
        response = await http.post(
            "/v1.0/publish/pubsub/orders",
            content=b'{"id": 1}',
            headers={"content-type": "application/json"},
        )
        assert response.status_code == 204
        event = json.loads((await receive(sub)).data)
    assert event["source"] == "publisher"
    assert event["type"] == "com.dapr.event.sent"
    assert event["specversion"] == "1.0"
    assert event["datacontenttype"] == "application/json"
    assert event["data"] == {"id": 1}
    assert event["topic"] == "orders"
    assert event["pubsubname"] == "pubsub"
    assert event["id"]
    assert event["traceparent"]


async def test_publish_text_and_a_nested_topic(http: httpx.AsyncClient, broker: Broker) -> None:
    async with broker.topic("a/b") as sub:
        response = await http.post(
            "/v1.0/publish/pubsub/a/b", content=b"hi", headers={"content-type": "text/plain"}
        )
        assert response.status_code == 204
        event = json.loads((await receive(sub)).data)
    assert event["data"] == "hi"
    assert event["topic"] == "a/b"


async def test_publish_metadata_comes_from_the_query(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    """`metadata.rawPayload=true` sends the body as it is; `metadata.cloudevent.id` sets the
    event id; other keys reach the broker message."""
    async with broker.topic("raw") as sub:
        response = await http.post(
            "/v1.0/publish/pubsub/raw",
            params={"metadata.rawPayload": "true", "metadata.cloudevent.id": "e-1"},
            content=b"\x00bytes",
        )
        assert response.status_code == 204
        message = await receive(sub)
    assert message.data == b"\x00bytes"
    assert message.metadata["cloudevent.id"] == "e-1"


async def test_publish_traceparent_reaches_the_event(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    trace = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with broker.topic("traced") as sub:
        await http.post("/v1.0/publish/pubsub/traced", content=b"x", headers={"traceparent": trace})
        event = json.loads((await receive(sub)).data)
    assert event["traceparent"] == trace


async def test_publish_errors(http: httpx.AsyncClient) -> None:
    assert_error(await http.post("/v1.0/publish/nope/t", content=b"x"), 404, "ERR_PUBSUB_NOT_FOUND")
    assert_error(await http.post("/v1.0/publish/pubsub/", content=b"x"), 404, "ERR_TOPIC_EMPTY")
    bad_ttl = await http.post(
        "/v1.0/publish/pubsub/t", content=b"x", params={"metadata.ttlInSeconds": "soon"}
    )
    assert bad_ttl.status_code == 400
    assert "ttlInSeconds" in bad_ttl.json()["message"]


async def test_no_pubsub_configured_is_400() -> None:
    async with (
        run_sidecar(RuntimeConfig()) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        response = await http.post("/v1.0/publish/pubsub/t", content=b"x")
        assert_error(response, 400, "ERR_PUBSUB_NOT_CONFIGURED")


# -- bulk --------------------------------------------------------------------------------------


async def test_bulk_publish_converts_each_entry_by_content_type(
    http: httpx.AsyncClient, broker: Broker
) -> None:
    async with broker.topic("bulk") as sub:
        response = await http.post(
            "/v1.0-alpha1/publish/bulk/pubsub/bulk",
            json=[
                {"entryId": "1", "event": {"n": 1}, "contentType": "application/json"},
                {"entryId": "2", "event": "text", "contentType": "text/plain"},
                {
                    "entryId": "3",
                    "event": base64.b64encode(b"\x01\x02").decode(),
                    "contentType": "application/octet-stream",
                    "metadata": {"cloudevent.id": "third"},
                },
            ],
        )
        assert response.status_code == 204, response.text
        events = [json.loads((await receive(sub)).data) for _ in range(3)]
    assert events[0]["data"] == {"n": 1}
    assert events[1]["data"] == "text"
    assert events[2]["data_base64"] == base64.b64encode(b"\x01\x02").decode()
    assert events[2]["id"] == "third"
    assert {e["source"] for e in events} == {"publisher"}


async def test_bulk_publish_lists_failed_entries(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1.0/publish/bulk/pubsub/bulk-fail",
        json=[
            {"entryId": "ok", "event": "x", "contentType": "text/plain"},
            {
                "entryId": "bad",
                "event": "x",
                "contentType": "text/plain",
                "metadata": {"ttlInSeconds": "never"},
            },
        ],
    )
    assert response.status_code == 500
    body = response.json()
    assert body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
    assert [f["entryId"] for f in body["failedEntries"]] == ["bad"]


@pytest.mark.parametrize(
    "entries",
    [
        [{"event": "x", "contentType": "text/plain"}],
        [{"entryId": "a", "event": "x"}, {"entryId": "a", "event": "y"}],
        [{"entryId": "a", "event": {"not": "text"}, "contentType": "text/plain"}],
        [{"entryId": "a", "event": "%%%", "contentType": "application/octet-stream"}],
    ],
)
async def test_bulk_publish_rejects_malformed_entries(
    http: httpx.AsyncClient, entries: list[dict[str, Any]]
) -> None:
    response = await http.post("/v1.0-alpha1/publish/bulk/pubsub/t", json=entries)
    assert_error(response, 400, "ERR_PUBSUB_EVENTS_SER")
