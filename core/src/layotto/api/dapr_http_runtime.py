"""The sidecar's own Dapr endpoints: `PUT /v1.0/metadata/{key}` (the raw body becomes
`extended[key]` of `GET /v1.0/metadata`, 204) and `POST /v1.0/shutdown` (204, then a graceful
shutdown, as `SIGTERM` would)."""

from __future__ import annotations

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_request import read_body


class RuntimeRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx

    def routes(self) -> list[Route]:
        return [
            Route("/v1.0/metadata/{key}", self._ctx.guarded(self.set_metadata), methods=["PUT"]),
            # Not through the gate: asking again while draining still gets its 204.
            Route("/v1.0/shutdown", self.shutdown, methods=["POST"]),
        ]

    async def set_metadata(self, request: Request) -> Response:
        body = await read_body(request)
        self._ctx.set_metadata(request.path_params["key"], body.decode("utf-8", "replace"))
        return Response(status_code=204)

    async def shutdown(self, request: Request) -> Response:
        # After the answer is sent: the drain that follows must not cut this call off.
        return Response(status_code=204, background=BackgroundTask(self._ctx.shutdown))


def routes(ctx: DaprHttpContext) -> list[Route]:
    return RuntimeRoutes(ctx).routes()
