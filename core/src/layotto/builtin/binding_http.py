"""`bindings.http`: an output binding that sends one HTTP request per invocation, as Dapr's
components-contrib `bindings/http` does.

Operations: `get`, `head`, `post`, `put`, `patch`, `delete`, `options`, `trace` (the HTTP verb),
and `create`, an alias of `post`. The request data is the body of `post`, `put`, `patch` (and
`create`); the other verbs send none.

Request metadata (Dapr's rules):
- `path` is appended to the component's `url` (one `/` between them);
- every key that starts with an upper-case ASCII letter is a request header (`Content-Type`,
  `X-Request-Id`); so are `traceparent` and `tracestate`;
- `errorIfNot2XX` overrides the component's setting for this call;
- without a `Content-Type` key a request with a body says `application/json; charset=utf-8`,
  and without an `Accept` key every request says `Accept: application/json; charset=utf-8`.

The response: `data` is the body (at most `maxResponseBodySize` bytes: longer bodies are cut
there, as upstream reads no further); `metadata` has `statusCode` ("200"), `status` ("200 OK")
and every response header, with Go's canonical names (`Content-Type`) and repeated headers
joined with ", ". A status outside 2xx is an error ("received status code 404") unless
`errorIfNot2XX` is false.

Component metadata:
- `url` (required): the base URL, http or https;
- `responseTimeout` (default 10s): how long a call may take, connecting included;
- `maxResponseBodySize` (default 100Mi): bytes ("1048576") or a quantity ("1k", "10Ki", "1M",
  "100Mi"); 0 or less means no limit;
- `errorIfNot2XX` (default true);
- `securityToken` + `securityTokenHeader`: a header sent on every request;
- `MTLSRootCA`, `MTLSClientCert`, `MTLSClientKey`: PEM text or a file path, for https.

Proxy environment variables are honoured and redirects followed (up to 10), as Go's default
client does upstream: the URL is usually outside the machine.
"""

from __future__ import annotations

import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

import anyio
import httpx
from pydantic import Field, SecretStr, field_validator, model_validator

from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    BindingRequest,
    BindingResponse,
    Component,
    ComponentContext,
    ComponentError,
    ComponentMetadata,
    InvalidArgument,
    OutputBinding,
)
from layotto.plugin.addresses import is_pem
from layotto.plugin.durations import Duration
from layotto.plugin.flags import is_truthy

DEFAULT_TIMEOUT = 10.0
DEFAULT_MAX_BODY = 100 * 1024 * 1024  # Dapr's 100Mi
CONNECT_TIMEOUT = 15.0  # Dapr's dialer and TLS handshake timeouts
JSON_UTF8 = "application/json; charset=utf-8"

# `create` is kept for backward compatibility, as upstream does: it means POST.
OPERATIONS = ("create", "get", "head", "post", "put", "patch", "delete", "options", "trace")
_WITH_BODY = frozenset({"POST", "PUT", "PATCH"})
_TRACE_KEYS = ("traceparent", "tracestate")

# Kubernetes resource quantities, as Dapr's `ByteSize` takes them.
_QUANTITY = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([kMGTPE]i?|Ki)?\s*")
_UNITS = {
    None: 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "P": 10**15,
    "E": 10**18,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
    "Pi": 2**50,
    "Ei": 2**60,
}


def parse_byte_size(value: Any) -> int:
    """Bytes from an int or a quantity string ("100", "1k", "10Ki", "100Mi"); negative is
    allowed (it means no limit)."""
    if isinstance(value, bool):
        raise ValueError("expected a size such as '1048576', '10Ki' or '100Mi'")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str):
        text = value.strip()
        sign = -1 if text.startswith("-") else 1
        match = _QUANTITY.fullmatch(text.lstrip("+-"))
        if match and match.group(2) in _UNITS:
            return sign * int(float(match.group(1)) * _UNITS[match.group(2)])
    raise ValueError(f"{value!r} is not a size: use e.g. '1048576', '10Ki', '1M' or '100Mi'")


def canonical_header(name: str) -> str:
    """Go's canonical MIME header key: `content-type` -> `Content-Type`."""
    return "-".join(part[:1].upper() + part[1:].lower() for part in name.split("-"))


def _pem_bytes(field: str, value: str) -> str:
    """Inline PEM text, or the text of the file it names (as upstream accepts both)."""
    if is_pem(value):
        return value
    try:
        with open(value, encoding="utf-8") as handle:
            return handle.read()
    except OSError as err:
        raise ValueError(
            f"{field} is neither PEM text nor a readable file ({err.strerror})"
        ) from None


