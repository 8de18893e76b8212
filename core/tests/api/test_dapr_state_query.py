"""Dapr's state query API (Alpha) over real sockets: `QueryStateAlpha1` with the Dapr SDK's
generated stubs and with `DaprClient.query_state`, and `POST /v1.0-alpha1/state/{store}/query`
(dapr-compat.md 1.3, 3.1 "Query", 4), against the in-memory store and one without queries."""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from typing import Any, ClassVar

import anyio
import grpc
import httpx
import pytest
from dapr.clients import DaprClient
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, state_pb2
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.config import ComponentConfig, RuntimeConfig, embedded_default_components
from layotto.plugin import ComponentContext, ComponentSpec, Feature, Kind
from layotto.plugins import PluginInfo, load_catalog
from layotto.testing.runtime import Sidecar
from layotto_api_test_helpers import reason

pytestmark = [
    pytest.mark.anyio,
    pytest.mark.filterwarnings("ignore:The State Store Query API is an Alpha version"),
]

APP = "shop"
STORE = "statestore"
PLAIN = "plainstore"  # a store that does not declare Feature.QUERY_API
QUERY_URL = f"/v1.0-alpha1/state/{STORE}/query"
EMPLOYEES = {
    "1": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"},
    "2": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"},
    "3": {"person": {"org": "Dev Ops", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "4": {"person": {"org": "Finance", "id": 1007}, "city": "San Diego", "state": "CA"},
}
DEV_OPS_BY_ID_DESC = {
    "filter": {"EQ": {"person.org": "Dev Ops"}},
    "sort": [{"key": "person.id", "order": "DESC"}],
}


class PlainStateStore(InMemoryStateStore):
    features: ClassVar[frozenset[Feature]] = InMemoryStateStore.features - {Feature.QUERY_API}

    @classmethod
    def create(cls, metadata: InMemoryStateMetadata, context: ComponentContext) -> PlainStateStore:
        return cls()


def _catalog() -> Any:
    catalog = load_catalog()
    spec = ComponentSpec(Kind.STATE, "plain", InMemoryStateMetadata, PlainStateStore.create)
    catalog.add(PluginInfo("plain", "layotto-tests", "0", (spec,)))
    return catalog


CONFIG = RuntimeConfig(
    components=(
        *embedded_default_components(),
        ComponentConfig(name=PLAIN, kind=Kind.STATE, type="plain"),
    )
).with_overrides(app_id=APP)


@pytest.fixture
def runtime_options() -> Mapping[str, Any]:
    return {"config": CONFIG, "catalog": _catalog()}


async def seed(http: httpx.AsyncClient) -> None:
    items = [{"key": key, "value": doc} for key, doc in EMPLOYEES.items()]
    assert (await http.post(f"/v1.0/state/{STORE}", json=items)).status_code == 204


# -- gRPC ------------------------------------------------------------------------------------


async def test_grpc_query_filters_sorts_and_strips_the_app_id_prefix(
    dapr: dapr_pb2_grpc.DaprStub, http: httpx.AsyncClient
) -> None:
    await seed(http)
    request = state_pb2.QueryStateRequest(store_name=STORE, query=json.dumps(DEV_OPS_BY_ID_DESC))
    with anyio.fail_after(10):
        response = await dapr.QueryStateAlpha1(request)
    assert [r.key for r in response.results] == ["3", "1"]  # not `shop||3`
    assert [json.loads(r.data) for r in response.results] == [EMPLOYEES["3"], EMPLOYEES["1"]]
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="3"))
    assert response.results[0].etag == got.etag
    assert response.token == ""


async def test_grpc_query_pages_with_the_token(
    dapr: dapr_pb2_grpc.DaprStub, http: httpx.AsyncClient
) -> None:
    await seed(http)
    raw = common_pb2.StateItem(key="raw", value=b"\xff not JSON")
    await dapr.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[raw]))
    keys: list[str] = []
    token = ""
    for _ in range(4):
        query = {"sort": [{"key": "person.id"}], "page": {"limit": 3, "token": token}}
        response = await dapr.QueryStateAlpha1(
            state_pb2.QueryStateRequest(store_name=STORE, query=json.dumps(query))
        )
        keys += [r.key for r in response.results]
        token = response.token
        if not token:
            break
    assert keys == ["4", "2", "1", "3"]  # the non-JSON value never matches


