"""The Lock building block: validation, key prefixes, error translation.

One service per API surface, differing only in the key scheme (`lock|||<appid>||<id>` for
Layotto, `lock||<appid>||<id>` for Dapr, as each upstream writes them) and in the field name
the expiry is reported under.

Unlock and keep-alive answer a status. When the component fails, the call raises the
translated LayottoError instead: gRPC carries either a response or an error status, so the
`INTERNAL_ERROR` that upstream puts beside the error (layotto-semantics.md 7) is implied by it.
"""

from __future__ import annotations

from dataclasses import dataclass

from layotto.components import ComponentRegistry
from layotto.errors import ComponentError, InvalidArgument, NotConfigured
from layotto.meter import ComponentMeter
from layotto.plugin import Kind, LockStatus, LockStore
from layotto.resiliency import Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.keys import BlockKeys, KeyScheme

BLOCK = "lock"
# The request field that carries the lease, as each API names it (for error messages).
_EXPIRE_FIELD: dict[KeyScheme, str] = {"layotto": "expire", "dapr": "expiry_in_seconds"}


@dataclass(frozen=True, slots=True)
class _Store:
    name: str
    store: LockStore
    keys: BlockKeys
    policy: Policy  # the store's outbound resiliency policy
    meter: ComponentMeter | None = None  # its call metrics


class LockService:
    def __init__(
        self,
        registry: ComponentRegistry,
        app_id: str,
        *,
        default_key_prefix: str = "appid",
        key_scheme: KeyScheme = "layotto",
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._call_timeout = call_timeout
        self._expire_field = _EXPIRE_FIELD[key_scheme]
        self._stores: dict[str, _Store] = {}
        for name, built in registry.of_kind(Kind.LOCK).items():
            if not isinstance(built.component, LockStore):
                raise TypeError(f"lock component {name!r} is not a LockStore")
            keys = BlockKeys.resolve(
                BLOCK,
                built.config.key_prefix,
                default=default_key_prefix,
                app_id=app_id,
                store_name=name,
                scheme=key_scheme,
            )
            self._stores[name] = _Store(
                name,
                built.component,
                keys,
                registry.outbound_policy(Kind.LOCK, name),
                registry.component_meter(Kind.LOCK, name),
            )

    def _resolve(
        self, store_name: str, resource_id: str, owner: str, expire: int | None = None
    ) -> tuple[_Store, str]:
        """The store and the stored key. The order of the checks is upstream's: configured at
        all, then the fields, then the store."""
        if not self._stores:
            raise NotConfigured("lock store is not configured", reason="ERR_LOCK_NOT_CONFIGURED")
        if not resource_id:
            raise InvalidArgument("field 'resource_id' must not be empty")
        if not owner:
            raise InvalidArgument("field 'lock_owner' must not be empty")
        if expire is not None and expire <= 0:
            raise InvalidArgument(
                f"field {self._expire_field!r} must be a positive number of seconds: {expire}"
            )
        found = self._stores.get(store_name)
        if found is None:
            raise InvalidArgument(
                f"lock store {store_name!r} is not found", reason="ERR_LOCK_STORE_NOT_FOUND"
            )
        return found, found.keys.apply(resource_id, field="resource_id")

    async def try_lock(self, store_name: str, resource_id: str, owner: str, expire: int) -> bool:
        s, key = self._resolve(store_name, resource_id, owner, expire)
        return await call_component(
            f"try lock {resource_id!r} in lock store {store_name!r}",
            "the lock store",
            s.keys,
            self._call_timeout,
            lambda: s.store.try_lock(key, owner, expire),
            policy=s.policy,
            meter=s.meter,
            operation="try_lock",
        )

    async def unlock(self, store_name: str, resource_id: str, owner: str) -> LockStatus:
        s, key = self._resolve(store_name, resource_id, owner)
        what = f"unlock {resource_id!r} in lock store {store_name!r}"
        status = await call_component(
            what,
            "the lock store",
            s.keys,
            self._call_timeout,
            lambda: s.store.unlock(key, owner),
            policy=s.policy,
            meter=s.meter,
            operation="unlock",
        )
        return self._checked(what, status)

    async def keep_alive(
        self, store_name: str, resource_id: str, owner: str, expire: int
    ) -> LockStatus:
        s, key = self._resolve(store_name, resource_id, owner, expire)
        what = f"keep lock {resource_id!r} alive in lock store {store_name!r}"
        status = await call_component(
            what,
            "the lock store",
            s.keys,
            self._call_timeout,
            lambda: s.store.keep_alive(key, owner, expire),
            policy=s.policy,
            meter=s.meter,
            operation="keep_alive",
        )
        return self._checked(what, status)

    @staticmethod
    def _checked(what: str, status: LockStatus) -> LockStatus:
        # INTERNAL_ERROR always travels with an error (see the module docstring).
        if status is LockStatus.INTERNAL_ERROR:
            raise ComponentError(f"{what}: the lock store reported an internal error")
        return status


__all__ = ["LockService", "LockStatus"]