class HttpBindingMetadata(ComponentMetadata):
    url: str = Field(min_length=1)
    response_timeout: Duration = Field(default=DEFAULT_TIMEOUT, gt=0, alias="responseTimeout")
    max_response_body_size: int = Field(default=DEFAULT_MAX_BODY, alias="maxResponseBodySize")
    error_if_not_2xx: bool = Field(default=True, alias="errorIfNot2XX")
    security_token: SecretStr = Field(default=SecretStr(""), alias="securityToken")
    security_token_header: str = Field(default="", alias="securityTokenHeader")
    mtls_root_ca: str = Field(default="", alias="MTLSRootCA")
    mtls_client_cert: str = Field(default="", alias="MTLSClientCert")
    mtls_client_key: SecretStr = Field(default=SecretStr(""), alias="MTLSClientKey")
    # Read by the sidecar (which side of the binding it uses); declared so it is not "unknown".
    direction: str = ""

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        text = value.strip()
        try:
            url = httpx.URL(text)
        except httpx.InvalidURL as err:
            raise ValueError(f"{text!r} is not a URL: {err}") from None
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"{text!r}: use an http:// or https:// URL with a host")
        return text

    @field_validator("max_response_body_size", mode="before")
    @classmethod
    def _size(cls, value: Any) -> int:
        return parse_byte_size(value)

    @field_validator("mtls_root_ca", "mtls_client_cert")
    @classmethod
    def _pem(cls, value: str) -> str:
        return value.strip()

    @model_validator(mode="after")
    def _check_tls(self) -> HttpBindingMetadata:
        cert, key = self.mtls_client_cert, self.mtls_client_key.get_secret_value().strip()
        if bool(cert) != bool(key):
            raise ValueError("MTLSClientCert and MTLSClientKey go together: set both or neither")
        if bool(self.security_token.get_secret_value()) != bool(self.security_token_header):
            raise ValueError(
                "securityToken and securityTokenHeader go together: set both or neither"
            )
        return self

    def ssl_context(self) -> ssl.SSLContext | None:
        """The TLS settings, or None for the defaults (system trust store, no client cert)."""
        if not self.mtls_root_ca and not self.mtls_client_cert:
            return None
        ca = _pem_bytes("MTLSRootCA", self.mtls_root_ca) if self.mtls_root_ca else None
        context = ssl.create_default_context(cadata=ca)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        if self.mtls_client_cert:
            cert = _pem_bytes("MTLSClientCert", self.mtls_client_cert)
            key = _pem_bytes("MTLSClientKey", self.mtls_client_key.get_secret_value().strip())
            _load_client_pair(context, cert, key)
        return context


def _load_client_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """`ssl` loads a client certificate only from files: write both to a private temporary
    directory, load them, and remove them at once."""
    with tempfile.TemporaryDirectory(prefix="layotto-http-") as tmp:
        paths = (os.path.join(tmp, "client.crt"), os.path.join(tmp, "client.key"))
        for path, text in zip(paths, (cert, key), strict=True):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(*paths)
        finally:
            for path in paths:
                with contextlib.suppress(OSError):
                    os.unlink(path)


