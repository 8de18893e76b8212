"""Dapr's publish API over HTTP: `POST /v1.0/publish/{pubsub}/{topic}` and the bulk form
`/v1.0-alpha1/publish/bulk/{pubsub}/{topic}` (also at `/v1.0/`), with Dapr's CloudEvent
envelope (source = this app id, type `com.dapr.event.sent`).

A single publish sends the body as the event data with the request's `Content-Type`; the
`metadata.<key>` query parameters are the publish metadata (`rawPayload`, `ttlInSeconds`,
`cloudevent.*`, component keys). A bulk publish takes `[{entryId, event, contentType,
metadata}]`, converts each event as daprd does (JSON types: the event's JSON; text and XML
types: the string; binary types: the base64 string decoded) and answers 204, or 500 with
`{"failedEntries": [{entryId, error}], "errorCode": "ERR_PUBSUB_PUBLISH_MESSAGE"}`.
"""

from __future__ import annotations

import base64
import binascii
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_json import go_json
from layotto.api.dapr_http_request import (
    as_list,
    as_object,
    query_metadata,
    read_body,
    read_json,
    string,
    string_map,
)
from layotto.api.http_errors import HttpError, operation_failed
from layotto.errors import LayottoError
from layotto.services.cloudevents import dapr_style, is_binary, is_json
from layotto.services.pubsub import BulkEntry

PUBLISH_FAILED = "ERR_PUBSUB_PUBLISH_MESSAGE"
EVENTS_SER = "ERR_PUBSUB_EVENTS_SER"


def _is_text(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media.startswith("text/") or media.endswith("xml")


def event_bytes(event: Any, content_type: str, where: str) -> bytes:
    """daprd's `ConvertEventToBytes`."""
    if is_binary(content_type):
        if not isinstance(event, str):
            raise HttpError(400, EVENTS_SER, f"field {where!r} must be a base64 string")
        try:
            return base64.b64decode(event, validate=True)
        except (binascii.Error, ValueError):
            raise HttpError(400, EVENTS_SER, f"field {where!r} is not valid base64") from None
    if _is_text(content_type):
        if not isinstance(event, str):
            raise HttpError(
                400, EVENTS_SER, f"field {where!r} must be a string for {content_type!r}"
            )
        return event.encode()
    if is_json(content_type):
        return go_json(event)
    raise HttpError(400, EVENTS_SER, f"cannot convert event with content type {content_type!r}")


class PubSubRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._pubsub = ctx.services.pubsub
        self._style = dapr_style(ctx.app_id)

    def routes(self) -> list[Route]:
        guarded = self._ctx.guarded
        methods = ["POST", "PUT"]
        bulk = guarded(self.publish_bulk)
        return [
            # Before the single form: `bulk` would otherwise be taken for a pubsub name.
            Route("/v1.0-alpha1/publish/bulk/{pubsub}/{topic:path}", bulk, methods=methods),
            Route("/v1.0/publish/bulk/{pubsub}/{topic:path}", bulk, methods=methods),
            Route("/v1.0/publish/{pubsub}/{topic:path}", guarded(self.publish), methods=methods),
        ]

    async def publish(self, request: Request) -> Response:
        pubsub: str = request.path_params["pubsub"]
        topic: str = request.path_params["topic"]
        # Name and topic first, as daprd checks them before reading the body.
        self._pubsub.resolve(pubsub)
        data = await read_body(request)
        try:
            await self._pubsub.publish(
                pubsub,
                topic,
                data,
                content_type=request.headers.get("content-type", ""),
                metadata=query_metadata(request),
                style=self._style,
                traceparent=request.headers.get("traceparent"),
            )
        except LayottoError as err:
            raise operation_failed(
                err,
                PUBLISH_FAILED,
                f"error when publish to topic {topic} in pubsub {pubsub}: {err.message}",
            ) from None
        return Response(status_code=204)

    async def publish_bulk(self, request: Request) -> Response:
        pubsub: str = request.path_params["pubsub"]
        topic: str = request.path_params["topic"]
        self._pubsub.resolve(pubsub)
        entries: list[BulkEntry] = []
        seen: set[str] = set()
        for index, raw in enumerate(as_list(await read_json(request), "body")):
            where = f"[{index}]"
            entry = as_object(raw, where)
            entry_id = string(entry, "entryId", f"{where}.entryId")
            if not entry_id or entry_id in seen:
                raise HttpError(
                    400, EVENTS_SER, f"field {where + '.entryId'!r} is missing or duplicated"
                )
            seen.add(entry_id)
            # Without a content type daprd refuses the entry; take a string as text and
            # anything else as JSON instead.
            content_type = string(entry, "contentType", f"{where}.contentType") or (
                "text/plain" if isinstance(entry.get("event"), str) else "application/json"
            )
            entries.append(
                BulkEntry(
                    entry_id,
                    event_bytes(entry.get("event"), content_type, f"{where}.event"),
                    content_type,
                    string_map(entry, "metadata", f"{where}.metadata"),
                )
            )
        try:
            failures = await self._pubsub.publish_bulk(
                pubsub,
                topic,
                entries,
                metadata=query_metadata(request),
                style=self._style,
                traceparent=request.headers.get("traceparent"),
            )
        except LayottoError as err:
            raise operation_failed(err, PUBLISH_FAILED, err.message) from None
        if not failures:
            return Response(status_code=204)
        return JSONResponse(
            {
                "failedEntries": [{"entryId": f.entry_id, "error": f.error} for f in failures],
                "errorCode": PUBLISH_FAILED,
            },
            status_code=500,
        )


def routes(ctx: DaprHttpContext) -> list[Route]:
    return PubSubRoutes(ctx).routes()
