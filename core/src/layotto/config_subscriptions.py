"""Declarative Dapr subscriptions (dapr-compat.md §6, "Related kinds"): the typed model, and
the parsers for a `kind: Subscription` resource document (`dapr.io/v2alpha1` with
`spec.routes`, or `dapr.io/v1alpha1` with `spec.route`) and for an entry of the native
config's `subscriptions:` list (the v2alpha1 `spec` fields, plus `name` and `scopes`).

Every error is a `ConfigError` naming the source file and the field.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from layotto.errors import ConfigError

log = logging.getLogger(__name__)

API_VERSIONS = frozenset({"dapr.io/v1alpha1", "dapr.io/v2alpha1"})
SPEC_FIELDS = frozenset(
    {"pubsubname", "topic", "route", "routes", "deadLetterTopic", "bulkSubscribe", "metadata"}
)
NATIVE_FIELDS = SPEC_FIELDS | {"name", "scopes"}


def check_fields(entry: Mapping[str, Any], allowed: frozenset[str], where: str) -> None:
    """Refuse a config mapping with fields outside `allowed`, naming them and the expected."""
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(
            f"{where}: unknown field(s) {', '.join(map(repr, unknown))}; "
            f"expected {', '.join(sorted(allowed))}"
        )


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeclaredRule(_Model):
    match: str
    path: str


class DeclaredBulk(_Model):
    # 0 means Dapr's default (the delivery side fills it in).
    max_messages: int = 0
    max_await_ms: int = 0


class DeclaredSubscription(_Model):
    """A subscription the operator declared; delivered to the app like the ones it lists."""

    name: str
    pubsub_name: str
    topic: str
    rules: tuple[DeclaredRule, ...] = ()
    default_path: str = ""
    dead_letter_topic: str = ""
    bulk: DeclaredBulk | None = None
    metadata: dict[str, str] = Field(default_factory=dict)
    source: str = ""


def dapr_subscription(
    doc: Mapping[str, Any], source: str, app_id: str
) -> DeclaredSubscription | None:
    """A `kind: Subscription` document, or None when `scopes` leave our app out."""
    meta = doc.get("metadata") or {}
    name = meta.get("name") if isinstance(meta, dict) else None
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: Subscription without field 'metadata.name'")
    label = f"subscription {name!r}"
    version = doc.get("apiVersion")
    if version not in API_VERSIONS:
        raise ConfigError(
            f"{source}: {label}: field 'apiVersion' is {version!r}; "
            f"expected one of {', '.join(sorted(API_VERSIONS))}"
        )
    if not _in_scope(doc.get("scopes"), app_id, source, label, "scopes"):
        return None
    spec = doc.get("spec")
    if not isinstance(spec, dict):
        raise ConfigError(f"{source}: {label}: field 'spec' must be a mapping")
    unknown = sorted(set(spec) - SPEC_FIELDS)
    if unknown:
        # daprd ignores unknown fields; a misspelt `deadLetterTopic` silently dropped is worse.
        raise ConfigError(
            f"{source}: {label}: unknown field(s) {', '.join(f'spec.{u}' for u in unknown)}"
        )
    return _subscription(name, spec, source, label, "spec.")


def native_subscription(
    entry: Any, source: str, index: int, app_id: str
) -> DeclaredSubscription | None:
    """One entry of the native config's `subscriptions:` list."""
    where = f"subscriptions[{index}]"
    if not isinstance(entry, dict):
        raise ConfigError(f"{source}: {where} must be a mapping")
    check_fields(entry, NATIVE_FIELDS, f"{source}: {where}")
    name = entry.get("name", f"{entry.get('pubsubname')}-{entry.get('topic')}")
    if not isinstance(name, str) or not name:
        raise ConfigError(f"{source}: {where}: field 'name' must be a non-empty string")
    label = f"{where} ({name!r})"
    if not _in_scope(entry.get("scopes"), app_id, source, label, "scopes"):
        return None
    return _subscription(name, entry, source, label, "")


def _in_scope(scopes: Any, app_id: str, source: str, label: str, field: str) -> bool:
    if scopes is None:
        return True
    if not isinstance(scopes, list) or not all(isinstance(s, str) for s in scopes):
        raise ConfigError(f"{source}: {label}: field {field!r} must be a list of app ids")
    # As for components: no app id means nothing can be out of scope.
    if scopes and app_id and app_id not in scopes:
        log.info("%s: %s is scoped to %s, not to %r: skipped", source, label, scopes, app_id)
        return False
    return True


def _subscription(
    name: str, spec: Mapping[str, Any], source: str, label: str, prefix: str
) -> DeclaredSubscription:
    def fail(field: str, problem: str) -> ConfigError:
        return ConfigError(f"{source}: {label}: field '{prefix}{field}' {problem}")

    def text(field: str, *, required: bool = False) -> str:
        value = spec.get(field)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or (required and not value.strip()):
            raise fail(field, "is required" if value is None else "must be a non-empty string")
        return value.strip()

    pubsub_name = text("pubsubname", required=True)
    topic = text("topic", required=True)
    rules: list[DeclaredRule] = []
    default_path = text("route")  # v1alpha1
    routes = spec.get("routes")
    if routes is not None:
        if "route" in spec:
            raise fail("routes", "cannot be combined with 'route'")
        if not isinstance(routes, dict) or set(routes) - {"rules", "default"}:
            raise fail("routes", "must be a mapping with 'rules' and/or 'default'")
        default = routes.get("default", "")
        if not isinstance(default, str):
            raise fail("routes.default", "must be a string")
        default_path = default.strip()
        raw_rules = routes.get("rules") or []
        if not isinstance(raw_rules, list):
            raise fail("routes.rules", "must be a list")
        for i, rule in enumerate(raw_rules):
            if (
                not isinstance(rule, dict)
                or not isinstance(rule.get("path"), str)
                or not isinstance(rule.get("match", ""), str)
                or set(rule) - {"match", "path"}
            ):
                raise fail(f"routes.rules[{i}]", "must be a mapping with 'match' and 'path'")
            rules.append(DeclaredRule(match=rule.get("match", ""), path=rule["path"]))
    metadata = spec.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise fail("metadata", "must be a mapping of strings")
    return DeclaredSubscription(
        name=name,
        pubsub_name=pubsub_name,
        topic=topic,
        rules=tuple(rules),
        default_path=default_path,
        dead_letter_topic=text("deadLetterTopic"),
        bulk=_bulk(spec.get("bulkSubscribe"), fail),
        metadata={str(k): str(v) for k, v in metadata.items()},
        source=source,
    )


def _bulk(raw: Any, fail: Callable[[str, str], ConfigError]) -> DeclaredBulk | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or set(raw) - {
        "enabled",
        "maxMessagesCount",
        "maxAwaitDurationMs",
    }:
        raise fail(
            "bulkSubscribe", "must be a mapping of enabled, maxMessagesCount, maxAwaitDurationMs"
        )
    enabled = raw.get("enabled", False)
    if not isinstance(enabled, bool):
        raise fail("bulkSubscribe.enabled", "must be true or false")
    counts = {}
    for key in ("maxMessagesCount", "maxAwaitDurationMs"):
        value = raw.get(key, 0)
        if isinstance(value, bool) or not isinstance(value, int) or value < 0:
            raise fail(f"bulkSubscribe.{key}", "must be a non-negative integer")
        counts[key] = value
    if not enabled:
        return None
    return DeclaredBulk(
        max_messages=counts["maxMessagesCount"], max_await_ms=counts["maxAwaitDurationMs"]
    )
