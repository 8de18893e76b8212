"""AppDispatcher: the lifecycle the pub/sub and the input binding dispatchers share, both
delivering to the app and both gated by the runtime's one `AppHealth`.

`run`: the dispatcher's readiness indicator is INIT until the app passed its first health check
(or offers none) and `_start` asked the app what it wants and started delivering; UP after.
Shutdown: `begin_drain()` (at the start of the sidecar's grace period) stops deliveries from
starting, and the ones paused for an unhealthy app give up at once; `_drain` waits for the
in-flight ones until the grace deadline; then everything left is cancelled. Stopped before the
app came up, it stops at once. `stop()` returns when `run` has.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Mapping
from typing import Any

import anyio
from anyio.abc import TaskGroup, TaskStatus

from layotto.actors.app_health import AppHealth
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health, HealthStatus

READINESS = frozenset({Probe.READINESS})


class AppDispatcher(ABC):
    name: str
    indicator: str  # readiness: INIT until the app was asked what it wants

    def __init__(
        self, health: HealthRegistry, app_health: AppHealth, *, grace_period: float
    ) -> None:
        self._health = health
        self._app_health = app_health
        self._grace = grace_period
        self._serving = False
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._done.set()  # not running yet: nothing to wait for
        self._deadline = math.inf

    @abstractmethod
    async def _start(self, tg: TaskGroup) -> Mapping[str, Any]:
        """Ask the app what it wants and start delivering it in `tg`; the details of the UP
        indicator."""

    @abstractmethod
    async def _drain(self) -> None:
        """Return once no delivery is in flight (bounded by the caller)."""

    @abstractmethod
    def _forget(self) -> None:
        """Remove what `_start` registered (indicators); `run` has ended."""

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._serving = False
        self._health.set(
            self.indicator, Health(HealthStatus.INIT, {"reason": "waiting for the app"}), READINESS
        )
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_stop, tg.cancel_scope)
                await self._app_health.wait_settled()
                details = await self._start(tg)
                self._serving = True
                self._health.set(self.indicator, Health(HealthStatus.UP, dict(details)), READINESS)
                await self._stop.wait()
                self._app_health.release()
                with anyio.move_on_after(max(0.0, self._deadline - anyio.current_time())):
                    await self._drain()
                tg.cancel_scope.cancel()
        finally:
            self._forget()
            self._health.remove(self.indicator)
            self._done.set()

    def begin_drain(self, grace: float | None = None) -> None:
        """Start no delivery from now on; in-flight ones get until `grace` seconds from now."""
        if self._stop.is_set():
            return
        self._deadline = anyio.current_time() + (self._grace if grace is None else grace)
        self._stop.set()

    async def stop(self) -> None:
        self.begin_drain()
        with anyio.CancelScope(shield=True):
            await self._done.wait()

    async def _watch_stop(self, scope: anyio.CancelScope) -> None:
        # Stopping before the app came up, or while it is being asked: nothing to drain.
        await self._stop.wait()
        if not self._serving:
            scope.cancel()
