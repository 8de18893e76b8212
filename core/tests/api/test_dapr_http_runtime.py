"""What every Dapr HTTP route shares: the API token, the drain gate, unexpected errors; and the
sidecar's own endpoints, `PUT /v1.0/metadata/{key}` and `POST /v1.0/shutdown`."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from layotto.plugin import HealthStatus
from layotto.services.state import StateService
from layotto.testing.runtime import Sidecar, run_sidecar

pytestmark = pytest.mark.anyio

TOKEN = "http-token"

# One route of each building block, each answerable on the embedded default.
API_CALLS = [
    ("GET", "/v1.0/state/statestore/k", None),
    ("POST", "/v1.0/state/statestore", [{"key": "k", "value": 1}]),
    ("POST", "/v1.0/publish/pubsub/t", None),
    ("GET", "/v1.0/configuration/configstore", None),
    (
        "POST",
        "/v1.0-alpha1/lock/lockstore",
        {"resourceId": "r", "lockOwner": "o", "expiryInSeconds": 1},
    ),
    ("GET", "/v1.0/invoke/app/method/m", None),
    ("PUT", "/v1.0/metadata/k", None),
    ("POST", "/v1.0/shutdown", None),
]


# -- the API token -----------------------------------------------------------------------------


@pytest.mark.parametrize("runtime_options", [{"api_token": TOKEN}], indirect=True)
@pytest.mark.parametrize(("method", "path", "body"), API_CALLS)
async def test_every_api_route_needs_the_token(
    http: httpx.AsyncClient, method: str, path: str, body: Any
) -> None:
    response = await http.request(method, path, json=body)
    assert response.status_code == 401
    assert response.text == "invalid api token"
    wrong = await http.request(method, path, json=body, headers={"dapr-api-token": "nope"})
    assert wrong.status_code == 401


@pytest.mark.parametrize("runtime_options", [{"api_token": TOKEN}], indirect=True)
async def test_with_the_token_the_api_answers_and_health_needs_none(
    http: httpx.AsyncClient,
) -> None:
    saved = await http.post(
        "/v1.0/state/statestore",
        json=[{"key": "k", "value": 1}],
        headers={"dapr-api-token": TOKEN},
    )
    assert saved.status_code == 204
    got = await http.get("/v1.0/state/statestore/k", headers={"dapr-api-token": TOKEN})
    assert got.content == b"1"
    assert (await http.get("/v1.0/healthz")).status_code == 204
    assert (await http.get("/v1.0/healthz/outbound")).status_code == 204


# -- metadata and shutdown ---------------------------------------------------------------------


async def test_put_metadata_shows_in_get_metadata(http: httpx.AsyncClient) -> None:
    response = await http.put("/v1.0/metadata/team", content="payments")
    assert response.status_code == 204
    await http.put("/v1.0/metadata/empty", content=b"")
    extended = (await http.get("/v1.0/metadata")).json()["extended"]
    assert extended["team"] == "payments"
    assert extended["empty"] == ""


async def test_a_body_over_4_mib_is_413(http: httpx.AsyncClient) -> None:
    response = await http.put("/v1.0/metadata/big", content=b"x" * (4 * 1024 * 1024 + 1))
    assert response.status_code == 413
    assert "4194304" in response.json()["message"]
    assert "big" not in (await http.get("/v1.0/metadata")).json()["extended"]


async def test_shutdown_answers_204_then_stops_the_sidecar() -> None:
    async with run_sidecar(api_token=TOKEN) as sidecar:
        async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http:
            response = await http.post("/v1.0/shutdown", headers={"dapr-api-token": TOKEN})
        assert response.status_code == 204
        with anyio.fail_after(10):
            await sidecar.stopped.wait()


# -- the drain ---------------------------------------------------------------------------------


async def test_calls_during_the_drain_are_503_while_in_flight_ones_finish(
    slow_kit: Any, readiness_reached: Any
) -> None:
    async with run_sidecar(slow_kit.config(), slow_kit.catalog, grace_period=5) as sidecar:
        store = slow_kit.store(sidecar.runtime)
        async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http:
            answers: list[httpx.Response] = []

            async def slow_call() -> None:
                answers.append(await http.get("/v1.0/state/slow/delay=0.8"))

            async with anyio.create_task_group() as tg:
                tg.start_soon(slow_call)
                await store.wait_started(1)
                sidecar.runtime.shutdown.set()
                await readiness_reached(sidecar.runtime, HealthStatus.DOWN)
                refused = await http.get("/v1.0/state/slow/other")
                assert refused.status_code == 503
                assert refused.json()["errorCode"] == "ERR_SHUTTING_DOWN"
            # The call admitted before the drain ran to its end.
            assert answers[0].status_code == 204
        with anyio.fail_after(10):
            await sidecar.stopped.wait()


# -- unexpected errors -------------------------------------------------------------------------


async def test_an_unexpected_error_is_500_and_logged_once(
    sidecar: Sidecar,
    http: httpx.AsyncClient,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async def broken(self: StateService, *args: Any, **kwargs: Any) -> None:
        raise RuntimeError("a bug")

    monkeypatch.setattr(StateService, "get", broken)
    with caplog.at_level(logging.ERROR):
        response = await http.get("/v1.0/state/statestore/k")
    assert response.status_code == 500
    assert response.json() == {"errorCode": "ERR_INTERNAL", "message": "internal error"}
    logged = [r for r in caplog.records if r.exc_info and "a bug" in str(r.exc_info[1])]
    assert len(logged) == 1
