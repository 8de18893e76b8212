"""Policy.run / Policy.attempt: retries, per-attempt timeouts, the breaker, caller errors and
cancellation, on asyncio and trio."""

from __future__ import annotations

import anyio
import pytest
from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ETagMismatch,
    InvalidArgument,
    LayottoError,
    NotFound,
)
from layotto.resiliency import (
    NO_POLICY,
    BreakerState,
    CircuitBreaker,
    CircuitBreakerOpen,
    Policy,
    RetryPolicy,
    compile_trip,
    is_retriable,
)

pytestmark = pytest.mark.anyio


def _retry(max_retries: int, duration: float = 0.001) -> RetryPolicy:
    return RetryPolicy("fast", policy="constant", duration=duration, max_retries=max_retries)


def _breaker(trip: str = "consecutiveFailures >= 2", timeout: float = 60.0) -> CircuitBreaker:
    return CircuitBreaker("cb", trip=compile_trip(trip), timeout=timeout)


class Flaky:
    """Fails with the given errors in order, then answers "ok"."""

    def __init__(self, *errors: BaseException) -> None:
        self.errors = list(errors)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.errors:
            raise self.errors.pop(0)
        return "ok"


async def test_retries_until_the_operation_succeeds() -> None:
    op = Flaky(BackendUnavailable("down"), BackendUnavailable("down"))
    policy = Policy("component 'statestore' outbound", retry=_retry(5))
    assert await policy.run(op) == "ok"
    assert op.calls == 3


async def test_stops_after_max_retries_and_reraises_the_last_error_unchanged() -> None:
    errors = [BackendUnavailable(f"down {i}") for i in range(5)]
    op = Flaky(*errors)
    policy = Policy("t", retry=_retry(2))
    with pytest.raises(BackendUnavailable) as caught:
        await policy.run(op)
    assert caught.value is errors[2]
    assert op.calls == 3


async def test_zero_max_retries_runs_once() -> None:
    op = Flaky(BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable):
        await Policy("t", retry=_retry(0)).run(op)
    assert op.calls == 1


async def test_foreign_exceptions_are_retried_and_kept() -> None:
    op = Flaky(ConnectionError("reset"), ConnectionError("reset"))
    assert await Policy("t", retry=_retry(3)).run(op) == "ok"
    failing = Flaky(*(OSError(str(i)) for i in range(3)))
    with pytest.raises(OSError, match=r"^1$"):
        await Policy("t", retry=_retry(1)).run(failing)


@pytest.mark.parametrize(
    "error", [InvalidArgument("bad key"), NotFound("no such"), ETagMismatch("etag")]
)
async def test_caller_errors_are_not_retried_and_do_not_trip_the_breaker(
    error: LayottoError,
) -> None:
    breaker = _breaker("consecutiveFailures >= 1")
    policy = Policy("t", retry=_retry(5), breaker=breaker)
    for _ in range(3):
        op = Flaky(error)
        with pytest.raises(type(error)):
            await policy.run(op)
        assert op.calls == 1
    assert breaker.state is BreakerState.CLOSED


async def test_a_custom_retriable_predicate_decides() -> None:
    op = Flaky(BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable):
        await Policy("t", retry=_retry(5)).run(op, retriable=lambda _err: False)
    assert op.calls == 1


async def test_a_slow_attempt_times_out_as_backend_timeout_naming_target_and_timeout() -> None:
    async def slow() -> str:
        await anyio.sleep(10)
        return "late"

    policy = Policy("component 'statestore' outbound", timeout=0.01)
    with pytest.raises(BackendTimeout) as caught:
        await policy.run(slow)
    assert "component 'statestore' outbound" in caught.value.message
    assert "0.01s" in caught.value.message


async def test_the_timeout_is_per_attempt_and_a_timed_out_attempt_is_retried() -> None:
    calls = 0

    async def slow_then_fast() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            await anyio.sleep(10)
        return "ok"

    policy = Policy("t", timeout=0.01, retry=_retry(2))
    assert await policy.run(slow_then_fast) == "ok"
    assert calls == 2


async def test_an_operations_own_timeout_error_is_not_rewritten() -> None:
    op = Flaky(TimeoutError("backend said so"))
    with pytest.raises(TimeoutError, match="backend said so"):
        await Policy("t", timeout=5.0).run(op)


async def test_timeouts_count_as_breaker_failures() -> None:
    async def slow() -> None:
        await anyio.sleep(10)

    breaker = _breaker("consecutiveFailures >= 2")
    policy = Policy("t", timeout=0.005, breaker=breaker)
    for _ in range(2):
        with pytest.raises(BackendTimeout):
            await policy.run(slow)
    assert breaker.state is BreakerState.OPEN


async def test_an_open_breaker_fails_fast_without_calling_the_operation() -> None:
    breaker = _breaker("consecutiveFailures >= 2")
    policy = Policy("component 'pubsub' outbound", retry=_retry(10), breaker=breaker)
    op = Flaky(*(BackendUnavailable("down") for _ in range(20)))
    with pytest.raises(CircuitBreakerOpen) as caught:
        await policy.run(op)
    # Two failures trip it; the remaining retries are refused by the breaker without a call.
    assert op.calls == 2
    assert isinstance(caught.value, BackendUnavailable)
    assert caught.value.reason == "ERR_CIRCUIT_BREAKER_OPEN"
    assert "component 'pubsub' outbound" in caught.value.message
    assert "circuit breaker 'cb' is open" in caught.value.message
    again = Flaky()
    with pytest.raises(CircuitBreakerOpen):
        await policy.attempt(again)
    assert again.calls == 0


