"""The built-in bindings against the binding kits (layotto.testing.conformance):
`bindings.http` as an output binding against a small HTTP server that stores what is sent to
it, and `bindings.cron` as an input binding.

bindings.http lists every HTTP verb. The server gives `create` (POST), `get` and `delete` on
`/items/<name>` their REST meaning, so the create / get / delete scenarios check real round
trips; `list` is not an operation of this binding and skips. The server is uvicorn
(asyncio-only); cron is backend-neutral and runs on trio too.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
from layotto.builtin.binding_cron import CronBinding, CronBindingMetadata
from layotto.builtin.binding_http import OPERATIONS, HttpBinding, HttpBindingMetadata
from layotto.plugin import (
    BindingResponse,
    ComponentContext,
    InputBinding,
    LayottoError,
    OutputBinding,
)
from layotto.testing.conformance import InputBindingConformance, OutputBindingConformance
from layotto_core_test_helpers import read_body, serve_asgi
from starlette.types import Receive, Scope, Send

ITEMS = "/items/"


class ItemServer:
    """An ASGI app keeping bodies by path: POST/PUT `/items/<name>` stores (201), GET answers
    it with its content type (404 when absent), DELETE removes it (204; 404 when absent)."""

    def __init__(self) -> None:
        self.items: dict[str, tuple[bytes, bytes]] = {}  # name -> (body, content type)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        assert scope["type"] == "http"
        body = await read_body(receive)
        path: str = scope["path"]
        method: str = scope["method"]
        if not path.startswith(ITEMS) or len(path) == len(ITEMS):
            await self.answer(send, 404, b"no such route")
            return
        name = path[len(ITEMS) :]
        if method in ("POST", "PUT"):
            content_type = dict(scope["headers"]).get(b"content-type", b"")
            self.items[name] = (body, content_type)
            await self.answer(send, 201, b"")
        elif method == "GET" and name in self.items:
            stored, content_type = self.items[name]
            await self.answer(send, 200, stored, content_type)
        elif method == "DELETE" and name in self.items:
            del self.items[name]
            await self.answer(send, 204, b"")
        else:
            await self.answer(send, 404, b"not found")

    @staticmethod
    async def answer(send: Send, status: int, body: bytes, content_type: bytes = b"") -> None:
        headers = [(b"x-item-server", b"1")]
        if content_type:
            headers.append((b"content-type", content_type))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"  # the module-scoped server (uvicorn) is asyncio-only


@pytest.fixture(scope="module")
async def item_server_url() -> AsyncIterator[str]:
    async with serve_asgi(ItemServer()) as port:
        yield f"http://127.0.0.1:{port}"


class TestHttpOutputBinding(OutputBindingConformance):
    expected_operations = frozenset(OPERATIONS)

    # Module scope, as the server's: the kit's own is per test.
    @pytest.fixture(scope="module")
    @classmethod
    def anyio_backend(cls) -> str:
        return "asyncio"

    def item_metadata(self, item: str) -> dict[str, str]:
        return {"path": ITEMS + item}

    def is_missing(self, outcome: BindingResponse | LayottoError) -> bool:
        # errorIfNot2XX (the default): a 404 is an error naming the status.
        return isinstance(outcome, LayottoError) and "status code 404" in outcome.message

    @pytest.fixture
    async def output_binding(self, item_server_url: str) -> AsyncIterator[OutputBinding]:
        binding = HttpBinding.create(
            HttpBindingMetadata.model_validate({"url": item_server_url}),
            ComponentContext("http", "app"),
        )
        assert isinstance(binding, OutputBinding)
        await binding.init()
        yield binding
        await binding.close()


class TestCronInputBinding(InputBindingConformance):
    """Ticks every second; a tick the handler failed is not redelivered (cron has nothing to
    redeliver), so `redelivers` stays False."""

    event_count = 2
    quiet_period = 1.5  # longer than a tick: a tick after read() returned would be seen

    @pytest.fixture(params=["asyncio", "trio"])
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)

    @pytest.fixture
    async def input_binding(self) -> AsyncIterator[InputBinding]:
        binding = CronBinding.create(
            CronBindingMetadata.model_validate({"schedule": "@every 1s"}),
            ComponentContext("cron", "app"),
        )
        assert isinstance(binding, InputBinding)
        await binding.init()
        yield binding
        await binding.close()
