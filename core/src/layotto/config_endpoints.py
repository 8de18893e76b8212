"""Dapr `HTTPEndpoint` resources (dapr.io/v1alpha1): a name an app invokes like an app id, and
the non-Dapr URL the sidecar calls for it (dapr-compat.md section 6; daprd's
`pkg/apis/httpEndpoint`):

```yaml
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {name: github}
spec:
  baseUrl: https://api.github.com          # required, http:// or https://
  headers:                                 # optional, sent on every call
  - {name: Accept-Language, value: en-US}
  - {name: Authorization, secretKeyRef: {name: gh-secret, key: token}}
  clientTLS:                               # optional
    rootCA: {value: "-----BEGIN CERTIFICATE-----..."}
    certificate: {secretKeyRef: {name: gh-tls, key: cert}}
    privateKey: {secretKeyRef: {name: gh-tls, key: key}}
auth: {secretStore: localsecrets}          # the store of the secretKeyRefs
scopes: [app-a]                            # optional, as for Components
```

`spec.clientTLS` (`rootCA`, and `certificate` with `privateKey`: PEM text as `value` or a
`secretKeyRef`) sets the CA the endpoint's certificate must chain to (instead of the public
ones) and the client certificate presented. The native config lists the same fields under
`http_endpoints:` (`name`, `baseUrl`, `headers`, `clientTLS`, `auth`, `scopes`). `secretKeyRef`
values are read at startup through the secret store, as component `secretKeyRef`s are.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import ValidationError

from layotto.config import (
    SECRET_KEY_REF,
    ComponentConfig,
    HttpEndpointConfig,
    SecretRef,
    _dapr_documents,
    _describe,
    _secret_key_ref,
    note_unique,
)
from layotto.config_subscriptions import check_fields
from layotto.errors import ConfigError
from layotto.plugin import Kind

log = logging.getLogger(__name__)

KIND = "HTTPEndpoint"
NATIVE_FIELDS = frozenset({"name", "baseUrl", "headers", "clientTLS", "auth", "scopes"})
STORE_FIELD = "auth.secretStore"
TLS_DOCUMENTS = ("rootCA", "certificate", "privateKey")


def load_dapr_http_endpoints(directory: Path, app_id: str = "") -> list[HttpEndpointConfig]:
    endpoints: list[HttpEndpointConfig] = []
    for source, doc in _dapr_documents(directory, KIND):
        meta = doc.get("metadata") or {}
        name = meta.get("name") if isinstance(meta, dict) else None
        spec = doc.get("spec")
        endpoint = _endpoint(
            source, name, spec, doc.get("auth"), doc.get("scopes"), app_id, prefix="spec."
        )
        if endpoint is not None:
            endpoints.append(endpoint)
    return endpoints


def native_http_endpoints(
    entries: Any, config_file: Path | None, app_id: str = ""
) -> list[HttpEndpointConfig]:
    """The native config's `http_endpoints:` list (the fields of an HTTPEndpoint's `spec`
    beside `name`, `auth` and `scopes`)."""
    if entries is None:
        return []
    source = str(config_file)
    if not isinstance(entries, list):
        raise ConfigError(f"{source}: 'http_endpoints' must be a list")
    endpoints: list[HttpEndpointConfig] = []
    for i, entry in enumerate(entries):
        if not isinstance(entry, dict):
            raise ConfigError(f"{source}: http_endpoints[{i}] must be a mapping")
        check_fields(entry, NATIVE_FIELDS, f"{source}: http_endpoints[{i}]")
        endpoint = _endpoint(
            source, entry.get("name"), entry, entry.get("auth"), entry.get("scopes"), app_id
        )
        if endpoint is not None:
            endpoints.append(endpoint)
    return endpoints


def _endpoint(
    source: str,
    name: Any,
    spec: Any,
    auth: Any,
    scopes: Any,
    app_id: str,
    prefix: str = "",
) -> HttpEndpointConfig | None:
    if not isinstance(name, str) or not name:
        where = "metadata.name" if prefix else "name"
        raise ConfigError(f"{source}: {KIND} without field '{where}'")
    label = f"{KIND} {name!r}"
    if scopes and app_id and app_id not in scopes:
        log.info("%s: %s is scoped to %s, not to %r: skipped", source, label, scopes, app_id)
        return None
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: {label}: field '{prefix.rstrip('.') or 'spec'}' is required")
    base_url = _base_url(spec.get("baseUrl"), source, label, f"{prefix}baseUrl")
    store = _secret_store(auth, source, label)
    tls, refs = _client_tls(spec.get("clientTLS"), store, source, label, f"{prefix}clientTLS")
    headers: dict[str, str] = {}
    items = spec.get("headers") or []
    if not isinstance(items, list):
        raise ConfigError(f"{source}: {label}: field '{prefix}headers' must be a list")
    for i, item in enumerate(items):
        where = f"{label}: field '{prefix}headers[{i}]'"
        header = item.get("name") if isinstance(item, dict) else None
        if not isinstance(header, str) or not _is_token(header):
            raise ConfigError(
                f"{source}: {where} needs 'name' (an HTTP header name) and 'value' or "
                f"'{SECRET_KEY_REF}'"
            )
        key = header.lower()
        if key in headers or any(r.field == f"headers.{key}" for r in refs):
            raise ConfigError(f"{source}: {where}: header {header!r} is listed twice")
        where = f"{where} ({header})"
        if SECRET_KEY_REF in item:
            refs.append(_ref(item[SECRET_KEY_REF], store, f"headers.{key}", source, where))
        else:
            headers[key] = _text(item.get("value", ""))
    try:
        return HttpEndpointConfig(
            name=name,
            base_url=base_url,
            headers=headers,
            client_tls=tls,
            secret_refs=tuple(refs),
            source=source,
        )
    except ValidationError as err:
        raise ConfigError(f"{source}: {label}: {_describe(err)}") from None


def _ref(ref: Any, store: str, field: str, source: str, where: str) -> SecretRef:
    found = _secret_key_ref(ref, store, field, source, where)
    return found.model_copy(update={"store_field": STORE_FIELD})


def _client_tls(
    value: Any, store: str, source: str, label: str, field: str
) -> tuple[dict[str, str], list[SecretRef]]:
    """`clientTLS: {rootCA, certificate, privateKey}`, each `{value: <PEM>}` or
    `{secretKeyRef: ...}`: the inline PEM texts by document, and the secret references."""
    tls: dict[str, str] = {}
    refs: list[SecretRef] = []
    if value is None:
        return tls, refs
    if not isinstance(value, dict):
        raise ConfigError(f"{source}: {label}: field '{field}' must be a mapping")
    check_fields(value, frozenset({*TLS_DOCUMENTS, "renegotiation"}), f"{source}: {label}: {field}")
    if value.get("renegotiation") not in (None, "", "RenegotiateNever"):
        raise ConfigError(
            f"{source}: {label}: field '{field}.renegotiation' is not supported (TLS "
            "renegotiation is never done)"
        )
    for document in TLS_DOCUMENTS:
        item = value.get(document)
        if item is None:
            continue
        where = f"{label}: field '{field}.{document}'"
        kinds = set(item) if isinstance(item, dict) else set()
        if len(kinds) != 1 or not kinds <= {"value", SECRET_KEY_REF}:
            raise ConfigError(f"{source}: {where} needs 'value' (PEM text) or '{SECRET_KEY_REF}'")
        if SECRET_KEY_REF in item:
            refs.append(_ref(item[SECRET_KEY_REF], store, f"clientTLS.{document}", source, where))
        elif isinstance(item["value"], str) and item["value"].strip():
            tls[document] = item["value"]
        else:
            raise ConfigError(f"{source}: {where}: 'value' must be PEM text")
    given = set(tls) | {r.field.removeprefix("clientTLS.") for r in refs}
    if ("certificate" in given) != ("privateKey" in given):
        raise ConfigError(
            f"{source}: {label}: field '{field}' needs both 'certificate' and 'privateKey' "
            "(a client certificate and its key), or neither"
        )
    return tls, refs


def _base_url(value: Any, source: str, label: str, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ConfigError(
            f"{source}: {label}: field '{field}' is required: the endpoint's http:// or "
            "https:// URL"
        )
    url = value.strip()
    try:
        parts = urlsplit(url)
        ok = parts.scheme in ("http", "https") and bool(parts.hostname)
        _ = parts.port  # a port that is not a number raises
    except ValueError:
        ok = False
    if not ok:
        raise ConfigError(
            f"{source}: {label}: field '{field}' {url!r} must be an http:// or https:// URL "
            "with a host, e.g. https://api.example.com"
        )
    return url


def _secret_store(auth: Any, source: str, label: str) -> str:
    """`auth.secretStore` ("" when absent); daprd reads the key case-insensitively."""
    if auth is None:
        return ""
    keys = {str(k).lower(): v for k, v in auth.items()} if isinstance(auth, dict) else None
    if keys is None or set(keys) - {"secretstore"}:
        raise ConfigError(
            f"{source}: {label}: field 'auth' must be a mapping with only 'secretStore'"
        )
    store = keys.get("secretstore") or ""
    if not isinstance(store, str):
        raise ConfigError(f"{source}: {label}: field '{STORE_FIELD}' must be a string")
    return store


def _text(value: Any) -> str:
    """A header value as daprd writes a YAML scalar: `true`, `8`, `en-US`."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return "" if value is None else str(value)


