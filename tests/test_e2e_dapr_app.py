"""The sidecar driving an app built with the official Dapr SDK (`dapr.ext.grpc.App`,
dapr[grpc]==1.19.0), both as real processes (dapr-compat.md §2.7, §3.2).

The app (source below, run as a subprocess) prints one JSON line per thing it is asked, so
the test sees exactly what the SDK handed to its handlers. It:

- fails its first 3 health checks (the sidecar must wait before subscribing);
- `orders`: answers `TopicEventResponse('retry')` the first time it sees an event;
- `routed`: two rule-routed handlers (`event.type == "widget"`, `event.data.kind == "gadget"`);
- `doomed`: always retries, `maxRetries` 1, dead-letter topic `doomed-dlq`;
- `gone`: listed, but its handler is removed after registration, so the SDK answers
  UNIMPLEMENTED, as for any topic it has no handler for;
- `batch`: bulk subscribe switched on in the registered subscription (the SDK's decorator has
  no option for it, but it serves OnBulkTopicEvent), retrying `"again"` once;
- `echo`: an `@app.method` reached through the sidecar's InvokeService for its own app id.

Events are published through the Layotto gRPC PublishEvent.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from layotto_e2e_support import ScriptApp, Sidecar, grpclib_app, script_app

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
APP_ID = "dapr-sdk-app"
APP_TOKEN = "app-token-123"
PUBSUB = "pubsub"
WAIT = 15.0

APP_SOURCE = r"""
import json
import sys
import threading
import time

from dapr.clients.grpc._request import InvokeMethodRequest
from dapr.clients.grpc._response import TopicEventResponse
from dapr.ext.grpc import App, Rule, SubscriptionMessage
from dapr.ext.grpc._servicer import _CallbackServicer

lock = threading.Lock()
started = time.monotonic()
seen = {}


def record(kind, **fields):
    with lock:
        print(json.dumps({"kind": kind, "at": time.monotonic() - started, **fields}), flush=True)


def recorded(name):
    # Record calls to a servicer method; patched on the class before App() binds it.
    original = getattr(_CallbackServicer, name)

    def wrapper(self, request, context):
        fields = {}
        if name == "OnBulkTopicEvent":
            fields = {"topic": request.topic, "size": len(request.entries)}
        record(name, **fields)
        return original(self, request, context)

    setattr(_CallbackServicer, name, wrapper)


for method in ("ListTopicSubscriptions", "OnTopicEvent", "OnBulkTopicEvent"):
    recorded(method)

app = App()


health_checks = []


def healthy():
    health_checks.append(1)
    ok = len(health_checks) > 3
    record("HealthCheck", ok=ok)
    if not ok:
        raise RuntimeError("still starting")


app.register_health_check(healthy)


def attempt(event):
    with lock:
        seen[event.id()] = seen.get(event.id(), 0) + 1
        return seen[event.id()]


def event_record(handler, event, n):
    record(
        "event",
        handler=handler,
        id=event.id(),
        topic=event.topic(),
        type=event.type(),
        attempt=n,
        data=event.raw_data().decode("utf-8", "replace"),
        extensions=event.extensions(),
        metadata=event.metadata(),
    )


@app.subscribe(PUBSUB, "orders")
def orders(event: SubscriptionMessage):
    n = attempt(event)
    event_record("orders", event, n)
    return TopicEventResponse("retry") if n == 1 else None


@app.subscribe(PUBSUB, "routed", rule=Rule('event.type == "widget"', 1))
def widgets(event: SubscriptionMessage):
    event_record("widgets", event, attempt(event))


@app.subscribe(PUBSUB, "routed", rule=Rule('event.data.kind == "gadget"', 2))
def gadgets(event: SubscriptionMessage):
    event_record("gadgets", event, attempt(event))


@app.subscribe(PUBSUB, "doomed", dead_letter_topic="doomed-dlq", metadata={"maxRetries": "1"})
def doomed(event: SubscriptionMessage):
    event_record("doomed", event, attempt(event))
    return TopicEventResponse("retry")


@app.subscribe(PUBSUB, "doomed-dlq")
def doomed_dlq(event: SubscriptionMessage):
    event_record("doomed-dlq", event, attempt(event))


@app.subscribe(PUBSUB, "gone")
def gone(event: SubscriptionMessage):
    event_record("gone", event, attempt(event))


@app.subscribe(PUBSUB, "batch")
def batch(event: SubscriptionMessage):
    n = attempt(event)
    event_record("batch", event, n)
    if event.data() == "again" and n == 1:
        return TopicEventResponse("retry")
    return None


servicer = app._servicer
del servicer._topic_map[PUBSUB + ":gone:"]
del servicer._route_map[(PUBSUB, "gone")]
for sub in servicer._registered_topics:
    if sub.topic == "batch":
        sub.bulk_subscribe.enabled = True
        sub.bulk_subscribe.max_messages_count = 3
        sub.bulk_subscribe.max_await_duration_ms = 500


@app.method("echo")
def echo(request: InvokeMethodRequest):
    record("invoke", text=request.text(), metadata=request.metadata)
    return json.dumps({"echo": request.text()})


