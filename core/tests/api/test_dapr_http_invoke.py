"""Dapr's service invocation over HTTP (`/v1.0/invoke/{app}/method/{method}`, and the
`dapr-app-id` header form) to a real HTTP target app, through the sidecar's `rpc.http` channel
and `nameresolution.static`; and the real Dapr SDK's `invoke_method`, whose default is this
HTTP path (dapr-compat.md sections 2.4, 8)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import anyio
import httpx
import pytest
from layotto.config import RuntimeConfig
from layotto.errors import ErrorCategory
from layotto.plugin import ComponentContext, ComponentMetadata, ComponentSpec, Kind
from layotto.plugin.rpc import RpcChannel, RpcRequest, RpcResponse, TargetError
from layotto.plugins import PluginInfo, load_catalog
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import assert_passed_through, assert_unreachable, echoed, target_app
from layotto_core_test_helpers import free_port, serve_asgi

pytestmark = pytest.mark.anyio

TOKEN = "invoke-token"


# -- the target app ----------------------------------------------------------------------------


@pytest.fixture
async def target_port() -> AsyncIterator[int]:
    async with serve_asgi(target_app()) as port:
        yield port


def invoke_config(target_port: int) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "app": {"id": "caller"},
            "components": [
                {"name": "http", "kind": "rpc", "type": "http"},
                {
                    "name": "apps",
                    "kind": "nameresolution",
                    "type": "static",
                    "metadata": {
                        "apps": {
                            "target": [f"127.0.0.1:{target_port}"],
                            "gone": [f"127.0.0.1:{free_port()}"],
                        }
                    },
                },
            ],
        }
    )


@pytest.fixture
def runtime_options(target_port: int) -> dict[str, Any]:
    return {"config": invoke_config(target_port)}


# -- the invoke path ---------------------------------------------------------------------------


async def test_post_forwards_verb_path_query_headers_and_body(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1.0/invoke/target/method/orders/7",
        params={"a": "1", "b": "x y"},
        content=b'{"qty": 1}',
        headers={"content-type": "application/json", "x-trace": "t1"},
    )
    got = echoed(response)
    assert got["verb"] == "POST"
    assert got["path"] == "/orders/7"
    assert got["query"] == "a=1&b=x+y"
    assert got["body"] == '{"qty": 1}'
    assert got["headers"]["content-type"] == "application/json"
    assert got["headers"]["x-trace"] == "t1"
    # The target's headers come back.
    assert response.headers["x-answered-by"] == "target"
    assert response.headers["content-type"] == "application/json"


@pytest.mark.parametrize("verb", ["GET", "PUT", "DELETE", "PATCH"])
async def test_every_verb_is_passed_on(http: httpx.AsyncClient, verb: str) -> None:
    response = await http.request(verb, "/v1.0/invoke/target/method/things")
    assert echoed(response)["verb"] == verb


async def test_an_escaped_slash_in_the_method_reaches_the_target_escaped(
    http: httpx.AsyncClient,
) -> None:
    got = echoed(await http.get("/v1.0/invoke/target/method/files/a%2Fb"))
    assert got["raw_path"] == "/files/a%2Fb"


async def test_the_dapr_app_id_header_form(http: httpx.AsyncClient) -> None:
    response = await http.post("/orders/9", content=b"x", headers={"dapr-app-id": "target"})
    got = echoed(response)
    assert got["path"] == "/orders/9"
    assert got["body"] == "x"
    assert "dapr-app-id" not in got["headers"]


async def test_a_path_without_a_target_is_404(http: httpx.AsyncClient) -> None:
    response = await http.get("/no/such/route")
    assert response.status_code == 404
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"
    missing = await http.get("/v1.0/invoke/target/nomethod")
    assert missing.status_code == 404


@pytest.mark.parametrize("code", [400, 404, 409, 500, 503])
async def test_the_targets_error_status_passes_through(http: httpx.AsyncClient, code: int) -> None:
    response = await http.get(f"/v1.0/invoke/target/method/status/{code}")
    assert_passed_through(response, code)


async def test_an_unreachable_target_is_500(http: httpx.AsyncClient) -> None:
    assert_unreachable(await http.get("/v1.0/invoke/gone/method/x"), "gone")


async def test_an_unknown_app_is_500(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/invoke/stranger/method/x")
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_a_target_past_the_timeout_is_504(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1.0/invoke/target/method/slow", headers={"rpc_request_timeout": "200"}
    )
    assert response.status_code == 504
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_no_rpc_channel_configured_is_500() -> None:
    async with (
        run_sidecar(RuntimeConfig()) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        response = await http.get("/v1.0/invoke/target/method/x")
        assert response.status_code == 500
        assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_the_api_token_is_required_and_not_forwarded(target_port: int) -> None:
    async with (
        run_sidecar(invoke_config(target_port), api_token=TOKEN) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        refused = await http.get("/v1.0/invoke/target/method/x")
        assert refused.status_code == 401
        assert refused.text == "invalid api token"
        got = echoed(
            await http.get("/v1.0/invoke/target/method/x", headers={"dapr-api-token": TOKEN})
        )
        assert "dapr-api-token" not in got["headers"]


# -- a channel that keeps the target's HTTP answer --------------------------------------------


class KeptAnswer(TargetError):
    """A target's error answer as a channel may keep it: status, body, type and headers."""

    def __init__(self) -> None:
        super().__init__(ErrorCategory.INTERNAL, "http response code 418, body: short and stout")
        self.http_status = 418
        self.body = b'{"tea": "earl grey"}'
        self.content_type = "application/json"
        self.headers = {"x-pot": "teapot", "connection": "close"}


