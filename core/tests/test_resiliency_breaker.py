"""The circuit breaker (gobreaker semantics) on a fake clock, and the `trip` rule language."""

from __future__ import annotations

import pytest
from layotto.resiliency import (
    BreakerState,
    CircuitBreaker,
    TripSyntaxError,
    compile_trip,
    parse_resiliency_spec,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def _breaker(clock: FakeClock, **raw: object) -> CircuitBreaker:
    spec = parse_resiliency_spec({"policies": {"circuitBreakers": {"cb": raw}}}, "res.yaml")
    return CircuitBreaker.from_spec("cb", spec.policies.circuit_breakers["cb"], clock=clock)


def _state(breaker: CircuitBreaker) -> BreakerState:
    # A call, so the type checker does not narrow the state across transitions.
    return breaker.state


def _fail(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.acquire()
        assert ticket is not None
        breaker.record(ticket, success=False)


def _succeed(breaker: CircuitBreaker, times: int = 1) -> None:
    for _ in range(times):
        ticket = breaker.acquire()
        assert ticket is not None
        breaker.record(ticket, success=True)


# -- transitions ---------------------------------------------------------------------------


def test_default_trip_opens_after_six_consecutive_failures() -> None:
    breaker = _breaker(FakeClock())
    _fail(breaker, 5)
    assert _state(breaker) is BreakerState.CLOSED
    _fail(breaker)
    assert _state(breaker) is BreakerState.OPEN


def test_a_success_resets_the_consecutive_failures() -> None:
    breaker = _breaker(FakeClock(), trip="consecutiveFailures >= 3")
    _fail(breaker, 2)
    _succeed(breaker)
    _fail(breaker, 2)
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.counts.totalFailures == 4
    _fail(breaker)
    assert _state(breaker) is BreakerState.OPEN


def test_open_refuses_until_the_timeout_then_half_opens() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="consecutiveFailures >= 1", timeout="30s")
    _fail(breaker)
    assert breaker.acquire() is None
    clock.advance(29.9)
    assert breaker.acquire() is None
    clock.advance(0.1)
    assert _state(breaker) is BreakerState.HALF_OPEN
    assert breaker.acquire() is not None


def test_half_open_admits_at_most_max_requests_and_closes_after_that_many_successes() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="consecutiveFailures >= 1", timeout="1s", maxRequests=2)
    _fail(breaker)
    clock.advance(1)
    first, second = breaker.acquire(), breaker.acquire()
    assert first is not None
    assert second is not None
    assert breaker.acquire() is None  # a third concurrent probe is refused
    breaker.record(first, success=True)
    assert _state(breaker) is BreakerState.HALF_OPEN
    breaker.record(second, success=True)
    assert _state(breaker) is BreakerState.CLOSED
    assert breaker.counts.requests == 0  # a new generation starts clean


def test_a_failure_in_half_open_reopens() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="consecutiveFailures >= 1", timeout="1s", maxRequests=3)
    _fail(breaker)
    clock.advance(1)
    _succeed(breaker, 2)
    _fail(breaker)
    assert _state(breaker) is BreakerState.OPEN
    clock.advance(0.5)
    assert breaker.acquire() is None


def test_interval_clears_the_counts_while_closed() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="totalFailures >= 3", interval="10s")
    _fail(breaker, 2)
    clock.advance(10)
    assert breaker.counts.totalFailures == 0
    _fail(breaker, 2)
    assert _state(breaker) is BreakerState.CLOSED
    _fail(breaker)
    assert _state(breaker) is BreakerState.OPEN


def test_zero_interval_never_clears_the_counts() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="totalFailures >= 3")
    _fail(breaker, 2)
    clock.advance(10**6)
    _fail(breaker)
    assert _state(breaker) is BreakerState.OPEN


def test_a_result_from_before_a_state_change_is_ignored() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="consecutiveFailures >= 1", timeout="1s")
    slow = breaker.acquire()
    assert slow is not None
    _fail(breaker)
    clock.advance(1)
    breaker.record(slow, success=True)  # started while closed; must not close the half-open one
    assert _state(breaker) is BreakerState.HALF_OPEN


def test_releasing_a_cancelled_call_frees_its_half_open_slot() -> None:
    clock = FakeClock()
    breaker = _breaker(clock, trip="consecutiveFailures >= 1", timeout="1s")
    _fail(breaker)
    clock.advance(1)
    ticket = breaker.acquire()
    assert ticket is not None
    assert breaker.acquire() is None
    breaker.release(ticket)
    assert breaker.acquire() is not None


def test_zero_max_requests_and_timeout_mean_the_defaults() -> None:
    breaker = _breaker(FakeClock(), maxRequests=0, timeout="0s")
    assert (breaker.max_requests, breaker.timeout) == (1, 60.0)


def test_describe_shows_state_and_counts() -> None:
    breaker = _breaker(FakeClock(), trip="consecutiveFailures > 8")
    _fail(breaker)
    described = breaker.describe()
    assert described["state"] == "closed"
    assert described["trip"] == "consecutiveFailures > 8"
    assert described["counts"] == {
        "requests": 1,
        "totalSuccesses": 0,
        "totalFailures": 1,
        "consecutiveSuccesses": 0,
        "consecutiveFailures": 1,
    }


# -- trip rules ----------------------------------------------------------------------------

COUNTS = {
    "requests": 10,
    "totalSuccesses": 4,
    "totalFailures": 6,
    "consecutiveSuccesses": 0,
    "consecutiveFailures": 3,
}


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ("consecutiveFailures > 2", True),
        ("consecutiveFailures > 3", False),
        ("consecutiveFailures >= 3", True),
        ("consecutiveFailures < 3", False),
        ("consecutiveFailures <= 3", True),
        ("consecutiveFailures == 3", True),
        ("consecutiveFailures != 3", False),
        ("3 == consecutiveFailures", True),
        ("totalFailures > totalSuccesses", True),
        ("requests >= 10 && totalFailures >= 5", True),
        ("requests >= 20 && totalFailures >= 5", False),
        ("requests >= 20 || totalFailures >= 5", True),
        ("!(requests >= 20)", True),
        ("!!(requests >= 20)", False),
        ("(requests > 5 || consecutiveSuccesses > 0) && consecutiveFailures > 1", True),
        ("false || true", True),
        ("  consecutiveFailures>2  ", True),
    ],
)
def test_trip_rules_evaluate_like_cel(rule: str, expected: bool) -> None:
    assert compile_trip(rule)(COUNTS) is expected


@pytest.mark.parametrize(
    "rule",
    [
        "",
        "consecutiveFailures",
        "failures > 5",
        "consecutiveFailures > 5.5",
        "consecutiveFailures * 2 > 5",
        "consecutiveFailures > 5 &&",
        "(consecutiveFailures > 5",
        "consecutiveFailures > 5)",
        "size(x) > 1",
        "'a' == 'a'",
        "consecutiveFailures > -1",
        "(" * 40 + "true" + ")" * 40,
    ],
)
def test_unsupported_trip_rules_are_refused_at_compile_time(rule: str) -> None:
    with pytest.raises(TripSyntaxError):
        compile_trip(rule)
