"""Starts actors, restarts crashed ones with capped jittered backoff, gives up when they crash
too often (FATAL: the runtime exits non-zero)."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence

import anyio
from anyio.abc import TaskStatus

from layotto.actors.base import Actor
from layotto.backoff import backoff_delay
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health, HealthStatus

log = logging.getLogger(__name__)

__all__ = ["FatalError", "Supervisor", "backoff_delay", "first_leaf"]


def first_leaf(err: BaseException) -> BaseException:
    """The first real exception inside (nested) exception groups."""
    while isinstance(err, BaseExceptionGroup) and err.exceptions:
        err = err.exceptions[0]
    return err


class FatalError(Exception):
    """An actor crashed too often; the sidecar cannot serve."""


class Supervisor:
    def __init__(
        self,
        health: HealthRegistry,
        *,
        max_crashes: int = 5,
        crash_window: float = 30.0,
        backoff_base: float = 0.1,
        backoff_cap: float = 5.0,
    ) -> None:
        self._health = health
        self._max_crashes = max_crashes
        self._crash_window = crash_window
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._actors: list[Actor] = []
        self._stopping = False

    async def run(self, actors: Sequence[Actor], *, task_status: TaskStatus[None]) -> None:
        """Start every actor in order (each must report started); then keep them running."""
        self._actors = list(actors)
        async with anyio.create_task_group() as tg:
            for actor in self._actors:
                self._health.set(f"actor:{actor.name}", Health(HealthStatus.INIT), frozenset(Probe))
                await tg.start(self._supervise, actor)
            task_status.started()

    async def _supervise(self, actor: Actor, *, task_status: TaskStatus[None]) -> None:
        indicator = f"actor:{actor.name}"
        crashes: deque[float] = deque()
        started_once = False
        while True:
            try:
                async with anyio.create_task_group() as tg:
                    await tg.start(actor.run)
                    self._health.update(indicator, Health.up())
                    if not started_once:
                        started_once = True
                        task_status.started()
                if self._stopping:
                    return
                raise RuntimeError("run() returned without stop()")
            except Exception as err:
                # Before the first start it is a startup failure; while stopping it is noise.
                if not started_once or self._stopping:
                    raise
                cause = first_leaf(err)
                now = time.monotonic()
                crashes.append(now)
                while crashes and now - crashes[0] > self._crash_window:
                    crashes.popleft()
                self._health.update(indicator, Health.down(f"crashed: {cause!r}"))
                if len(crashes) >= self._max_crashes:
                    log.critical(
                        "actor %s crashed %d times in %.0f s: giving up",
                        actor.name,
                        len(crashes),
                        self._crash_window,
                    )
                    raise FatalError(f"actor {actor.name} keeps crashing: {cause!r}") from cause
                delay = backoff_delay(
                    len(crashes) - 1, base=self._backoff_base, cap=self._backoff_cap
                )
                log.error(
                    "actor %s crashed; restarting in %.2f s", actor.name, delay, exc_info=cause
                )
                await anyio.sleep(delay)

    async def stop(self) -> None:
        """Stop actors in reverse start order, each shielded."""
        self._stopping = True
        with anyio.CancelScope(shield=True):
            for actor in reversed(self._actors):
                try:
                    await actor.stop()
                except Exception:
                    log.exception("stopping actor %s failed", actor.name)
                self._health.update(f"actor:{actor.name}", Health.down("stopped"))
