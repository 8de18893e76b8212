"""Health indicators and their aggregation (INIT/UP/DOWN), as the actuator reports them."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from enum import Enum
from typing import Any

from layotto.plugin import Health, HealthStatus


class Probe(Enum):
    LIVENESS = "liveness"
    READINESS = "readiness"


def aggregate(statuses: Iterable[HealthStatus]) -> HealthStatus:
    """Any DOWN -> DOWN; else any INIT -> INIT; else UP (an empty set is UP)."""
    seen = set(statuses)
    if HealthStatus.DOWN in seen:
        return HealthStatus.DOWN
    if HealthStatus.INIT in seen:
        return HealthStatus.INIT
    return HealthStatus.UP


@dataclass(slots=True)
class _Indicator:
    health: Health
    probes: frozenset[Probe]


STARTUP = "runtime_startup"
BOTH = frozenset(Probe)


class HealthRegistry:
    """The current health of every part. Writers are the runtime, the supervisor and the
    aggregator; readers are the HTTP edge. Plain attribute updates: one event loop."""

    def __init__(self) -> None:
        self._indicators: dict[str, _Indicator] = {}
        self._listeners: list[Callable[[HealthStatus], None]] = []
        self._readiness = HealthStatus.INIT
        self.set(STARTUP, Health(HealthStatus.INIT, {"reason": "starting"}), BOTH)

    def on_readiness_change(self, listener: Callable[[HealthStatus], None]) -> None:
        self._listeners.append(listener)
        listener(self._readiness)

    def set(self, name: str, health: Health, probes: frozenset[Probe] = BOTH) -> None:
        self._indicators[name] = _Indicator(health, probes)
        self._notify()

    def update(self, name: str, health: Health) -> None:
        """Change the health of a known indicator, keeping which probes it counts for."""
        self._indicators[name].health = health
        self._notify()

    def remove(self, name: str) -> None:
        """Forget an indicator (a part that is gone for good, such as a stopped watcher)."""
        if self._indicators.pop(name, None) is not None:
            self._notify()

    def _notify(self) -> None:
        readiness = self.status(Probe.READINESS)
        if readiness is not self._readiness:
            self._readiness = readiness
            for listener in self._listeners:
                listener(readiness)

    def get(self, name: str) -> Health | None:
        indicator = self._indicators.get(name)
        return None if indicator is None else indicator.health

    def status(self, probe: Probe) -> HealthStatus:
        return aggregate(i.health.status for i in self._indicators.values() if probe in i.probes)

    def report(self, probe: Probe) -> dict[str, Any]:
        """The actuator JSON: {"status": ..., "components": {name: {"status", "details"?}}}."""
        components: dict[str, Any] = {}
        for name, indicator in self._indicators.items():
            if probe not in indicator.probes:
                continue
            entry: dict[str, Any] = {"status": indicator.health.status.value}
            if indicator.health.details:
                entry["details"] = dict(indicator.health.details)
            components[name] = entry
        return {"status": self.status(probe).value, "components": components}
