"""The official Dapr Python SDK (`dapr.clients.DaprClient`, 1.19.0) against an in-process sidecar:
the minimal client of dapr-compat.md section 8, with an API token, as an unmodified Dapr app
would run it. The client is synchronous, so each scenario runs in a worker thread while the
sidecar serves on the test's event loop."""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any, TypeVar

import anyio
import pytest
from dapr.clients import DaprClient
from dapr.clients.exceptions import DaprGrpcError
from dapr.clients.grpc._state import StateItem
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import ComponentConfig, RuntimeConfig, embedded_default_components
from layotto.plugin import Kind
from layotto.testing.runtime import Sidecar, run_sidecar

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The Distributed Lock API is an Alpha version"),
]

APP = "shop"
TOKEN = "s3cret"
T = TypeVar("T")

SECRETS = ComponentConfig(
    name="secretstore",
    kind=Kind.SECRETSTORES,
    type="in-memory",
    metadata={"secrets": {"db-pass": "hunter2"}},
)
CONFIG = RuntimeConfig(
    components=(
        *(c for c in embedded_default_components() if c.kind != Kind.SECRETSTORES),
        SECRETS,
    )
).with_overrides(app_id=APP, allow_tokenless_config_subscribe=True)


@pytest.fixture
def sdk_env(monkeypatch: pytest.MonkeyPatch) -> Callable[[Sidecar], None]:
    def point_at(sidecar: Sidecar) -> None:
        monkeypatch.setenv("DAPR_RUNTIME_HOST", sidecar.host)
        monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
        monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.runtime.http_port))
        monkeypatch.setenv("DAPR_API_TOKEN", TOKEN)
        monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "5")
        monkeypatch.setenv("DAPR_API_TIMEOUT_SECONDS", "10")

    return point_at


async def in_thread(scenario: Callable[[], T], within: float = 60.0) -> T:
    # The SDK blocks; abandoning the thread on timeout keeps a hung call from hanging the test
    # (the sidecar's shutdown then ends its streams).
    with anyio.fail_after(within):
        return await anyio.to_thread.run_sync(scenario, abandon_on_cancel=True)


async def save_config(sidecar: Sidecar, key: str, content: str) -> None:
    channel = sidecar.channel()
    try:
        await pb.RuntimeStub(channel, timeout=10).save_configuration(
            pb.SaveConfigurationRequest(
                store_name="configstore",
                app_id=APP,
                items=[pb.ConfigurationItem(key=key, content=content)],
            ),
            metadata={"layotto-api-token": TOKEN},
        )
    finally:
        channel.close()


async def test_the_minimal_dapr_client(sdk_env: Callable[[Sidecar], None]) -> None:
    async with run_sidecar(CONFIG, api_token=TOKEN) as sidecar:
        sdk_env(sidecar)
        await save_config(sidecar, "feature-x", "on")
        changed = threading.Event()
        seen: list[dict[str, str]] = []

        def on_change(subscription_id: str, response: Any) -> None:
            seen.append({k: v.value for k, v in response.items.items()})
            changed.set()

        def scenario() -> dict[str, Any]:
            out: dict[str, Any] = {}
            with DaprClient() as d:
                d.save_state("statestore", "order-1", '{"qty": 3}')
                state = d.get_state("statestore", "order-1")
                out["state"] = (state.data, bool(state.etag))
                out["missing"] = d.get_state("statestore", "never").data
                d.save_bulk_state("statestore", [StateItem("a", "1"), StateItem("b", "2")])
                items = d.get_bulk_state("statestore", ["a", "b"]).items
                out["bulk"] = {i.key: i.data for i in items}
                try:
                    d.save_state("nope", "k", "v")
                except DaprGrpcError as err:
                    out["error_code"] = err.error_code()
                d.publish_event(
                    "pubsub", "orders", '{"id": 1}', data_content_type="application/json"
                )
                bulk = d.publish_events(
                    "pubsub", "orders", ["x", "y"], data_content_type="text/plain"
                )
                out["bulk_failed"] = list(bulk.failed_entries)
                cfg = d.get_configuration("configstore", ["feature-x"])
                out["config"] = {k: v.value for k, v in cfg.items.items()}
                # Sent without the token (a server stream): let through by the switch. The
                # subscription lives as long as the client.
                sub_id = d.subscribe_configuration("configstore", ["feature-x"], on_change)
                out["sub_id"] = sub_id
                anyio.from_thread.run(save_config, sidecar, "feature-x", "off")
                out["changed"] = changed.wait(10)
                out["unsubscribed"] = d.unsubscribe_configuration("configstore", sub_id)
                with d.try_lock("lockstore", "res-1", "owner-a", expiry_in_seconds=10) as lock:
                    out["locked"] = bool(lock)
                    out["held"] = bool(d.try_lock("lockstore", "res-1", "owner-b", 10))
                # Released on exit by UnlockAlpha1.
                out["again"] = bool(d.try_lock("lockstore", "res-1", "owner-b", 10))
                out["secret"] = d.get_secret("secretstore", "db-pass").secret
                d.set_metadata("team", "blue")
                meta = d.get_metadata()
                out["meta"] = (meta.application_id, meta.extended_metadata.get("team"))
                out["components"] = {c.name for c in meta.registered_components}
            return out

        out = await in_thread(scenario)
    assert out["state"] == (b'{"qty": 3}', True)
    assert out["missing"] == b""
    assert out["bulk"] == {"a": b"1", "b": b"2"}
    assert out["error_code"] == "DAPR_STATE_NOT_FOUND"
    assert out["bulk_failed"] == []
    assert out["config"] == {"feature-x": "on"}
    assert out["sub_id"]
    assert out["changed"]
    assert seen == [{"feature-x": "off"}]
    assert out["unsubscribed"] is True
    assert (out["locked"], out["held"], out["again"]) == (True, False, True)
    assert out["secret"] == {"db-pass": "hunter2"}
    assert out["meta"] == (APP, "blue")
    assert {"statestore", "pubsub", "lockstore", "secretstore"} <= out["components"]


async def test_streaming_subscription_and_shutdown(sdk_env: Callable[[Sidecar], None]) -> None:
    async with run_sidecar(CONFIG, api_token=TOKEN) as sidecar:
        sdk_env(sidecar)

        def scenario() -> tuple[Any, Any]:
            with DaprClient() as d:
                sub = d.subscribe("pubsub", "orders", dead_letter_topic="orders-dlq")
                try:
                    d.publish_event(
                        "pubsub", "orders", '{"id": 7}', data_content_type="application/json"
                    )
                    message = sub.next_message()
                    sub.respond_success(message)
                    got = (message.data(), message.source(), message.topic())
                finally:
                    sub.close()
                d.shutdown()
            return got

        data, source, topic = await in_thread(scenario)
        assert data == {"id": 7}
        assert (source, topic) == (APP, "orders")
        with anyio.fail_after(10):
            await sidecar.stopped.wait()
