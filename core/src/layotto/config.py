"""The one typed runtime config, and the loaders that build it.

Sources, combinable:
- the embedded default (no `--config`, no `--resources-path`): in-memory components under the
  default names;
- `--config FILE`: our native YAML/JSON, Layotto's `grpc_config` (bare, wrapped in
  `{"grpc_config": ...}`, or inside a MOSN `servers/listeners/filter_chains` document), or
  daprd's own `kind: Configuration` file (`config_dapr`);
- `--resources-path DIR` (repeatable): Dapr `Component`, `Subscription`, `HTTPEndpoint` and
  `Resiliency` YAMLs (`config_subscriptions`, `config_endpoints`, `config_resiliency`; the
  native config may hold `subscriptions:`, `http_endpoints:` and `resiliency:` too).
Command-line flags override what the file says about the server.
"""

from __future__ import annotations

import json
import logging
import os
import uuid
from collections.abc import Hashable, Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from layotto.config_subscriptions import (
    DeclaredSubscription,
    check_fields,
    dapr_subscription,
    native_subscription,
)
from layotto.errors import ConfigError
from layotto.plugin import Kind
from layotto.resiliency import ResiliencySpec

log = logging.getLogger(__name__)

DEFAULT_GRPC_PORT = 34904
DEFAULT_HTTP_PORT = 34999
# daprd's metrics port: what `layotto run` serves Prometheus metrics on unless told otherwise.
# A config loaded as a library (tests, `run_sidecar`) has no metrics unless it sets a port.
DEFAULT_METRICS_PORT = 9090
DEFAULT_HOST = "127.0.0.1"
DEFAULT_SOURCE = "<embedded default>"

# Which name each kind gets in the embedded default (ARCHITECTURE.md, external contract).
DEFAULT_COMPONENT_NAMES: dict[Kind, str] = {
    Kind.STATE: "statestore",
    Kind.PUBSUB: "pubsub",
    Kind.CONFIGURATION: "configstore",
    Kind.LOCK: "lockstore",
    Kind.SEQUENCER: "sequencer",
    Kind.SECRETSTORES: "secretstore",
}

# Layotto `grpc_config` section -> kind.
LAYOTTO_SECTIONS: dict[str, Kind] = {
    "state": Kind.STATE,
    "pub_subs": Kind.PUBSUB,
    "config_store": Kind.CONFIGURATION,
    "lock": Kind.LOCK,
    "sequencer": Kind.SEQUENCER,
    "secret_store": Kind.SECRETSTORES,
    "bindings": Kind.BINDINGS,
}
LAYOTTO_UNSUPPORTED_SECTIONS = frozenset(
    {"hellos", "file", "oss", "cryption", "email", "phone", "sms", "custom_component"}
)

KEY_PREFIX_METADATA = "keyPrefix"
BIGGER_THAN_METADATA = "biggerThan"


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class SecretRef(_Model):
    """A metadata value read from a secret store at startup: Dapr's `secretKeyRef` (also the
    native format's), Layotto's `secret_ref`. The runtime starts the secret stores first, reads
    each reference and injects the value before the component's metadata is validated;
    `layotto check` only checks that the store is configured."""

    # The metadata name the value is injected as.
    field: str = Field(min_length=1)
    # The secret store component; "" = the only one configured (an error if there are more).
    store: str = ""
    # The secret's name in the store, and which of its values to take.
    secret: str = Field(min_length=1)
    key: str = Field(min_length=1)
    # How this config format names the store, for the error when it names none.
    store_field: str = "auth.secretstore"

    def describe(self) -> str:
        """Names the secret, never its value."""
        return f"secret {self.secret!r} key {self.key!r} in secret store {self.store!r}"


class ComponentConfig(_Model):
    name: str = Field(min_length=1)
    kind: Kind
    type: str = Field(min_length=1)
    version: str = "v1"
    metadata: dict[str, Any] = Field(default_factory=dict)
    # Sidecar-level key-prefix strategy (`keyPrefix` in the metadata); None = the API's default.
    key_prefix: str | None = None
    # Sequencer only (`biggerThan`): key -> every id handed out for it must be greater.
    bigger_than: dict[str, int] = Field(default_factory=dict)
    ignore_errors: bool = False
    # Metadata values read from secret stores at startup (not in `metadata` until then).
    secret_refs: tuple[SecretRef, ...] = ()
    source: str = DEFAULT_SOURCE

    @property
    def qualified_type(self) -> str:
        return f"{self.kind.value}.{self.type}"


