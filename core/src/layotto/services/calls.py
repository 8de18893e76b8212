"""One bounded component call with foreign errors translated: the shape every service uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from layotto.errors import BackendTimeout, ComponentError, LayottoError
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
) -> T:
    """`what` names the operation for messages and logs; `component` what answers it
    ("the lock store"); `seconds` bounds each attempt. Stored keys in a component's message
    become the caller's again. `policy` is the component's outbound resiliency policy (its
    retries, per-attempt timeout and circuit breaker see the translated errors, so a bad
    request or an ETag mismatch is never retried)."""

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

    if not policy:
        return await attempt()
    return await policy.run(attempt)
