"""ConfigWatcher: one backend watch of one configuration store for one app id, fanned out to
every subscriber of that (store, app id).

- The backend watch (`ConfigStore.watch`) runs in a loop: when it fails or ends it is called
  again after a capped, jittered backoff. Readiness carries an indicator per watcher, DOWN
  while the watch is disconnected (and UP once it is established).
- After every (re)connect, and for every new subscription, the watcher reads the current items
  of the subscribed scopes and diffs them against what it last saw (`ChangeTracker`): only real
  changes are pushed, so a change is neither missed across a reconnect nor repeated.
- Fan-out never waits for a subscriber (`Subscriber.offer`): a subscriber that stops reading is
  dropped after `slow_timeout` without slowing the others.

Every component call is bounded: reads by `call_timeout`, establishing the watch by
`connect_timeout`, closing it by `close_timeout` (shielded). Waiting for the next change is not
bounded: that is what a watch is for.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Callable, Coroutine
from dataclasses import dataclass
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from layotto.actors.config_changes import ChangeTracker, Read
from layotto.actors.config_fanout import Subscriber
from layotto.backoff import backoff_delay
from layotto.errors import ComponentError, LayottoError, ShuttingDown
from layotto.health import HealthRegistry, Probe
from layotto.plugin import ConfigItem, ConfigQuery, ConfigStore, Health, HealthStatus
from layotto.services.calls import call_component
from layotto.services.keys import KeyPrefix

log = logging.getLogger(__name__)

_NO_KEYS = KeyPrefix("")  # configuration keys are not prefixed: error messages stay as they are


@dataclass(frozen=True, slots=True)
class WatchSettings:
    buffer_size: int = 256  # change batches buffered per subscriber
    slow_timeout: float = 2.0  # a subscriber with a full buffer is dropped after this
    call_timeout: float = 10.0  # each read of the store
    connect_timeout: float = 10.0  # until the watch is established (its first batch)
    close_timeout: float = 2.0  # closing the backend watch
    backoff_base: float = 0.1
    backoff_cap: float = 5.0


def watch_indicator(store_name: str, app_id: str) -> str:
    return f"config_watch:{store_name}:{app_id}"


class ConfigWatcher:
    def __init__(
        self,
        store_name: str,
        store: ConfigStore,
        app_id: str,
        health: HealthRegistry,
        settings: WatchSettings,
    ) -> None:
        self.store_name = store_name
        self.store = store
        self.app_id = app_id
        self.name = watch_indicator(store_name, app_id)
        self._health = health
        self._settings = settings
        self._tracker = ChangeTracker()
        self._subscribers: dict[str, Subscriber] = {}
        self._lock = anyio.Lock()
        self._started = anyio.Event()
        self._stop = anyio.Event()
        self._task_group: TaskGroup | None = None
        self._attempt = 0
        self.connected = False
        self.reconnects = 0

    # -- lifecycle -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Watch until `stop()` (or cancellation); subscribers left at the end are ended with
        `ShuttingDown`, or with `ComponentError` when the watcher itself failed."""
        error: LayottoError = ShuttingDown("the configuration watcher stopped; subscribe again")
        try:
            async with anyio.create_task_group() as tg:
                self._task_group = tg
                tg.start_soon(self._watch_loop)
                self._started.set()
                task_status.started()
                await self._stop.wait()
                tg.cancel_scope.cancel()
        except Exception:
            error = ComponentError(
                f"the configuration watcher of store {self.store_name!r} failed; subscribe again"
            )
            raise
        finally:
            self._task_group = None
            self._stop.set()
            self.connected = False
            for subscriber in list(self._subscribers.values()):
                subscriber.end(error)
            self._health.remove(self.name)

    def stop(self) -> None:
        self._stop.set()
        self._started.set()  # wakes an `add` waiting for a start that may never come

    def _spawn(self, task: Callable[[], Coroutine[Any, Any, None]]) -> None:
        if self._task_group is not None:
            self._task_group.start_soon(task)

    # -- subscribers -----------------------------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        return len(self._subscribers)

    def subscribers(self) -> list[Subscriber]:
        return list(self._subscribers.values())

    async def add(self, subscriber: Subscriber, *, initial: bool = False) -> None:
        """Start delivering to `subscriber` from the current state of its scope on (with the
        current items first when `initial`). Raises what the store's read raises."""
        await self._started.wait()
        if self._stop.is_set() or self._task_group is None:
            raise ShuttingDown("the configuration watcher is stopping; subscribe again")
        scope = subscriber.scope
        async with self._lock:
            self._tracker.track(scope)
            try:
                read = ChangeTracker.read_for(scope)
                fresh = await self._read(read)
                if self._stop.is_set():  # stopped during the read: nobody would deliver
                    raise ShuttingDown("the configuration watcher stopped; subscribe again")
            except BaseException:
                self._tracker.untrack(scope)
                raise
            # Whatever the read shows that the others have not seen yet goes to them first.
            self._fan_out(self._tracker.resync(read, fresh))
            self._subscribers[subscriber.id] = subscriber
            if initial:
                current = [item for item in fresh if scope.matches(item)]
                if current:
                    subscriber.offer(current, self._spawn)

    def remove(self, subscriber: Subscriber) -> None:
        """Stop delivering to `subscriber` and end its stream; idempotent."""
        if self._subscribers.pop(subscriber.id, None) is not None:
            self._tracker.untrack(subscriber.scope)
        subscriber.end()

    def _fan_out(self, changes: list[ConfigItem]) -> None:
        if not changes:
            return
        for subscriber in list(self._subscribers.values()):
            batch = [item for item in changes if subscriber.scope.matches(item)]
            if batch:
                subscriber.offer(batch, self._spawn)

    # -- the backend watch -----------------------------------------------------------------

    async def _read(self, read: Read) -> list[ConfigItem]:
        query = ConfigQuery(self.app_id, read.group, read.label, read.keys)
        return await call_component(
            f"read configuration of app {self.app_id!r} from store {self.store_name!r}",
            "the configuration store",
            _NO_KEYS,
            self._settings.call_timeout,
            lambda: self.store.get(query),
        )

    async def _watch_loop(self) -> None:
        while True:
            try:
                await self._watch_once()
                reason = "the watch ended"
            except LayottoError as err:
                reason = err.message
            except TimeoutError:
                reason = (
                    f"the watch was not established within {self._settings.connect_timeout:g} s"
                )
            except Exception as err:
                # Foreign errors may carry hosts or credentials: the log has them, health not.
                log.warning("configuration watch of store %r failed", self.store_name, exc_info=err)
                reason = f"the watch failed ({type(err).__name__})"
            self._disconnected(reason)
            delay = backoff_delay(
                self._attempt, base=self._settings.backoff_base, cap=self._settings.backoff_cap
            )
            self._attempt += 1
            await anyio.sleep(delay)

    async def _watch_once(self) -> None:
        iterator = self.store.watch(self.app_id)
        try:
            with anyio.fail_after(self._settings.connect_timeout):
                first = await _next(iterator)
            if first is None:
                return
            await self._established()
            await self._apply(first)
            while (batch := await _next(iterator)) is not None:
                await self._apply(batch)
        finally:
            await self._close(iterator)

    async def _established(self) -> None:
        """Resync every tracked scope, then report the watch healthy."""
        async with self._lock:
            for read in self._tracker.reads():
                self._fan_out(self._tracker.resync(read, await self._read(read)))
        if self._attempt:
            self.reconnects += 1
            log.info("configuration watch of store %r re-established", self.store_name)
        self._attempt = 0
        self.connected = True
        self._health.set(self.name, Health.up(), frozenset({Probe.READINESS}))

    async def _apply(self, batch: list[ConfigItem]) -> None:
        if batch:
            async with self._lock:
                self._fan_out(self._tracker.observe(batch))

    def _disconnected(self, reason: str) -> None:
        log.log(
            logging.WARNING if self._attempt == 0 else logging.DEBUG,
            "configuration watch of store %r (app %r) is down: %s",
            self.store_name,
            self.app_id,
            reason,
        )
        self.connected = False
        details = {"reason": reason, "store": self.store_name, "app_id": self.app_id}
        self._health.set(
            self.name, Health(HealthStatus.DOWN, details), frozenset({Probe.READINESS})
        )

    async def _close(self, iterator: AsyncIterator[list[ConfigItem]]) -> None:
        aclose: Any = getattr(iterator, "aclose", None)
        if aclose is None:
            return
        with anyio.CancelScope(shield=True), anyio.move_on_after(self._settings.close_timeout):
            try:
                await aclose()
            except Exception:
                log.warning("closing the watch of store %r failed", self.store_name, exc_info=True)


async def _next(iterator: AsyncIterator[list[ConfigItem]]) -> list[ConfigItem] | None:
    try:
        return await iterator.__anext__()
    except StopAsyncIteration:
        return None