class AppConfig(_Model):
    id: str = ""
    # The app's callback port; 0 = the app takes no callbacks.
    port: int = Field(default=0, ge=0, le=65535)
    host: str = DEFAULT_HOST
    # Which callback service the app serves: over gRPC Layotto's
    # `spec.proto.runtime.v1.AppCallback`, Dapr's `dapr.proto.runtime.v1.AppCallback`, or
    # `auto` (asked at startup: Dapr first); or `http`, Dapr's HTTP app channel (daprd's
    # `--app-protocol http`), which is never detected: it is chosen here.
    protocol: Literal["auto", "dapr", "layotto", "http"] = "auto"
    # Sent to the app as `dapr-api-token` on every callback (Dapr's APP_API_TOKEN).
    api_token: str | None = None


class ServerConfig(_Model):
    host: str = DEFAULT_HOST
    grpc_port: int = Field(default=DEFAULT_GRPC_PORT, ge=0, le=65535)
    http_port: int = Field(default=DEFAULT_HTTP_PORT, ge=0, le=65535)
    api_token: str | None = None
    # The Dapr SDKs send no token on server-streaming calls (dapr-compat.md 2.3): with a token
    # set, `subscribe_configuration` fails unless these streams are let through without one.
    allow_tokenless_config_subscribe: bool = False
    grace_period: float = Field(default=5.0, ge=0)
    # False (daprd Configuration `spec.metric.enabled: false`): `layotto run` serves none.
    metrics_enabled: bool = True
    # Prometheus `GET /metrics` on this port (0 = a free one); None = no metrics at all.
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    # A taken metrics port warns and serves no metrics instead of failing startup: set by
    # `layotto run` for the default port it implies, never for a port the user chose.
    metrics_optional: bool = False


class PubSubDeliveryConfig(_Model):
    """How the sidecar delivers subscribed messages to the app (callback and streaming)."""

    # Deliveries in flight per subscription, and messages received but not yet settled.
    concurrency: int = Field(default=16, ge=1)
    mailbox: int = Field(default=256, ge=1)
    # Redelivery backoff after RETRY or an error: exponential from the first to the cap.
    retry_initial_interval: float = Field(default=0.1, gt=0)
    retry_max_interval: float = Field(default=10.0, gt=0)
    # Redeliveries before a message goes to its dead-letter topic (subscription metadata
    # `maxRetries` overrides it); without a dead-letter topic a message is retried for ever.
    max_retries: int = Field(default=5, ge=0)
    # Seconds one OnTopicEvent call may take before it counts as failed (and is redelivered).
    app_timeout: float = Field(default=60.0, gt=0)


class RpcFilterChain(_Model):
    """`rpcfilter` component names, applied in order."""

    before: list[str] = Field(default_factory=list)
    after: list[str] = Field(default_factory=list)


class RpcConfig(_Model):
    """How InvokeService picks a channel, finds addresses and filters calls (all names are
    component names; unknown ones stop startup)."""

    # The `rpc` component used for targets without an entry in `app_channels`
    # ("" = the only rpc component, when there is exactly one).
    default_channel: str = ""
    app_channels: dict[str, str] = Field(default_factory=dict)
    # The `nameresolution` component ("" = the only one, when there is exactly one).
    resolver: str = ""
    # Channel name -> its before/after filters.
    filters: dict[str, RpcFilterChain] = Field(default_factory=dict)
    # How long an address whose call could not connect is skipped.
    eject_seconds: float = Field(default=10.0, ge=0)


class TracingConfig(_Model):
    """Distributed tracing (W3C trace context), as daprd's Configuration `spec.tracing`."""

    # Share of the traces started here that are recorded (1 = all); with tracing on, a
    # caller's traceparent with its sampled flag set is always followed; 0 = tracing off.
    sampling_rate: float = Field(default=0.0, ge=0, le=1)
    # Where finished spans go: a Zipkin v2 collector (`POST <zipkin_endpoint>`, e.g.
    # http://localhost:9411/api/v2/spans), an OTLP/HTTP collector (`POST <otlp_endpoint>`,
    # e.g. http://localhost:4318/v1/traces), and/or the log (`stdout`).
    zipkin_endpoint: str = ""
    otlp_endpoint: str = ""
    stdout: bool = False


class ApiRule(_Model):
    """One entry of daprd's API allow/deny lists: an API by name (`state`, `publish`,
    `invoke`, ...), optionally one version (`v1.0`, `v1.0-alpha1`) and one protocol."""

    name: str = Field(min_length=1)
    version: str = ""
    protocol: Literal["", "http", "grpc"] = ""


