"""A resolved policy for one target: run an operation under its timeout, retries and breaker.

Order, as in daprd's runner: the retry loop drives attempts; each attempt asks the breaker first
and runs under the per-attempt timeout, so a timed-out attempt counts as a breaker failure and
can be retried. A call refused by an open breaker is retried too (Dapr: retries cover "requests
failed due to a timeout or circuit breaker policy"): after the retry delay the breaker is asked
again, and once it half-opens the retry is its trial call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Final, TypeVar

import anyio

from layotto.errors import BackendTimeout, BackendUnavailable, ErrorCategory, LayottoError
from layotto.meter import RETRY, TIMEOUT, Activation
from layotto.resiliency.breaker import BreakerState, CircuitBreaker
from layotto.resiliency.retry import RetryPolicy

T = TypeVar("T")

# Errors that say the request itself is wrong: another attempt gets the same answer, and the
# backend answered, so they are not a sign of its ill health either.
_CALLER_ERRORS: Final = frozenset(
    {
        ErrorCategory.INVALID_ARGUMENT,
        ErrorCategory.FAILED_PRECONDITION,
        ErrorCategory.NOT_FOUND,
        ErrorCategory.ABORTED,
        ErrorCategory.UNIMPLEMENTED,
        ErrorCategory.UNAUTHENTICATED,
        ErrorCategory.PERMISSION_DENIED,
    }
)


class CircuitBreakerOpen(BackendUnavailable):
    """The target's breaker refused the call. A delivery loop that retries on its own should
    treat it as final for this round, as `Policy.run` does."""

    default_reason = "ERR_CIRCUIT_BREAKER_OPEN"


def is_retriable(err: BaseException) -> bool:
    """False for caller errors (bad request, precondition, not found, etag, unsupported, auth)."""
    return not (isinstance(err, LayottoError) and err.category in _CALLER_ERRORS)


class Policy:
    """Timeout, retry and circuit breaker for one target; any of them may be absent."""

    __slots__ = ("activated", "breaker", "name", "retry", "timeout")

    def __init__(
        self,
        name: str,
        *,
        timeout: float | None = None,
        retry: RetryPolicy | None = None,
        breaker: CircuitBreaker | None = None,
    ) -> None:
        self.name = name  # the target, as error messages and logs name it
        self.timeout = timeout or None  # daprd: a zero timeout means none
        self.retry = retry
        self.breaker = breaker
        # Told when a retry or the timeout fires (metrics); see `Resiliency(meter=...)`.
        self.activated: Activation | None = None

    def __bool__(self) -> bool:
        return self.timeout is not None or self.retry is not None or self.breaker is not None

    def __repr__(self) -> str:
        return (
            f"Policy({self.name!r}, timeout={self.timeout}, retry={self.retry and self.retry.name},"
            f" breaker={self.breaker and self.breaker.name})"
        )

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        retriable: Callable[[BaseException], bool] = is_retriable,
    ) -> T:
        """Run `operation` with retries; the last error is re-raised unchanged."""
        retry = self.retry
        if retry is None:
            return await self.attempt(operation, retriable=retriable)
        started = anyio.current_time()
        retries_done = 0
        while True:
            try:
                return await self.attempt(operation, retriable=retriable)
            except Exception as err:
                if not retriable(err) or not retry.allows(retries_done):
                    raise
                wait = retry.delay(retries_done)
                budget = retry.max_elapsed
                if budget is not None and anyio.current_time() - started + wait > budget:
                    raise
            retries_done += 1
            if self.activated is not None:
                self.activated(RETRY, "")
            await anyio.sleep(wait)

    async def attempt(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        retriable: Callable[[BaseException], bool] = is_retriable,
    ) -> T:
        """One attempt under the breaker and the timeout, no retries."""
        breaker = self.breaker
        if breaker is None:
            return await self._timed(operation)
        ticket = breaker.acquire()
        if ticket is None:
            if breaker.state is BreakerState.OPEN:
                why = f"is open (it half-opens within {breaker.timeout:g}s)"
            else:
                why = "is half-open and its trial calls are in flight"
            raise CircuitBreakerOpen(
                f"{self.name}: circuit breaker {breaker.name!r} {why}; the call was not attempted"
            )
        try:
            result = await self._timed(operation)
        except Exception as err:
            # A caller error means the backend answered: a success for its health.
            breaker.record(ticket, success=not retriable(err))
            raise
        except BaseException:
            # Cancelled (or the process is exiting): no verdict on the backend.
            breaker.release(ticket)
            raise
        breaker.record(ticket, success=True)
        return result

    async def _timed(self, operation: Callable[[], Awaitable[T]]) -> T:
        if self.timeout is None:
            return await operation()
        with anyio.move_on_after(self.timeout) as scope:
            return await operation()
        # Only reached when our deadline cancelled the operation (an outer cancellation
        # propagates out of the block instead).
        assert scope.cancelled_caught
        if self.activated is not None:
            self.activated(TIMEOUT, "")
        raise BackendTimeout(f"{self.name}: the operation timed out after {self.timeout:g}s")


class _NoPolicy(Policy):
    """Nothing configured: a plain await, so unconfigured targets pay nothing."""

    __slots__ = ()

    def __init__(self) -> None:
        super().__init__("no policy")

    async def run(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        retriable: Callable[[BaseException], bool] = is_retriable,
    ) -> T:
        return await operation()

    async def attempt(
        self,
        operation: Callable[[], Awaitable[T]],
        *,
        retriable: Callable[[BaseException], bool] = is_retriable,
    ) -> T:
        return await operation()


NO_POLICY: Final[Policy] = _NoPolicy()
