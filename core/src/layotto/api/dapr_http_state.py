"""Dapr's state API over HTTP (`/v1.0/state/...`), on the Dapr-flavoured StateService
(`<appid>||key`), answering as daprd's `pkg/api/http/http.go` does.

Values: daprd decodes each item's `value` as JSON and stores what Go's `json.Marshal` makes of
it, so `"value": "hi"` is stored as the 4 bytes `"hi"` (quotes included) and an object with its
keys sorted. A read answers the stored bytes as they are; a bulk read embeds them as raw JSON.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_json import go_json, is_strict_json
from layotto.api.dapr_http_request import (
    METADATA_PREFIX,
    as_list,
    as_object,
    integer,
    optional_string,
    query_metadata,
    read_body,
    read_json,
    string,
    string_map,
)
from layotto.api.http_errors import HttpError, malformed, operation_failed
from layotto.errors import LayottoError, Unsupported
from layotto.plugin import (
    BulkGetItem,
    Concurrency,
    Consistency,
    DeleteRequest,
    Feature,
    QueryItem,
    SetRequest,
    TransactionOperation,
)

JSON = "application/json"
ETAG_HEADER = "ETag"


def _concurrency(raw: str, where: str) -> Concurrency:
    if not raw:
        return Concurrency.LAST_WRITE
    try:
        return Concurrency(raw)
    except ValueError:
        raise malformed(f"field {where!r} must be 'first-write' or 'last-write'") from None


def _consistency(raw: str, where: str) -> Consistency:
    if not raw:
        return Consistency.EVENTUAL
    try:
        return Consistency(raw)
    except ValueError:
        raise malformed(f"field {where!r} must be 'eventual' or 'strong'") from None


def _set_request(item: Any, where: str, metadata: Mapping[str, str]) -> SetRequest:
    """One `{key, value, etag, metadata, options}`; the query's metadata wins over the item's,
    as daprd merges them."""
    obj = as_object(item, where)
    options = as_object(obj.get("options") or {}, f"{where}.options")
    return SetRequest(
        key=string(obj, "key", f"{where}.key", required=True),
        value=go_json(obj.get("value")),
        etag=optional_string(obj, "etag", f"{where}.etag"),
        metadata={**string_map(obj, "metadata", f"{where}.metadata"), **metadata},
        concurrency=_concurrency(
            string(options, "concurrency", f"{where}.options.concurrency"),
            f"{where}.options.concurrency",
        ),
        consistency=_consistency(
            string(options, "consistency", f"{where}.options.consistency"),
            f"{where}.options.consistency",
        ),
    )


def _delete_request(item: Any, where: str, metadata: Mapping[str, str]) -> DeleteRequest:
    request = _set_request(item, where, metadata)
    return DeleteRequest(
        request.key, request.etag, request.metadata, request.concurrency, request.consistency
    )


def _raw_json(data: bytes) -> str:
    """Stored bytes as a JSON value for a bulk answer: as they are when they are JSON (what the
    HTTP API writes); else as a string (bytes written raw over gRPC, which daprd could not
    encode at all), base64 when not even UTF-8."""
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return json.dumps(base64.b64encode(data).decode("ascii"))
    return text if is_strict_json(text) else json.dumps(text, ensure_ascii=False)


def _query_item(item: QueryItem) -> str:
    # Query results are JSON documents (only those match), so `data` is embedded as raw JSON.
    parts = [f'"key":{json.dumps(item.key, ensure_ascii=False)}']
    if item.data:
        parts.append(f'"data":{_raw_json(item.data)}')
    if item.etag is not None:
        parts.append(f'"etag":{json.dumps(item.etag, ensure_ascii=False)}')
    if item.error:
        parts.append(f'"error":{json.dumps(item.error, ensure_ascii=False)}')
    return "{" + ",".join(parts) + "}"


def _bulk_item(item: BulkGetItem) -> str:
    parts = [f'"key":{json.dumps(item.key, ensure_ascii=False)}']
    if item.error:
        parts.append(f'"error":{json.dumps(item.error, ensure_ascii=False)}')
    elif item.data is not None:
        if item.data:  # empty data is left out, as Go's `omitempty` does
            parts.append(f'"data":{_raw_json(item.data)}')
        if item.etag is not None:
            parts.append(f'"etag":{json.dumps(item.etag, ensure_ascii=False)}')
        if item.metadata:
            parts.append(f'"metadata":{json.dumps(dict(item.metadata), ensure_ascii=False)}')
    return "{" + ",".join(parts) + "}"


class StateRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._state = ctx.services.dapr_state

    def routes(self) -> list[Route]:
        guarded = self._ctx.guarded
        return [
            Route("/v1.0/state/{store}", guarded(self.save), methods=["POST", "PUT"]),
            Route("/v1.0/state/{store}/bulk", guarded(self.bulk_get), methods=["POST", "PUT"]),
            Route(
                "/v1.0/state/{store}/transaction",
                guarded(self.transaction),
                methods=["POST", "PUT"],
            ),
            Route("/v1.0-alpha1/state/{store}/query", guarded(self.query), methods=["POST", "PUT"]),
            Route("/v1.0/state/{store}/{key:path}", guarded(self.get), methods=["GET"]),
            Route("/v1.0/state/{store}/{key:path}", guarded(self.delete), methods=["DELETE"]),
        ]

    def _store(self, request: Request) -> str:
        """The store named in the path, checked first: daprd answers an unknown store before it
        looks at the body."""
        store: str = request.path_params["store"]
        self._state.features(store)
        return store

    async def save(self, request: Request) -> Response:
        store = self._store(request)
        body = as_list(await read_json(request), "body")
        metadata = query_metadata(request)
        items = [_set_request(item, f"[{i}]", metadata) for i, item in enumerate(body)]
        try:
            await self._state.save(store, items)
        except LayottoError as err:
            raise operation_failed(
                err, "ERR_STATE_SAVE", f"failed saving state in state store {store}: {err.message}"
            ) from None
        return Response(status_code=204)

    async def get(self, request: Request) -> Response:
        store = self._store(request)
        key: str = request.path_params["key"]
        consistency = _consistency(request.query_params.get("consistency", ""), "consistency")
        try:
            found = await self._state.get(
                store, key, consistency=consistency, metadata=query_metadata(request)
            )
        except LayottoError as err:
            raise operation_failed(
                err, "ERR_STATE_GET", f"fail to get {key} from state store {store}: {err.message}"
            ) from None
        if found is None:
            return Response(status_code=204)
        headers = {METADATA_PREFIX + k: v for k, v in found.metadata.items()}
        if found.etag is not None:
            headers[ETAG_HEADER] = found.etag
        return Response(found.data, status_code=200, headers=headers, media_type=JSON)

    async def delete(self, request: Request) -> Response:
        store = self._store(request)
        key: str = request.path_params["key"]
        params = request.query_params
        # A present but empty If-Match is an empty ETag, which is not the same as none.
        etag = request.headers.get("if-match")
        delete = DeleteRequest(
            key,
            etag,
            query_metadata(request),
            _concurrency(params.get("concurrency", ""), "concurrency"),
            _consistency(params.get("consistency", ""), "consistency"),
        )
        try:
            await self._state.delete(store, delete)
        except LayottoError as err:
            raise operation_failed(
                err, "ERR_STATE_DELETE", f"failed deleting state with key {key}: {err.message}"
            ) from None
        return Response(status_code=204)

    async def bulk_get(self, request: Request) -> Response:
        store = self._store(request)
        body = as_object(await read_json(request), "body")
        keys = as_list(body.get("keys") or [], "keys")
        for index, key in enumerate(keys):
            if not isinstance(key, str) or not key:
                raise malformed(f"field 'keys[{index}]' must be a non-empty string")
        parallelism = integer(body, "parallelism", "parallelism") or 0
        if parallelism < 0:
            raise malformed("field 'parallelism' must not be negative")
        metadata = {**string_map(body, "metadata", "metadata"), **query_metadata(request)}
        try:
            items = await self._state.bulk_get(
                store, keys, parallelism=parallelism, metadata=metadata
            )
        except LayottoError as err:
            raise operation_failed(err, "ERR_STATE_BULK_GET", err.message) from None
        text = "[" + ",".join(_bulk_item(item) for item in items) + "]"
        return Response(text.encode(), media_type=JSON)

    async def query(self, request: Request) -> Response:
        """The body is the query document itself; `?metadata.x=` goes to the store."""
        store = self._store(request)
        body = (await read_body(request)).decode("utf-8", errors="replace")
        found = await self._state.query(store, body, query_metadata(request))
        parts = [f'"results":[{",".join(_query_item(item) for item in found.results)}]']
        if found.token:  # Go's `omitempty`
            parts.append(f'"token":{json.dumps(found.token)}')
        if found.metadata:
            parts.append(f'"metadata":{json.dumps(dict(found.metadata), ensure_ascii=False)}')
        return Response(("{" + ",".join(parts) + "}").encode(), media_type=JSON)

    async def transaction(self, request: Request) -> Response:
        store = self._store(request)
        if Feature.TRANSACTIONAL not in self._state.features(store):
            raise Unsupported(
                f"state store {store} doesn't support transactions",
                reason="DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            )
        body = as_object(await read_json(request), "body")
        query = query_metadata(request)
        metadata = {**string_map(body, "metadata", "metadata"), **query}
        operations: list[TransactionOperation] = []
        for index, raw in enumerate(as_list(body.get("operations") or [], "operations")):
            where = f"operations[{index}]"
            op = as_object(raw, where)
            kind = string(op, "operation", f"{where}.operation", required=True)
            if op.get("request") is None:
                raise malformed(f"field {where + '.request'!r} is required")
            if kind == "upsert":
                operations.append(_set_request(op["request"], f"{where}.request", query))
            elif kind == "delete":
                operations.append(_delete_request(op["request"], f"{where}.request", query))
            else:
                raise HttpError(
                    400,
                    "ERR_NOT_SUPPORTED_STATE_OPERATION",
                    f"operation type {kind} not supported",
                )
        if not operations:
            return Response(status_code=204)
        try:
            await self._state.transact(store, operations, metadata)
        except LayottoError as err:
            raise operation_failed(
                err,
                "ERR_STATE_TRANSACTION",
                f"error while executing state transaction: {err.message}",
            ) from None
        return Response(status_code=204)


def routes(ctx: DaprHttpContext) -> list[Route]:
    return StateRoutes(ctx).routes()