class ApiAccessConfig(_Model):
    """daprd's Configuration `spec.api`: with `allowed` set only those APIs are served; the
    `denied` ones never are (both empty: everything is served)."""

    allowed: tuple[ApiRule, ...] = ()
    denied: tuple[ApiRule, ...] = ()


class SecretScope(_Model):
    """Which secrets of one store the app may read (Dapr's `secrets.scopes` entry)."""

    default_access: Literal["allow", "deny"] = "allow"
    allowed_secrets: list[str] = Field(default_factory=list)
    denied_secrets: list[str] = Field(default_factory=list)


class SecretsConfig(_Model):
    # Secret store name -> its access policy; stores without an entry allow everything.
    scopes: dict[str, SecretScope] = Field(default_factory=dict)


class HttpEndpointConfig(_Model):
    """A Dapr `HTTPEndpoint`: invoking app id `name` calls `base_url` (`config_endpoints`)."""

    name: str = Field(min_length=1)
    base_url: str = Field(min_length=1)
    # Header name (lower-case) -> value, sent on every call (over the caller's own).
    headers: dict[str, str] = Field(default_factory=dict)
    # `clientTLS` documents given inline: rootCA / certificate / privateKey -> PEM text.
    client_tls: dict[str, str] = Field(default_factory=dict)
    # Values read from a secret store at startup, `field` saying where each goes
    # (`headers.<name>` or `clientTLS.<document>`); each names its store once loaded.
    secret_refs: tuple[SecretRef, ...] = ()
    source: str = DEFAULT_SOURCE


class RuntimeConfig(_Model):
    app: AppConfig = AppConfig()
    server: ServerConfig = ServerConfig()
    pubsub: PubSubDeliveryConfig = PubSubDeliveryConfig()
    rpc: RpcConfig = RpcConfig()
    secrets: SecretsConfig = SecretsConfig()
    components: tuple[ComponentConfig, ...] = ()
    # Declarative subscriptions, already scoped to our app id.
    subscriptions: tuple[DeclaredSubscription, ...] = ()
    # Dapr HTTPEndpoints, already scoped to our app id.
    http_endpoints: tuple[HttpEndpointConfig, ...] = ()
    # Timeouts, retries and circuit breakers: every Resiliency that applies to us, merged,
    # and the names of the resources it came from (metadata's `resiliencies`).
    resiliency: ResiliencySpec = ResiliencySpec()
    resiliency_names: tuple[str, ...] = ()
    tracing: TracingConfig = TracingConfig()
    api: ApiAccessConfig = ApiAccessConfig()

    def with_overrides(self, **server: Any) -> RuntimeConfig:
        """Apply command-line flags; None means 'not given'."""
        app_fields = {k[4:]: v for k, v in server.items() if k.startswith("app_") and v is not None}
        srv_fields = {k: v for k, v in server.items() if not k.startswith("app_") and v is not None}
        data = self.model_dump()
        data["app"].update(app_fields)
        data["server"].update(srv_fields)
        try:
            return RuntimeConfig.model_validate(data)
        except ValidationError as err:
            raise ConfigError(f"command line: {_describe(err)}") from None


def embedded_default_components() -> tuple[ComponentConfig, ...]:
    # The blocks with an in-memory component (the secret store starts empty).
    kinds = (
        Kind.STATE,
        Kind.PUBSUB,
        Kind.CONFIGURATION,
        Kind.LOCK,
        Kind.SEQUENCER,
        Kind.SECRETSTORES,
    )
    return tuple(
        ComponentConfig(name=DEFAULT_COMPONENT_NAMES[kind], kind=kind, type="in-memory")
        for kind in kinds
    )


# -- loading -------------------------------------------------------------------------------


