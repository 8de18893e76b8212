"""Dapr's service invocation over HTTP: `{verb} /v1.0/invoke/{app}/method/{method}` (the Python
SDK's default), or any path with a `dapr-app-id` header, onto `InvokeService`.

As daprd (`pkg/api/http/directmessaging.go`): the verb, the raw query string, the body and its
content type, and the caller's headers (minus hop-by-hop ones, the API token and
`dapr-app-id`) go to the target; its body, content type and headers come back. Its status comes
back exactly when the channel keeps it (`http_status` on the response or the `TargetError`);
otherwise a success is 200 and an error the status of its category. A target that cannot be
reached is 500 `ERR_DIRECT_INVOKE`; one that does not answer in time is 504 with the same code
(daprd says 500 there too; 504 tells the two apart).

The method is taken from the raw path, so an escaped `/` in it (`%2F`) reaches the target as
sent. With both forms present the header wins and the whole path is the method, as in daprd.
"""

from __future__ import annotations

import posixpath
from collections.abc import Mapping
from urllib.parse import quote, unquote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from layotto.api.dapr_http_context import DaprHttpContext
from layotto.api.dapr_http_request import read_body
from layotto.api.grpc_guard import TOKEN_HEADERS
from layotto.api.http_errors import HTTP_STATUS, HttpError, from_layotto
from layotto.errors import ErrorCategory, LayottoError
from layotto.plugin.rpc import HOP_BY_HOP, TIMEOUT_HEADER, RpcRequest, RpcResponse, TargetError
from layotto.services.invoke import timeout_of

INVOKE_PREFIX = "/v1.0/invoke/"
METHOD_MARK = "/method/"
APP_ID_HEADER = "dapr-app-id"
DIRECT_INVOKE = "ERR_DIRECT_INVOKE"
# daprd puts no deadline of its own on a call; the Python SDK's HTTP client gives up after
# 60 s (DAPR_HTTP_TIMEOUT_SECONDS), so the sidecar waits as long. `rpc_request_timeout` (ms)
# sets another bound per call.
DEFAULT_TIMEOUT_SECONDS = 60.0

_NOT_FORWARDED = frozenset({"content-type", "expect", APP_ID_HEADER, *TOKEN_HEADERS, *HOP_BY_HOP})
_NOT_RETURNED = frozenset({"content-type", *HOP_BY_HOP})
# Every verb (starlette would take only GET for a route that lists none).
VERBS = ["GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "CONNECT"]


def _raw_path(request: Request) -> str:
    raw = request.scope.get("raw_path")
    if isinstance(raw, bytes):
        return raw.decode("latin-1")
    return quote(request.url.path)


def target_and_method(request: Request) -> tuple[str, str] | None:
    """(app id, method) from the `dapr-app-id` header or the invoke path; None when neither
    names a target."""
    raw = _raw_path(request)
    header = request.headers.get(APP_ID_HEADER)
    if header:
        cleaned = posixpath.normpath(raw) + ("/" if raw.endswith("/") and raw != "/" else "")
        return header, cleaned.lstrip("/")
    if raw.startswith(INVOKE_PREFIX):
        rest = raw[len(INVOKE_PREFIX) :]
        at = rest.find(METHOD_MARK)
        if at > 0:
            return unquote(rest[:at]), rest[at + len(METHOD_MARK) :]
    return None


def forwarded_headers(request: Request) -> dict[str, str]:
    """The caller's headers that travel on (a repeated header joined with ', ')."""
    collected: dict[str, list[str]] = {}
    for name, value in request.headers.items():
        key = name.lower()
        if key not in _NOT_FORWARDED:
            collected.setdefault(key, []).append(value)
    return {key: ", ".join(values) for key, values in collected.items()}


def _returnable(headers: Mapping[str, str]) -> dict[str, str]:
    answer: dict[str, str] = {}
    for name, value in headers.items():
        key = name.lower()
        if key in _NOT_RETURNED or not key.isascii():
            continue
        try:
            value.encode("latin-1")  # what an HTTP/1.1 header value can carry
        except UnicodeEncodeError:
            continue
        answer[key] = value
    return answer


def _target_answer(err: TargetError) -> Response:
    """The target's own error answer, passed through. A channel that kept the target's HTTP
    answer (`http_status`, `body`, `content_type`, `headers` on the error) gives it exactly;
    otherwise the status follows the error's category and the body is daprd's error JSON."""
    status = getattr(err, "http_status", None)
    if isinstance(status, int) and 100 <= status <= 599:
        body = getattr(err, "body", b"")
        content_type = getattr(err, "content_type", "")
        headers = getattr(err, "headers", None)
        return Response(
            body if isinstance(body, bytes) else b"",
            status_code=status,
            headers=_returnable(headers) if isinstance(headers, Mapping) else None,
            media_type=content_type if isinstance(content_type, str) and content_type else None,
        )
    return HttpError(
        HTTP_STATUS[err.category], DIRECT_INVOKE, err.message, reason=err.reason
    ).response()


class InvokeRoutes:
    def __init__(self, ctx: DaprHttpContext) -> None:
        self._ctx = ctx
        self._invoke = ctx.services.invoke

    def routes(self) -> list[Route]:
        return [Route(INVOKE_PREFIX + "{rest:path}", self._ctx.guarded(self.invoke), methods=VERBS)]

    def fallback(self) -> Route:
        """Every path no other route takes: an invocation when it carries `dapr-app-id`."""
        return Route("/{rest:path}", self._ctx.guarded(self.invoke), methods=VERBS)

    async def invoke(self, request: Request) -> Response:
        found = target_and_method(request)
        if found is None:
            raise HttpError(
                404,
                DIRECT_INVOKE,
                "failed getting app id either from the URL path or the header dapr-app-id",
            )
        app_id, method = found
        headers = forwarded_headers(request)
        timeout = timeout_of(headers) if TIMEOUT_HEADER in headers else DEFAULT_TIMEOUT_SECONDS
        call = RpcRequest(
            app_id=app_id,
            method=method,
            data=await read_body(request),
            content_type=request.headers.get("content-type", ""),
            headers=headers,
            verb=request.method.upper(),
            query_string=request.scope.get("query_string", b"").decode("latin-1"),
            timeout=timeout,
        )
        try:
            response = await self._invoke.invoke(call)
        except TargetError as err:
            return _target_answer(err)
        except LayottoError as err:
            raise self._failed(app_id, err) from None
        return self._answer(response)

    @staticmethod
    def _failed(app_id: str, err: LayottoError) -> HttpError:
        message = f"fail to invoke, id: {app_id}, err: {err.message}"
        if err.category is ErrorCategory.DEADLINE_EXCEEDED:
            return HttpError(504, DIRECT_INVOKE, message, reason=err.reason)
        if err.category in (ErrorCategory.UNAVAILABLE, ErrorCategory.INTERNAL):
            return HttpError(500, DIRECT_INVOKE, message, reason=err.reason)
        return from_layotto(err)

    @staticmethod
    def _answer(response: RpcResponse) -> Response:
        # A channel that kept the target's 2xx status (201, 204...) gives it; else 200.
        status = getattr(response, "http_status", None)
        return Response(
            response.data,
            status_code=status if isinstance(status, int) and 200 <= status < 300 else 200,
            headers=_returnable(response.headers),
            media_type=response.content_type or None,
        )
