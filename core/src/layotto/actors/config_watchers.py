"""ConfigWatchers: the configuration subscriptions of the sidecar, by id, and the watchers that
feed them, one per (store, app id).

A watcher is started in the pool's task group on the first subscription of its (store, app id)
and stopped when its last subscriber leaves; closing the pool (`running()` exits) stops them all
and ends the subscriptions still open with `ShuttingDown`. The runtime owns the pool; the
configuration service subscribes through it (`SubscriptionHub`).
"""

from __future__ import annotations

import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from layotto.actors.config_fanout import Subscriber
from layotto.actors.config_watcher import ConfigWatcher, WatchSettings
from layotto.errors import ShuttingDown
from layotto.health import HealthRegistry
from layotto.plugin import ConfigStore
from layotto.services.config_subscription import Subscription, SubscriptionScope

log = logging.getLogger(__name__)


class ConfigWatchers:
    def __init__(self, health: HealthRegistry, settings: WatchSettings | None = None) -> None:
        self._health = health
        self._settings = settings or WatchSettings()
        self._watchers: dict[tuple[str, str], ConfigWatcher] = {}
        self._entries: dict[str, tuple[ConfigWatcher, Subscriber]] = {}
        self._task_group: TaskGroup | None = None

    @asynccontextmanager
    async def running(self) -> AsyncIterator[ConfigWatchers]:
        """Own the watchers' task group; on exit every watcher stops (backend watches closed,
        shielded and bounded) and open subscriptions end."""
        async with anyio.create_task_group() as tg:
            self._task_group = tg
            try:
                yield self
            finally:
                self._task_group = None
                tg.cancel_scope.cancel()

    # -- SubscriptionHub -------------------------------------------------------------------

    async def subscribe(
        self, store: ConfigStore, scope: SubscriptionScope, *, initial: bool = False
    ) -> Subscription:
        if self._task_group is None:
            raise ShuttingDown("configuration subscriptions are closed: the sidecar is stopping")
        key = (scope.store_name, scope.app_id)
        watcher = self._watchers.get(key)
        new = watcher is None
        if watcher is None:
            watcher = ConfigWatcher(
                scope.store_name, store, scope.app_id, self._health, self._settings
            )
            # Registered before it starts, so a concurrent first subscriber shares it.
            self._watchers[key] = watcher
        subscription_id = uuid.uuid4().hex
        subscriber = Subscriber(
            subscription_id,
            scope,
            buffer_size=self._settings.buffer_size,
            slow_timeout=self._settings.slow_timeout,
            release=lambda: self._release(subscription_id),
        )
        # Counted before any await: the watcher stops only when no entry refers to it.
        self._entries[subscription_id] = (watcher, subscriber)
        try:
            if new:
                await self._task_group.start(self._run, watcher)
            await watcher.add(subscriber, initial=initial)
        except BaseException:
            self._release(subscription_id)
            raise
        return subscriber.subscription

    async def _run(self, watcher: ConfigWatcher, *, task_status: TaskStatus[None]) -> None:
        """A watcher that fails (a bug, not a backend error: those it retries) ends its own
        subscriptions and is forgotten; it never takes the pool, or the sidecar, down."""
        try:
            await watcher.run(task_status=task_status)
        except Exception:
            log.exception("configuration watcher %s failed", watcher.name)
        finally:
            key = (watcher.store_name, watcher.app_id)
            if self._watchers.get(key) is watcher:
                del self._watchers[key]

    def unsubscribe(self, subscription_id: str) -> bool:
        """Close the subscription with that id (its iteration ends); False when unknown."""
        entry = self._entries.get(subscription_id)
        if entry is None:
            return False
        entry[1].subscription.close()
        return True

    # -- watchers --------------------------------------------------------------------------

    def _release(self, subscription_id: str) -> None:
        entry = self._entries.pop(subscription_id, None)
        if entry is None:
            return
        watcher, subscriber = entry
        watcher.remove(subscriber)
        if not any(w is watcher for w, _ in self._entries.values()):
            key = (watcher.store_name, watcher.app_id)
            if self._watchers.get(key) is watcher:
                del self._watchers[key]
            watcher.stop()

    # -- introspection ---------------------------------------------------------------------

    def watcher(self, store_name: str, app_id: str) -> ConfigWatcher | None:
        return self._watchers.get((store_name, app_id))

    def info(self) -> list[dict[str, Any]]:
        """The subscriptions, one entry per distinct scope with its number of subscribers."""
        counts: Counter[SubscriptionScope] = Counter(
            subscriber.scope for _, subscriber in self._entries.values() if not subscriber.ended
        )
        return [
            {**scope.describe(), "subscribers": count}
            for scope, count in sorted(counts.items(), key=lambda kv: _order(kv[0]))
        ]


def _order(scope: SubscriptionScope) -> tuple[str, str, str, str, tuple[str, ...]]:
    return (scope.store_name, scope.app_id, scope.group, scope.label, scope.keys)
