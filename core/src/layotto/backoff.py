"""Capped, jittered exponential backoff: one formula for every retry loop in the sidecar."""

from __future__ import annotations

import random

_RNG = random.Random()


def backoff_delay(
    attempt: int, *, base: float = 0.1, cap: float = 5.0, rng: random.Random | None = None
) -> float:
    """Equal-jitter exponential backoff: in [d/2, d], d = min(cap, base * 2**attempt)."""
    # 2.0 ** 1023 is the largest finite power; past the cap the exponent no longer matters.
    ceiling = min(cap, base * 2.0 ** min(attempt, 1023))
    jitter: float = (rng or _RNG).uniform(0, ceiling / 2)
    return float(ceiling / 2 + jitter)
