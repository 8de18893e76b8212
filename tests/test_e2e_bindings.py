"""Bindings end to end, real processes only: `python -m layotto run` with a Kafka binding used
both ways, and an app built with the official Dapr SDK (`dapr.ext.grpc.App`,
dapr[grpc]==1.19.0) as a subprocess (dapr-compat.md 1.4, 2.7, 3.6).

Records are produced through the Layotto gRPC `InvokeBinding` (operation `create`) and come back
to the app through the same binding's input side (`ListInputBindings`, `OnBindingEvent`). The
app's handler raises the first time it sees a `flaky` record: that is "not processed", so the
record is delivered again. The app also lists a binding that is not configured.

The broker is librdkafka's mock cluster (`layotto_kafka.testing`); the test skips when it is
not installed (or fails under LAYOTTO_REQUIRE_INTEGRATION=1).
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from layotto.testing import skip_or_fail
from layotto_e2e_support import ScriptApp, Sidecar, script_app

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
BINDING = "events"
APP_TOKEN = "binding-app-token"
WAIT = 30.0

APP_SOURCE = r"""
import json
import sys
import threading
import time

from dapr.ext.grpc import App

lock = threading.Lock()
seen = {}
app = App()


def record(kind, **fields):
    with lock:
        print(json.dumps({"kind": kind, **fields}), flush=True)


def token_of(metadata):
    # The SDK groups the call's gRPC metadata: name -> [values].
    value = dict(metadata).get("dapr-api-token")
    return value[0] if isinstance(value, (list, tuple)) else value


@app.binding(BINDING)
def on_event(request):
    text = request.text()
    with lock:
        seen[text] = seen.get(text, 0) + 1
        attempt = seen[text]
    record(
        "event",
        data=text,
        attempt=attempt,
        binding_metadata=dict(request.binding_metadata),
        token=token_of(request.metadata),
    )
    if text.startswith("flaky") and attempt == 1:
        raise RuntimeError("not this time")


@app.binding("nowhere")
def nowhere(request):
    record("nowhere", data=request.text())


record("starting")
app.run(int(sys.argv[1]), listen_address="127.0.0.1")
""".replace("BINDING", repr(BINDING))


@pytest.fixture(scope="module")
def kafka() -> Iterator[str]:
    """A private mock Kafka cluster (one broker) for this module: its bootstrap address."""
    from layotto_kafka.testing import KafkaBackendMissing, MockKafkaCluster

    try:
        cluster = MockKafkaCluster(1).start()
    except KafkaBackendMissing as err:
        skip_or_fail(f"librdkafka's mock cluster is not available: {err}")
    try:
        yield cluster.bootstrap
    finally:
        cluster.stop()


@pytest.fixture(scope="module")
def sdk_app(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ScriptApp]:
    with script_app(
        APP_SOURCE, tmp_path_factory.mktemp("dapr-binding-app") / "dapr_binding_app.py", wait=WAIT
    ) as app:
        yield app


@pytest.fixture(scope="module")
def sidecar(
    kafka: str,
    sdk_app: ScriptApp,
    module_sidecar_factory: SidecarFactory,
    tmp_path_factory: pytest.TempPathFactory,
) -> Sidecar:
    topic = f"e2e-{uuid.uuid4().hex[:10]}"
    config = tmp_path_factory.mktemp("bindings-config") / "layotto.json"
    config.write_text(
        json.dumps(
            {
                "app": {"api_token": APP_TOKEN},
                "components": [
                    {
                        "name": BINDING,
                        "type": "bindings.kafka",
                        "metadata": {
                            "brokers": kafka,
                            "topics": topic,
                            "publishTopic": topic,
                            "consumerGroup": f"{topic}-group",
                            "initialOffset": "oldest",
                            "direction": "input, output",
                            "sessionTimeout": "2s",
                            "heartbeatInterval": "200ms",
                            "consumeRetryInterval": "50ms",
                        },
                    }
                ],
            }
        )
    )
    return module_sidecar_factory(
        ["--config", str(config), "--app-id", "binding-app", "--app-port", str(sdk_app.port)]
    )


def invoke(sidecar: Sidecar, pb2: Any, pb2_grpc: Any, data: str, **metadata: str) -> Any:
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    return stub.InvokeBinding(
        pb2.InvokeBindingRequest(
            name=BINDING, operation="create", data=data.encode(), metadata=metadata
        ),
        timeout=15,
    )


def test_records_produced_through_invoke_binding_reach_the_sdk_app(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    for i in range(3):
        response = invoke(sidecar, pb2, pb2_grpc, f"order-{i}", partitionKey="k", **{"x-n": str(i)})
        assert response.data == b""
    sdk_app.wait(lambda: len(sdk_app.records("event")) >= 3, "three events")
    events = {e["data"]: e for e in sdk_app.records("event")}
    assert set(events) >= {"order-0", "order-1", "order-2"}
    for i in range(3):
        event = events[f"order-{i}"]
        metadata = event["binding_metadata"]
        assert metadata["x-n"] == str(i)  # the InvokeBinding metadata, as record headers
        assert metadata["__key"] == "k"
        assert metadata["__topic"]
        assert int(metadata["__offset"]) >= 0
        assert event["token"] == APP_TOKEN  # the app token on every callback
        assert event["attempt"] == 1
    # One key, one partition: in produce order.
    order = [e["data"] for e in sdk_app.records("event") if e["data"].startswith("order-")]
    assert order[:3] == ["order-0", "order-1", "order-2"]


def test_an_event_the_app_failed_is_delivered_again(
    sidecar: Sidecar, sdk_app: ScriptApp, pb2: Any, pb2_grpc: Any
) -> None:
    invoke(sidecar, pb2, pb2_grpc, "flaky-1")
    sdk_app.wait(lambda: len(sdk_app.records("event", data="flaky-1")) >= 2, "the redelivery")
    time.sleep(1.0)  # processed the second time: no third delivery
    attempts = [e["attempt"] for e in sdk_app.records("event", data="flaky-1")]
    assert attempts == [1, 2]


def test_readiness_and_the_unconfigured_binding(sidecar: Sidecar, sdk_app: ScriptApp) -> None:
    readiness = sidecar.get("/actuator/health/readiness").json()
    components = readiness["components"]
    assert components[f"input_binding:{BINDING}"]["status"] == "UP"
    assert components["app_input_bindings"]["status"] == "UP"
    assert readiness["status"] == "UP"
    warned = [e for e in sidecar.stderr.json_events() if "'nowhere'" in str(e.get("msg"))]
    assert len(warned) == 1, sidecar.log()
    assert sdk_app.records("nowhere") == []


def test_shutdown_is_clean(sidecar: Sidecar) -> None:
    import signal

    sidecar.signal(signal.SIGTERM)
    assert sidecar.wait(30) == 0, sidecar.log()
