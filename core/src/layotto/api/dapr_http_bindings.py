"""Dapr's output bindings over HTTP: `POST|PUT /v1.0/bindings/{name}` with
`{data, metadata, operation}`.

As daprd: `data` is sent to the binding as its JSON encoding (a string arrives quoted, a missing
`data` as `null`); the answer is the binding's data as the body (200) with its metadata as
`metadata.<key>` headers, or 204 when the binding answered nothing; every failure is 500
`ERR_INVOKE_OUTPUT_BINDING`. The W3C `traceparent`/`tracestate` headers travel in the metadata."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_json import go_json
from layotto.api.dapr_http_request import METADATA_PREFIX, as_object, read_json, string, string_map
from layotto.api.http_errors import HttpError
from layotto.errors import LayottoError

BINDING_FAILED = "ERR_INVOKE_OUTPUT_BINDING"
TRACE_HEADERS = ("traceparent", "tracestate")


class BindingRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._bindings = ctx.services.bindings

    def routes(self) -> list[Route]:
        endpoint = self._ctx.guarded(self.invoke)
        return [Route("/v1.0/bindings/{name}", endpoint, methods=["POST", "PUT"])]

    async def invoke(self, request: Request) -> Response:
        name: str = request.path_params["name"]
        body = as_object(await read_json(request), "body")
        metadata = string_map(body, "metadata", "metadata")
        for header in TRACE_HEADERS:
            if header in request.headers:
                metadata[header] = request.headers[header]
        try:
            answer = await self._bindings.invoke(
                name,
                string(body, "operation", "operation"),
                go_json(body.get("data")),
                metadata,
            )
        except LayottoError as err:
            # The service's message already names the binding.
            raise HttpError(500, BINDING_FAILED, err.message, reason=err.reason) from None
        headers = {METADATA_PREFIX + k: v for k, v in answer.metadata.items()}
        if not answer.data and not answer.metadata:
            return Response(status_code=204)
        return Response(
            answer.data, status_code=200, headers=headers, media_type="application/json"
        )


def routes(ctx: DaprHttpContext) -> list[Route]:
    return BindingRoutes(ctx).routes()