async def test_retries_outlast_an_open_breaker_and_succeed_once_it_half_opens() -> None:
    breaker = _breaker("consecutiveFailures >= 1", timeout=0.02)
    policy = Policy("app 'b'", retry=_retry(50, duration=0.005), breaker=breaker)
    op = Flaky(BackendUnavailable("down"))
    assert await policy.run(op) == "ok"
    # One failure opened it; retries were refused until it half-opened, then the trial call
    # (the second call of the operation) succeeded and closed it.
    assert op.calls == 2
    assert breaker.state is BreakerState.CLOSED


async def test_the_breaker_closes_again_after_a_successful_probe() -> None:
    breaker = _breaker("consecutiveFailures >= 1", timeout=0.01)
    policy = Policy("t", breaker=breaker)
    with pytest.raises(BackendUnavailable):
        await policy.run(Flaky(BackendUnavailable("down")))
    await anyio.sleep(0.02)
    assert await policy.run(Flaky()) == "ok"
    assert breaker.state is BreakerState.CLOSED


async def test_attempt_never_retries() -> None:
    op = Flaky(BackendUnavailable("down"))
    with pytest.raises(BackendUnavailable):
        await Policy("t", retry=_retry(5)).attempt(op)
    assert op.calls == 1


async def test_cancellation_during_an_attempt_propagates_and_leaves_the_breaker_alone() -> None:
    started = anyio.Event()

    async def forever() -> None:
        started.set()
        await anyio.sleep_forever()

    breaker = _breaker("consecutiveFailures >= 1", timeout=0.001)
    policy = Policy("t", timeout=10.0, retry=_retry(-1), breaker=breaker)
    with anyio.move_on_after(0.02) as scope:
        await policy.run(forever)
    assert scope.cancelled_caught
    assert started.is_set()
    assert breaker.state is BreakerState.CLOSED
    assert breaker.counts.requests == 0


async def test_cancellation_during_the_retry_wait_propagates() -> None:
    op = Flaky(*(BackendUnavailable("down") for _ in range(5)))
    policy = Policy("t", retry=_retry(-1, duration=10.0))
    with anyio.move_on_after(0.02) as scope:
        await policy.run(op)
    assert scope.cancelled_caught
    assert op.calls == 1


async def test_cancellation_is_not_passed_to_the_retriable_predicate() -> None:
    seen: list[BaseException] = []

    def retriable(err: BaseException) -> bool:
        seen.append(err)
        return True

    policy = Policy("t", retry=_retry(-1), breaker=_breaker())
    with anyio.move_on_after(0.01):
        await policy.run(anyio.sleep_forever, retriable=retriable)
    assert seen == []


async def test_no_policy_is_a_plain_await() -> None:
    assert not NO_POLICY
    assert await NO_POLICY.run(Flaky()) == "ok"
    error = BackendUnavailable("down")
    with pytest.raises(BackendUnavailable) as caught:
        await NO_POLICY.run(Flaky(error))
    assert caught.value is error
    assert await NO_POLICY.attempt(Flaky()) == "ok"


def test_a_policy_is_truthy_when_anything_is_set() -> None:
    assert not Policy("t")
    assert not Policy("t", timeout=0)  # daprd: a zero timeout is none
    assert Policy("t", timeout=1.0)
    assert Policy("t", retry=_retry(0))
    assert Policy("t", breaker=_breaker())


@pytest.mark.parametrize(
    ("error", "expected"),
    [
        (InvalidArgument("x"), False),
        (NotFound("x"), False),
        (ETagMismatch("x"), False),
        (BackendUnavailable("x"), True),
        (BackendTimeout("x"), True),
        (LayottoError("x"), True),
        (ConnectionError("x"), True),
    ],
)
def test_is_retriable(error: BaseException, expected: bool) -> None:
    assert is_retriable(error) is expected


async def test_a_half_open_breaker_refuses_calls_beyond_its_trial_calls() -> None:
    breaker = _breaker("consecutiveFailures >= 1", timeout=0.005)
    policy = Policy("t", breaker=breaker)
    with pytest.raises(BackendUnavailable):
        await policy.run(Flaky(BackendUnavailable("down")))
    await anyio.sleep(0.01)
    ticket = breaker.acquire()  # the single half-open trial call, still in flight
    assert ticket is not None
    with pytest.raises(CircuitBreakerOpen, match="half-open"):
        await policy.run(Flaky())
    breaker.release(ticket)


async def test_exponential_retries_stop_at_the_elapsed_time_budget(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr("layotto.resiliency.retry.MAX_ELAPSED", 0.001)
    op = Flaky(*(BackendUnavailable("down") for _ in range(5)))
    policy = Policy("t", retry=RetryPolicy("exp", policy="exponential", max_retries=-1))
    with pytest.raises(BackendUnavailable):
        await policy.run(op)
    assert op.calls == 1
