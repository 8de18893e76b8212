"""Dapr's configuration API over HTTP (`/v1.0/configuration/...`, also at `/v1.0-alpha1/`).

- `GET {store}?key=a&key=b` answers `{key: {value, version, metadata}}` (every key when none
  is named), or 204 when nothing matches, as daprd.
- `GET {store}/subscribe?key=a&key=b` (every key when none is named; `metadata.*` query
  parameters as for Get) subscribes and answers `{"id": ...}`; each update then reaches the
  app as daprd sends it: `POST /configuration/{store}/{key}` once per key of the update, the
  whole event `{"id", "items": {key: {value, version, metadata}}}` as the JSON body, through
  the app channel (an HTTP app's HTTP, a gRPC app's `OnInvoke`; `actors.config_pusher`).
  Without an app channel (no app port) the answer is daprd's 500 `ERR_APP_CHANNEL_NIL`; an
  app on Layotto's AppCallback, which has no OnInvoke, gets 501 `ERR_CONFIGURATION_SUBSCRIBE`.
- `GET {store}/{id}/unsubscribe` ends a subscription by id (made over HTTP or gRPC), answering
  `{"ok": true}`, or 500 `{"message"}` for an id that is not open (daprd leaves `ok: false`
  out: `omitempty`).
- The store is checked first, as daprd does: none configured is 500
  `ERR_CONFIGURATION_STORE_NOT_CONFIGURED`, an unknown one 400
  `ERR_CONFIGURATION_STORE_NOT_FOUND`.
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
# daprd's answer without an app channel (pkg/http/api.go, onSubscribeConfiguration), and why.
APP_CHANNEL_NIL = "ERR_APP_CHANNEL_NIL"
NO_APP_CHANNEL = (
    "app channel is not initialized. cannot subscribe to configuration updates: no app port "
    "is configured, so there is no app to post the updates to (set --app-port, or subscribe "
    "with the gRPC SubscribeConfiguration API)"
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

    def _check_store(self, store: str) -> None:
        """daprd's store check, made before anything else (getConfigurationStoreWithRequest-
        Validation): its codes, statuses and messages."""
        names = self._config.store_names
        if not names:
            raise HttpError(
                500,
                "ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
                "configuration stores not configured",
            )
        if store not in names:
            raise HttpError(
                400, "ERR_CONFIGURATION_STORE_NOT_FOUND", f"configuration store {store} not found"
            )

    async def subscribe(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        self._check_store(store)
        updates = self._ctx.config_updates
        if updates is None:
            raise HttpError(500, APP_CHANNEL_NIL, NO_APP_CHANNEL)
        keys = request.query_params.getlist("key")
        try:
            subscription_id = await updates.subscribe(store, keys, query_metadata(request))
        except LayottoError as err:
            raise operation_failed(
                err,
                "ERR_CONFIGURATION_SUBSCRIBE",
                f"failed to subscribe {keys} from Configuration store {store}: {err.message}",
            ) from None
        return JSONResponse({"id": subscription_id})

    async def unsubscribe(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        self._check_store(store)
        subscription_id: str = request.path_params["id"]
        if self._config.unsubscribe(subscription_id):
            return JSONResponse({"ok": True})
        message = (
            f"failed to unsubscribe to configuration request {subscription_id}: "
            "subscription does not exist"
        )
        return JSONResponse({"message": message}, status_code=500)


def routes(ctx: DaprHttpContext) -> list[Route]:
    return ConfigurationRoutes(ctx).routes()
