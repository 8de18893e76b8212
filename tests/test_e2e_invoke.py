"""InvokeService end to end (layotto-semantics.md §5), real processes and sockets only.

- app B: an HTTP app (starlette + uvicorn on a thread) that echoes what it got;
- app C: a Dapr `AppCallback/OnInvoke` gRPC app (grpclib on a thread);
- sidecar C (`appC`, `--app-port` = app C): delivers calls for its own app id to OnInvoke;
- sidecar A (`appA`): `rpc.http` (default) to app B through `nameresolution.static` (a dead
  address first, for failover), `rpc.grpc` (target: sidecar) for appC, to sidecar C;
- sidecar D: `rpc.http` behind the `rpcfilter.dubbo_json_rpc` filter, to app B.

The test drives sidecar A (and D) with a plain grpcio client.
"""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
import pytest
import uvicorn
import yaml
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.dapr.proto.runtime import v1 as dapr_runtime
from layotto._proto.google.protobuf import Any as PbAny
from layotto_e2e_support import Sidecar, free_port, grpclib_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
RPC_TIMEOUT = 10.0


# -- app B: HTTP -----------------------------------------------------------------------------


async def _echo(request: Request) -> Response:
    body = await request.body()
    return JSONResponse(
        {
            "verb": request.method,
            "path": request.url.path,
            "query": request.url.query,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": body.decode("utf-8", "replace"),
        },
        headers={"x-answered-by": "app-b", "x-echo-path": request.url.path},
    )


async def _missing(request: Request) -> Response:
    return PlainTextResponse("no such order", status_code=404)


async def _broken(request: Request) -> Response:
    return PlainTextResponse("it broke", status_code=500)


async def _slow(request: Request) -> Response:
    await asyncio.sleep(float(request.query_params.get("seconds", "2")))
    return PlainTextResponse("late")


async def _raw(request: Request) -> Response:
    # The body back as it came, with the caller's content type.
    return Response(
        await request.body(), media_type=request.headers.get("content-type", "text/plain")
    )


APP_B = Starlette(
    routes=[
        Route("/missing", _missing, methods=["GET", "POST"]),
        Route("/broken", _broken, methods=["GET", "POST"]),
        Route("/slow", _slow, methods=["GET", "POST"]),
        Route("/raw", _raw, methods=["POST", "PUT"]),
        Route("/{path:path}", _echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
    ]
)


@pytest.fixture(scope="module")
def app_b() -> Iterator[int]:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = int(sock.getsockname()[1])
    server = uvicorn.Server(
        uvicorn.Config(APP_B, log_level="warning", lifespan="off", access_log=False)
    )
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        assert time.monotonic() < deadline, "app B did not start"
        time.sleep(0.02)
    try:
        yield port
    finally:
        server.should_exit = True
        thread.join(5)
        sock.close()


# -- app C: Dapr OnInvoke over gRPC ----------------------------------------------------------


class AppC(dapr_runtime.AppCallbackBase):
    """Echoes method, data, content type and verb as JSON; `missing` is NOT_FOUND. Records
    each call's metadata (the generated handler hides the stream: `__mapping__` wraps it)."""

    def __init__(self) -> None:
        self.metadata: list[dict[str, str]] = []

    async def on_invoke(self, message: dapr_common.InvokeRequest) -> dapr_common.InvokeResponse:
        if message.method == "missing":
            raise GRPCError(Status.NOT_FOUND, "no such thing")
        data = message.data.value if message.data is not None else b""
        verb = ""
        if message.http_extension is not None:
            verb = message.http_extension.verb.name or ""
        answer = {
            "method": message.method,
            "data": data.decode("utf-8", "replace"),
            "content_type": message.content_type,
            "verb": verb,
        }
        return dapr_common.InvokeResponse(
            data=PbAny(value=json.dumps(answer).encode()), content_type="application/json"
        )

    def __mapping__(self) -> dict[str, Any]:
        mapping = super().__mapping__()
        path = "/dapr.proto.runtime.v1.AppCallback/OnInvoke"
        handler = mapping[path]
        original = handler.func

        async def recording(stream: Any) -> None:
            self.metadata.append({k: v for k, v in stream.metadata.items() if isinstance(v, str)})
            await original(stream)

        mapping[path] = handler._replace(func=recording)
        return mapping


@dataclass
class ServedApp:
    app: AppC
    port: int


@pytest.fixture(scope="module")
def app_c() -> Iterator[ServedApp]:
    app = AppC()
    with grpclib_app(app) as port:
        yield ServedApp(app, port)


# -- the sidecars ----------------------------------------------------------------------------


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config))
    return path


@dataclass
class Mesh:
    a: Sidecar
    c: Sidecar
    dubbo: Sidecar
    app_b_port: int
    dead_port: int
    app_c: AppC
    stubs: dict[int, Any] = field(default_factory=dict)


