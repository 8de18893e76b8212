"""The API token: every gRPC call (unary and streaming) and every HTTP route but the probes
needs it (dapr-compat.md §4, §5)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import httpx
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from layotto._proto.grpc.health import v1 as health_pb
from layotto._proto.spec.proto.runtime import v1 as pb

pytestmark = pytest.mark.anyio

TOKEN = "s3cret-token"
RUNTIME = "/spec.proto.runtime.v1.Runtime"
MISSING = "missing api token"
MISMATCH = "api token mismatch"

GOOD_HEADERS = [{"dapr-api-token": TOKEN}, {"layotto-api-token": TOKEN}]
GOOD_IDS = ["dapr-api-token", "layotto-api-token"]


@pytest.fixture
def runtime_options() -> Mapping[str, Any]:
    return {"api_token": TOKEN}


async def get_state(channel: Channel, metadata: Mapping[str, str] | None) -> pb.GetStateResponse:
    stub = pb.RuntimeStub(channel, timeout=10)
    return await stub.get_state(
        pb.GetStateRequest(store_name="statestore", key="k"), metadata=metadata
    )


# -- gRPC ----------------------------------------------------------------------------------


async def test_unary_call_without_token_is_unauthenticated(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await get_state(channel, None)
    assert info.value.status is Status.UNAUTHENTICATED
    assert MISSING in (info.value.message or "")


@pytest.mark.parametrize("header", ["dapr-api-token", "layotto-api-token"])
async def test_unary_call_with_wrong_token_is_unauthenticated(
    channel: Channel, header: str
) -> None:
    with pytest.raises(GRPCError) as info:
        await get_state(channel, {header: "wrong"})
    assert info.value.status is Status.UNAUTHENTICATED
    assert MISMATCH in (info.value.message or "")


@pytest.mark.parametrize("metadata", GOOD_HEADERS, ids=GOOD_IDS)
async def test_unary_call_with_the_token_is_served(
    channel: Channel, metadata: Mapping[str, str]
) -> None:
    stub = pb.RuntimeStub(channel, timeout=10, metadata=metadata)
    await stub.save_state(
        pb.SaveStateRequest(store_name="statestore", states=[pb.StateItem(key="k", value=b"v")])
    )
    assert (await get_state(channel, metadata)).data == b"v"


STREAMING = [f"{RUNTIME}/{m}" for m in ("SubscribeConfiguration", "SubscribeTopicEvents")] + [
    f"{RUNTIME}/GetFile",
    f"{RUNTIME}/PutFile",
]


@pytest.mark.parametrize("path", STREAMING)
async def test_streaming_call_without_token_is_unauthenticated(
    channel: Channel, rpc: Any, path: str
) -> None:
    with pytest.raises(GRPCError) as info:
        await rpc(channel, path)
    assert info.value.status is Status.UNAUTHENTICATED
    assert MISSING in (info.value.message or "")


@pytest.mark.parametrize("path", STREAMING)
async def test_streaming_call_with_token_passes_the_guard(
    channel: Channel, rpc: Any, path: str
) -> None:
    with pytest.raises(GRPCError) as info:
        await rpc(channel, path, metadata={"dapr-api-token": TOKEN})
    # The block, not the token, says no: an empty subscription lacks its store name or its
    # initial request, and the File API is not built yet.
    expected = Status.UNIMPLEMENTED if "File" in path else Status.INVALID_ARGUMENT
    assert info.value.status is expected


async def test_extension_service_without_token_is_unauthenticated(
    channel: Channel, rpc: Any
) -> None:
    with pytest.raises(GRPCError) as info:
        await rpc(channel, "/spec.proto.extension.v1.sms.SmsService/SendSmsWithTemplate")
    assert info.value.status is Status.UNAUTHENTICATED


@pytest.mark.parametrize("service", ["", "spec.proto.runtime.v1.Runtime"])
async def test_grpc_health_needs_no_token(channel: Channel, service: str) -> None:
    reply = await health_pb.HealthStub(channel, timeout=10).check(
        health_pb.HealthCheckRequest(service=service)
    )
    assert reply.status == health_pb.HealthCheckResponseServingStatus.SERVING


# -- HTTP ----------------------------------------------------------------------------------

OPEN_ROUTES = {
    "/actuator/health/liveness": 200,
    "/actuator/health/readiness": 200,
    "/v1.0/healthz": 204,
    "/v1.0/healthz/outbound": 204,
}
GUARDED_ROUTES = ["/actuator/info", "/v1.0/metadata"]


@pytest.mark.parametrize(("path", "status"), OPEN_ROUTES.items())
async def test_probes_need_no_token(http: httpx.AsyncClient, path: str, status: int) -> None:
    assert (await http.get(path)).status_code == status


@pytest.mark.parametrize("path", GUARDED_ROUTES)
async def test_guarded_route_without_token_is_401(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path)
    assert response.status_code == 401
    assert response.text == "invalid api token"


@pytest.mark.parametrize("path", GUARDED_ROUTES)
async def test_guarded_route_with_wrong_token_is_401(http: httpx.AsyncClient, path: str) -> None:
    response = await http.get(path, headers={"dapr-api-token": "wrong"})
    assert response.status_code == 401


@pytest.mark.parametrize("headers", GOOD_HEADERS, ids=GOOD_IDS)
@pytest.mark.parametrize("path", GUARDED_ROUTES)
async def test_guarded_route_with_token_is_200(
    http: httpx.AsyncClient, path: str, headers: Mapping[str, str]
) -> None:
    response = await http.get(path, headers=headers)
    assert response.status_code == 200
    assert isinstance(response.json(), dict)


async def test_no_token_configured_means_no_check(start_sidecar: Any) -> None:
    async with start_sidecar() as sidecar:
        channel = sidecar.channel()
        try:
            assert (await get_state(channel, None)).data == b""
        finally:
            channel.close()
        async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as client:
            assert (await client.get("/v1.0/metadata")).status_code == 200
