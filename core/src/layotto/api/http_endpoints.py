"""Service invocation of non-Dapr HTTP endpoints (daprd's `pkg/messaging` and
`pkg/channel/http`): a target that is a Dapr `HTTPEndpoint`'s name, or a full `http://` /
`https://` URL, is called directly, before any app id routing.

A call is `{verb} {base}/{method}?{query}`, `base` being the endpoint's `baseUrl` (a trailing
`/` dropped, so no `//` appears) or the URL itself, with the body, content type and the caller's
headers (as the `rpc.http` channel forwards them), then the endpoint's configured headers on top
(they replace a caller's header of the same name). The answer and the failures are translated
as the `rpc.http` channel does (`builtin.rpc_http.exchange`): a non-2xx answer passes through.
Redirects are passed back, not followed; proxy environment variables are ignored; the app's
API token is never sent.

An endpoint with `clientTLS` gets a connection pool of its own: its `rootCA` replaces the public
CAs (certifi's) its certificate is checked against, and its `certificate` and `privateKey` are
presented to it. `secretKeyRef` values are read once at startup, through the secret stores, as
component secret references are (`ComponentRegistry.read_secret`); a PEM text that does not
load stops startup.
"""

from __future__ import annotations

import os
import ssl
import tempfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path

import certifi
import httpx

from layotto.builtin.rpc_http import exchange, outgoing_request, timeout_error
from layotto.components import ComponentRegistry, SecretCache
from layotto.config import HttpEndpointConfig
from layotto.errors import ConfigError
from layotto.plugin.rpc import RpcRequest, RpcResponse

URL_PREFIXES = ("http://", "https://")
MAX_CONNECTIONS = 100


@dataclass(frozen=True, slots=True)
class HttpEndpoint:
    name: str
    base_url: str
    headers: Mapping[str, str]
    tls: ssl.SSLContext | None = None  # with `clientTLS`


async def resolve_endpoints(
    configs: Iterable[HttpEndpointConfig], registry: ComponentRegistry
) -> dict[str, HttpEndpoint]:
    """Each endpoint with its secret header values read from the started secret stores (a
    failure is a ConfigError naming the endpoint, the header, the store and the key)."""
    cache: SecretCache = {}
    endpoints: dict[str, HttpEndpoint] = {}
    for config in configs:
        headers = dict(config.headers)
        tls = dict(config.client_tls)
        where = f"{config.source}: HTTPEndpoint {config.name!r}"
        for ref in config.secret_refs:
            value = await registry.read_secret(where, ref, cache, section="spec")
            section, _, name = ref.field.partition(".")
            (headers if section == "headers" else tls)[name] = value
        context = _ssl_context(tls, where) if tls else None
        endpoints[config.name] = HttpEndpoint(config.name, config.base_url, headers, context)
    return endpoints


def _ssl_context(tls: Mapping[str, str], where: str) -> ssl.SSLContext:
    """The TLS settings of one endpoint's `clientTLS` (PEM texts by document); a text that
    does not load is a ConfigError that never quotes it."""
    root = tls.get("rootCA")
    try:
        if root:
            context = ssl.create_default_context(cadata=root)
        else:
            context = ssl.create_default_context(cafile=certifi.where())
    except (ssl.SSLError, ValueError) as err:
        raise ConfigError(
            f"{where}: spec.clientTLS.rootCA is not a PEM certificate ({type(err).__name__})"
        ) from None
    certificate, key = tls.get("certificate"), tls.get("privateKey")
    if certificate and key:
        # `load_cert_chain` reads files only: private ones, removed at once.
        with tempfile.TemporaryDirectory(prefix="layotto-tls-") as directory:
            paths = Path(directory, "certificate.pem"), Path(directory, "key.pem")
            for path, text in zip(paths, (certificate, key), strict=True):
                descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(descriptor, "w", encoding="utf-8") as file:
                    file.write(text)
            try:
                context.load_cert_chain(*paths)
            except (ssl.SSLError, OSError) as err:
                raise ConfigError(
                    f"{where}: spec.clientTLS.certificate and privateKey do not load as a PEM "
                    f"certificate and its private key ({type(err).__name__})"
                ) from None
    return context


class HttpEndpoints:
    """`services.invoke.ExternalTargets` over HTTP; the runtime owns it and `aclose`s it."""

    def __init__(self, endpoints: Mapping[str, HttpEndpoint]) -> None:
        self._endpoints = dict(endpoints)
        # Made on first use: one shared pool, and one per endpoint with TLS settings.
        self._clients: dict[str, httpx.AsyncClient] = {}

    def handles(self, app_id: str) -> bool:
        return app_id in self._endpoints or app_id.startswith(URL_PREFIXES)

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()

    def _http(self, endpoint: HttpEndpoint | None) -> httpx.AsyncClient:
        tls = endpoint.tls if endpoint is not None else None
        key = endpoint.name if endpoint is not None and tls is not None else ""
        client = self._clients.get(key)
        if client is None:
            client = httpx.AsyncClient(
                limits=httpx.Limits(
                    max_connections=MAX_CONNECTIONS, max_keepalive_connections=MAX_CONNECTIONS
                ),
                verify=tls if tls is not None else True,
                trust_env=False,
                follow_redirects=False,
            )
            # The body is passed through as the target encoded it (a caller's own
            # accept-encoding header still goes through).
            del client.headers["accept-encoding"]
            self._clients[key] = client
        return client

    async def invoke(self, request: RpcRequest) -> RpcResponse:
        if request.timeout <= 0:
            raise timeout_error(request)
        endpoint = self._endpoints.get(request.app_id)
        base = endpoint.base_url if endpoint is not None else request.app_id
        url = base
        if request.method:
            method = request.method[1:] if request.method.startswith("/") else request.method
            url = f"{base.rstrip('/')}/{method}"
        client = self._http(endpoint)
        outgoing = outgoing_request(
            client,
            request,
            url,
            endpoint.headers if endpoint is not None else {},
            timeout=request.timeout,
            target=request.app_id,
        )
        return await exchange(client, outgoing, request)