@pytest.fixture(scope="module")
def mesh(
    app_b: int,
    app_c: ServedApp,
    tmp_path_factory: pytest.TempPathFactory,
    module_sidecar_factory: SidecarFactory,  # last: the sidecars stop before the apps
) -> Mesh:
    tmp = tmp_path_factory.mktemp("invoke")
    dead = free_port()
    config_c = write_config(tmp / "c.yaml", {"app": {"id": "appC"}, "components": []})
    sidecar_c = module_sidecar_factory(["-c", str(config_c), "--app-port", str(app_c.port)])
    config_a = write_config(
        tmp / "a.yaml",
        {
            "app": {"id": "appA"},
            "components": [
                {"name": "http", "type": "rpc.http", "metadata": {}},
                {"name": "grpc", "type": "rpc.grpc", "metadata": {"target": "sidecar"}},
                {
                    "name": "apps",
                    "type": "nameresolution.static",
                    "metadata": {
                        "apps": {
                            "appB": [f"127.0.0.1:{dead}", f"127.0.0.1:{app_b}"],
                            "appC": [f"127.0.0.1:{sidecar_c.grpc_port}"],
                        }
                    },
                },
            ],
            "rpc": {"default_channel": "http", "app_channels": {"appC": "grpc"}},
        },
    )
    config_d = write_config(
        tmp / "d.yaml",
        {
            "app": {"id": "appD"},
            "components": [
                {"name": "http", "type": "rpc.http", "metadata": {}},
                {"name": "dubbo", "type": "rpcfilter.dubbo_json_rpc", "metadata": {}},
                {
                    "name": "apps",
                    "type": "nameresolution.static",
                    "metadata": {"apps": {"orders": [f"127.0.0.1:{app_b}"]}},
                },
            ],
            "rpc": {"filters": {"http": {"before": ["dubbo"]}}},
        },
    )
    sidecar_a = module_sidecar_factory(["-c", str(config_a)])
    sidecar_d = module_sidecar_factory(["-c", str(config_d)])
    return Mesh(sidecar_a, sidecar_c, sidecar_d, app_b, dead, app_c.app)


def stub(sidecar: Sidecar, pb2_grpc: Any) -> Any:
    return pb2_grpc.RuntimeStub(sidecar.channel())


def request(
    pb2: Any,
    app_id: str,
    method: str,
    data: bytes = b"",
    content_type: str = "",
    verb: str = "",
    query: str = "",
) -> Any:
    message = pb2.CommonInvokeRequest(method=method, content_type=content_type)
    message.data.value = data
    if verb or query:
        message.http_extension.verb = pb2.HTTPExtension.Verb.Value(verb or "NONE")
        message.http_extension.querystring = query
    return pb2.InvokeServiceRequest(id=app_id, message=message)


def invoke(
    sidecar: Sidecar,
    pb2: Any,
    pb2_grpc: Any,
    *args: Any,
    metadata: tuple[tuple[str, str], ...] = (),
    **kwargs: Any,
) -> tuple[Any, dict[str, str]]:
    """(the InvokeResponse, the response's initial metadata)."""
    response, call = stub(sidecar, pb2_grpc).InvokeService.with_call(
        request(pb2, *args, **kwargs), metadata=metadata, timeout=RPC_TIMEOUT
    )
    return response, dict(call.initial_metadata())