class TeapotChannel(RpcChannel):
    @classmethod
    def create(cls, metadata: ComponentMetadata, context: ComponentContext) -> TeapotChannel:
        return cls()

    async def invoke(self, request: RpcRequest, address: str) -> RpcResponse:
        raise KeptAnswer()


async def test_a_kept_target_answer_passes_through_exactly() -> None:
    catalog = load_catalog()
    spec = ComponentSpec(Kind.RPC, "teapot", ComponentMetadata, TeapotChannel.create)
    catalog.add(PluginInfo("teapot", "layotto-tests", "0", (spec,)))
    config = RuntimeConfig.model_validate(
        {"components": [{"name": "pot", "kind": "rpc", "type": "teapot"}]}
    )
    async with (
        run_sidecar(config, catalog) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        response = await http.get(
            "/v1.0/invoke/kitchen/method/brew", headers={"rpc_target_address": "127.0.0.1:1"}
        )
    assert response.status_code == 418
    assert response.content == b'{"tea": "earl grey"}'
    assert response.headers["content-type"] == "application/json"
    assert response.headers["x-pot"] == "teapot"
    assert response.headers.get("connection") != "close"


# -- the Dapr SDK ------------------------------------------------------------------------------


@dataclass
class SdkAnswer:
    data: bytes
    status_code: int | None


def sdk_invoke(sidecar: Sidecar) -> SdkAnswer:
    """The SDK's default invocation (HTTP); its client is synchronous, so this runs in a
    worker thread."""
    from dapr.clients import DaprClient

    with DaprClient() as client:
        response = client.invoke_method(
            "target", "orders/7", data=b'{"qty": 1}', http_verb="POST", timeout=10
        )
        return SdkAnswer(response.data, response.status_code)


async def test_dapr_sdk_invoke_method_over_http(
    sidecar: Sidecar, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.runtime.http_port))
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_RUNTIME_HOST", sidecar.host)
    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", "http")
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "10")
    monkeypatch.delenv("DAPR_API_TOKEN", raising=False)
    with anyio.fail_after(30):
        answer = await anyio.to_thread.run_sync(sdk_invoke, sidecar)
    got = json.loads(answer.data)
    assert answer.status_code == 200
    assert got["verb"] == "POST"
    assert got["path"] == "/orders/7"
    assert got["body"] == '{"qty": 1}'
    # The SDK's own headers travel on to the target.
    assert "dapr" in got["headers"]["user-agent"]
