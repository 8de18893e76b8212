"""daprd's API allow/deny lists (Configuration `spec.api`), decided per gRPC method or HTTP route.

A rule names an API group and a version, as daprd's do: over gRPC `state` + `v1` covers
GetState, SaveState, ... of `dapr.proto.runtime.v1.Dapr` (daprd's `pkg/api/grpc/endpoints.go`
table, below); over HTTP `state` + `v1.0` covers `/v1.0/state/...` (the first path segment after
the version). A rule's `protocol` says which surface it is for; none means HTTP, as in daprd.

- Nothing listed for a protocol: everything is served.
- `allowed` listed: only those; `denied` wins over `allowed`.
- gRPC: only `dapr.proto.runtime.v1.Dapr` methods are subject to the lists (daprd leaves other
  services alone); a refused call is UNIMPLEMENTED "requested endpoint is not available", as
  daprd answers. The Layotto API (`spec.proto.runtime.v1`) follows the same rules under the
  same names with version `v1` (`state`, `publish`, `invoke`, `configuration`, `lock`,
  `unlock`, `secrets`, `bindings`, and `sequencer` for its own block), so an allowlist closes
  both doors to a building block.
- HTTP: a refused route answers 404 as if it did not exist (daprd does not register it); the
  health endpoints are never subject to the lists.
"""

from __future__ import annotations

from collections.abc import Iterable

from layotto.config import ApiAccessConfig, ApiRule

DAPR = "/dapr.proto.runtime.v1.Dapr/"
LAYOTTO = "/spec.proto.runtime.v1.Runtime/"

# The state API's stable methods, the same names on both services.
STATE_METHODS = (
    "GetState",
    "GetBulkState",
    "SaveState",
    "DeleteState",
    "DeleteBulkState",
    "ExecuteStateTransaction",
)

# (group, version) -> the gRPC methods it covers.
_GRPC_GROUPS: dict[tuple[str, str], tuple[str, ...]] = {
    ("invoke", "v1"): (DAPR + "InvokeService", LAYOTTO + "InvokeService"),
    ("state", "v1"): tuple(p + m for p in (DAPR, LAYOTTO) for m in STATE_METHODS),
    ("state", "v1alpha1"): (DAPR + "QueryStateAlpha1",),
    ("publish", "v1"): (DAPR + "PublishEvent", DAPR + "BulkPublishEvent", LAYOTTO + "PublishEvent"),
    ("publish", "v1alpha1"): (DAPR + "BulkPublishEventAlpha1",),
    ("subscribe", "v1alpha1"): (DAPR + "SubscribeTopicEventsAlpha1",),
    ("subscribe", "v1"): (LAYOTTO + "SubscribeTopicEvents",),
    ("bindings", "v1"): (DAPR + "InvokeBinding", LAYOTTO + "InvokeBinding"),
    ("secrets", "v1"): (
        DAPR + "GetSecret",
        DAPR + "GetBulkSecret",
        LAYOTTO + "GetSecret",
        LAYOTTO + "GetBulkSecret",
    ),
    ("metadata", "v1"): (DAPR + "GetMetadata", DAPR + "SetMetadata"),
    ("configuration", "v1"): (
        DAPR + "GetConfiguration",
        DAPR + "SubscribeConfiguration",
        DAPR + "UnsubscribeConfiguration",
        LAYOTTO + "GetConfiguration",
        LAYOTTO + "SaveConfiguration",
        LAYOTTO + "DeleteConfiguration",
        LAYOTTO + "SubscribeConfiguration",
    ),
    ("configuration", "v1alpha1"): (
        DAPR + "GetConfigurationAlpha1",
        DAPR + "SubscribeConfigurationAlpha1",
        DAPR + "UnsubscribeConfigurationAlpha1",
    ),
    ("lock", "v1alpha1"): (DAPR + "TryLockAlpha1",),
    ("unlock", "v1alpha1"): (DAPR + "UnlockAlpha1",),
    ("lock", "v1"): (LAYOTTO + "TryLock", LAYOTTO + "LockKeepAlive"),
    ("unlock", "v1"): (LAYOTTO + "Unlock",),
    ("sequencer", "v1"): (LAYOTTO + "GetNextId",),
    ("shutdown", "v1"): (DAPR + "Shutdown",),
}

HEALTH_PATHS = ("/v1.0/healthz", "/v1.0/healthz/outbound")


def _is_http(rule: ApiRule) -> bool:
    return rule.protocol in ("", "http")


def _grpc_methods(rules: Iterable[ApiRule]) -> frozenset[str]:
    methods: set[str] = set()
    for rule in rules:
        if rule.protocol == "grpc":
            methods.update(_GRPC_GROUPS.get((rule.name, rule.version), ()))
    return frozenset(methods)


def _http_groups(rules: Iterable[ApiRule]) -> frozenset[tuple[str, str]]:
    return frozenset((rule.version, rule.name) for rule in rules if _is_http(rule))


class ApiAccess:
    """Answers whether a gRPC method or an HTTP API path is served."""

    def __init__(self, config: ApiAccessConfig) -> None:
        self._grpc_allowed = _grpc_methods(config.allowed)
        self._grpc_denied = _grpc_methods(config.denied)
        self._grpc_listed = bool(self._grpc_allowed or self._grpc_denied)
        self._http_allowed = _http_groups(config.allowed)
        self._http_denied = _http_groups(config.denied)
        self.restricts_http = bool(self._http_allowed or self._http_denied)

    def grpc_allows(self, path: str) -> bool:
        """`path` is the full method path (`/package.Service/Method`)."""
        if not self._grpc_listed or not path.startswith((DAPR, LAYOTTO)):
            return True
        if path in self._grpc_denied:
            return False
        # As daprd: rules naming no known group leave the list empty, which restricts nothing.
        return path in self._grpc_allowed if self._grpc_allowed else True

    def http_allows(self, path: str) -> bool:
        """`path` is the request path (`/v1.0/state/store/key`)."""
        if not self.restricts_http or path in HEALTH_PATHS:
            return True
        parts = path.strip("/").split("/", 2)
        if len(parts) < 2 or not parts[0].startswith("v1"):
            return True  # not a Dapr API route (actuator, ...)
        group = (parts[0], parts[1])
        if group in self._http_denied:
            return False
        return group in self._http_allowed if self._http_allowed else True
