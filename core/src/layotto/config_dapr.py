"""daprd's own configuration file (`kind: Configuration`, what `daprd --config` reads) as
`--config`: the parts that mean something here become the native config's sections.

- `spec.api.allowed` / `spec.api.denied` -> `api` (the API allow/deny lists);
- `spec.tracing` (`samplingRate`, `stdout`, `zipkin.endpointAddress`, `otel` over HTTP)
  -> `tracing`;
- `spec.metric.enabled` / `spec.metrics.enabled` -> `server.metrics_enabled`;
- `spec.secrets.scopes` -> `secrets.scopes`.

Anything else daprd knows (`features`, `nameResolution`, `httpPipeline`, `accessControl`, ...)
is logged as ignored, so a file written for daprd loads unchanged; a malformed value in a part
we read stops startup with the file and the field.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from layotto.config_subscriptions import check_fields
from layotto.errors import ConfigError
from layotto.plugin.flags import is_truthy

log = logging.getLogger(__name__)

KIND = "Configuration"
READ = frozenset({"api", "tracing", "metric", "metrics", "secrets"})
OTLP_TRACES_PATH = "/v1/traces"


def is_dapr_configuration(data: Any) -> bool:
    return isinstance(data, dict) and data.get("kind") == KIND


def from_dapr_configuration(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """The native sections a daprd Configuration document stands for."""
    spec = data.get("spec") or {}
    if not isinstance(spec, dict):
        raise ConfigError(f"{path}: field 'spec' must be a mapping")
    ignored = sorted(set(spec) - READ)
    if ignored:
        log.warning(
            "%s: Configuration fields %s are not supported here and are ignored",
            path,
            ", ".join(f"spec.{name}" for name in ignored),
        )
    raw: dict[str, Any] = {}
    if "api" in spec:
        raw["api"] = _api(spec["api"], path)
    if "tracing" in spec:
        raw["tracing"] = _tracing(spec["tracing"], path)
    metrics = spec.get("metrics", spec.get("metric"))
    if isinstance(metrics, dict) and "enabled" in metrics:
        enabled = metrics["enabled"]
        raw["server"] = {"metrics_enabled": enabled is True or is_truthy(str(enabled))}
    if "secrets" in spec:
        raw["secrets"] = {"scopes": _secret_scopes(spec["secrets"], path)}
    return raw


def _mapping(value: Any, path: Path, field: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(f"{path}: field '{field}' must be a mapping")
    return value


def _list(value: Any, path: Path, field: str) -> list[Any]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"{path}: field '{field}' must be a list")
    return value


def _api(value: Any, path: Path) -> dict[str, Any]:
    api = _mapping(value, path, "spec.api")
    check_fields(api, frozenset({"allowed", "denied"}), f"{path}: spec.api")
    out: dict[str, Any] = {}
    for which in ("allowed", "denied"):
        rules = []
        for i, rule in enumerate(_list(api.get(which), path, f"spec.api.{which}")):
            field = f"spec.api.{which}[{i}]"
            rule = _mapping(rule, path, field)
            check_fields(rule, frozenset({"name", "version", "protocol"}), f"{path}: {field}")
            name = rule.get("name")
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{path}: field '{field}.name' is required")
            protocol = str(rule.get("protocol") or "").lower()
            if protocol not in ("", "http", "grpc"):
                raise ConfigError(
                    f"{path}: field '{field}.protocol' must be http or grpc, got {protocol!r}"
                )
            rules.append(
                {"name": name, "version": str(rule.get("version") or ""), "protocol": protocol}
            )
        out[which] = rules
    return out


def _tracing(value: Any, path: Path) -> dict[str, Any]:
    tracing = _mapping(value, path, "spec.tracing")
    out: dict[str, Any] = {}
    rate = tracing.get("samplingRate")
    if rate not in (None, ""):
        try:
            sampling = float(str(rate))
        except ValueError:
            sampling = -1.0
        if not 0 <= sampling <= 1:
            raise ConfigError(
                f"{path}: field 'spec.tracing.samplingRate' must be a number from 0 to 1, "
                f"got {rate!r}"
            )
        out["sampling_rate"] = sampling
    if "stdout" in tracing:
        out["stdout"] = is_truthy(str(tracing["stdout"]))
    zipkin = tracing.get("zipkin")
    if zipkin is not None:
        address = _mapping(zipkin, path, "spec.tracing.zipkin").get("endpointAddress")
        if address:
            out["zipkin_endpoint"] = str(address)
    otel = tracing.get("otel")
    if otel is not None:
        out["otlp_endpoint"] = _otlp_endpoint(_mapping(otel, path, "spec.tracing.otel"), path)
    return out


def _otlp_endpoint(otel: dict[str, Any], path: Path) -> str:
    """daprd's `otel` exporter as an OTLP/HTTP URL (`isSecure` picks the scheme when the
    address has none); OTLP over gRPC is not offered here."""
    protocol = str(otel.get("protocol") or "grpc").lower()
    if protocol != "http":
        raise ConfigError(
            f"{path}: field 'spec.tracing.otel.protocol' is {protocol!r}: only 'http' (OTLP/HTTP) "
            "is supported here"
        )
    address = str(otel.get("endpointAddress") or "")
    if not address:
        raise ConfigError(f"{path}: field 'spec.tracing.otel.endpointAddress' is required")
    if "://" not in address:
        secure = otel.get("isSecure", True)
        scheme = "https" if secure is True or is_truthy(str(secure)) else "http"
        address = f"{scheme}://{address}"
    if not address.rstrip("/").endswith(OTLP_TRACES_PATH):
        address = address.rstrip("/") + OTLP_TRACES_PATH
    return address


def _secret_scopes(value: Any, path: Path) -> dict[str, Any]:
    secrets = _mapping(value, path, "spec.secrets")
    scopes: dict[str, Any] = {}
    for i, scope in enumerate(_list(secrets.get("scopes"), path, "spec.secrets.scopes")):
        field = f"spec.secrets.scopes[{i}]"
        scope = _mapping(scope, path, field)
        check_fields(
            scope,
            frozenset({"storeName", "defaultAccess", "allowedSecrets", "deniedSecrets"}),
            f"{path}: {field}",
        )
        store = scope.get("storeName")
        if not isinstance(store, str) or not store:
            raise ConfigError(f"{path}: field '{field}.storeName' is required")
        access = str(scope.get("defaultAccess") or "allow").lower()
        if access not in ("allow", "deny"):
            raise ConfigError(
                f"{path}: field '{field}.defaultAccess' must be allow or deny, got {access!r}"
            )
        scopes[store] = {
            "default_access": access,
            "allowed_secrets": [
                str(s) for s in _list(scope.get("allowedSecrets"), path, f"{field}.allowedSecrets")
            ],
            "denied_secrets": [
                str(s) for s in _list(scope.get("deniedSecrets"), path, f"{field}.deniedSecrets")
            ],
        }
    return scopes
