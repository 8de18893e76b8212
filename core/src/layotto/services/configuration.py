"""The Configuration building block (layotto-semantics.md §3.1, §3.2; dapr-compat.md §3.4).

- Stores are looked up by name: none configured -> `NotConfigured`; an empty or unknown name ->
  `InvalidArgument` naming it.
- A blank or whitespace-only group or label becomes the store's `default_group` /
  `default_label`, for Get, Save (per item), Delete and every subscription.
- `app_id` reaches the store unchanged; `SaveConfigurationRequest.metadata` is forwarded (an
  upstream gap, §"Known Layotto gaps" 13). A read-only store answers Save and Delete with
  `Unsupported` (UNIMPLEMENTED).
- `subscribe` returns a `Subscription` (an id and an async iterator of change batches); it ends
  when closed, when `unsubscribe(id)` is called (Dapr's shape), or with an error when the
  subscriber was dropped for not reading. Only changes are delivered unless `initial` asks for
  the current items first.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Protocol, TypeVar

from layotto.components import ComponentRegistry
from layotto.errors import InvalidArgument, NotConfigured
from layotto.meter import ComponentMeter
from layotto.plugin import ConfigItem, ConfigQuery, ConfigStore, Kind
from layotto.resiliency import NO_POLICY, Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.config_subscription import Subscription, SubscriptionScope
from layotto.services.keys import KeyPrefix

T = TypeVar("T")

COMPONENT = "the configuration store"
_NO_KEYS = KeyPrefix("")  # configuration keys are not prefixed


class SubscriptionHub(Protocol):
    """Where subscriptions live (the runtime's `ConfigWatchers`)."""

    async def subscribe(
        self, store: ConfigStore, scope: SubscriptionScope, *, initial: bool = False
    ) -> Subscription: ...

    def unsubscribe(self, subscription_id: str) -> bool: ...


@dataclass(frozen=True, slots=True)
class _Store:
    name: str
    store: ConfigStore
    policy: Policy  # the store's outbound resiliency policy
    inbound: Policy  # ... and the one for pushing its updates to the app
    meter: ComponentMeter | None = None  # its call metrics

    def group(self, group: str) -> str:
        return group if group.strip() else self.store.default_group

    def label(self, label: str) -> str:
        return label if label.strip() else self.store.default_label


class ConfigurationService:
    def __init__(
        self,
        registry: ComponentRegistry,
        hub: SubscriptionHub,
        *,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._hub = hub
        self._call_timeout = call_timeout
        self._stores: dict[str, _Store] = {}
        for name, built in registry.of_kind(Kind.CONFIGURATION).items():
            if not isinstance(built.component, ConfigStore):
                raise TypeError(f"configuration component {name!r} is not a ConfigStore")
            self._stores[name] = _Store(
                name,
                built.component,
                registry.outbound_policy(Kind.CONFIGURATION, name),
                registry.inbound_policy(Kind.CONFIGURATION, name),
                registry.component_meter(Kind.CONFIGURATION, name),
            )

    def _resolve(self, store_name: str) -> _Store:
        if not self._stores:
            raise NotConfigured(
                "configuration store is not configured",
                reason="ERR_CONFIGURATION_STORE_NOT_CONFIGURED",
            )
        if not store_name:
            raise InvalidArgument("field 'store_name' must not be empty")
        found = self._stores.get(store_name)
        if found is None:
            raise InvalidArgument(
                f"configuration store {store_name!r} is not found",
                reason="ERR_CONFIGURATION_STORE_NOT_FOUND",
            )
        return found

    def inbound_policy(self, store_name: str) -> Policy:
        """The store's inbound resiliency policy: how its updates are pushed to the app."""
        found = self._stores.get(store_name)
        return found.inbound if found is not None else NO_POLICY

    async def _call(
        self, s: _Store, what: str, call: Callable[[], Awaitable[T]], operation: str
    ) -> T:
        return await call_component(
            what,
            COMPONENT,
            _NO_KEYS,
            self._call_timeout,
            call,
            policy=s.policy,
            meter=s.meter,
            operation=operation,
        )

    @staticmethod
    def _check_keys(keys: Sequence[str], field: str = "keys") -> tuple[str, ...]:
        for index, key in enumerate(keys):
            if not key:
                raise InvalidArgument(f"field '{field}[{index}]' must not be empty")
        return tuple(keys)

    @property
    def store_names(self) -> list[str]:
        return list(self._stores)

    # -- get / save / delete ---------------------------------------------------------------

    async def get(
        self,
        store_name: str,
        app_id: str,
        group: str,
        label: str,
        keys: Sequence[str] = (),
        metadata: Mapping[str, str] | None = None,
    ) -> list[ConfigItem]:
        """The current items; `keys` empty means every key of (group, label). Keys that do
        not exist are left out."""
        s = self._resolve(store_name)
        query = ConfigQuery(
            app_id, s.group(group), s.label(label), self._check_keys(keys), dict(metadata or {})
        )
        return await self._call(
            s, f"get configuration from store {store_name!r}", lambda: s.store.get(query), "get"
        )

    async def save(
        self,
        store_name: str,
        app_id: str,
        items: Sequence[ConfigItem],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        s = self._resolve(store_name)
        for index, item in enumerate(items):
            if not item.key:
                raise InvalidArgument(f"field 'items[{index}].key' must not be empty")
        if not items:
            return
        defaulted = [replace(i, group=s.group(i.group), label=s.label(i.label)) for i in items]
        forwarded = dict(metadata or {})
        await self._call(
            s,
            f"save configuration to store {store_name!r}",
            lambda: s.store.set(app_id, defaulted, forwarded),
            "set",
        )

    async def delete(
        self,
        store_name: str,
        app_id: str,
        group: str,
        label: str,
        keys: Sequence[str],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        """Delete `keys` (at least one; deleting a missing key succeeds)."""
        s = self._resolve(store_name)
        if not keys:
            raise InvalidArgument("field 'keys' must not be empty")
        query = ConfigQuery(
            app_id, s.group(group), s.label(label), self._check_keys(keys), dict(metadata or {})
        )
        await self._call(
            s,
            f"delete configuration from store {store_name!r}",
            lambda: s.store.delete(query),
            "delete",
        )

    # -- subscriptions ---------------------------------------------------------------------

    async def subscribe(
        self,
        store_name: str,
        app_id: str,
        group: str,
        label: str,
        keys: Sequence[str] = (),
        *,
        initial: bool = False,
    ) -> Subscription:
        """Changes to `keys` of (group, label) (every key when empty) from now on; with
        `initial`, the current items come first as one batch (when there are any)."""
        s = self._resolve(store_name)
        scope = SubscriptionScope.of(
            store_name, app_id, s.group(group), s.label(label), list(self._check_keys(keys))
        )
        return await self._hub.subscribe(s.store, scope, initial=initial)

    def unsubscribe(self, subscription_id: str) -> bool:
        """Dapr's UnsubscribeConfiguration: end the subscription with that id. False when no
        such subscription is open."""
        return self._hub.unsubscribe(subscription_id)


__all__ = ["ConfigurationService", "Subscription", "SubscriptionHub", "SubscriptionScope"]