def load_config(
    config_file: Path | None = None,
    resources_paths: Iterable[Path] = (),
    *,
    app_id: str | None = None,
) -> RuntimeConfig:
    """`app_id` (from the command line) wins over the file's; Dapr `scopes` and `{appID}`
    templates in resources are resolved against the final one."""
    resources_paths = list(resources_paths)
    if config_file is None and not resources_paths:
        return RuntimeConfig(components=embedded_default_components())
    raw: dict[str, Any] = {}
    components: list[ComponentConfig] = []
    if config_file is not None:
        raw, components = _load_file(config_file)
    app = raw.get("app")
    if app is not None and not isinstance(app, dict):
        raise ConfigError(f"{config_file}: field 'app' must be a mapping")
    if app_id is None:
        app_id = str((app or {}).get("id") or "")
    subscriptions = _native_subscriptions(raw.pop("subscriptions", None), config_file, app_id)
    # It imports this module's models.
    from layotto.config_endpoints import (
        check_http_endpoints,
        load_dapr_http_endpoints,
        native_http_endpoints,
    )
    from layotto.config_resiliency import load_dapr_resiliency, merged, names, native_resiliency

    endpoints = native_http_endpoints(raw.pop("http_endpoints", None), config_file, app_id)
    resiliencies = native_resiliency(raw.pop("resiliency", None), config_file)
    for directory in resources_paths:
        components += load_dapr_resources(directory, app_id=app_id)
        subscriptions += load_dapr_subscriptions(directory, app_id=app_id)
        endpoints += load_dapr_http_endpoints(directory, app_id=app_id)
        resiliencies += load_dapr_resiliency(directory, app_id=app_id)
    _reject_duplicates(components)
    subscriptions = _check_subscriptions(subscriptions, components)
    endpoints = check_http_endpoints(endpoints, components)
    try:
        return RuntimeConfig.model_validate(
            {
                **raw,
                "components": components,
                "subscriptions": subscriptions,
                "http_endpoints": endpoints,
                "resiliency": merged(resiliencies),
                "resiliency_names": names(resiliencies),
            }
        )
    except ValidationError as err:
        raise ConfigError(f"{config_file}: {_describe(err)}") from None


