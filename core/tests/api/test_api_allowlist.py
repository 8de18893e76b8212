"""daprd's API allow/deny lists on a running sidecar: refused gRPC methods answer UNIMPLEMENTED
"requested endpoint is not available", refused HTTP routes do not exist (404), and the rest is
served as usual; loaded from daprd's own Configuration file."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import dapr_pb2_grpc, lock_pb2, pubsub_pb2, state_pb2
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.spec.proto.runtime.v1 import GetStateRequest, RuntimeStub, TryLockRequest
from layotto.config import load_config
from layotto.testing.runtime import Sidecar, run_sidecar

pytestmark = pytest.mark.anyio

CONFIGURATION = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata: {name: locked-down}
spec:
  api:
    allowed:
      - {name: state, version: v1, protocol: grpc}
      - {name: metadata, version: v1, protocol: grpc}
      - {name: state, version: v1.0}
      - {name: publish, version: v1.0, protocol: http}
    denied:
      - {name: publish, version: v1.0, protocol: http}
"""


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def sidecar(tmp_path: Path) -> AsyncIterator[Sidecar]:
    config_file = tmp_path / "config.yaml"
    config_file.write_text(CONFIGURATION, encoding="utf-8")
    resources = tmp_path / "resources"
    resources.mkdir()
    for kind in ("state", "pubsub", "lock"):
        (resources / f"{kind}.yaml").write_text(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
            f"metadata: {{name: {kind}}}\nspec: {{type: {kind}.in-memory, version: v1}}\n",
            encoding="utf-8",
        )
    config = load_config(config_file, [resources], app_id="locked")
    async with run_sidecar(config) as running:
        yield running


@pytest.fixture
async def dapr(sidecar: Sidecar) -> AsyncIterator[dapr_pb2_grpc.DaprStub]:
    channel = grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}")
    yield dapr_pb2_grpc.DaprStub(channel)
    await channel.close()


async def test_allowed_grpc_groups_are_served(dapr: dapr_pb2_grpc.DaprStub) -> None:
    await dapr.SaveState(
        state_pb2.SaveStateRequest(
            store_name="state", states=[common_pb2.StateItem(key="k", value=b"v")]
        )
    )
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name="state", key="k"))
    assert got.data == b"v"


@pytest.mark.parametrize(
    ("method", "request_message"),
    [
        ("PublishEvent", pubsub_pb2.PublishEventRequest(pubsub_name="pubsub", topic="t")),
        ("TryLockAlpha1", lock_pb2.TryLockRequest(store_name="lock", resource_id="r")),
        ("QueryStateAlpha1", state_pb2.QueryStateRequest(store_name="state", query="{}")),
    ],
)
async def test_other_grpc_methods_are_not_available(
    dapr: dapr_pb2_grpc.DaprStub, method: str, request_message: object
) -> None:
    with pytest.raises(grpc.aio.AioRpcError) as caught:
        await getattr(dapr, method)(request_message)
    assert caught.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert caught.value.details() == "requested endpoint is not available"


async def test_the_layotto_api_follows_the_same_groups(sidecar: Sidecar) -> None:
    channel = sidecar.channel()
    try:
        stub = RuntimeStub(channel)
        reply = await stub.get_state(GetStateRequest(store_name="state", key="nothing"))
        assert reply.data == b""
        with pytest.raises(GRPCError) as caught:
            await stub.try_lock(
                TryLockRequest(store_name="lock", resource_id="r", lock_owner="o", expire=5)
            )
        assert caught.value.status is Status.UNIMPLEMENTED
    finally:
        channel.close()


async def test_http_routes_follow_the_lists(sidecar: Sidecar) -> None:
    async with httpx.AsyncClient(base_url=sidecar.http_url) as http:
        saved = await http.post("/v1.0/state/state", json=[{"key": "h", "value": 1}])
        assert saved.status_code == 204
        assert (await http.get("/v1.0/state/state/h")).json() == 1
        # Denied wins over allowed; not listed at all is refused too: both do not exist.
        assert (await http.post("/v1.0/publish/pubsub/t", json={})).status_code == 404
        assert (await http.post("/v1.0-alpha1/lock/lock", json={})).status_code == 404
        assert (await http.get("/v1.0/metadata")).status_code == 404  # gRPC rule only
        # Health is never subject to the lists.
        assert (await http.get("/v1.0/healthz/outbound")).status_code == 204
        assert (await http.get("/actuator/health/readiness")).status_code == 200