class HttpBinding(OutputBinding):
    def __init__(self, metadata: HttpBindingMetadata, context: ComponentContext) -> None:
        self.metadata = metadata
        self.what = f"binding {context.name!r}"
        self._client: httpx.AsyncClient | None = None

    @classmethod
    def create(cls, metadata: HttpBindingMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    def operations(self) -> tuple[str, ...]:
        return OPERATIONS

    async def init(self) -> None:
        if self._client is not None:
            return
        try:
            context = self.metadata.ssl_context()
        except (ssl.SSLError, ValueError) as err:
            raise ComponentError(
                f"{self.what}: the TLS settings could not be loaded ({err}; check MTLSRootCA, "
                "MTLSClientCert and MTLSClientKey)"
            ) from None
        timeout = self.metadata.response_timeout
        client = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout, connect=min(timeout, CONNECT_TIMEOUT)),
            verify=context if context is not None else True,
            trust_env=True,
            follow_redirects=True,
            max_redirects=10,
        )
        # The body is returned as the server sent it: no compression is asked for (a caller's
        # own Accept-Encoding header still goes through, and then the bytes stay encoded).
        del client.headers["accept-encoding"]
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(2.0):
                await client.aclose()

    # -- one call ------------------------------------------------------------------------------

    def _url(self, metadata: Mapping[str, str]) -> str:
        url = self.metadata.url
        path = metadata.get("path", "")
        if path:
            url = url.rstrip("/") + "/" + path.lstrip("/")
        return url

    def _headers(self, method: str, metadata: Mapping[str, str]) -> list[tuple[bytes, bytes]]:
        headers: dict[str, tuple[str, str]] = {}  # lower-case name -> (name, value)

        def put(name: str, value: str) -> None:
            headers[name.lower()] = (name, value)

        if method in _WITH_BODY and "Content-Type" not in metadata:
            put("Content-Type", JSON_UTF8)
        if "Accept" not in metadata:
            put("Accept", JSON_UTF8)
        token = self.metadata.security_token.get_secret_value()
        if token:
            put(self.metadata.security_token_header, token)
        for key, value in metadata.items():
            if key[:1].isascii() and key[:1].isupper():
                put(canonical_header(key), value)
        for key in _TRACE_KEYS:
            if metadata.get(key):
                put(key, metadata[key])
        try:
            # Values as UTF-8 bytes: HTTP carries them opaquely (httpx would insist on ASCII).
            return [(n.encode("ascii"), v.encode("utf-8")) for n, v in headers.values()]
        except UnicodeEncodeError:
            raise InvalidArgument(f"{self.what}: a header name is not ASCII") from None

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        client = self._client
        if client is None:
            raise BackendUnavailable(f"{self.what} is not started (or already closed)")
        operation = request.operation.lower()
        if operation not in OPERATIONS:
            raise InvalidArgument(f"{self.what}: invalid operation: {request.operation}")
        method = "POST" if operation == "create" else operation.upper()
        metadata = request.metadata
        error_if_not_2xx = self.metadata.error_if_not_2xx
        if metadata.get("errorIfNot2XX"):
            error_if_not_2xx = is_truthy(metadata["errorIfNot2XX"])
        try:
            outgoing = client.build_request(
                method,
                self._url(metadata),
                headers=self._headers(method, metadata),
                content=request.data if method in _WITH_BODY else None,
            )
        except (httpx.InvalidURL, httpx.UnsupportedProtocol) as err:
            raise InvalidArgument(f"{self.what}: the request URL is not valid: {err}") from None
        timeout = self.metadata.response_timeout
        try:
            with anyio.fail_after(timeout):
                response, body = await self._send(client, outgoing)
        except (TimeoutError, httpx.TimeoutException):
            raise BackendTimeout(
                f"{self.what}: no response within responseTimeout ({timeout:g} s)"
            ) from None
        except httpx.ConnectError:
            raise BackendUnavailable(f"{self.what}: the server could not be reached") from None
        except (httpx.NetworkError, httpx.RemoteProtocolError):
            raise BackendUnavailable(
                f"{self.what}: the connection closed before a complete answer"
            ) from None
        except httpx.LocalProtocolError:
            # Not the error's text: it quotes the offending header, which may be the
            # configured securityToken (a trailing newline from a secret file, say).
            raise InvalidArgument(
                f"{self.what}: the request cannot be sent: a header name or value is not "
                "valid in HTTP"
            ) from None
        except httpx.HTTPError as err:
            what = type(err).__name__
            raise ComponentError(f"{self.what}: the request failed ({what})") from None
        status = response.status_code
        if error_if_not_2xx and not 200 <= status < 300:
            raise ComponentError(f"received status code {status}")
        return BindingResponse(data=body, metadata=_response_metadata(response))

    async def _send(
        self, client: httpx.AsyncClient, outgoing: httpx.Request
    ) -> tuple[httpx.Response, bytes]:
        limit = self.metadata.max_response_body_size
        response = await client.send(outgoing, stream=True)
        try:
            chunks: list[bytes] = []
            size = 0
            async for chunk in response.aiter_raw():
                if limit > 0 and size + len(chunk) >= limit:
                    chunks.append(chunk[: limit - size])
                    break  # the rest is not read: the connection is dropped, not drained
                chunks.append(chunk)
                size += len(chunk)
        finally:
            await response.aclose()
        return response, b"".join(chunks)


def _response_metadata(response: httpx.Response) -> dict[str, str]:
    reason = response.reason_phrase
    if not reason:
        with contextlib.suppress(ValueError):
            reason = HTTPStatus(response.status_code).phrase
    collected: dict[str, list[str]] = {}
    for name, value in response.headers.multi_items():
        collected.setdefault(canonical_header(name), []).append(value)
    metadata = {key: ", ".join(values) for key, values in collected.items()}
    metadata["statusCode"] = str(response.status_code)
    metadata["status"] = f"{response.status_code} {reason}".strip()
    return metadata
