"""`layotto run --metrics-port P`: Prometheus metrics served by the real CLI, as daprd serves them
on its metrics port, counting the calls a plain grpcio client and an HTTP client made; and
`--enable-metrics=false` opens no port."""

from __future__ import annotations

import socket
from typing import Any

import grpc
import pytest
from layotto_e2e_support import free_port, http_get

pytestmark = pytest.mark.integration

SidecarFactory = Any
RPC_TIMEOUT = 5.0


def test_metrics_port_serves_daprs_metrics_for_real_calls(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any
) -> None:
    port = free_port()
    sidecar = sidecar_factory(["--metrics-port", str(port), "--app-id", "e2e"])
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    stub.SaveState(
        pb2.SaveStateRequest(store_name="statestore", states=[pb2.StateItem(key="k", value=b"v")]),
        timeout=RPC_TIMEOUT,
    )
    with pytest.raises(grpc.RpcError) as bad:
        stub.GetState(pb2.GetStateRequest(store_name="missing", key="k"), timeout=RPC_TIMEOUT)
    assert bad.value.code() is grpc.StatusCode.INVALID_ARGUMENT
    # Dapr's HTTP API prefixes keys with the app id: not the Layotto API's `k`, so no content.
    assert sidecar.get("/v1.0/state/statestore/k").status_code == 204

    scraped = http_get(port, "/metrics")
    assert scraped.status_code == 200
    text = scraped.text
    method = "/spec.proto.runtime.v1.Runtime"
    assert (
        'dapr_grpc_io_server_completed_rpcs{app_id="e2e",'
        f'grpc_server_method="{method}/SaveState",grpc_server_status="OK"}} 1\n'
    ) in text
    assert (
        'dapr_grpc_io_server_completed_rpcs{app_id="e2e",'
        f'grpc_server_method="{method}/GetState",grpc_server_status="INVALID_ARGUMENT"}} 1\n'
    ) in text
    assert (
        'dapr_http_server_request_count{app_id="e2e",method="GET",'
        'path="/v1.0/state/{store}/{key:path}"} 1\n'
    ) in text
    assert (
        'dapr_component_state_count{app_id="e2e",component="statestore",'
        'operation="set",success="true"} 1\n'
    ) in text
    assert "process_cpu_seconds_total" in text
    info = sidecar.get("/actuator/info")
    assert f'"port":{port}' in info.text.replace(" ", "")


def test_metrics_can_be_turned_off(sidecar_factory: SidecarFactory) -> None:
    port = free_port()
    sidecar_factory(["--metrics-port", str(port), "--enable-metrics=false"])
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
