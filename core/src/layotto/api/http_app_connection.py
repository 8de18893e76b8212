"""The sidecar's one HTTP connection pool to an app that takes Dapr's callbacks over HTTP
(`app.protocol: http`, daprd's `--app-protocol http`), shared by every caller: subscriptions and
deliveries (`http_app_channel`), input bindings (`http_binding_callback`), the health checks
(`GET /healthz`) and invocations of the sidecar's own app id. One `httpx.AsyncClient` per
runtime; every call is bounded and carries the app token (Dapr's APP_API_TOKEN) as
`dapr-api-token`, which no message header may replace.

`request` lets httpx's errors through; `delivery_errors` translates them at the delivery edge
as `app_channel.delivery_errors` does for gRPC: an app that cannot be reached becomes
`AppUnavailable` (waited for, no retry used up), no answer in time stays a `TimeoutError` (a
failed delivery).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import anyio
import httpx

from layotto.api.app_connection import (
    API_TOKEN_HEADER,
    ASK_ATTEMPTS,
    ASK_TIMEOUT_SECONDS,
    AppHealthProbe,
    wait_until_listening,
)
from layotto.backoff import backoff_delay
from layotto.builtin.rpc_http import exchange, outgoing_request, timeout_error
from layotto.plugin.rpc import RpcRequest, RpcResponse
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

HEALTH_CHECK_PATH = "/healthz"
# The keep-alive pool to the one app: deliveries run concurrently (pubsub.concurrency).
MAX_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class HttpAnswer:
    status: int
    body: bytes
    headers: httpx.Headers

    @property
    def ok(self) -> bool:
        return 200 <= self.status < 300


class HttpAppConnection:
    """The app over HTTP/1.1 at `http://host:port`; the runtime owns it and `aclose`s it."""

    def __init__(self, host: str, port: int, *, api_token: str | None = None) -> None:
        self.host = host
        self.port = port
        self.base_url = f"http://{host}:{port}"
        self._token = api_token
        self._client = httpx.AsyncClient(
            limits=httpx.Limits(
                max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
            ),
            # The app is dialled directly, whatever the environment's proxy says.
            trust_env=False,
            follow_redirects=False,
        )

    health_check_path = HEALTH_CHECK_PATH

    async def aclose(self) -> None:
        await self._client.aclose()

    def url(self, path: str) -> str:
        return f"{self.base_url}/{path.lstrip('/')}"

    def headers(self, extra: Mapping[str, str] | None = None) -> dict[str, str]:
        """`extra` (already valid header names), then the app token on top."""
        headers = dict(extra or {})
        if self._token:
            headers[API_TOKEN_HEADER] = self._token
        return headers

    async def request(
        self,
        method: str,
        path: str,
        *,
        within: float,
        content: bytes = b"",
        headers: Mapping[str, str] | None = None,
    ) -> HttpAnswer:
        """One call to the app, answer read in full, within `within` seconds (httpx errors
        and TimeoutError propagate)."""
        with anyio.fail_after(within):
            response = await self._client.request(
                method,
                self.url(path),
                content=content,
                headers=self.headers(headers),
                timeout=httpx.Timeout(within),
            )
        return HttpAnswer(response.status_code, response.content, response.headers)

    async def wait_until_listening(self) -> None:
        await wait_until_listening(self.host, self.port)

    async def ask(self, method: str, path: str, what: str) -> HttpAnswer | None:
        """A startup question to the app: its answer, whatever the status, or None when it
        could not be reached after a few attempts with backoff (an app restarting must not
        leave the sidecar without subscriptions)."""
        attempt = 0
        while True:
            try:
                return await self.request(method, path, within=ASK_TIMEOUT_SECONDS)
            except (httpx.TransportError, TimeoutError) as err:
                if attempt >= ASK_ATTEMPTS:
                    log.warning("%s failed (%s)", what, type(err).__name__)
                    return None
                log.info("%s failed (%s); asking the app again", what, type(err).__name__)
            await anyio.sleep(backoff_delay(attempt, base=0.1, cap=2.0))
            attempt += 1
            await self.wait_until_listening()

    async def check_health(self, within: float) -> AppHealthProbe:
        """daprd's HTTP app health check, `GET /healthz`: 2xx is healthy. daprd probes only
        when told to (`--enable-app-health-check`); the sidecar has no such switch, so an app
        without the route (404) offers no check, as UNIMPLEMENTED does over gRPC."""
        try:
            answer = await self.request("GET", HEALTH_CHECK_PATH, within=within)
        except (httpx.HTTPError, TimeoutError) as err:
            log.debug("app health check: %s", type(err).__name__)
            return AppHealthProbe.UNHEALTHY
        if answer.ok:
            return AppHealthProbe.HEALTHY
        if answer.status == 404:
            return AppHealthProbe.NOT_OFFERED
        log.debug("app health check: HTTP %d", answer.status)
        return AppHealthProbe.UNHEALTHY

    async def invoke(self, request: RpcRequest) -> RpcResponse:
        """An invocation of the sidecar's own app: `{verb} /{method}?{query}` with the caller's
        headers and body, answered as the `rpc.http` channel answers (a non-2xx answer is a
        `TargetError` that keeps it)."""
        if request.timeout <= 0:
            raise timeout_error(request)
        outgoing = outgoing_request(
            self._client,
            request,
            self.url(request.method),
            self.headers(),
            timeout=request.timeout,
        )
        return await exchange(self._client, outgoing, request)


@contextmanager
def delivery_errors() -> Iterator[None]:
    """Translate a delivery's transport failure (see the module docstring)."""
    try:
        yield
    except httpx.TimeoutException as err:
        # An app too slow to answer is a failed delivery that uses up a retry.
        raise TimeoutError(str(err) or "the app did not answer in time") from None
    except httpx.TransportError as err:
        raise AppUnavailable(f"{type(err).__name__}: {err}") from None
