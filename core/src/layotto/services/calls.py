"""One bounded component call with foreign errors translated: the shape every service uses."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from layotto.errors import BackendTimeout, ComponentError, LayottoError
from layotto.meter import ComponentMeter
from layotto.resiliency import NO_POLICY, Policy

log = logging.getLogger(__name__)

T = TypeVar("T")
E = TypeVar("E", bound=LayottoError)


class Scrubber(Protocol):
    """Turns stored (prefixed) keys in an error message back into the caller's keys."""

    def scrub(self, err: E) -> E: ...


DEFAULT_CALL_TIMEOUT = 10.0


async def call_component(
    what: str,
    component: str,
    keys: Scrubber,
    seconds: float,
    call: Callable[[], Awaitable[T]],
    *,
    policy: Policy = NO_POLICY,
    meter: ComponentMeter | None = None,
    operation: str = "",
) -> T:
    """`what` names the operation for messages and logs; `component` what answers it
    ("the lock store"); `seconds` bounds each attempt. Stored keys in a component's message
    become the caller's again. `policy` is the component's outbound resiliency policy (its
    retries, per-attempt timeout and circuit breaker see the translated errors, so a bad
    request or an ETag mismatch is never retried). `meter`, the component's recorder, counts
    the call under `operation` (a fixed verb, never `what`), retries included in its latency."""

    async def attempt() -> T:
        try:
            with anyio.fail_after(seconds):
                return await call()
        except LayottoError as err:
            raise keys.scrub(err) from None
        except TimeoutError:
            raise BackendTimeout(f"{what}: {component} did not answer in time") from None
        except Exception as err:
            # Foreign errors may carry hosts or credentials: log them, answer generically.
            log.exception("%s failed", what)
            raise ComponentError(f"{what}: {component} failed ({type(err).__name__})") from err

    if meter is None:
        return await attempt() if not policy else await policy.run(attempt)
    started = time.perf_counter()
    try:
        result = await attempt() if not policy else await policy.run(attempt)
    except Exception:
        meter.record(operation, False, time.perf_counter() - started)
        raise
    # (A cancelled call is no verdict on the component: not counted.)
    meter.record(operation, True, time.perf_counter() - started)
    return result
