"""HealthAggregator: polls every component's health check and keeps readiness current."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
from anyio.abc import TaskStatus

from layotto.components import ComponentRegistry
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health

log = logging.getLogger(__name__)

CHECK_TIMEOUT_SECONDS = 1.0


def component_indicator(name: str) -> str:
    return f"component:{name}"


class HealthAggregator:
    name = "health_aggregator"

    def __init__(
        self,
        health: HealthRegistry,
        components: ComponentRegistry,
        *,
        interval: float = 1.0,
    ) -> None:
        self._health = health
        self._components = components
        self._interval = interval
        self._stop = anyio.Event()

    async def check_once(self) -> None:
        async def check(name: str, item_check: Callable[[], Awaitable[Health]]) -> None:
            health = Health.down("health check timed out")
            with anyio.move_on_after(CHECK_TIMEOUT_SECONDS):
                try:
                    health = await item_check()
                except Exception as err:
                    health = Health.down(f"health check failed: {type(err).__name__}")
            previous = self._health.get(component_indicator(name))
            if previous is None or previous.status is not health.status:
                log.info(
                    "component %s is %s",
                    name,
                    health.status.value,
                    extra={"component": name, "details": health.details},
                )
            self._health.set(component_indicator(name), health, frozenset({Probe.READINESS}))

        async with anyio.create_task_group() as tg:
            for item in self._components:
                tg.start_soon(check, item.config.name, item.component.check_health)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        await self.check_once()
        task_status.started()
        while not self._stop.is_set():
            with anyio.move_on_after(self._interval):
                await self._stop.wait()
            if not self._stop.is_set():
                await self.check_once()

    async def stop(self) -> None:
        self._stop.set()
