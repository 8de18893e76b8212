"""One bounded component call with foreign errors translated: the shape every service uses."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import anyio

from layotto.errors import BackendTimeout, ComponentError, LayottoError

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
) -> T:
    """`what` names the operation for messages and logs; `component` what answers it
    ("the lock store"); `seconds` bounds the call. Stored keys in a component's message
    become the caller's again."""
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