record("starting")
app.run(int(sys.argv[1]), listen_address="127.0.0.1")
""".replace("PUBSUB", repr(PUBSUB))


@pytest.fixture(scope="module")
def sdk_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptApp]:
    with script_app(
        APP_SOURCE, tmp_path_factory.mktemp("dapr-app") / "dapr_sdk_app.py", wait=WAIT
    ) as app:
        yield app


@pytest.fixture(scope="module")
def sidecar(
    sdk_app: ScriptApp,
    module_sidecar_factory: SidecarFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Sidecar:
    config = tmp_path_factory.mktemp("dapr-app-config") / "layotto.json"
    config.write_text(
        json.dumps(
            {
                "app": {"api_token": APP_TOKEN},
                "pubsub": {"retry_initial_interval": 0.05, "retry_max_interval": 0.2},
                "components": [{"name": PUBSUB, "type": "pubsub.in-memory"}],
            }
        )
    )
    return module_sidecar_factory(
        ["--config", str(config), "--app-id", APP_ID, "--app-port", str(sdk_app.port)]
    )


def publish(sidecar: Sidecar, pb2: Any, pb2_grpc: Any, topic: str, data: Any, **meta: str) -> str:
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    _, call = stub.PublishEvent.with_call(
        pb2.PublishEventRequest(
            pubsub_name=PUBSUB,
            topic=topic,
            data=json.dumps(data).encode(),
            data_content_type="application/json",
            metadata=meta,
        ),
        timeout=10,
    )
    return str(dict(call.initial_metadata())["message-id"])


def info(sidecar: Sidecar, topic: str) -> dict[str, Any]:
    subscriptions = sidecar.get("/actuator/info").json()["subscriptions"]["pubsub"]
    (entry,) = [s for s in subscriptions if s["topic"] == topic]
    return dict(entry)


# -- startup -------------------------------------------------------------------------------


def test_the_sdk_app_is_detected_and_subscribed_after_its_health_check(
    sidecar: Sidecar, sdk_app: ScriptApp
) -> None:
    detected = [e for e in sidecar.stderr.json_events() if e.get("app_protocol") == "dapr"]
    assert any("Dapr's AppCallback" in e["msg"] for e in detected), sidecar.log()
    health = sdk_app.records("HealthCheck")
    lists = sdk_app.records("ListTopicSubscriptions")
    assert lists, sdk_app.log()
    first_ok = next(r for r in health if r["ok"])
    assert any(not r["ok"] for r in health)  # it was asked while still starting
    assert lists[0]["at"] >= first_ok["at"]  # and subscribed only after it said healthy
    readiness = sidecar.get("/actuator/health/readiness").json()["components"]
    assert readiness["app_health"]["status"] == "UP"
    assert readiness["app_subscriptions"]["details"]["protocol"] == "dapr"


# -- pub/sub -------------------------------------------------------------------------------


def test_retry_then_success_with_extensions_and_the_app_token(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    sent = publish(sidecar, pb2, pb2_grpc, "orders", {"order": 1}, **{"x-tenant": "t1"})
    sdk_app.wait(lambda: len(sdk_app.records("event", id=sent)) == 2, "the redelivery")
    time.sleep(0.5)  # answered SUCCESS the second time: no third delivery
    events = sdk_app.records("event", id=sent)
    assert [e["attempt"] for e in events] == [1, 2]
    first = events[0]
    assert first["handler"] == "orders"
    assert json.loads(first["data"]) == {"order": 1}
    assert first["extensions"]["topic"] == "orders"
    assert first["extensions"]["pubsubname"] == PUBSUB
    assert "traceparent" in first["extensions"]
    assert first["metadata"]["dapr-api-token"] == APP_TOKEN
    assert first["metadata"]["x-tenant"] == "t1"
    assert info(sidecar, "orders")["stats"]["retried"] == 1


def test_rules_route_to_the_handler_and_unmatched_events_are_not_delivered(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    widget = publish(
        sidecar, pb2, pb2_grpc, "routed", {"kind": "x"}, **{"cloudevent.type": "widget"}
    )
    gadget = publish(sidecar, pb2, pb2_grpc, "routed", {"kind": "gadget"})
    neither = publish(sidecar, pb2, pb2_grpc, "routed", {"kind": "other"})
    sdk_app.wait(
        lambda: (
            bool(sdk_app.records("event", id=widget)) and bool(sdk_app.records("event", id=gadget))
        ),
        "the routed events",
    )
    deadline = time.monotonic() + WAIT
    while info(sidecar, "routed")["stats"]["dropped"] < 1:
        assert time.monotonic() < deadline, sidecar.log()
        time.sleep(0.05)
    assert [e["handler"] for e in sdk_app.records("event", id=widget)] == ["widgets"]
    assert [e["handler"] for e in sdk_app.records("event", id=gadget)] == ["gadgets"]
    assert sdk_app.records("event", id=neither) == []
    assert info(sidecar, "routed")["rules"] == [
        {"match": 'event.type == "widget"', "path": "widgets"},
        {"match": 'event.data.kind == "gadget"', "path": "gadgets"},
    ]


def test_unimplemented_for_a_topic_without_handler_is_a_drop(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    before = len(sdk_app.records("OnTopicEvent"))
    publish(sidecar, pb2, pb2_grpc, "gone", 1)
    deadline = time.monotonic() + WAIT
    while info(sidecar, "gone")["stats"]["dropped"] < 1:
        assert time.monotonic() < deadline, sidecar.log()
        time.sleep(0.05)
    time.sleep(0.5)  # a redelivery would come within this
    assert sdk_app.records("event", handler="gone") == []
    assert len(sdk_app.records("OnTopicEvent")) == before + 1  # asked once, not again


def test_dead_letter_after_max_retries(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    sent = publish(sidecar, pb2, pb2_grpc, "doomed", {"n": 1})
    sdk_app.wait(lambda: bool(sdk_app.records("event", handler="doomed-dlq", id=sent)), "DLQ")
    assert [e["attempt"] for e in sdk_app.records("event", handler="doomed", id=sent)] == [1, 2]
    (dead,) = sdk_app.records("event", handler="doomed-dlq", id=sent)
    assert json.loads(dead["data"]) == {"n": 1}
    assert info(sidecar, "doomed")["deadLetterTopic"] == "doomed-dlq"
    metadata = sidecar.get("/v1.0/metadata").json()
    listed = {s["topic"]: s for s in metadata["subscriptions"]}
    assert listed["doomed"]["deadLetterTopic"] == "doomed-dlq"
    assert listed["doomed"]["type"] == "PROGRAMMATIC"


def test_bulk_subscribe_batches_and_retries_one_entry(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    sent: dict[str, str] = {}

    def send(data: str) -> None:
        sent[data] = publish(sidecar, pb2, pb2_grpc, "batch", data)

    threads = [threading.Thread(target=send, args=(d,)) for d in ("a", "b", "again")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(10)
    sdk_app.wait(
        lambda: len(sdk_app.records("event", handler="batch")) >= 4, "the batch and its retry"
    )
    time.sleep(0.8)  # answered SUCCESS the second time: nothing more
    batches = sdk_app.records("OnBulkTopicEvent", topic="batch")
    assert batches[0]["size"] == 3, sdk_app.log()
    assert [b["size"] for b in batches[1:]] == [1]  # only the retried entry came again
    attempts = {d: [e["attempt"] for e in sdk_app.records("event", id=i)] for d, i in sent.items()}
    assert attempts == {"a": [1], "b": [1], "again": [1, 2]}
    assert not [r for r in sdk_app.records("OnTopicEvent") if r.get("topic") == "batch"]
    assert info(sidecar, "batch")["stats"]["delivered"] == 3


# -- invocation ----------------------------------------------------------------------------


def invoke_echo(sidecar: Sidecar, pb2: Any, pb2_grpc: Any, text: str) -> Any:
    message = pb2.CommonInvokeRequest(method="echo", content_type="text/plain")
    message.data.value = text.encode()
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    return stub.InvokeService(pb2.InvokeServiceRequest(id=APP_ID, message=message), timeout=10)


def test_on_invoke_through_invoke_service_for_the_own_app_id(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    response = invoke_echo(sidecar, pb2, pb2_grpc, "hello")
    assert json.loads(response.data.value) == {"echo": "hello"}
    # The app logs the call before answering; its stdout is read by another thread.
    sdk_app.wait(lambda: bool(sdk_app.records("invoke", text="hello")), "the invoke record")


def test_the_app_token_reaches_on_invoke(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    invoke_echo(sidecar, pb2, pb2_grpc, "token?")
    sdk_app.wait(lambda: bool(sdk_app.records("invoke", text="token?")), "the invoke record")
    (call,) = sdk_app.records("invoke", text="token?")
    assert call["metadata"].get("dapr-api-token") == [APP_TOKEN]


# -- a Layotto app -------------------------------------------------------------------------


def test_a_layotto_app_is_detected_and_gets_events(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any
) -> None:
    from layotto.services.cloudevents import EventStatus, TopicEvent
    from layotto.testing.pubsub import CallbackApp, Route

    received: list[TopicEvent] = []

    async def handler(event: TopicEvent) -> EventStatus:
        received.append(event)
        return EventStatus.SUCCESS

    app = CallbackApp([Route(PUBSUB, "layotto-topic", handler)])
    with grpclib_app(app) as port:
        sidecar = sidecar_factory(["--app-port", str(port)])
        try:
            sent = publish(sidecar, pb2, pb2_grpc, "layotto-topic", {"x": 1})
            deadline = time.monotonic() + WAIT
            while not received:
                assert time.monotonic() < deadline, sidecar.log()
                time.sleep(0.05)
            assert received[0].id == sent
            detected = [
                e for e in sidecar.stderr.json_events() if e.get("app_protocol") == "layotto"
            ]
            assert any("Layotto's AppCallback" in e["msg"] for e in detected), sidecar.log()
        finally:
            sidecar.kill()  # before the app goes
