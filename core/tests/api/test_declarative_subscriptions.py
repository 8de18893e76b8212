"""Declarative subscriptions delivered to a Dapr AppCallback app (dapr-compat.md §2.7 step 3,
§5, §6): an app that lists nothing still gets the declared topics, routed by the rules, dead
letters included; metadata calls them DECLARATIVE; for one (pubsub, topic) the app's own
subscription wins, as in daprd. A grpclib fake app over a real socket, the sidecar in-process
on the in-memory pub/sub."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest
from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Empty
from layotto.config import RuntimeConfig
from layotto.testing.conformance.pubsub_sidecar import wait_until_ready
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import send, until
from layotto_core_test_helpers import serve_grpclib

pytestmark = pytest.mark.anyio

PUBSUB = "pubsub"


class App(dapr.AppCallbackBase):
    """Lists `subscriptions` (none by default) and records every event."""

    def __init__(self, subscriptions: list[dapr.TopicSubscription] | None = None) -> None:
        self.subscriptions = subscriptions or []
        self.events: list[dapr.TopicEventRequest] = []

    async def list_topic_subscriptions(self, message: Empty) -> dapr.ListTopicSubscriptionsResponse:
        return dapr.ListTopicSubscriptionsResponse(subscriptions=self.subscriptions)

    async def on_topic_event(self, message: dapr.TopicEventRequest) -> dapr.TopicEventResponse:
        self.events.append(message)
        return dapr.TopicEventResponse()

    def on(self, topic: str) -> list[dapr.TopicEventRequest]:
        return [e for e in self.events if e.topic == topic]


def config(*subscriptions: dict[str, Any]) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "components": [{"name": PUBSUB, "kind": "pubsub", "type": "in-memory"}],
            "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.1},
            "subscriptions": [
                {"name": f"{s['topic']}-sub", "pubsub_name": PUBSUB, **s} for s in subscriptions
            ],
        }
    )


@asynccontextmanager
async def sidecar(app: App, *subscriptions: dict[str, Any]) -> AsyncIterator[Sidecar]:
    async with (
        serve_grpclib(app) as port,
        run_sidecar(config(*subscriptions), grace_period=0.5, app_port=port) as sc,
    ):
        await wait_until_ready(sc)
        yield sc


ROUTED = {
    "topic": "orders",
    "rules": [{"match": 'event.data.kind == "big"', "path": "big-orders"}],
    "dead_letter_topic": "orders-dlq",
}


async def test_an_app_listing_nothing_gets_the_declared_topics_routed_by_the_rules() -> None:
    app = App()
    async with sidecar(app, ROUTED, {"topic": "orders-dlq", "default_path": "dlq"}) as sc:
        big = await send(sc, "orders", {"kind": "big"})
        small = await send(sc, "orders", {"kind": "small"})  # no rule takes it: dead letter
        await until(lambda: len(app.events) == 2)
    assert [(e.id, e.path) for e in app.on("orders")] == [(big, "big-orders")]
    (dead_letter,) = app.on("orders-dlq")
    assert (dead_letter.id, dead_letter.path) == (small, "dlq")


async def test_metadata_shows_declared_subscriptions_as_declarative() -> None:
    app = App([dapr.TopicSubscription(pubsub_name=PUBSUB, topic="listed")])
    async with sidecar(app, ROUTED) as sc:
        async with httpx.AsyncClient(base_url=sc.http_url, timeout=10) as http:
            body = (await http.get("/v1.0/metadata")).json()
        channel = sc.channel()
        try:
            grpc = await dapr.DaprStub(channel).get_metadata(dapr.GetMetadataRequest())
        finally:
            channel.close()
    by_topic = {s["topic"]: s for s in body["subscriptions"]}
    assert by_topic["orders"] == {
        "pubsubname": PUBSUB,
        "topic": "orders",
        "rules": [{"match": 'event.data.kind == "big"', "path": "big-orders"}],
        "deadLetterTopic": "orders-dlq",
        "type": "DECLARATIVE",
    }
    assert by_topic["listed"]["type"] == "PROGRAMMATIC"
    types = {s.topic: s.type for s in grpc.subscriptions}
    assert types["orders"] == dapr.PubsubSubscriptionType.DECLARATIVE
    assert types["listed"] == dapr.PubsubSubscriptionType.PROGRAMMATIC


async def test_the_apps_own_subscription_to_a_declared_topic_wins() -> None:
    listed = dapr.TopicSubscription(
        pubsub_name=PUBSUB, topic="orders", routes=dapr.TopicRoutes(default="from-app")
    )
    app = App([listed])
    async with sidecar(app, {"topic": "orders", "default_path": "declared"}) as sc:
        sent = await send(sc, "orders", {"kind": "any"})
        await until(lambda: len(app.events) == 1)
        async with httpx.AsyncClient(base_url=sc.http_url, timeout=10) as http:
            body = (await http.get("/v1.0/metadata")).json()
    assert [(e.id, e.path) for e in app.events] == [(sent, "from-app")]
    assert [(s["topic"], s["type"]) for s in body["subscriptions"]] == [("orders", "PROGRAMMATIC")]


async def test_without_an_app_port_declared_subscriptions_are_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with run_sidecar(config(ROUTED), grace_period=0.5) as sc:
        await wait_until_ready(sc)
        assert sc.runtime.dispatcher is None
    assert "declarative subscription(s) and no app port" in caplog.text
