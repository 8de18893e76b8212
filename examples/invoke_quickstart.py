"""App A calls app B through two sidecars: InvokeService to sidecar A, which forwards the call
over gRPC to sidecar B, which hands it to app B's `OnInvoke`; the answer comes back the same way.

Three terminals, from the repository root:

    uv run layotto run -c examples/config/invoke/sidecar-b.yaml   # sidecar B: gRPC 34914
    uv run layotto run -c examples/config/invoke/sidecar-a.yaml   # sidecar A: gRPC 34904
    uv run python examples/invoke_quickstart.py                   # app B on 50051, then app A

It prints `appB answered greet: hello, newcomer`. This script plays both apps: it serves app B
(a Dapr `AppCallback` gRPC server) and then, as app A, calls sidecar A. Other ports:
LAYOTTO_GRPC_PORT (sidecar A, default 34904) and APP_B_PORT (default 50051; sidecar B's
`app.port` or `--app-port` must match).
"""

import asyncio
import os

from grpclib.client import Channel
from grpclib.server import Server
from layotto._proto.dapr.proto.common import v1 as common
from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto._proto.google.protobuf import Any
from layotto._proto.spec.proto.runtime import v1 as pb


class AppB(dapr.AppCallbackBase):
    """App B: answers every invocation with a greeting for the request data."""

    async def on_invoke(self, message: common.InvokeRequest) -> common.InvokeResponse:
        name = message.data.value.decode() if message.data else "stranger"
        return common.InvokeResponse(
            data=Any(value=f"hello, {name}".encode()), content_type="text/plain"
        )


async def main() -> None:
    sidecar_port = int(os.environ.get("LAYOTTO_GRPC_PORT", "34904"))
    app_b_port = int(os.environ.get("APP_B_PORT", "50051"))
    app_b = Server([AppB()])
    await app_b.start("127.0.0.1", app_b_port)
    try:
        # App A: InvokeService(id=appB) on its own sidecar.
        async with Channel("127.0.0.1", sidecar_port) as channel:
            request = pb.InvokeServiceRequest(
                id="appB",
                message=pb.CommonInvokeRequest(
                    method="greet", data=Any(value=b"newcomer"), content_type="text/plain"
                ),
            )
            answer = await pb.RuntimeStub(channel).invoke_service(request, timeout=10)
            text = answer.data.value.decode() if answer.data else ""
            print(f"appB answered greet: {text}")
    finally:
        app_b.close()
        await app_b.wait_closed()


if __name__ == "__main__":
    asyncio.run(main())
