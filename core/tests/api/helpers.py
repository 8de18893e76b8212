"""Helpers shared by the API edge tests (publish to a running sidecar, poll, check gRPC errors,
a plain HTTP app to invoke, a fake Dapr HTTP app).

Loaded by `core/tests/conftest.py` as `layotto_api_test_helpers` (the workspace runs pytest with
--import-mode=importlib, so test folders are not on sys.path).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import httpx
import pytest
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import invoke_pb2
from google.protobuf import any_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from layotto.testing.pubsub import publish
from layotto.testing.runtime import Sidecar
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

PUBSUB = "pubsub"


async def send(sidecar: Sidecar, topic: str, data: Any, **metadata: str) -> str:
    """Publish `data` as JSON to `topic` of the `pubsub` component through the Layotto API."""
    channel = sidecar.channel()
    try:
        return await publish(
            channel, PUBSUB, topic, json.dumps(data).encode(), metadata=metadata or None
        )
    finally:
        channel.close()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `check` (state with no event to wait on: counters, what a fake app recorded) until
    it holds."""
    for _ in range(int(within / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the condition never held")


async def expect(call: Any, code: grpc.StatusCode, *fragments: str) -> grpc.aio.AioRpcError:
    """Await a grpc.aio call that must fail with `code`, its details holding every fragment."""
    with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() is code, f"{err.code()}: {err.details()}"
    for fragment in fragments:
        assert fragment in (err.details() or ""), f"{fragment!r} not in {err.details()!r}"
    return err


def reason(err: grpc.aio.AioRpcError) -> str:
    """The reason of the ErrorInfo in the error's `grpc-status-details-bin`."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo")


# -- a plain HTTP app to invoke ------------------------------------------------------------------


async def _echo(request: Request) -> Response:
    return JSONResponse(
        {
            "verb": request.method,
            "path": request.url.path,
            "raw_path": request.scope["raw_path"].decode(),
            "query": request.url.query,
            "headers": {k.lower(): v for k, v in request.headers.items()},
            "body": (await request.body()).decode("utf-8", "replace"),
        },
        headers={"x-answered-by": "target"},
    )


async def _status(request: Request) -> Response:
    code = int(request.path_params["code"])
    return PlainTextResponse(f"answered {code}", status_code=code, headers={"x-why": "asked"})


async def _slow(request: Request) -> Response:
    await anyio.sleep(2)
    return PlainTextResponse("late")


def target_app(prefix: str = "") -> Starlette:
    """`{prefix}/status/<code>` answers that code (text `answered <code>`, header `x-why:
    asked`), `{prefix}/slow` answers after 2 s, any other path echoes the request as JSON
    (`verb`, `path`, `raw_path`, `query`, `headers`, `body`; header `x-answered-by: target`)."""
    return Starlette(
        routes=[
            Route(f"{prefix}/status/{{code:int}}", _status, methods=["GET", "POST"]),
            Route(f"{prefix}/slow", _slow),
            Route("/{path:path}", _echo, methods=["GET", "POST", "PUT", "DELETE", "PATCH"]),
        ]
    )


def echoed(response: httpx.Response) -> dict[str, Any]:
    """The target app's echo of the request, from a 200 answer."""
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def post_orders_request(app_id: str) -> invoke_pb2.InvokeServiceRequest:
    """A gRPC InvokeService of `app_id`: POST orders/1?a=1, text/plain `payload`."""
    return invoke_pb2.InvokeServiceRequest(
        id=app_id,
        message=common_pb2.InvokeRequest(
            method="orders/1",
            data=any_pb2.Any(value=b"payload"),
            content_type="text/plain",
            http_extension=common_pb2.HTTPExtension(
                verb=common_pb2.HTTPExtension.POST, querystring="a=1"
            ),
        ),
    )


def assert_error(response: httpx.Response, status: int, code: str, *fragments: str) -> None:
    """`response` is a Dapr HTTP error: `status`, errorCode `code`, a message with `fragments`."""
    assert response.status_code == status, response.text
    body = response.json()
    assert body["errorCode"] == code, body
    for fragment in fragments:
        assert fragment in body["message"], body


def assert_passed_through(response: httpx.Response, code: int) -> None:
    """`response` is `target_app`'s own `/status/{code}` answer: status, body and headers
    unchanged, as daprd passes it."""
    assert response.status_code == code
    assert response.text == f"answered {code}"
    assert response.headers["x-why"] == "asked"


def assert_unreachable(response: httpx.Response, name: str) -> None:
    """`response` is the 500 ERR_DIRECT_INVOKE for a target `name` nobody answers for: the
    message names it, not a host or a port of it."""
    assert_error(response, 500, "ERR_DIRECT_INVOKE", name)
    assert "127.0.0.1" not in response.json()["message"]


# -- a fake Dapr HTTP app (app.protocol: http) ---------------------------------------------------


@dataclass(frozen=True)
class Call:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


Answer = Callable[[Call, int], Response]  # the call, and how many times its path was POSTed


class FakeHttpApp:
    """A Dapr HTTP app: lists `subscriptions` (None = 404), answers `/healthz` with
    `health` (None = 404), `OPTIONS /<name>` with 200 for `bindings` (else 404), and every
    other call with `answers[path]` (default: an empty 200)."""

    def __init__(self, subscriptions: list[dict[str, Any]] | None = None) -> None:
        self.subscriptions = subscriptions
        self.health: int | None = None
        self.bindings: set[str] = set()
        self.answers: dict[str, Answer] = {}
        self.calls: list[Call] = []
        self.posted: Counter[str] = Counter()
        self._changed = anyio.Event()
        methods = ["GET", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"]
        self.asgi = Starlette(routes=[Route("/{path:path}", self._handle, methods=methods)])

    async def _handle(self, request: Request) -> Response:
        call = Call(
            request.method,
            request.url.path,
            request.url.query,
            {k.lower(): v for k, v in request.headers.items()},
            await request.body(),
        )
        self.calls.append(call)
        self._changed.set()
        self._changed = anyio.Event()
        if call.path == "/dapr/subscribe" and call.method == "GET":
            if self.subscriptions is None:
                return Response(status_code=404)
            return JSONResponse(self.subscriptions)
        if call.path == "/healthz":
            return Response(status_code=self.health or 404)
        if call.method == "OPTIONS":
            return Response(status_code=200 if call.path[1:] in self.bindings else 404)
        if call.method == "POST":
            self.posted[call.path] += 1
        answer = self.answers.get(call.path)
        return answer(call, self.posted[call.path]) if answer else Response(status_code=200)

    def to(self, path: str, method: str = "POST") -> list[Call]:
        return [c for c in self.calls if c.path == path and c.method == method]

    def delivered(self) -> list[Call]:
        """The calls other than the sidecar's discovery and health checks (`/dapr/subscribe`,
        `/healthz`, `OPTIONS`)."""
        return [
            c
            for c in self.calls
            if c.path not in ("/dapr/subscribe", "/healthz") and c.method != "OPTIONS"
        ]

    async def wait(self, done: Callable[[], bool], within: float = 10.0) -> None:
        with anyio.fail_after(within):
            while not done():
                await self._changed.wait()
