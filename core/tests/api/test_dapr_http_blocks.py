"""Dapr's configuration, lock, secrets and output-binding APIs over HTTP: answers and error
codes as daprd gives them (dapr-compat.md sections 3.4-3.6, 4)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import httpx
import pytest
from layotto.config import RuntimeConfig
from layotto.plugin import (
    BindingRequest,
    BindingResponse,
    ComponentContext,
    ComponentError,
    ComponentMetadata,
    ComponentSpec,
    ConfigItem,
    ConfigStore,
    Kind,
    LockStore,
    OutputBinding,
)
from layotto.plugins import Catalog, PluginInfo, load_catalog
from layotto.runtime import Runtime
from layotto.testing.runtime import run_sidecar
from layotto_api_test_helpers import assert_error

pytestmark = pytest.mark.anyio

SECRETS = {"db": {"user": "app", "password": "pw"}, "token": {"token": "t0k"}}


class RecordingBinding(OutputBinding):
    """`get` answers data and metadata, `create` answers nothing, `fail` fails."""

    def __init__(self) -> None:
        self.requests: list[BindingRequest] = []

    @classmethod
    def create(cls, metadata: ComponentMetadata, context: ComponentContext) -> RecordingBinding:
        return cls()

    def operations(self) -> Sequence[str]:
        return ["create", "get", "fail"]

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        self.requests.append(request)
        if request.operation == "fail":
            raise ComponentError("the backend said no")
        if request.operation == "get":
            return BindingResponse(b'{"found":true}', {"source": "recording"})
        return BindingResponse()


def catalog() -> Catalog:
    found = load_catalog()
    spec = ComponentSpec(Kind.BINDINGS, "recording", ComponentMetadata, RecordingBinding.create)
    found.add(PluginInfo("recording", "layotto-tests", "0", (spec,)))
    return found


CONFIG = RuntimeConfig.model_validate(
    {
        "app": {"id": "blocks"},
        "components": [
            {"name": "configstore", "kind": "configuration", "type": "in-memory"},
            {"name": "lockstore", "kind": "lock", "type": "in-memory"},
            {
                "name": "secretstore",
                "kind": "secretstores",
                "type": "in-memory",
                "metadata": {"secrets": SECRETS},
            },
            {"name": "out", "kind": "bindings", "type": "recording"},
        ],
    }
)


@pytest.fixture
def runtime_options() -> dict[str, Any]:
    return {"config": CONFIG, "catalog": catalog()}


# -- configuration -----------------------------------------------------------------------------


async def put_config(runtime: Runtime, **items: str) -> None:
    store = runtime.components.of_kind(Kind.CONFIGURATION)["configstore"].component
    assert isinstance(store, ConfigStore)
    await store.set(
        "blocks",
        [
            ConfigItem(key, value, store.default_group, store.default_label)
            for key, value in items.items()
        ],
        {},
    )


@pytest.mark.parametrize("prefix", ["/v1.0", "/v1.0-alpha1"])
async def test_get_configuration_answers_the_named_keys(
    http: httpx.AsyncClient, runtime: Runtime, prefix: str
) -> None:
    await put_config(runtime, feature="on", color="blue", size="xl")
    response = await http.get(
        f"{prefix}/configuration/configstore", params=[("key", "feature"), ("key", "color")]
    )
    assert response.status_code == 200
    items = response.json()
    assert set(items) == {"feature", "color"}
    assert items["feature"]["value"] == "on"
    everything = (await http.get(f"{prefix}/configuration/configstore")).json()
    assert {"feature", "color", "size"} <= set(everything)


async def test_get_configuration_of_missing_keys_is_204(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/configuration/configstore", params={"key": "nope"})
    assert response.status_code == 204


async def test_configuration_errors(http: httpx.AsyncClient) -> None:
    assert_error(
        await http.get("/v1.0/configuration/other"),
        400,
        "ERR_CONFIGURATION_STORE_NOT_FOUND",
        "other",
    )
    # No app port: daprd has no app channel to post updates to.
    subscribe = await http.get("/v1.0/configuration/configstore/subscribe")
    assert_error(subscribe, 500, "ERR_APP_CHANNEL_NIL", "app channel is not initialized")
    unknown = await http.get("/v1.0-alpha1/configuration/configstore/no-such-id/unsubscribe")
    assert unknown.status_code == 500
    assert "no-such-id" in unknown.json()["message"]


# -- lock --------------------------------------------------------------------------------------


async def test_lock_and_unlock(http: httpx.AsyncClient) -> None:
    lock = {"resourceId": "r1", "lockOwner": "a", "expiryInSeconds": 10}
    assert (await http.post("/v1.0-alpha1/lock/lockstore", json=lock)).json() == {"success": True}
    other = {**lock, "lockOwner": "b"}
    assert (await http.post("/v1.0-alpha1/lock/lockstore", json=other)).json() == {"success": False}
    unlock = "/v1.0-alpha1/unlock/lockstore"
    by_other = await http.post(unlock, json={"resourceId": "r1", "lockOwner": "b"})
    assert by_other.json() == {"status": 2}
    assert (await http.post(unlock, json={"resourceId": "r1", "lockOwner": "a"})).json() == {
        "status": 0
    }
    gone = await http.post(unlock, json={"resource_id": "r1", "lock_owner": "a"})
    assert gone.json() == {"status": 1}


async def test_lock_keys_use_the_dapr_scheme(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """Held under daprd's key, `lock||<appid>||<resource>`, so a Go sidecar sharing the store
    sees the same lock."""
    lock = {"resourceId": "shared", "lockOwner": "a", "expiryInSeconds": 10}
    assert (await http.post("/v1.0-alpha1/lock/lockstore", json=lock)).json()["success"]
    store = runtime.components.of_kind(Kind.LOCK)["lockstore"].component
    assert isinstance(store, LockStore)
    assert not await store.try_lock("lock||blocks||shared", "b", 10)


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        ({"lockOwner": "a", "expiryInSeconds": 10}, "resource"),
        ({"resourceId": "r", "expiryInSeconds": 10}, "owner"),
        ({"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 0}, "expir"),
        ({"resourceId": "r", "lockOwner": "a", "expiryInSeconds": "ten"}, "expiryInSeconds"),
        ({"resourceId": 5, "lockOwner": "a", "expiryInSeconds": 1}, "resourceId"),
    ],
)
async def test_malformed_lock_requests_are_400(
    http: httpx.AsyncClient, body: dict[str, Any], fragment: str
) -> None:
    response = await http.post("/v1.0-alpha1/lock/lockstore", json=body)
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", fragment)


async def test_unknown_lock_store_is_400(http: httpx.AsyncClient) -> None:
    body = {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 1}
    response = await http.post("/v1.0-alpha1/lock/other", json=body)
    assert_error(response, 400, "ERR_LOCK_STORE_NOT_FOUND")


# -- secrets -----------------------------------------------------------------------------------


async def test_get_secret_and_bulk(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/secrets/secretstore/db")
    assert response.status_code == 200
    assert response.json() == SECRETS["db"]
    bulk = await http.get("/v1.0/secrets/secretstore/bulk")
    assert bulk.status_code == 200
    assert bulk.json() == SECRETS


async def test_secret_errors(http: httpx.AsyncClient) -> None:
    # daprd answers an unknown secret store with 401.
    assert_error(await http.get("/v1.0/secrets/other/db"), 401, "ERR_SECRET_STORE_NOT_FOUND")
    assert_error(await http.get("/v1.0/secrets/secretstore/missing"), 500, "ERR_SECRET_GET")


# -- bindings ----------------------------------------------------------------------------------


def recorded(runtime: Runtime) -> list[BindingRequest]:
    binding = runtime.components.of_kind(Kind.BINDINGS)["out"].component
    assert isinstance(binding, RecordingBinding)
    return binding.requests


async def test_binding_answers_data_and_metadata_headers(
    http: httpx.AsyncClient, runtime: Runtime
) -> None:
    response = await http.post(
        "/v1.0/bindings/out",
        json={"operation": "get", "data": {"id": 7}, "metadata": {"key": "k1"}},
    )
    assert response.status_code == 200
    assert response.json() == {"found": True}
    assert response.headers["metadata.source"] == "recording"
    request = recorded(runtime)[-1]
    assert json.loads(request.data) == {"id": 7}
    assert request.metadata["key"] == "k1"


async def test_binding_data_is_sent_as_its_json(http: httpx.AsyncClient, runtime: Runtime) -> None:
    response = await http.put("/v1.0/bindings/out", json={"operation": "create", "data": "hi"})
    assert response.status_code == 204
    assert recorded(runtime)[-1].data == b'"hi"'


@pytest.mark.parametrize(
    ("name", "body"),
    [
        ("out", {"operation": "fail"}),
        ("out", {"operation": "delete"}),
        ("out", {"data": 1}),
        ("other", {"operation": "create"}),
    ],
)
async def test_binding_failures_are_500(
    http: httpx.AsyncClient, name: str, body: dict[str, Any]
) -> None:
    response = await http.post(f"/v1.0/bindings/{name}", json=body)
    assert_error(response, 500, "ERR_INVOKE_OUTPUT_BINDING")


async def test_binding_bad_json_is_400(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1.0/bindings/out", content=b"[1,")
    assert_error(response, 400, "ERR_MALFORMED_REQUEST")


# -- nothing configured ------------------------------------------------------------------------


async def test_blocks_not_configured() -> None:
    async with (
        run_sidecar(RuntimeConfig()) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        assert_error(
            await http.get("/v1.0/configuration/configstore"),
            500,
            "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
        )
        lock = {"resourceId": "r", "lockOwner": "a", "expiryInSeconds": 1}
        assert_error(
            await http.post("/v1.0-alpha1/lock/lockstore", json=lock),
            500,
            "ERR_LOCK_STORE_NOT_CONFIGURED",
        )
        assert_error(
            await http.get("/v1.0/secrets/secretstore/k"), 500, "ERR_SECRET_STORES_NOT_CONFIGURED"
        )
        assert_error(
            await http.post("/v1.0/bindings/out", json={"operation": "create"}),
            500,
            "ERR_INVOKE_OUTPUT_BINDING",
        )