def _read_structured(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as err:
        raise ConfigError(f"{path}: cannot read: {err.strerror}") from None
    import yaml  # only needed when there is a file: keeps the zero-config start fast

    try:
        if path.suffix == ".json":
            return json.loads(text)
        return yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as err:
        raise ConfigError(
            f"{path}: not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}"
        ) from None


def _load_file(path: Path) -> tuple[dict[str, Any], list[ComponentConfig]]:
    data = _read_structured(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: the top level must be a mapping")
    from layotto.config_dapr import from_dapr_configuration, is_dapr_configuration

    if is_dapr_configuration(data):
        return from_dapr_configuration(data, path), []
    grpc_config = find_grpc_config(data)
    if grpc_config is not None:
        return _from_layotto(grpc_config, str(path))
    raw = dict(data)
    components = raw.pop("components", None) or []
    if not isinstance(components, list):
        raise ConfigError(f"{path}: 'components' must be a list")
    return raw, [_native_component(entry, str(path), i) for i, entry in enumerate(components)]


NATIVE_COMPONENT_FIELDS = frozenset(
    {"name", "type", "version", "metadata", "ignore_errors", "auth"}
)
SECRET_KEY_REF = "secretKeyRef"
LAYOTTO_SECRET_REF_FIELDS = frozenset({"store_name", "key", "sub_key", "inject_as"})


def _native_component(entry: Any, source: str, index: int) -> ComponentConfig:
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: components[{index}] must be a mapping")
    label = f"component {entry.get('name', f'#{index}')!r}"
    check_fields(entry, NATIVE_COMPONENT_FIELDS, f"{source}: {label}")
    qualified = entry.get("type")
    if not isinstance(qualified, str) or "." not in qualified:
        raise ConfigError(
            f"{source}: {label}: field 'type' must be '<kind>.<type>', e.g. state.redis"
        )
    kind, type_ = _split_type(qualified, source, label)
    metadata = entry.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise ConfigError(f"{source}: {label}: field 'metadata' must be a mapping")
    # A metadata value `{secretKeyRef: {name, key}}` is read from the store `auth.secretstore`,
    # as in a Dapr Component.
    store = _auth_secret_store(entry.get("auth"), source, label, "auth")
    refs = [
        _secret_key_ref(
            value[SECRET_KEY_REF], store, str(name), source, f"{label}: metadata.{name}"
        )
        for name, value in metadata.items()
        if _is_secret_key_ref(value, source, f"{label}: metadata.{name}")
    ]
    return _component(
        source,
        label,
        name=entry.get("name"),
        kind=kind,
        type=type_,
        version=entry.get("version", "v1"),
        metadata=metadata,
        ignore_errors=entry.get("ignore_errors", False),
        secret_refs=refs,
    )


def _is_secret_key_ref(value: Any, source: str, where: str) -> bool:
    if not isinstance(value, dict) or SECRET_KEY_REF not in value:
        return False
    if len(value) != 1:
        others = ", ".join(sorted(map(repr, set(value) - {SECRET_KEY_REF})))
        raise ConfigError(
            f"{source}: {where}: a secret reference holds only {SECRET_KEY_REF!r}, not {others}"
        )
    return True


def _auth_secret_store(auth: Any, source: str, label: str, field: str) -> str:
    """The `auth.secretstore` of a component ("" when absent)."""
    if auth is None:
        return ""
    if not isinstance(auth, dict) or set(auth) - {"secretstore"}:
        raise ConfigError(
            f"{source}: {label}: field '{field}' must be a mapping with only 'secretstore'"
        )
    store = auth.get("secretstore") or ""
    if not isinstance(store, str):
        raise ConfigError(f"{source}: {label}: field '{field}.secretstore' must be a string")
    return store


def _secret_key_ref(ref: Any, store: str, field: str, source: str, where: str) -> SecretRef:
    """Dapr's `secretKeyRef: {name, key}`; without `key`, the key is the secret's name."""
    if not isinstance(ref, dict) or set(ref) - {"name", "key"}:
        raise ConfigError(
            f"{source}: {where}: {SECRET_KEY_REF} must be a mapping of 'name' and optional 'key'"
        )
    name, key = ref.get("name"), ref.get("key") or ""
    if not isinstance(name, str) or not name or not isinstance(key, str):
        raise ConfigError(
            f"{source}: {where}: {SECRET_KEY_REF} needs 'name' (the secret's name) as a string, "
            "and 'key' (which of its values) as a string if given"
        )
    return SecretRef(field=field, store=store, secret=name, key=key or name)


def _layotto_secret_refs(refs: Any, source: str, label: str) -> list[SecretRef]:
    """`secret_ref: [{store_name, key, sub_key, inject_as}]`: `metadata[inject_as or sub_key]
    = secret(key)[sub_key]`. Without `sub_key` the value named like the secret is taken
    (upstream would inject nothing)."""
    if refs is None:
        return []
    if not isinstance(refs, list):
        raise ConfigError(f"{source}: {label}: field 'secret_ref' must be a list")
    out = []
    for i, ref in enumerate(refs):
        where = f"{label}: secret_ref[{i}]"
        if not isinstance(ref, dict):
            raise ConfigError(f"{source}: {where} must be a mapping")
        check_fields(ref, LAYOTTO_SECRET_REF_FIELDS, f"{source}: {where}")
        values = {f: ref.get(f) or "" for f in LAYOTTO_SECRET_REF_FIELDS}
        if not all(isinstance(v, str) for v in values.values()) or not values["key"]:
            raise ConfigError(
                f"{source}: {where}: 'key' (the secret's name) is required; 'store_name', "
                "'sub_key' and 'inject_as' must be strings"
            )
        sub_key = values["sub_key"] or values["key"]
        out.append(
            SecretRef(
                field=values["inject_as"] or sub_key,
                store=values["store_name"],
                secret=values["key"],
                key=sub_key,
                store_field="store_name",
            )
        )
    return out


def _split_type(qualified: str, source: str, label: str, field: str = "type") -> tuple[Kind, str]:
    prefix, _, type_ = qualified.partition(".")
    try:
        return Kind(prefix), type_
    except ValueError:
        kinds = ", ".join(k.value for k in Kind)
        raise ConfigError(
            f"{source}: {label}: field '{field}' {qualified!r}: "
            f"unknown kind {prefix!r} (kinds: {kinds})"
        ) from None


def _component(
    source: str, label: str, *, secret_refs: Iterable[SecretRef] = (), **fields: Any
) -> ComponentConfig:
    metadata = dict(fields.pop("metadata"))
    refs = tuple(secret_refs)
    seen: set[str] = set()
    for ref in refs:
        if ref.field in (KEY_PREFIX_METADATA, BIGGER_THAN_METADATA):
            raise ConfigError(
                f"{source}: {label}: field 'metadata.{ref.field}' is the sidecar's own setting "
                "and cannot come from a secret store"
            )
        if ref.field in seen:
            raise ConfigError(
                f"{source}: {label}: field 'metadata.{ref.field}' has two secret references"
            )
        seen.add(ref.field)
        # The secret wins over an inline value (Layotto configs often keep `"redisPassword": ""`
        # beside the reference that fills it).
        metadata.pop(ref.field, None)
    prefix = metadata.pop(KEY_PREFIX_METADATA, None)
    if prefix is not None and "||" in str(prefix):
        raise ConfigError(f"{source}: {label}: field 'metadata.keyPrefix' must not contain '||'")
    bigger_than = metadata.pop(BIGGER_THAN_METADATA, None) or {}
    if isinstance(bigger_than, str):  # Dapr YAML values are strings: accept JSON there
        try:
            bigger_than = json.loads(bigger_than)
        except json.JSONDecodeError:
            raise ConfigError(
                f"{source}: {label}: field 'metadata.biggerThan' must map keys to integers, "
                'e.g. {"order": 1000}'
            ) from None
    try:
        return ComponentConfig(
            **fields,
            metadata=metadata,
            key_prefix=None if prefix is None else str(prefix),
            bigger_than=bigger_than,
            secret_refs=refs,
            source=source,
        )
    except ValidationError as err:
        raise ConfigError(f"{source}: {label}: {_describe(err)}") from None


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(str(p) for p in e["loc"]) or "<root>"
        parts.append(f"field '{where}': {e['msg']}")
    return "; ".join(parts)


def _reject_duplicates(components: list[ComponentConfig]) -> None:
    seen: dict[tuple[Kind, str], ComponentConfig] = {}
    for c in components:
        note_unique(seen, (c.kind, c.name), c, f"{c.kind.value} component")


class _Sourced(Protocol):
    @property
    def name(self) -> str: ...
    @property
    def source(self) -> str: ...


_S = TypeVar("_S", bound=_Sourced)


def note_unique(seen: dict[Any, _S], key: Hashable, item: _S, what: str) -> None:
    """Record `item` in `seen` under `key`; a ConfigError naming both sources when `key` is
    already there."""
    other = seen.setdefault(key, item)
    if other is not item:
        raise ConfigError(f"duplicate {what} {item.name!r}: in {other.source} and {item.source}")


# -- Layotto grpc_config -------------------------------------------------------------------


def _mappings(parent: Mapping[str, Any], key: str) -> Iterator[Mapping[str, Any]]:
    """The mapping items of parent[key] when it is a list; anything else yields nothing."""
    value = parent.get(key)
    if isinstance(value, list):
        yield from (item for item in value if isinstance(item, dict))


def find_grpc_config(data: Mapping[str, Any]) -> Mapping[str, Any] | None:
    """The `grpc_config` object, wherever a Layotto config keeps it, or None if not Layotto."""
    found = data.get("grpc_config")
    if isinstance(found, dict):
        return found
    for server in _mappings(data, "servers"):
        for listener in _mappings(server, "listeners"):
            for chain in _mappings(listener, "filter_chains"):
                for flt in _mappings(chain, "filters"):
                    config = flt.get("config")
                    found = config.get("grpc_config") if isinstance(config, dict) else None
                    if isinstance(found, dict):
                        return found
    if "components" not in data and (
        set(data) & (set(LAYOTTO_SECTIONS) | LAYOTTO_UNSUPPORTED_SECTIONS)
        or (isinstance(data.get("app"), dict) and "app_id" in data["app"])
    ):
        return data
    return None


def _from_layotto(
    grpc_config: Mapping[str, Any], source: str
) -> tuple[dict[str, Any], list[ComponentConfig]]:
    raw: dict[str, Any] = {}
    app = grpc_config.get("app") or {}
    if not isinstance(app, dict):
        raise ConfigError(f"{source}: field 'app' must be a mapping")
    if app:
        raw["app"] = {
            k: v
            for k, v in {
                "id": app.get("app_id"),
                "port": app.get("grpc_callback_port"),
                "host": app.get("grpc_callback_host"),
            }.items()
            if v is not None
        }
    components: list[ComponentConfig] = []
    rpcs = grpc_config.get("rpcs")
    if rpcs is not None:
        rpc_components, raw["rpc"] = _from_layotto_rpcs(rpcs, source)
        components += rpc_components
    for section, entries in grpc_config.items():
        if section in LAYOTTO_UNSUPPORTED_SECTIONS:
            log.warning("%s: section %r is not supported yet and is ignored", source, section)
            continue
        kind = LAYOTTO_SECTIONS.get(section)
        if kind is None:
            continue
        if not isinstance(entries, dict):
            raise ConfigError(f"{source}: section {section!r} must map component names to entries")
        for name, entry in entries.items():
            label = f"{section} component {name!r}"
            if not isinstance(entry, dict) or not isinstance(entry.get("type"), str):
                raise ConfigError(f"{source}: {label}: field 'type' is required")
            if not isinstance(entry.get("metadata") or {}, dict):
                raise ConfigError(f"{source}: {label}: field 'metadata' must be a mapping")
            metadata = dict(entry.get("metadata") or {})
            # Entries that keep settings beside `metadata` upstream.
            for extra in ("address", "timeout", "biggerThan"):
                if extra in entry:
                    metadata[extra] = entry[extra]
            components.append(
                _component(
                    source,
                    label,
                    name=name,
                    kind=kind,
                    type=entry["type"],
                    metadata=metadata,
                    secret_refs=_layotto_secret_refs(entry.get("secret_ref"), source, label),
                )
            )
    return raw, components


def _from_layotto_rpcs(rpcs: Any, source: str) -> tuple[list[ComponentConfig], dict[str, Any]]:
    """`rpcs: {mosn: {config: {before_invoke, after_invoke, channel: [{protocol, listener,
    size}]}}}` -> an `rpc.<protocol>` channel per entry, a `nameresolution.mesh` resolver on the
    channel's listener (a `host:port`: MOSN's in-process listener names do not exist here),
    and `rpcfilter.<name>` filters, wired in the `rpc` section."""
    if not isinstance(rpcs, dict):
        raise ConfigError(f"{source}: section 'rpcs' must map invoker names to entries")
    components: list[ComponentConfig] = []
    filters: dict[str, dict[str, list[str]]] = {}
    resolver = ""
    for name, entry in rpcs.items():
        label = f"rpcs component {name!r}"
        config = (entry or {}).get("config") if isinstance(entry, dict) else None
        if not isinstance(config, dict):
            raise ConfigError(f"{source}: {label}: field 'config' must be a mapping")
        channels = config.get("channel") or []
        if not isinstance(channels, list) or not channels or not isinstance(channels[0], dict):
            raise ConfigError(f"{source}: {label}: field 'config.channel' needs one entry")
        channel = channels[0]  # upstream uses only the first
        protocol = str(channel.get("protocol") or "http")
        listener = str(channel.get("listener") or "")
        if ":" not in listener:
            raise ConfigError(
                f"{source}: {label}: channel listener {listener!r} must be host:port (a MOSN "
                "listener name only exists inside MOSN)"
            )
        metadata: dict[str, Any] = {}
        if channel.get("size"):
            metadata["maxConnections"] = channel["size"]
        components.append(
            _component(source, label, name=name, kind=Kind.RPC, type=protocol, metadata=metadata)
        )
        resolver = resolver or f"{name}-listener"
        components.append(
            _component(
                source,
                label,
                name=f"{name}-listener",
                kind=Kind.NAMERESOLUTION,
                type="mesh",
                metadata={"address": listener},
            )
        )
        chain: dict[str, list[str]] = {"before": [], "after": []}
        for key, side in (("before_invoke", "before"), ("after_invoke", "after")):
            for flt in config.get(key) or []:
                flt_name = str(flt.get("name") if isinstance(flt, dict) else flt)
                flt_config = (flt.get("config") or {}) if isinstance(flt, dict) else {}
                chain[side].append(flt_name)
                if not any(c.kind is Kind.RPCFILTER and c.name == flt_name for c in components):
                    components.append(
                        _component(
                            source,
                            f"{label} filter {flt_name!r}",
                            name=flt_name,
                            kind=Kind.RPCFILTER,
                            type=flt_name,
                            metadata=dict(flt_config),
                        )
                    )
        filters[name] = chain
    return components, {"resolver": resolver, "filters": filters}


# -- Dapr resources ------------------------------------------------------------------------


def load_dapr_resources(directory: Path, app_id: str = "") -> list[ComponentConfig]:
    parsed = (
        _dapr_component(doc, source, app_id)
        for source, doc in _dapr_documents(directory, "Component")
    )
    return [c for c in parsed if c is not None]


def load_dapr_subscriptions(directory: Path, app_id: str = "") -> list[DeclaredSubscription]:
    parsed = (
        dapr_subscription(doc, source, app_id)
        for source, doc in _dapr_documents(directory, "Subscription")
    )
    return [s for s in parsed if s is not None]


def _dapr_documents(directory: Path, kind: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """The documents of `kind` in the folder's YAML files, in file then position order, each
    with its source label; other kinds (Resiliency, ...) are skipped."""
    if not directory.is_dir():
        raise ConfigError(f"{directory}: --resources-path must be a directory")
    for path in sorted(p for p in directory.iterdir() if p.suffix in (".yaml", ".yml")):
        for index, doc in enumerate(_yaml_documents(path)):
            if isinstance(doc, dict) and doc.get("kind") == kind:
                yield (f"{path}[{index}]" if index else str(path)), doc


def _native_subscriptions(
    entries: Any, config_file: Path | None, app_id: str
) -> list[DeclaredSubscription]:
    if entries is None:
        return []
    if not isinstance(entries, list):
        raise ConfigError(f"{config_file}: 'subscriptions' must be a list")
    parsed = (
        native_subscription(entry, str(config_file), i, app_id) for i, entry in enumerate(entries)
    )
    return [s for s in parsed if s is not None]


def _check_subscriptions(
    subscriptions: list[DeclaredSubscription], components: list[ComponentConfig]
) -> list[DeclaredSubscription]:
    """Names are unique, every pubsub exists; of two for one (pubsub, topic) the first is kept,
    as daprd does (its `ListSubscriptionsAppByPubSub`)."""
    pubsubs = sorted(c.name for c in components if c.kind is Kind.PUBSUB)
    names: dict[str, DeclaredSubscription] = {}
    topics: dict[tuple[str, str], DeclaredSubscription] = {}
    kept: list[DeclaredSubscription] = []
    for sub in subscriptions:
        note_unique(names, sub.name, sub, "subscription")
        if sub.pubsub_name not in pubsubs:
            raise ConfigError(
                f"{sub.source}: subscription {sub.name!r}: pubsub {sub.pubsub_name!r} is not "
                f"configured (pubsub components: {', '.join(pubsubs) or 'none'})"
            )
        first = topics.get((sub.pubsub_name, sub.topic))
        if first is not None:
            log.warning(
                "%s: subscription %r: %s/%s is already subscribed by %r (%s): ignored",
                sub.source,
                sub.name,
                sub.pubsub_name,
                sub.topic,
                first.name,
                first.source,
            )
            continue
        topics[(sub.pubsub_name, sub.topic)] = sub
        kept.append(sub)
    return kept


def _yaml_documents(path: Path) -> Iterator[Any]:
    import yaml

    try:
        yield from yaml.safe_load_all(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None


def _dapr_component(doc: Mapping[str, Any], source: str, app_id: str) -> ComponentConfig | None:
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    label = f"component {name!r}"
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: Component without field 'metadata.name'")
    scopes = doc.get("scopes")
    if scopes and app_id and app_id not in scopes:
        log.info("%s: %s is scoped to %s, not to %r: skipped", source, label, scopes, app_id)
        return None
    spec = doc.get("spec") or {}
    qualified = spec.get("type")
    if not isinstance(qualified, str) or "." not in qualified:
        raise ConfigError(
            f"{source}: {label}: field 'spec.type' must be '<kind>.<type>', e.g. state.redis"
        )
    kind, type_ = _split_type(qualified, source, label, "spec.type")
    store = _auth_secret_store(doc.get("auth"), source, label, "auth")
    metadata: dict[str, Any] = {}
    refs: list[SecretRef] = []
    for i, item in enumerate(spec.get("metadata") or []):
        if not isinstance(item, dict) or "name" not in item:
            raise ConfigError(
                f"{source}: {label}: field 'spec.metadata[{i}]' needs 'name' and 'value'"
            )
        where = f"{label}: field 'spec.metadata[{i}]' ({item['name']})"
        if SECRET_KEY_REF in item:
            refs.append(
                _secret_key_ref(item[SECRET_KEY_REF], store, str(item["name"]), source, where)
            )
            continue
        metadata[item["name"]] = expand_template(item.get("value", ""), app_id, source, where)
    return _component(
        source,
        label,
        name=name,
        kind=kind,
        type=type_,
        version=str(spec.get("version", "v1")),
        metadata=metadata,
        ignore_errors=bool(spec.get("ignoreErrors", False)),
        secret_refs=refs,
    )


# daprd's pod identity (self-hosted: whatever the environment says).
POD_NAME_ENV = "POD_NAME"
NAMESPACE_ENV = "NAMESPACE"


def expand_template(value: Any, app_id: str, source: str = "", where: str = "") -> Any:
    """daprd's tags in a resource value (`pkg/runtime/meta`): each `{uuid}` a new UUID,
    `{podName}` the POD_NAME variable (a ConfigError when it is not set), `{namespace}`
    `<NAMESPACE>.<app id>` (NAMESPACE unset reads as `default`), `{appID}` the app id."""
    if not isinstance(value, str):
        return value
    while "{uuid}" in value:
        value = value.replace("{uuid}", str(uuid.uuid4()), 1)
    if "{podName}" in value:
        pod_name = os.environ.get(POD_NAME_ENV, "")
        if not pod_name:
            raise ConfigError(
                f"{source}: {where}: refers to {{podName}}, but the {POD_NAME_ENV} environment "
                "variable is not set"
            )
        value = value.replace("{podName}", pod_name)
    if "{namespace}" in value:
        namespace = os.environ.get(NAMESPACE_ENV, "default")
        value = value.replace("{namespace}", f"{namespace}.{app_id}")
    return value.replace("{appID}", app_id)
