"""A circuit breaker with sony/gobreaker's semantics, which daprd wraps.

closed     every call passes; results are counted. After each failure the trip rule is evaluated
           over the counts and, when true, the breaker opens. With `interval` > 0 the counts are
           cleared every `interval` seconds while closed (0 = never).
open       every call is refused until `timeout` seconds have passed, then half-open.
half-open  at most `max_requests` calls pass; `max_requests` consecutive successes close the
           breaker, any failure opens it again.

Each state change starts a new generation with cleared counts; a result reported for an older
generation (a call that started before the change) is ignored, so a slow call from the closed
state cannot close a breaker that has since opened. Single-threaded (one event loop): no locks.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from enum import StrEnum

from layotto.resiliency.spec import CircuitBreakerSpec
from layotto.resiliency.trip import DEFAULT_TRIP, Trip, compile_trip

log = logging.getLogger(__name__)

_DEFAULT_TIMEOUT = 60.0


class BreakerState(StrEnum):
    CLOSED = "closed"
    HALF_OPEN = "half-open"
    OPEN = "open"


@dataclass(slots=True)
class Counts:
    """gobreaker's counters, spelled as the names users write in `trip` rules."""

    requests: int = 0
    totalSuccesses: int = 0
    totalFailures: int = 0
    consecutiveSuccesses: int = 0
    consecutiveFailures: int = 0

    def success(self) -> None:
        self.totalSuccesses += 1
        self.consecutiveSuccesses += 1
        self.consecutiveFailures = 0

    def failure(self) -> None:
        self.totalFailures += 1
        self.consecutiveFailures += 1
        self.consecutiveSuccesses = 0


class CircuitBreaker:
    """One breaker instance (one target's state). `acquire()` before a call, then exactly one of
    `record(ticket, success)` or `release(ticket)` (the call neither succeeded nor failed, e.g.
    it was cancelled) with the ticket it returned."""

    def __init__(
        self,
        name: str,
        *,
        max_requests: int = 1,
        interval: float = 0.0,
        timeout: float = _DEFAULT_TIMEOUT,
        trip: Trip | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.name = name
        # gobreaker reads zero as "use the default" for both.
        self.max_requests = max_requests or 1
        self.interval = interval
        self.timeout = timeout or _DEFAULT_TIMEOUT
        self.trip = trip or compile_trip(DEFAULT_TRIP)
        self._clock = clock
        # Told each state change (metrics); set by whoever owns the breaker.
        self.on_change: Callable[[BreakerState], None] | None = None
        self._state = BreakerState.CLOSED
        self._generation = 0
        self._counts = Counts()
        self._expiry: float | None = None
        self._new_generation(clock())

    @classmethod
    def from_spec(
        cls, name: str, spec: CircuitBreakerSpec, clock: Callable[[], float] = time.monotonic
    ) -> CircuitBreaker:
        return cls(
            name,
            max_requests=spec.max_requests,
            interval=spec.interval,
            timeout=spec.timeout,
            trip=spec.trip,
            clock=clock,
        )

    @property
    def state(self) -> BreakerState:
        self._refresh(self._clock())
        return self._state

    @property
    def counts(self) -> Counts:
        """A copy of the current generation's counts."""
        self._refresh(self._clock())
        return Counts(**asdict(self._counts))

    def acquire(self) -> int | None:
        """Admit one call: its ticket (the generation), or None when the breaker refuses it
        (open, or half-open with `max_requests` calls already in flight)."""
        self._refresh(self._clock())
        if self._state is BreakerState.OPEN:
            return None
        if self._state is BreakerState.HALF_OPEN and self._counts.requests >= self.max_requests:
            return None
        self._counts.requests += 1
        return self._generation

    def record(self, ticket: int, *, success: bool) -> None:
        now = self._clock()
        self._refresh(now)
        if ticket != self._generation:
            return
        if success:
            self._counts.success()
            if (
                self._state is BreakerState.HALF_OPEN
                and self._counts.consecutiveSuccesses >= self.max_requests
            ):
                self._set_state(BreakerState.CLOSED, now)
            return
        self._counts.failure()
        if self._state is BreakerState.HALF_OPEN or (
            self._state is BreakerState.CLOSED and self.trip(asdict(self._counts))
        ):
            self._set_state(BreakerState.OPEN, now)

    def release(self, ticket: int) -> None:
        """Give back an admitted call that has no result; frees its half-open slot."""
        self._refresh(self._clock())
        if ticket == self._generation and self._counts.requests > 0:
            self._counts.requests -= 1

    def describe(self) -> dict[str, object]:
        return {
            "name": self.name,
            "state": self.state.value,
            "counts": asdict(self._counts),
            "maxRequests": self.max_requests,
            "interval": self.interval,
            "timeout": self.timeout,
            "trip": self.trip.source,
        }

    def _refresh(self, now: float) -> None:
        if self._state is BreakerState.CLOSED:
            if self._expiry is not None and self._expiry <= now:
                self._new_generation(now)
        elif self._state is BreakerState.OPEN and self._expiry is not None and self._expiry <= now:
            self._set_state(BreakerState.HALF_OPEN, now)

    def _set_state(self, state: BreakerState, now: float) -> None:
        previous, self._state = self._state, state
        self._new_generation(now)
        log.info("circuit breaker %r changed state from %s to %s", self.name, previous, state)
        if self.on_change is not None:
            self.on_change(state)

    def _new_generation(self, now: float) -> None:
        self._generation += 1
        self._counts = Counts()
        if self._state is BreakerState.CLOSED:
            self._expiry = now + self.interval if self.interval > 0 else None
        elif self._state is BreakerState.OPEN:
            self._expiry = now + self.timeout
        else:
            self._expiry = None