_TOKEN_CHARS = frozenset(
    "!#$%&'*+-.^_`|~0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
)


def _is_token(name: str) -> bool:
    """An HTTP field name (RFC 9110 token)."""
    return bool(name) and set(name) <= _TOKEN_CHARS


def check_http_endpoints(
    endpoints: Sequence[HttpEndpointConfig], components: Sequence[ComponentConfig]
) -> list[HttpEndpointConfig]:
    """Names are unique; every secret reference names a configured secret store (filled in
    when it names none and exactly one is configured), checked as a component's are."""
    from layotto.components import resolve_store  # it imports this package's config

    stores = [c.name for c in components if c.kind is Kind.SECRETSTORES]
    seen: dict[str, HttpEndpointConfig] = {}
    checked: list[HttpEndpointConfig] = []
    for endpoint in endpoints:
        note_unique(seen, endpoint.name, endpoint, KIND)
        refs = tuple(
            resolve_store(
                ref,
                stores,
                f"{endpoint.source}: {KIND} {endpoint.name!r}: field 'spec.{ref.field}' "
                f"reads secret {ref.secret!r} key {ref.key!r}",
            )
            for ref in endpoint.secret_refs
        )
        checked.append(endpoint.model_copy(update={"secret_refs": refs}))
    return checked
