"""Retry policies: how long to wait before retry N, whether retry N is allowed, which codes retry.

The exponential schedule is cenkalti/backoff's (which daprd uses): the interval starts at 500 ms
and grows x1.5 per retry up to `maxInterval`; each delay is that interval randomised by +-50 %.
Like cenkalti, the randomised delay may exceed `maxInterval` by up to half of it, and an
exponential policy gives up once 15 minutes (its MaxElapsedTime) would be exceeded.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Final, Literal

from layotto.resiliency.spec import CodeRange, RetrySpec

INITIAL_INTERVAL: Final = 0.5
MULTIPLIER: Final = 1.5
RANDOMIZATION_FACTOR: Final = 0.5
# cenkalti's DefaultMaxElapsedTime, which daprd's retry config keeps for exponential policies.
MAX_ELAPSED: Final = 15 * 60.0
# 1.5 ** 1000 is still a finite float; past it the interval is long capped anyway.
_MAX_EXPONENT: Final = 1000


def _matches(code: int, ranges: tuple[CodeRange, ...]) -> bool:
    # No list means "retry every code" (daprd's allowlist is only applied when given).
    return not ranges or any(start <= code <= end for start, end in ranges)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    name: str
    policy: Literal["constant", "exponential"] = "constant"
    duration: float = 5.0
    max_interval: float = 60.0
    max_retries: int = -1
    http_status_codes: tuple[CodeRange, ...] = ()
    grpc_status_codes: tuple[CodeRange, ...] = ()
    rng: random.Random = field(default_factory=random.Random, compare=False, repr=False)

    @classmethod
    def from_spec(cls, name: str, spec: RetrySpec, rng: random.Random | None = None) -> RetryPolicy:
        matching = spec.matching
        return cls(
            name=name,
            policy=spec.policy,
            duration=spec.duration,
            max_interval=spec.max_interval,
            max_retries=spec.max_retries,
            http_status_codes=matching.http_status_codes if matching else (),
            grpc_status_codes=matching.grpc_status_codes if matching else (),
            rng=rng or random.Random(),
        )

    @property
    def max_elapsed(self) -> float | None:
        """Seconds after the first attempt past which no retry starts (None: no bound)."""
        return MAX_ELAPSED if self.policy == "exponential" else None

    def delay(self, retry_index: int) -> float:
        """Seconds to wait before retry `retry_index` (0 = the first retry)."""
        if self.policy == "constant":
            return self.duration
        exponent = min(max(retry_index, 0), _MAX_EXPONENT)
        interval = min(INITIAL_INTERVAL * MULTIPLIER**exponent, self.max_interval)
        delta = RANDOMIZATION_FACTOR * interval
        return interval - delta + self.rng.random() * 2 * delta

    def allows(self, retries_done: int) -> bool:
        """Whether one more retry may run after `retries_done` retries."""
        return self.max_retries < 0 or retries_done < self.max_retries

    def retries_http_status(self, code: int) -> bool:
        return _matches(code, self.http_status_codes)

    def retries_grpc_code(self, code: int) -> bool:
        return _matches(code, self.grpc_status_codes)

    def describe(self) -> dict[str, object]:
        out: dict[str, object] = {"name": self.name, "policy": self.policy}
        if self.policy == "constant":
            out["duration"] = self.duration
        else:
            out["maxInterval"] = self.max_interval
        out["maxRetries"] = self.max_retries
        return out