def failure(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- A -> B over HTTP ------------------------------------------------------------------------


def test_http_round_trip_forwards_verb_query_headers_and_body(
    mesh: Mesh, pb2: Any, pb2_grpc: Any
) -> None:
    response, headers = invoke(
        mesh.a,
        pb2,
        pb2_grpc,
        "appB",
        "orders/42",
        b'{"qty": 3}',
        "application/json",
        verb="POST",
        query="expand=items&limit=5",
        metadata=(("x-trace", "abc-123"), ("tenant", "acme")),
    )
    echoed = json.loads(response.data.value)
    assert echoed["verb"] == "POST"
    assert echoed["path"] == "/orders/42"
    assert echoed["query"] == "expand=items&limit=5"
    assert echoed["body"] == '{"qty": 3}'
    sent = echoed["headers"]
    assert sent["x-trace"] == "abc-123"
    assert sent["tenant"] == "acme"
    assert sent["content-type"] == "application/json"
    assert sent["id"] == "appB"  # the target app id, for a mesh listener
    assert response.content_type == "application/json"
    # The target's response headers come back as gRPC initial metadata.
    assert headers["x-answered-by"] == "app-b"
    assert headers["x-echo-path"] == "/orders/42"
    assert "content-length" not in headers


def test_http_default_verb_is_get(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    response, _ = invoke(mesh.a, pb2, pb2_grpc, "appB", "hello")
    echoed = json.loads(response.data.value)
    assert (echoed["verb"], echoed["path"], echoed["query"]) == ("GET", "/hello", "")


def test_http_binary_data_and_content_type_round_trip(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    payload = bytes(range(256)) * 4
    response, _ = invoke(
        mesh.a, pb2, pb2_grpc, "appB", "raw", payload, "application/octet-stream", verb="PUT"
    )
    assert response.data.value == payload
    assert response.content_type == "application/octet-stream"


def test_failover_skips_the_dead_address(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    # appB resolves to [dead, alive]: round-robin starts on each in turn; every call succeeds.
    for n in range(6):
        response, _ = invoke(mesh.a, pb2, pb2_grpc, "appB", f"n/{n}")
        assert json.loads(response.data.value)["path"] == f"/n/{n}"


def test_request_timeout_header_gives_deadline_exceeded(
    mesh: Mesh, pb2: Any, pb2_grpc: Any
) -> None:
    started = time.monotonic()
    err = failure(
        lambda: invoke(
            mesh.a,
            pb2,
            pb2_grpc,
            "appB",
            "slow",
            query="seconds=3",
            metadata=(("rpc_request_timeout", "300"),),
        )
    )
    elapsed = time.monotonic() - started
    assert err.code() == grpc.StatusCode.DEADLINE_EXCEEDED, err.details()
    assert elapsed < 2.5, elapsed


def test_bad_timeout_header_is_invalid_argument(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(
        lambda: invoke(
            mesh.a, pb2, pb2_grpc, "appB", "x", metadata=(("rpc_request_timeout", "-5"),)
        )
    )
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_http_404_passes_through_as_not_found(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(lambda: invoke(mesh.a, pb2, pb2_grpc, "appB", "missing"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert "http response code 404, body: no such order" in (err.details() or "")


def test_http_500_is_internal(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(lambda: invoke(mesh.a, pb2, pb2_grpc, "appB", "broken"))
    assert err.code() == grpc.StatusCode.INTERNAL
    assert "http response code 500, body: it broke" in (err.details() or "")


def test_target_address_header_bypasses_the_resolver(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    # `elsewhere` is unknown to the resolver; the header names app B's address directly.
    response, _ = invoke(
        mesh.a,
        pb2,
        pb2_grpc,
        "elsewhere",
        "direct",
        metadata=(("rpc_target_address", f"127.0.0.1:{mesh.app_b_port}"),),
    )
    echoed = json.loads(response.data.value)
    assert echoed["path"] == "/direct"
    assert echoed["headers"]["id"] == "elsewhere"
    assert "rpc_target_address" not in echoed["headers"]
    # Without the header the unknown app has no address.
    err = failure(lambda: invoke(mesh.a, pb2, pb2_grpc, "elsewhere", "direct"))
    assert err.code() == grpc.StatusCode.UNAVAILABLE


def test_target_down_is_unavailable(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(
        lambda: invoke(
            mesh.a,
            pb2,
            pb2_grpc,
            "appB",
            "x",
            metadata=(("rpc_target_address", f"127.0.0.1:{mesh.dead_port}"),),
        )
    )
    assert err.code() == grpc.StatusCode.UNAVAILABLE, err.details()


def test_empty_id_is_invalid_argument(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(lambda: invoke(mesh.a, pb2, pb2_grpc, "", "x"))
    assert err.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_dubbo_filter_headers_reach_the_app(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    response, _ = invoke(mesh.dubbo, pb2, pb2_grpc, "orders", "getOrder", b'{"id": 1}', verb="POST")
    echoed = json.loads(response.data.value)
    sent = echoed["headers"]
    assert sent["x-services"] == "orders"
    assert sent["x-method"] == "getOrder"
    assert sent["content-type"] == "application/json"
    assert sent["accept"] == "application/json"
    assert echoed["path"] == "/orders"  # the filter makes the app id the path
    assert echoed["body"] == '{"id": 1}'


# -- A -> sidecar C -> app C over gRPC -------------------------------------------------------


def test_grpc_through_two_sidecars(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    before = len(mesh.app_c.metadata)
    response, _ = invoke(
        mesh.a,
        pb2,
        pb2_grpc,
        "appC",
        "sayHello",
        b"hi there",
        "text/plain",
        verb="POST",
        metadata=(("x-trace", "t-9"),),
    )
    answer = json.loads(response.data.value)
    assert answer == {
        "method": "sayHello",
        "data": "hi there",
        "content_type": "text/plain",
        "verb": "POST",
    }
    assert response.content_type == "application/json"
    got = mesh.app_c.metadata[before]
    assert got["x-trace"] == "t-9"  # caller metadata crosses both sidecars
    assert got.get("dapr-caller-app-id") == "appA"


def test_grpc_target_error_passes_through(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    err = failure(lambda: invoke(mesh.a, pb2, pb2_grpc, "appC", "missing"))
    assert err.code() == grpc.StatusCode.NOT_FOUND
    assert err.details() == "no such thing"


def test_sidecar_c_delivers_its_own_app_id_locally(mesh: Mesh, pb2: Any, pb2_grpc: Any) -> None:
    response, _ = invoke(mesh.c, pb2, pb2_grpc, "appC", "local", b"x")
    assert json.loads(response.data.value)["method"] == "local"
