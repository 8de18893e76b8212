"""InvokeService through one sidecar and through two, against calling the target directly.

=======================  =================================================  =====================
scenario                 sidecar (sidecar A, ``rpc`` section below)         direct
=======================  =================================================  =====================
``invoke_http``          InvokeService(id=``bench-http``, GET ``echo``):    httpx ``GET /echo``
                         ``rpc.http`` -> the HTTP target                    on the HTTP target
``invoke_grpc_2hop``     InvokeService(id=``appB``, ``echo``):              grpclib ``OnInvoke``
                         ``rpc.grpc`` -> sidecar B -> app B's ``OnInvoke``  on app B
=======================  =================================================  =====================

The harness provides the ``invoke`` backend (:func:`provide`): three helper processes, started
once per run: the HTTP target (uvicorn, a bare ASGI app answering 128 bytes), app B (a grpclib
Dapr ``AppCallback`` answering 128 bytes) and sidecar B (``layotto run --app-id appB
--app-port <app B>``). Their CPU counts as backend CPU. The request carries 128 bytes; so does
every answer.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import httpx
from grpclib.client import Channel
from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.dapr.proto.runtime import v1 as dapr_runtime
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.spec.proto.runtime import v1 as pb

from bench.scenario import Scenario, register

HTTP_APP = "bench-http"
GRPC_APP = "appB"
PAYLOAD = b"x" * 128
ANSWER = b"y" * 128
READY_TIMEOUT = 20.0


# -- the helper processes (``python -m bench.scenarios.invoke http|app``) -----------------------


async def _asgi(scope: dict[str, Any], receive: Any, send: Any) -> None:
    if scope["type"] != "http":
        return
    while (await receive()).get("more_body"):
        pass
    headers = [(b"content-type", b"application/octet-stream"), (b"x-bench", b"1")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": ANSWER})


class _AppB(dapr_runtime.AppCallbackBase):
    async def on_invoke(self, message: dapr_common.InvokeRequest) -> dapr_common.InvokeResponse:
        return dapr_common.InvokeResponse(
            data=PbAny(value=ANSWER), content_type="application/octet-stream"
        )


def _serve_http() -> None:
    import socket

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    print(sock.getsockname()[1], flush=True)
    config = uvicorn.Config(_asgi, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])


def _serve_app() -> None:
    from grpclib.server import Server

    async def main() -> None:
        server = Server([_AppB()])
        await server.start("127.0.0.1", 0)
        listener: Any = server._server  # grpclib does not expose the bound port
        print(listener.sockets[0].getsockname()[1], flush=True)
        await server.wait_closed()

    asyncio.run(main())


def _start(args: list[str]) -> tuple[subprocess.Popen[bytes], str]:
    """Start a helper; its first stdout line is its port."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.scenarios.invoke", *args],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    assert proc.stdout is not None
    line = _readline(proc, proc.stdout)
    return proc, f"127.0.0.1:{int(line)}"


def _readline(
    proc: subprocess.Popen[bytes], stream: Any, match: Callable[[str], bool] = bool
) -> str:
    """The first line of `stream` for which `match` holds, within READY_TIMEOUT."""
    found: list[str] = []
    done = threading.Event()

    def read() -> None:
        for raw in iter(stream.readline, b""):
            text = raw.decode("utf-8", "replace").strip()
            if match(text):
                found.append(text)
                done.set()
                break
        done.set()

    threading.Thread(target=read, daemon=True).start()
    if not done.wait(READY_TIMEOUT) or not found:
        proc.kill()
        raise RuntimeError(f"helper {proc.args!r} gave no ready line (exit {proc.poll()})")
    return found[0]


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@contextlib.contextmanager
def provide() -> Iterator[tuple[dict[str, str], list[int]]]:
    """The ``invoke`` backend: ({"invoke": HTTP target, "invoke_app": app B, "invoke_sidecar":
    sidecar B}, their pids). Everything stops on exit."""
    procs: list[subprocess.Popen[bytes]] = []
    try:
        http, http_address = _start(["http"])
        procs.append(http)
        app, app_address = _start(["app"])
        procs.append(app)
        sidecar = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "layotto",
                "run",
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--log-format",
                "json",
                "--app-id",
                GRPC_APP,
                "--app-port",
                app_address.rpartition(":")[2],
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        procs.append(sidecar)
        ready = _readline(sidecar, sidecar.stderr, lambda line: '"layotto is ready"' in line)
        sidecar_address = f"127.0.0.1:{json.loads(ready)['grpc_port']}"
        addresses = {"invoke": http_address, "invoke_app": app_address}
        addresses["invoke_sidecar"] = sidecar_address
        yield addresses, [p.pid for p in procs]
    finally:
        for proc in reversed(procs):
            _stop(proc)