async def test_grpc_query_errors(dapr: dapr_pb2_grpc.DaprStub) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await dapr.QueryStateAlpha1(state_pb2.QueryStateRequest(store_name=PLAIN, query="{}"))
    assert info.value.code() is grpc.StatusCode.INTERNAL, info.value.details()
    assert reason(info.value) == "DAPR_STATE_QUERYING_NOT_SUPPORTED"
    bad = json.dumps({"sort": [{"key": "a", "order": "UP"}]})
    with pytest.raises(grpc.aio.AioRpcError) as info:
        await dapr.QueryStateAlpha1(state_pb2.QueryStateRequest(store_name=STORE, query=bad))
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    assert "sort[0].order must be ASC or DESC" in (info.value.details() or "")
    assert reason(info.value) == "ERR_MALFORMED_REQUEST"


# -- HTTP ------------------------------------------------------------------------------------


async def test_http_query_answers_results_with_json_data(http: httpx.AsyncClient) -> None:
    await seed(http)
    response = await http.post(QUERY_URL, json=DEV_OPS_BY_ID_DESC)
    assert response.status_code == 200, response.text
    body = response.json()
    assert set(body) == {"results"}  # no token on the last page, as Go's omitempty
    assert [(r["key"], r["data"]) for r in body["results"]] == [
        ("3", EMPLOYEES["3"]),
        ("1", EMPLOYEES["1"]),
    ]
    assert all(r["etag"] for r in body["results"])
    paged = await http.put(QUERY_URL, json={**DEV_OPS_BY_ID_DESC, "page": {"limit": 1}})
    first = paged.json()
    assert [r["key"] for r in first["results"]] == ["3"]
    rest = await http.post(
        QUERY_URL, json={**DEV_OPS_BY_ID_DESC, "page": {"limit": 1, "token": first["token"]}}
    )
    assert [r["key"] for r in rest.json()["results"]] == ["1"]


async def test_http_query_errors(http: httpx.AsyncClient) -> None:
    response = await http.post(f"/v1.0-alpha1/state/{PLAIN}/query", json={})
    assert response.status_code == 500, response.text
    assert response.json()["errorCode"] == "ERR_STATE_STORE_NOT_SUPPORTED"
    response = await http.post(QUERY_URL, json={"filter": {"IN": {"state": "CA"}}})
    assert response.status_code == 400, response.text
    assert response.json()["errorCode"] == "ERR_MALFORMED_REQUEST"
    assert "filter.IN.state must be a non-empty list" in response.json()["message"]
    response = await http.post("/v1.0-alpha1/state/nope/query", json={})
    assert response.status_code == 400
    assert response.json()["errorCode"] == "ERR_STATE_STORE_NOT_FOUND"


# -- the Dapr SDK ----------------------------------------------------------------------------


async def test_the_dapr_sdk_query_state(
    sidecar: Sidecar, http: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    await seed(http)
    monkeypatch.setenv("DAPR_RUNTIME_HOST", sidecar.host)
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.runtime.http_port))
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "5")
    monkeypatch.setenv("DAPR_API_TIMEOUT_SECONDS", "10")

    def scenario() -> list[tuple[str, Any]]:
        with DaprClient() as client:
            response = client.query_state(STORE, json.dumps(DEV_OPS_BY_ID_DESC))
            return [(item.key, item.json()) for item in response.results]

    run: Callable[[], list[tuple[str, Any]]] = scenario
    with anyio.fail_after(60):
        results = await anyio.to_thread.run_sync(run, abandon_on_cancel=True)
    assert results == [("3", EMPLOYEES["3"]), ("1", EMPLOYEES["1"])]
