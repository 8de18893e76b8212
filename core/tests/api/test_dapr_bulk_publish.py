"""Dapr's BulkPublishEvent (gRPC) and bulk publish (HTTP) on a component with a native bulk
publish (the in-memory pub/sub with `bulkPublish: true`): the component's per-entry failures
(a full queue) come back as `failedEntries`, the accepted entries are delivered, and the
component reports the capability."""

from __future__ import annotations

import json
from typing import Any

import anyio
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, pubsub_pb2
from layotto.builtin.memory_pubsub import InMemoryPubSub
from layotto.config import AppConfig, ComponentConfig, RuntimeConfig
from layotto.plugin import Kind, PubSubFeature, SubscribeRequest
from layotto.runtime import Runtime

pytestmark = pytest.mark.anyio

CONFIG = RuntimeConfig(
    app=AppConfig(id="publisher"),
    components=(
        ComponentConfig(
            name="pubsub",
            kind=Kind.PUBSUB,
            type="in-memory",
            metadata={"bulkPublish": "true", "maxQueueLength": "2"},
        ),
    ),
)


@pytest.fixture
def runtime_options() -> dict[str, Any]:
    return {"config": CONFIG}


def component(runtime: Runtime) -> InMemoryPubSub:
    pubsub = runtime.components.of_kind(Kind.PUBSUB)["pubsub"].component
    assert isinstance(pubsub, InMemoryPubSub)
    assert PubSubFeature.BULK_PUBSUB in pubsub.features
    return pubsub


def entry(entry_id: str, event: bytes) -> Any:
    return pubsub_pb2.BulkPublishRequestEntry(
        entry_id=entry_id, event=event, content_type="text/plain"
    )


async def test_grpc_failed_entries_are_the_ones_the_component_refused(
    runtime: Runtime, dapr: dapr_pb2_grpc.DaprStub
) -> None:
    pubsub = component(runtime)
    sub = await pubsub.subscribe(SubscribeRequest("bulk"))  # the group: 2 messages at most
    try:
        response = await dapr.BulkPublishEvent(
            pubsub_pb2.BulkPublishRequest(
                pubsub_name="pubsub",
                topic="bulk",
                entries=[entry(f"e{i}", f"event-{i}".encode()) for i in range(4)],
            ),
            timeout=10,
        )
        assert [f.entry_id for f in response.failedEntries] == ["e2", "e3"]
        assert all("maxQueueLength" in f.error for f in response.failedEntries)
        with anyio.fail_after(5):
            data = [json.loads((await sub.receive()).data)["data"] for _ in range(2)]
        assert data == ["event-0", "event-1"]
    finally:
        await sub.close()


async def test_http_failed_entries_and_the_capability(
    runtime: Runtime, http: httpx.AsyncClient
) -> None:
    pubsub = component(runtime)
    sub = await pubsub.subscribe(SubscribeRequest("bulk-http"))
    try:
        response = await http.post(
            "/v1.0-alpha1/publish/bulk/pubsub/bulk-http",
            json=[
                {"entryId": str(i), "event": f"event-{i}", "contentType": "text/plain"}
                for i in range(3)
            ],
        )
        assert response.status_code == 500, response.text
        body = response.json()
        assert body["errorCode"] == "ERR_PUBSUB_PUBLISH_MESSAGE"
        assert [f["entryId"] for f in body["failedEntries"]] == ["2"]
    finally:
        await sub.close()
    metadata = (await http.get("/v1.0/metadata")).json()
    (listed,) = [c for c in metadata["components"] if c["name"] == "pubsub"]
    assert "BULK_PUBSUB" in listed["capabilities"]