# -- the scenarios ------------------------------------------------------------------------------


class _Invoke(Scenario[Any]):
    requires = frozenset({"invoke"})

    def sidecar_config(self) -> Mapping[str, Any]:
        backends = self.context.backends
        return {
            "app": {"id": "appA"},
            "components": [
                {"name": "http", "type": "rpc.http", "metadata": {}},
                {"name": "grpc", "type": "rpc.grpc", "metadata": {"target": "sidecar"}},
                {
                    "name": "apps",
                    "type": "nameresolution.static",
                    "metadata": {
                        "apps": {
                            HTTP_APP: [backends["invoke"]],
                            GRPC_APP: [backends["invoke_sidecar"]],
                        }
                    },
                },
            ],
            "rpc": {"default_channel": "http", "app_channels": {GRPC_APP: "grpc"}},
        }


def _request(app_id: str) -> pb.InvokeServiceRequest:
    return pb.InvokeServiceRequest(
        id=app_id,
        message=pb.CommonInvokeRequest(
            method="echo", data=PbAny(value=PAYLOAD), content_type="application/octet-stream"
        ),
    )


def _check(data: PbAny | None) -> None:
    if data is None or data.value != ANSWER:
        raise RuntimeError("InvokeService: unexpected answer")


@register
class InvokeHttp(_Invoke):
    name = "invoke_http"
    description = (
        "InvokeService via rpc.http to an HTTP app (128 B each way) vs httpx GET on that app"
    )

    async def make_direct_client(self) -> httpx.AsyncClient:
        limits = httpx.Limits(max_connections=100, max_keepalive_connections=100)
        return httpx.AsyncClient(
            base_url=f"http://{self.backend('invoke')}", limits=limits, trust_env=False
        )

    async def close_direct_client(self, client: httpx.AsyncClient) -> None:
        await client.aclose()

    async def direct_call(self, client: httpx.AsyncClient, i: int) -> None:
        response = await client.request(
            "GET", "/echo", content=PAYLOAD, headers={"content-type": "application/octet-stream"}
        )
        if response.status_code != 200 or response.content != ANSWER:
            raise RuntimeError(f"direct GET /echo: {response.status_code}")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        _check((await stub.invoke_service(_request(HTTP_APP))).data)


@register
class InvokeGrpcTwoHops(_Invoke):
    name = "invoke_grpc_2hop"
    description = (
        "InvokeService via rpc.grpc -> sidecar B -> app B OnInvoke vs OnInvoke on app B directly"
    )
    baseline = "invoke_http"

    async def make_direct_client(self) -> dapr_runtime.AppCallbackStub:
        host, _, port = self.backend("invoke_app").rpartition(":")
        self._channel = Channel(host, int(port))
        return dapr_runtime.AppCallbackStub(self._channel)

    async def close_direct_client(self, client: dapr_runtime.AppCallbackStub) -> None:
        self._channel.close()

    async def direct_call(self, client: dapr_runtime.AppCallbackStub, i: int) -> None:
        reply = await client.on_invoke(
            dapr_common.InvokeRequest(
                method="echo", data=PbAny(value=PAYLOAD), content_type="application/octet-stream"
            )
        )
        _check(reply.data)

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        _check((await stub.invoke_service(_request(GRPC_APP))).data)


if __name__ == "__main__":
    {"http": _serve_http, "app": _serve_app}[sys.argv[1]]()
