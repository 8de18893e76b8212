"""The Secrets building block: store lookup, access policy, error translation.

The policy is Dapr's secret scoping (`secrets.scopes` in the runtime config): per store a
default (`allow`/`deny`), an allow list that wins over the default, and a deny list that wins
over both. Bulk reads leave out what the policy hides instead of failing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from layotto.components import ComponentRegistry
from layotto.config import SecretScope
from layotto.errors import (
    ComponentError,
    InvalidArgument,
    NotConfigured,
    NotFound,
    PermissionDenied,
)
from layotto.meter import ComponentMeter
from layotto.plugin import Kind, SecretStore
from layotto.resiliency import Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.keys import KeyPrefix

_NO_KEYS = KeyPrefix("")  # secret names are not prefixed
_ALLOW_ALL = SecretScope()


@dataclass(frozen=True, slots=True)
class _Store:
    store: SecretStore
    policy: Policy  # the store's outbound resiliency policy
    meter: ComponentMeter | None  # its call metrics


def allowed(scope: SecretScope, key: str) -> bool:
    if key in scope.denied_secrets:
        return False
    if scope.allowed_secrets:
        return key in scope.allowed_secrets
    return scope.default_access == "allow"


class SecretService:
    def __init__(
        self,
        registry: ComponentRegistry,
        scopes: Mapping[str, SecretScope] | None = None,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._call_timeout = call_timeout
        self._scopes = dict(scopes or {})
        self._stores: dict[str, _Store] = {}
        for name, built in registry.of_kind(Kind.SECRETSTORES).items():
            if not isinstance(built.component, SecretStore):
                raise TypeError(f"secret store component {name!r} is not a SecretStore")
            self._stores[name] = _Store(
                built.component,
                registry.outbound_policy(Kind.SECRETSTORES, name),
                registry.component_meter(Kind.SECRETSTORES, name),
            )

    def names(self) -> list[str]:
        return sorted(self._stores)

    def _resolve(self, store_name: str) -> _Store:
        if not self._stores:
            raise NotConfigured(
                "secret store is not configured", reason="ERR_SECRET_STORES_NOT_CONFIGURED"
            )
        if not store_name:
            raise InvalidArgument("field 'store_name' must not be empty")
        store = self._stores.get(store_name)
        if store is None:
            raise InvalidArgument(
                f"failed finding secret store with key {store_name}",
                reason="ERR_SECRET_STORE_NOT_FOUND",
            )
        return store

    async def get(
        self, store_name: str, key: str, metadata: Mapping[str, str] | None = None
    ) -> dict[str, str]:
        s = self._resolve(store_name)
        if not key:
            raise InvalidArgument("field 'key' must not be empty")
        if not allowed(self._scopes.get(store_name, _ALLOW_ALL), key):
            raise PermissionDenied(
                f"access denied by policy to get {key!r} from {store_name!r}",
                reason="ERR_PERMISSION_DENIED",
            )
        try:
            return await call_component(
                f"get secret {key!r} from secret store {store_name!r}",
                "the secret store",
                _NO_KEYS,
                self._call_timeout,
                lambda: s.store.get_secret(key, dict(metadata or {})),
                policy=s.policy,
                meter=s.meter,
                operation="get",
            )
        except NotFound as err:
            # Dapr and Layotto both answer a missing secret as a failed get (INTERNAL).
            raise ComponentError(
                f"failed getting secret with key {key} from secret store {store_name}: "
                f"{err.message}",
                reason="ERR_SECRET_GET",
            ) from None

    async def bulk_get(
        self, store_name: str, metadata: Mapping[str, str] | None = None
    ) -> dict[str, dict[str, str]]:
        s = self._resolve(store_name)
        found = await call_component(
            f"get the secrets of secret store {store_name!r}",
            "the secret store",
            _NO_KEYS,
            self._call_timeout,
            lambda: s.store.bulk_get_secrets(dict(metadata or {})),
            policy=s.policy,
            meter=s.meter,
            operation="bulk_get",
        )
        scope = self._scopes.get(store_name, _ALLOW_ALL)
        return {key: values for key, values in found.items() if allowed(scope, key)}
