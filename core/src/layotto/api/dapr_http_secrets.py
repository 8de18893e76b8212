"""Dapr's secrets API over HTTP: `GET /v1.0/secrets/{store}/{key}` -> `{name: value}` (one
secret can hold several values) and `GET /v1.0/secrets/{store}/bulk` -> `{key: {name: value}}`,
with `metadata.<key>` query parameters passed to the store."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_request import query_metadata
from layotto.api.http_errors import operation_failed
from layotto.errors import LayottoError

SECRET_GET = "ERR_SECRET_GET"


class SecretRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._secrets = ctx.services.secrets

    def routes(self) -> list[Route]:
        guarded = self._ctx.guarded
        return [
            # First: a secret named `bulk` is not reachable, as in daprd.
            Route("/v1.0/secrets/{store}/bulk", guarded(self.bulk_get), methods=["GET"]),
            Route("/v1.0/secrets/{store}/{key:path}", guarded(self.get), methods=["GET"]),
        ]

    async def get(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        key: str = request.path_params["key"]
        try:
            values = await self._secrets.get(store, key, query_metadata(request))
        except LayottoError as err:
            raise operation_failed(
                err,
                SECRET_GET,
                f"failed getting secret with key {key} from secret store {store}: {err.message}",
            ) from None
        return JSONResponse(values)

    async def bulk_get(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        try:
            secrets = await self._secrets.bulk_get(store, query_metadata(request))
        except LayottoError as err:
            raise operation_failed(
                err,
                SECRET_GET,
                f"failed getting secrets from secret store {store}: {err.message}",
            ) from None
        return JSONResponse(secrets)


def routes(ctx: DaprHttpContext) -> list[Route]:
    return SecretRoutes(ctx).routes()
