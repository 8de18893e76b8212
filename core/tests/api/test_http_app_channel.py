"""The sidecar driving an app over Dapr's HTTP app channel (`app.protocol: http`): programmatic
subscriptions from `GET /dapr/subscribe`, CloudEvent deliveries and the answers' statuses, bulk
deliveries, invocation of the sidecar's own app id, input bindings (`OPTIONS` then `POST`) and
the `GET /healthz` health checks; a starlette fake app served by uvicorn over a real socket,
the sidecar in-process on the in-memory pub/sub."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from layotto.actors import app_health
from layotto.actors.pubsub_dispatcher import APP_INDICATOR
from layotto.api.binding_callback import BindingNotProcessed
from layotto.api.http_app_channel import parse_subscriptions
from layotto.api.http_app_connection import HttpAppConnection
from layotto.api.http_binding_callback import HttpBindingCallbackClient
from layotto.config import RuntimeConfig
from layotto.health import Probe
from layotto.plugin import BindingEvent, HealthStatus
from layotto.testing.conformance.pubsub_sidecar import wait_until_ready
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import Answer, Call, FakeHttpApp, send, until
from layotto_core_test_helpers import serve_asgi
from starlette.applications import Starlette
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.anyio

PUBSUB = "pubsub"
TOKEN = "app-secret"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- the fake app --------------------------------------------------------------------------


@asynccontextmanager
async def serving(app: FakeHttpApp) -> AsyncIterator[int]:
    async with serve_asgi(app.asgi) as port:
        yield port


def sidecar_config(components: list[dict[str, Any]] | None = None, **app: Any) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "components": [
                {"name": PUBSUB, "kind": "pubsub", "type": "in-memory"},
                *(components or []),
            ],
            "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.1},
            "app": {"protocol": "http", **app},
        }
    )


@asynccontextmanager
async def sidecar_for(
    app: FakeHttpApp, components: list[dict[str, Any]] | None = None, **app_config: Any
) -> AsyncIterator[Sidecar]:
    async with (
        serving(app) as port,
        run_sidecar(
            sidecar_config(components, **app_config), grace_period=0.5, app_port=port
        ) as sc,
    ):
        yield sc


def sub(topic: str, **fields: Any) -> dict[str, Any]:
    return {"pubsubname": PUBSUB, "topic": topic, **fields}


def stats(sidecar: Sidecar, topic: str) -> dict[str, Any]:
    dispatcher = sidecar.runtime.dispatcher
    assert dispatcher is not None
    (entry,) = [s for s in dispatcher.info() if s["topic"] == topic]
    return dict(entry["stats"])


def status_answer(*statuses: dict[str, Any] | int) -> Answer:
    """The nth POST gets the nth answer (a JSON body or a bare status), then an empty 200."""

    def answer(call: Call, nth: int) -> Response:
        if nth > len(statuses):
            return Response(status_code=200)
        chosen = statuses[nth - 1]
        if isinstance(chosen, int):
            return Response(b"boom", status_code=chosen)
        return JSONResponse(chosen)

    return answer


# -- subscriptions -------------------------------------------------------------------------


async def test_route_and_routes_subscriptions_are_listed_and_routed() -> None:
    app = FakeHttpApp(
        [
            sub("plain", route="/plain", metadata={"k": "v"}),
            sub(
                "routed",
                routes={
                    "rules": [{"match": 'event.data.kind == "x"', "path": "/routed/x"}],
                    "default": "/routed/other",
                },
                deadLetterTopic="dead",
            ),
        ]
    )
    async with sidecar_for(app) as sc:
        await wait_until_ready(sc)
        await send(sc, "plain", {"n": 1})
        await send(sc, "routed", {"kind": "x"})
        await send(sc, "routed", {"kind": "y"})
        await app.wait(lambda: sum(app.posted.values()) == 3)
        dispatcher = sc.runtime.dispatcher
        assert dispatcher is not None
        info = {s["topic"]: s for s in dispatcher.info()}
        indicator = sc.runtime.health.get(APP_INDICATOR)
        metadata = sc.runtime.dapr_metadata()
    assert app.posted == {"/plain": 1, "/routed/x": 1, "/routed/other": 1}
    assert info["routed"]["rules"] == [
        {"match": 'event.data.kind == "x"', "path": "/routed/x"},
        {"path": "/routed/other"},
    ]
    assert info["routed"]["deadLetterTopic"] == "dead"
    assert info["plain"]["rules"] == [{"path": "/plain"}]
    assert indicator is not None
    assert indicator.details["protocol"] == "http"
    assert metadata["appConnectionProperties"]["protocol"] == "http"
    assert "health" not in metadata["appConnectionProperties"]  # no /healthz: not offered


def test_parsing_the_subscribe_answer() -> None:
    (listed,) = parse_subscriptions(
        json.dumps(
            [
                sub("t", route="/r", bulkSubscribe={"enabled": True, "maxMessagesCount": 5}),
                {"topic": "no-pubsub"},
            ]
        ).encode()
    )
    assert (listed.pubsub_name, listed.topic, listed.default_path) == (PUBSUB, "t", "/r")
    assert listed.bulk is not None
    assert (listed.bulk.max_messages, listed.bulk.max_await_seconds) == (5, 1.0)
    assert parse_subscriptions(b"") == []
    assert parse_subscriptions(b"{not json") == []
    assert parse_subscriptions(b'{"a": 1}') == []


async def test_no_subscriptions_when_the_app_answers_404() -> None:
    app = FakeHttpApp(None)
    async with sidecar_for(app) as sc:
        await wait_until_ready(sc)
        dispatcher = sc.runtime.dispatcher
        assert dispatcher is not None
        assert dispatcher.info() == []
    assert len(app.to("/dapr/subscribe", "GET")) == 1


# -- deliveries ----------------------------------------------------------------------------


async def test_the_cloudevent_body_and_headers_carry_the_token_and_metadata() -> None:
    app = FakeHttpApp([sub("orders", route="orders")])
    async with sidecar_for(app, api_token=TOKEN) as sc:
        await wait_until_ready(sc)
        sent = await send(sc, "orders", {"a": 1}, **{"x-order": "7"})
        await app.wait(lambda: app.posted["/orders"] == 1)
    (delivery,) = app.to("/orders")
    assert delivery.headers["content-type"] == "application/cloudevents+json"
    assert delivery.headers["dapr-api-token"] == TOKEN
    assert delivery.headers["x-order"] == "7"
    body = delivery.json()
    assert body["id"] == sent
    assert body["data"] == {"a": 1}
    assert body["datacontenttype"] == "application/json"
    assert body["specversion"] == "1.0"
    assert (body["topic"], body["pubsubname"]) == ("orders", PUBSUB)
    assert body["type"] == "com.runtime.event.sent"  # the envelope as published (Layotto's API)
    assert delivery.headers["traceparent"] == body["traceparent"]
    assert all(c.headers.get("dapr-api-token") == TOKEN for c in app.calls)


async def test_each_status_answer_is_settled_as_daprd_does() -> None:
    topics = {
        "empty": status_answer(),
        "success": status_answer({"status": "SUCCESS"}),
        "retry": status_answer({"status": "RETRY"}),
        "drop": status_answer({"status": "DROP"}),
        "unknown": status_answer({"status": "MAYBE"}),
        "gone": status_answer(404),
        "broken": status_answer(500),
        "text": lambda call, nth: Response(b"ok, thanks", status_code=201),
    }
    app = FakeHttpApp([sub(t, route=f"/{t}") for t in topics])
    app.answers = {f"/{t}": answer for t, answer in topics.items()}
    async with sidecar_for(app) as sc:
        await wait_until_ready(sc)
        for topic in topics:
            await send(sc, topic, topic)
        # Retried ones come twice: 8 first deliveries, 3 more.
        await app.wait(lambda: sum(app.posted.values()) >= 11)
        await anyio.sleep(0.3)  # any further redelivery would come within this
        settled = {t: stats(sc, t) for t in topics}
    assert app.posted == {
        "/empty": 1,
        "/success": 1,
        "/retry": 2,
        "/drop": 1,
        "/unknown": 2,
        "/gone": 1,
        "/broken": 2,
        "/text": 1,
    }
    assert settled["drop"]["dropped"] == 1
    assert settled["gone"]["dropped"] == 1
    for topic in ("empty", "success", "retry", "unknown", "broken", "text"):
        assert settled[topic]["delivered"] == 1, topic


async def test_bulk_subscription_posts_one_batch_and_settles_each_entry() -> None:
    seen: Counter[str] = Counter()

    def answer(call: Call, nth: int) -> Response:
        body = call.json()
        statuses = []
        for entry in body["entries"]:
            event = entry["event"]
            seen[event["id"]] += 1
            first_of_two = event["data"] == 2 and seen[event["id"]] == 1
            statuses.append(
                {"entryId": entry["entryId"], "status": "RETRY" if first_of_two else "SUCCESS"}
            )
        return JSONResponse({"statuses": statuses})

    app = FakeHttpApp(
        [
            sub(
                "bulk",
                route="/bulk",
                bulkSubscribe={"enabled": True, "maxMessagesCount": 2, "maxAwaitDurationMs": 50},
            )
        ]
    )
    app.answers["/bulk"] = answer
    async with sidecar_for(app) as sc:
        await wait_until_ready(sc)
        one = await send(sc, "bulk", 1)
        two = await send(sc, "bulk", 2)
        await app.wait(lambda: seen[two] == 2)
        await anyio.sleep(0.2)
    assert seen == {one: 1, two: 2}
    first = app.to("/bulk")[0].json()
    assert (first["pubsubname"], first["topic"]) == (PUBSUB, "bulk")
    assert first["type"] == "com.dapr.event.sent.bulk"
    assert first["entries"][0]["contentType"] == "application/cloudevents+json"


# -- invocation of the own app -------------------------------------------------------------


def _echo(call: Call, nth: int) -> Response:
    return JSONResponse(
        {
            "verb": call.method,
            "query": call.query,
            "headers": call.headers,
            "body": call.body.decode(),
        },
        headers={"x-answered-by": "app"},
    )


async def test_the_own_app_is_invoked_over_http() -> None:
    app = FakeHttpApp([])
    app.answers["/orders/7"] = _echo
    app.answers["/teapot"] = lambda call, nth: Response(b"short and stout", status_code=418)
    async with (
        sidecar_for(app, id="me", api_token=TOKEN) as sc,
        httpx.AsyncClient(base_url=sc.http_url, timeout=10) as http,
    ):
        await wait_until_ready(sc)
        answer = await http.put(
            "/v1.0/invoke/me/method/orders/7?a=1",
            content=b'{"qty": 1}',
            headers={"content-type": "application/json", "x-trace": "t1"},
        )
        refused = await http.post("/v1.0/invoke/me/method/teapot", content=b"x")
    assert answer.status_code == 200, answer.text
    assert answer.headers["x-answered-by"] == "app"
    got = answer.json()
    assert (got["verb"], got["query"], got["body"]) == ("PUT", "a=1", '{"qty": 1}')
    assert got["headers"]["x-trace"] == "t1"
    assert got["headers"]["content-type"] == "application/json"
    assert got["headers"]["dapr-api-token"] == TOKEN
    # A non-2xx answer reaches the caller as the app gave it.
    assert refused.status_code == 418
    assert refused.content == b"short and stout"


# -- input bindings ------------------------------------------------------------------------


async def test_input_bindings_are_offered_with_options_and_posted() -> None:
    cron = {"kind": "bindings", "type": "cron", "metadata": {"schedule": "@every 1s"}}
    app = FakeHttpApp([])
    app.bindings = {"tick"}
    async with sidecar_for(
        app, [{"name": "tick", **cron}, {"name": "unwanted", **cron}], api_token=TOKEN
    ) as sc:
        await wait_until_ready(sc)
        await app.wait(lambda: app.posted["/tick"] >= 1)
        dispatcher = sc.runtime.binding_dispatcher
        assert dispatcher is not None
        assert dispatcher.reading == ["tick"]
    assert {c.path for c in app.calls if c.method == "OPTIONS"} == {"/tick", "/unwanted"}
    assert app.to("/unwanted") == []
    event = app.to("/tick")[0]
    assert event.headers["dapr-api-token"] == TOKEN
    assert event.headers["readtimeutc"].endswith("+0000 UTC")
    assert event.headers["content-type"] == "application/json"


async def test_binding_answers_405_handles_and_non_2xx_is_not_processed() -> None:
    app = FakeHttpApp([])
    app.answers["/ok"] = lambda call, nth: Response(b"reply", status_code=200)
    app.answers["/fails"] = lambda call, nth: Response(status_code=500)
    only_post = Starlette(routes=[Route("/posted", lambda r: Response(), methods=["POST"])])
    async with serving(app) as port:
        connection = HttpAppConnection("127.0.0.1", port, api_token=TOKEN)
        try:
            app.bindings = {"ok", "fails"}
            client = HttpBindingCallbackClient(connection, ["ok", "fails", "missing"])
            assert await client.list_input_bindings() == ["ok", "fails"]
            reply = await client.on_binding_event("ok", BindingEvent(b"data", {"x-k": "v"}))
            assert reply.data == b"reply"
            with pytest.raises(BindingNotProcessed):
                await client.on_binding_event("fails", BindingEvent(b"data"))
        finally:
            await connection.aclose()
    (posted,) = app.to("/ok")
    assert (posted.body, posted.headers["x-k"]) == (b"data", "v")
    # A route that only takes POST answers OPTIONS with 405: daprd counts it as handled.
    async with serve_asgi(only_post) as port:
        connection = HttpAppConnection("127.0.0.1", port)
        try:
            client = HttpBindingCallbackClient(connection, ["posted", "nothing"])
            assert await client.list_input_bindings() == ["posted"]
        finally:
            await connection.aclose()


# -- health --------------------------------------------------------------------------------


async def test_healthz_gates_subscribing_and_pauses_deliveries(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(app_health, "PROBE_INTERVAL_SECONDS", 0.05)
    monkeypatch.setattr(app_health, "STARTUP_PROBE_INTERVAL_SECONDS", 0.05)
    app = FakeHttpApp([sub("h", route="/h")])
    app.health = 503
    async with sidecar_for(app, api_token=TOKEN) as sc:
        registry = sc.runtime.health
        await app.wait(lambda: len(app.to("/healthz", "GET")) >= 3)
        assert app.to("/dapr/subscribe", "GET") == []  # only its health asked
        assert registry.status(Probe.READINESS) is HealthStatus.INIT

        app.health = 200
        await wait_until_ready(sc)
        assert len(app.to("/dapr/subscribe", "GET")) == 1
        props = sc.runtime.dapr_metadata()["appConnectionProperties"]
        assert props["health"]["healthCheckPath"] == "/healthz"
        await send(sc, "h", 1)
        await app.wait(lambda: app.posted["/h"] == 1)

        app.health = 500
        await until(lambda: registry.status(Probe.READINESS) is HealthStatus.DOWN)
        await send(sc, "h", 2)
        await anyio.sleep(0.3)
        assert app.posted["/h"] == 1  # paused

        app.health = 200
        await app.wait(lambda: app.posted["/h"] == 2)
        await until(lambda: registry.status(Probe.READINESS) is HealthStatus.UP)
    checks = app.to("/healthz", "GET")
    assert all(c.headers.get("dapr-api-token") == TOKEN for c in checks)
