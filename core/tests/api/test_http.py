"""The HTTP port: actuator health and info, Dapr's healthz and metadata
(layotto-semantics.md §6, dapr-compat.md §5, ARCHITECTURE.md "Health")."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import anyio
import httpx
import pytest
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import load_config
from layotto.health import Probe
from layotto.plugin import Health, HealthStatus
from layotto.version import runtime_version

pytestmark = pytest.mark.anyio

APP_ID = "myapp"
READINESS = "/actuator/health/readiness"
LIVENESS = "/actuator/health/liveness"


@pytest.fixture
def runtime_options() -> Mapping[str, Any]:
    return {"config": load_config().with_overrides(app_id=APP_ID)}


def assert_actuator_shape(body: Any) -> None:
    assert set(body) == {"status", "components"}
    assert body["status"] in ("INIT", "UP", "DOWN")
    assert isinstance(body["components"], dict)
    for name, entry in body["components"].items():
        assert set(entry) <= {"status", "details"}, name
        assert entry["status"] in ("INIT", "UP", "DOWN"), name
        if "details" in entry:  # left out when empty
            assert entry["details"], name


# -- actuator health -----------------------------------------------------------------------


@pytest.mark.parametrize("path", [READINESS, LIVENESS])
async def test_probe_is_up_when_ready(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("application/json")
    body = response.json()
    assert_actuator_shape(body)
    assert body["status"] == "UP"
    assert body["components"]["runtime_startup"]["status"] == "UP"
    assert all(entry["status"] == "UP" for entry in body["components"].values())


async def test_readiness_includes_components_liveness_does_not(http: httpx.AsyncClient) -> None:
    readiness = (await http.get(READINESS)).json()["components"]
    liveness = (await http.get(LIVENESS)).json()["components"]
    assert readiness["component:statestore"] == {"status": "UP"}
    assert "component:statestore" not in liveness
    assert {"runtime_startup", "actor:api_server", "actor:http_server"} <= set(liveness)


@pytest.mark.parametrize(
    ("status", "code"), [(HealthStatus.INIT, 503), (HealthStatus.DOWN, 503), (HealthStatus.UP, 200)]
)
async def test_readiness_reflects_every_indicator(
    http: httpx.AsyncClient, runtime: Any, status: HealthStatus, code: int
) -> None:
    details = {} if status is HealthStatus.UP else {"reason": "testing"}
    runtime.health.set("test:indicator", Health(status, details), frozenset({Probe.READINESS}))
    response = await http.get(READINESS)
    assert response.status_code == code
    body = response.json()
    assert_actuator_shape(body)
    assert body["status"] == status.value
    expected: dict[str, Any] = {"status": status.value}
    if details:
        expected["details"] = details
    assert body["components"]["test:indicator"] == expected
    # A readiness-only indicator leaves liveness alone.
    live = await http.get(LIVENESS)
    assert live.status_code == 200
    assert "test:indicator" not in live.json()["components"]


async def test_down_wins_over_init(http: httpx.AsyncClient, runtime: Any) -> None:
    runtime.health.set("test:a", Health(HealthStatus.INIT))
    runtime.health.set("test:b", Health.down("broken"))
    for path in (READINESS, LIVENESS):
        response = await http.get(path)
        assert response.status_code == 503
        assert response.json()["status"] == "DOWN"
    runtime.health.update("test:b", Health.up())
    assert (await http.get(LIVENESS)).json()["status"] == "INIT"


@pytest.mark.parametrize(
    "path", ["/actuator/health/other", "/actuator/health/readiness/x", "/actuator/nope"]
)
async def test_unknown_actuator_path_is_404(http: httpx.AsyncClient, path: str) -> None:
    assert (await http.get(path)).status_code == 404


# -- actuator info -------------------------------------------------------------------------


async def test_info(http: httpx.AsyncClient) -> None:
    response = await http.get("/actuator/info")
    assert response.status_code == 200
    body = response.json()
    assert body["app"]["version"] == runtime_version()
    assert body["app"]["id"] == APP_ID
    builtin = [p for p in body["plugins"] if p["name"] == "builtin"]
    assert len(builtin) == 1
    assert builtin[0]["distribution"] == "layotto"
    assert "state.in-memory" in builtin[0]["components"]
    assert {"name": "statestore", "type": "state.in-memory", "version": "v1"} in body["components"]


# -- Dapr healthz --------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path", ["/v1.0/healthz", "/v1.0/healthz/outbound", f"/v1.0/healthz?appid={APP_ID}"]
)
async def test_healthz_is_204_when_ready(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 204
    assert response.content == b""


async def test_healthz_with_another_app_id_is_500(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/healthz", params={"appid": "other"})
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_HEALTH_APPID_NOT_MATCH"


@pytest.mark.parametrize(
    ("path", "code"),
    [
        ("/v1.0/healthz", "ERR_HEALTH_NOT_READY"),
        ("/v1.0/healthz/outbound", "ERR_OUTBOUND_HEALTH_NOT_READY"),
    ],
)
async def test_healthz_is_500_when_not_ready(
    http: httpx.AsyncClient, runtime: Any, path: str, code: str
) -> None:
    runtime.health.set("test:init", Health(HealthStatus.INIT), frozenset({Probe.READINESS}))
    response = await http.get(path)
    assert response.status_code == 500
    assert response.json()["errorCode"] == code
    runtime.health.update("test:init", Health.up())
    assert (await http.get(path)).status_code == 204


# -- Dapr metadata -------------------------------------------------------------------------


async def test_metadata_has_the_dapr_shape(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/metadata")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == APP_ID
    assert body["runtimeVersion"] == runtime_version()
    # In start order: secret stores, then configuration stores, then the rest.
    assert body["components"] == [
        {
            "name": "secretstore",
            "type": "secretstores.in-memory",
            "version": "v1",
            "capabilities": ["MULTIPLE_KEY_VALUES_PER_SECRET"],
        },
        {"name": "configstore", "type": "configuration.in-memory", "version": "v1"},
        {
            "name": "statestore",
            "type": "state.in-memory",
            "version": "v1",
            "capabilities": ["ETAG", "QUERY_API", "TRANSACTIONAL", "TTL"],
        },
        {
            "name": "pubsub",
            "type": "pubsub.in-memory",
            "version": "v1",
            "capabilities": ["MESSAGE_TTL"],
        },
        {"name": "lockstore", "type": "lock.in-memory", "version": "v1"},
        {"name": "sequencer", "type": "sequencer.in-memory", "version": "v1"},
    ]
    actors = body["actorRuntime"]
    assert isinstance(actors["runtimeStatus"], str)
    assert isinstance(actors["hostReady"], bool)
    assert isinstance(body.get("subscriptions", []), list)
    assert isinstance(body.get("extended", {}), dict)
    assert "appConnectionProperties" not in body  # no app port configured


async def test_metadata_names_the_app_channel_when_configured(start_sidecar: Any) -> None:
    config = load_config().with_overrides(app_id=APP_ID, app_port=50051)
    async with (
        start_sidecar(config) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as client,
    ):
        body = (await client.get("/v1.0/metadata")).json()
    props = body["appConnectionProperties"]
    assert props["port"] == 50051
    assert props["protocol"] == "grpc"
    assert props["channelAddress"] == "127.0.0.1"


# -- readiness while draining --------------------------------------------------------------


async def test_readiness_is_down_while_draining(
    start_sidecar: Any, slow_kit: Any, readiness_reached: Any
) -> None:
    slow_kit.delay = 1.0
    async with start_sidecar(slow_kit.config(), slow_kit.catalog, grace_period=5) as sidecar:
        store = slow_kit.store(sidecar.runtime)
        channel = sidecar.channel()
        results: list[bytes] = []

        async def slow_call() -> None:
            stub = pb.RuntimeStub(channel, timeout=10)
            reply = await stub.get_state(pb.GetStateRequest(store_name="slow", key="k"))
            results.append(reply.data)

        try:
            async with (
                httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as client,
                anyio.create_task_group() as tg,
            ):
                assert (await client.get(READINESS)).status_code == 200
                tg.start_soon(slow_call)
                await store.wait_started(1)
                sidecar.runtime.shutdown.set()

                await readiness_reached(sidecar.runtime, HealthStatus.DOWN)
                response = await client.get(READINESS)
                assert response.status_code == 503
                assert store.finished == 0  # still draining
                body = response.json()
                assert_actuator_shape(body)
                assert body["status"] == "DOWN"
                assert body["components"]["runtime_startup"] == {
                    "status": "DOWN",
                    "details": {"reason": "shutdown"},
                }
                assert (await client.get(LIVENESS)).status_code == 503
                assert (await client.get("/v1.0/healthz")).status_code == 500
                assert (await client.get("/v1.0/healthz/outbound")).status_code == 500
        finally:
            channel.close()
        assert results == [b""]  # the in-flight call still completed
