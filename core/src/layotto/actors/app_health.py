"""AppHealth: the app health checks, as daprd runs them (dapr-compat.md §2.7, §5), one per
runtime and shared by everything that calls the app. The check is Dapr's
`AppCallbackHealthCheck/HealthCheck`, which any gRPC app may serve (UNIMPLEMENTED = not
offered: nothing is gated), or `GET /healthz` for an HTTP app (404 = not offered).

- At startup the app is probed, once it listens, until it answers; `wait_settled()` returns
  after the first success (or once the app turns out to offer no check): subscriptions and
  input bindings start then.
- Afterwards it is probed every `interval`; `threshold` failures in a row mark it unhealthy:
  the `app_health` readiness indicator goes DOWN, deliveries of events and input binding
  events pause (`wait_deliverable` blocks) and invocations of the app are refused at once
  (`refuses_calls`). One success restores all three.

Dapr's defaults are module constants (5 s, 500 ms, 3); the config has no knobs for them yet.
"""

from __future__ import annotations

import logging
from typing import Any, Protocol

import anyio
from anyio.abc import TaskStatus

from layotto.api.app_connection import AppHealthProbe
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


class ProbedApp(Protocol):
    """The app as the prober sees it (`AppConnection` is one)."""

    async def wait_until_listening(self) -> None: ...

    async def check_health(self, within: float) -> AppHealthProbe: ...


class AppHealth:
    name = "app_health"

    def __init__(
        self,
        app: ProbedApp,
        health: HealthRegistry,
        *,
        interval: float | None = None,
        timeout: float | None = None,
        threshold: int | None = None,
        startup_interval: float | None = None,
        check_path: str = "",
    ) -> None:
        """Unset timings are the module's constants, read now (tests shorten them).
        `check_path`: the HTTP app's health route, shown in the metadata."""
        self._app = app
        self._check_path = check_path
        self._health = health
        self._interval = PROBE_INTERVAL_SECONDS if interval is None else interval
        self._timeout = PROBE_TIMEOUT_SECONDS if timeout is None else timeout
        self._threshold = max(1, FAILURE_THRESHOLD if threshold is None else threshold)
        self._startup_interval = (
            STARTUP_PROBE_INTERVAL_SECONDS if startup_interval is None else startup_interval
        )
        self.offered = False  # the app answered a check (not UNIMPLEMENTED)
        self.healthy = True
        self._settled = anyio.Event()
        self._released = False
        self._changed = anyio.Event()
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._done.set()  # not running yet: nothing to wait for

    # -- the actor -------------------------------------------------------------------------

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Probe until `stop()`. Starts at once: the app may come up long after the sidecar."""
        self._stop = anyio.Event()
        self._done = anyio.Event()
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._probe)
                await self._stop.wait()
                tg.cancel_scope.cancel()
        finally:
            self._health.remove(INDICATOR)
            self._done.set()

    async def stop(self) -> None:
        self.release()
        self._stop.set()
        with anyio.CancelScope(shield=True):
            await self._done.wait()

    async def _probe(self) -> None:
        await self._app.wait_until_listening()
        if await self.wait_first_success():
            await self.watch()

    # -- what the callers of the app ask ---------------------------------------------------

    async def wait_settled(self) -> None:
        """Return once the app passed its first health check, or turned out to offer none."""
        await self._settled.wait()

    @property
    def refuses_calls(self) -> bool:
        """Whether a call to the app is to be refused at once: it offers health checks and is
        not healthy now (failed `threshold` checks, or has not passed its first yet)."""
        return self.offered and not self.healthy

    async def wait_deliverable(self) -> None:
        """Return once the app is healthy; after `release()`, raise AppUnavailable instead of
        waiting (the delivery stays unprocessed)."""
        while not self.healthy:
            if self._released:
                raise AppUnavailable("the app is unhealthy")
            await self._changed.wait()

    def release(self) -> None:
        """Stop holding deliveries back (shutdown): waiting ones give up."""
        self._released = True
        self._notify()

    def metadata(self) -> dict[str, Any] | None:
        """Dapr's `appConnectionProperties.health` while the app offers health checks (no
        `healthCheckPath` but for HTTP apps, as daprd)."""
        if not self.offered:
            return None
        path = {"healthCheckPath": self._check_path} if self._check_path else {}
        return {
            **path,
            "healthProbeInterval": go_duration(self._interval),
            "healthProbeTimeout": go_duration(self._timeout),
            "healthThreshold": self._threshold,
        }

    # -- probing ---------------------------------------------------------------------------

    async def wait_first_success(self) -> bool:
        """Probe until the app answers: True once healthy, False when it offers no health
        check (nothing to wait for, nothing to watch). Settled either way."""
        logged = False
        while True:
            result = await self._app.check_health(self._timeout)
            if result is AppHealthProbe.NOT_OFFERED:
                # Earlier failures were the app not answering yet, not a health check.
                self.offered = False
                self.healthy = True
                self._health.remove(INDICATOR)
                self._settled.set()
                self._notify()
                return False
            self.offered = True
            if result is AppHealthProbe.HEALTHY:
                self._set(healthy=True)
                self._settled.set()
                return True
            self.healthy = False
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
            if await self._app.check_health(self._timeout) is not AppHealthProbe.UNHEALTHY:
                failures = 0
                if not self.healthy:
                    log.info("the app is healthy again: deliveries and invocations resume")
                    self._set(healthy=True)
                continue
            failures += 1
            if failures >= self._threshold and self.healthy:
                log.warning(
                    "the app failed %d health checks in a row: deliveries pause, "
                    "invocations are refused",
                    failures,
                )
                self._set(healthy=False, failures=failures)

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


def go_duration(seconds: float) -> str:
    """`seconds` as Go's `time.Duration.String()` writes it ("5s", "500ms", "1m30s"): daprd's
    metadata shows the probe timings so. Millisecond precision."""
    millis = round(seconds * 1000)
    if millis < 1000:
        return f"{millis}ms" if millis > 0 else "0s"
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    whole, fraction = divmod(millis, 1000)
    text = f"{whole}.{fraction:03d}".rstrip("0") if fraction else str(whole)
    text += "s"
    if hours:
        return f"{hours}h{minutes}m{text}"
    if minutes:
        return f"{minutes}m{text}"
    return text
