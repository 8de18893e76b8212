"""Dapr's configuration API over HTTP (`/v1.0/configuration/...`, also at `/v1.0-alpha1/`).

- `GET {store}?key=a&key=b` answers `{key: {value, version, metadata}}` (every key when none
  is named), or 204 when nothing matches, as daprd.
- `GET {store}/subscribe` is refused with 501: daprd posts each update to the app's HTTP
  endpoint `/configuration/{store}/{key}`, and this sidecar's app channel is gRPC only. Apps
  subscribe over gRPC (`SubscribeConfiguration`, which every Dapr SDK uses) instead.
- `GET {store}/{id}/unsubscribe` ends a subscription by id (one made over gRPC), answering
  `{"ok": true}`, or 500 `{"ok": false, "message"}` for an id that is not open.
"""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_request import query_metadata
from layotto.api.http_errors import HttpError, operation_failed
from layotto.errors import LayottoError
from layotto.plugin import ConfigItem
from layotto.plugin.configuration import VERSION_METADATA

PREFIXES = ("/v1.0", "/v1.0-alpha1")
SUBSCRIBE_UNSUPPORTED = (
    "configuration subscriptions over HTTP are not supported by this sidecar: updates would "
    "be posted to the app over HTTP, and its app channel is gRPC; subscribe with the gRPC "
    "SubscribeConfiguration API instead"
)


def item_json(item: ConfigItem) -> dict[str, Any]:
    """Dapr's `configuration.Item`, empty fields left out as Go's `omitempty` does."""
    body: dict[str, Any] = {}
    if item.content:
        body["value"] = item.content
    version = item.metadata.get(VERSION_METADATA, "")
    if version:
        body["version"] = version
    if item.metadata:
        body["metadata"] = dict(item.metadata)
    return body


class ConfigurationRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._config = ctx.services.configuration

    def routes(self) -> list[Route]:
        guarded = self._ctx.guarded
        routes: list[Route] = []
        for prefix in PREFIXES:
            base = prefix + "/configuration/{store}"
            routes += [
                Route(base, guarded(self.get), methods=["GET"]),
                Route(base + "/subscribe", guarded(self.subscribe), methods=["GET"]),
                Route(base + "/{id}/unsubscribe", guarded(self.unsubscribe), methods=["GET"]),
            ]
        return routes

    async def get(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        keys = request.query_params.getlist("key")
        try:
            items = await self._config.get(
                store, self._ctx.app_id, "", "", keys, query_metadata(request)
            )
        except LayottoError as err:
            raise operation_failed(
                err,
                "ERR_CONFIGURATION_GET",
                f"failed to get {keys} from Configuration store {store}: {err.message}",
            ) from None
        if not items:
            return Response(status_code=204)
        return JSONResponse({item.key: item_json(item) for item in items})

    async def subscribe(self, request: Request) -> Response:
        raise HttpError(501, "ERR_CONFIGURATION_SUBSCRIBE", SUBSCRIBE_UNSUPPORTED)

    async def unsubscribe(self, request: Request) -> Response:
        subscription_id: str = request.path_params["id"]
        if self._config.unsubscribe(subscription_id):
            return JSONResponse({"ok": True})
        message = (
            f"failed to unsubscribe to configuration request {subscription_id}: "
            "no such subscription"
        )
        return JSONResponse({"ok": False, "message": message}, status_code=500)


def routes(ctx: DaprHttpContext) -> list[Route]:
    return ConfigurationRoutes(ctx).routes()
