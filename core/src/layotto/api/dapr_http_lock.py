"""Dapr's distributed lock API over HTTP (alpha): `POST /v1.0-alpha1/lock/{store}` with
`{resourceId, lockOwner, expiryInSeconds}` -> `{"success": bool}`, and
`POST /v1.0-alpha1/unlock/{store}` with `{resourceId, lockOwner}` -> `{"status": n}` (0 success,
1 no such lock, 2 held by another owner, 3 internal error), on the Dapr-keyed LockService.

Bodies are protojson, which takes a field's JSON name or its proto name (`resource_id`)."""

from __future__ import annotations

from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_request import as_object, first_of, integer, read_json, string
from layotto.api.http_errors import malformed, operation_failed
from layotto.errors import LayottoError
from layotto.plugin import LockStatus

# Dapr's UnlockResponse.Status numbers.
UNLOCK_STATUS: dict[LockStatus, int] = {
    LockStatus.SUCCESS: 0,
    LockStatus.LOCK_UNEXIST: 1,
    LockStatus.LOCK_BELONG_TO_OTHERS: 2,
    LockStatus.INTERNAL_ERROR: 3,
}
INT32_MAX = 2**31 - 1


def _field(body: dict[str, Any], json_name: str, proto_name: str) -> str:
    name = first_of(body, json_name, proto_name)
    return string(body, name, name)


class LockRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._lock = ctx.services.dapr_lock

    def routes(self) -> list[Route]:
        guarded = self._ctx.guarded
        return [
            Route("/v1.0-alpha1/lock/{store}", guarded(self.try_lock), methods=["POST"]),
            Route("/v1.0-alpha1/unlock/{store}", guarded(self.unlock), methods=["POST"]),
        ]

    async def try_lock(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        body = as_object(await read_json(request), "body")
        name = first_of(body, "expiryInSeconds", "expiry_in_seconds")
        expiry = integer(body, name, name) or 0
        if not -INT32_MAX - 1 <= expiry <= INT32_MAX:
            raise malformed(f"field {name!r} is out of range for an int32")
        try:
            success = await self._lock.try_lock(
                store,
                _field(body, "resourceId", "resource_id"),
                _field(body, "lockOwner", "lock_owner"),
                expiry,
            )
        except LayottoError as err:
            raise operation_failed(
                err, "ERR_TRY_LOCK", f"failed to try acquiring lock: {err.message}"
            ) from None
        return JSONResponse({"success": success})

    async def unlock(self, request: Request) -> Response:
        store: str = request.path_params["store"]
        body = as_object(await read_json(request), "body")
        try:
            status = await self._lock.unlock(
                store,
                _field(body, "resourceId", "resource_id"),
                _field(body, "lockOwner", "lock_owner"),
            )
        except LayottoError as err:
            raise operation_failed(
                err, "ERR_UNLOCK", f"failed to release lock: {err.message}"
            ) from None
        return JSONResponse({"status": UNLOCK_STATUS[status]})


def routes(ctx: DaprHttpContext) -> list[Route]:
    return LockRoutes(ctx).routes()
