"""App health checks, as daprd runs them for gRPC apps (dapr-compat.md §2.7, §5): Dapr's
`AppCallbackHealthCheck/HealthCheck`, which any app may serve (UNIMPLEMENTED = not offered).

- At startup the app is probed until it answers; subscriptions start after the first success.
- Afterwards it is probed every `interval`; `threshold` failures in a row mark it unhealthy:
  the `app_health` readiness indicator goes DOWN and deliveries pause (`wait_deliverable`
  blocks). One success restores both.

Dapr's defaults are module constants (5 s, 500 ms, 3); the config has no knobs for them yet.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio

from layotto.api.app_channel import AppHealthProbe
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health, HealthStatus
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

INDICATOR = "app_health"
PROBE_INTERVAL_SECONDS = 5.0
PROBE_TIMEOUT_SECONDS = 0.5
FAILURE_THRESHOLD = 3
# Until the first success the app is starting: asking more often than every 5 s costs
# nothing and starts its subscriptions sooner.
STARTUP_PROBE_INTERVAL_SECONDS = 0.5
READINESS = frozenset({Probe.READINESS})

HealthProbe = Callable[[float], Awaitable[AppHealthProbe]]


class AppHealth:
    def __init__(
        self,
        probe: HealthProbe,
        health: HealthRegistry,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        threshold: int | None = None,
        startup_interval: float | None = None,
    ) -> None:
        """Unset timings are the module's constants, read now (tests shorten them)."""
        self._probe = probe
        self._health = health
        self._interval = PROBE_INTERVAL_SECONDS if interval is None else interval
        self._timeout = PROBE_TIMEOUT_SECONDS if timeout is None else timeout
        self._threshold = max(1, FAILURE_THRESHOLD if threshold is None else threshold)
        self._startup_interval = (
            STARTUP_PROBE_INTERVAL_SECONDS if startup_interval is None else startup_interval
        )
        self.offered = False
        self.healthy = True
        self._released = False
        self._changed = anyio.Event()

    async def wait_first_success(self) -> bool:
        """Probe until the app answers: True once healthy, False when it offers no health
        check (nothing to wait for, nothing to watch)."""
        logged = False
        while True:
            result = await self._probe(self._timeout)
            if result is AppHealthProbe.NOT_OFFERED:
                # Earlier failures were the app not answering yet, not a health check.
                self.offered = False
                self._health.remove(INDICATOR)
                return False
            self.offered = True
            if result is AppHealthProbe.HEALTHY:
                self._set(healthy=True)
                return True
            if not logged:
                log.info("waiting for the app's first successful health check")
                logged = True
                self._health.set(
                    INDICATOR,
                    Health(HealthStatus.INIT, {"reason": "waiting for the app's health check"}),
                    READINESS,
                )
            await anyio.sleep(self._startup_interval)

    async def watch(self) -> None:
        """Probe every interval until cancelled."""
        failures = 0
        while True:
            await anyio.sleep(self._interval)
            # An app that stopped offering the check (restarted as another version) gives
            # no evidence of being unhealthy.
            if await self._probe(self._timeout) is not AppHealthProbe.UNHEALTHY:
                failures = 0
                if not self.healthy:
                    log.info("the app is healthy again: deliveries resume")
                    self._set(healthy=True)
                continue
            failures += 1
            if failures >= self._threshold and self.healthy:
                log.warning("the app failed %d health checks in a row: deliveries pause", failures)
                self._set(healthy=False, failures=failures)

    async def wait_deliverable(self) -> None:
        """Return once the app is healthy; after `release()`, raise AppUnavailable instead of
        waiting (the delivery stays un-acked)."""
        while not self.healthy:
            if self._released:
                raise AppUnavailable("the app is unhealthy")
            await self._changed.wait()

    def release(self) -> None:
        """Stop holding deliveries back (shutdown): waiting ones give up."""
        self._released = True
        self._notify()

    def remove(self) -> None:
        self._health.remove(INDICATOR)

    def _set(self, *, healthy: bool, failures: int = 0) -> None:
        self.healthy = healthy
        if healthy:
            self._health.set(INDICATOR, Health.up(), READINESS)
        else:
            self._health.set(
                INDICATOR,
                Health.down(f"{failures} health checks failed in a row"),
                READINESS,
            )
        self._notify()

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()
