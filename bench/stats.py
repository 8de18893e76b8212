"""Latency statistics over merged per-call samples."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

PERCENTILES: tuple[float, ...] = (50.0, 90.0, 99.0)


def percentile(sorted_values: Sequence[int], p: float) -> int:
    """Nearest-rank percentile of already sorted values (the smallest value with at least p%
    of the samples at or below it)."""
    if not sorted_values:
        raise ValueError("no samples")
    rank = max(1, math.ceil(p / 100.0 * len(sorted_values)))
    return sorted_values[rank - 1]


def summarize(latency_arrays: Iterable[Iterable[int]], window_s: float) -> dict[str, Any]:
    """Latency (µs) and throughput of the merged samples of one run."""
    merged: list[int] = []
    for values in latency_arrays:
        merged.extend(values)
    merged.sort()
    calls = len(merged)
    out: dict[str, Any] = {
        "calls": calls,
        "throughput_per_s": calls / window_s if window_s > 0 else 0.0,
    }
    if calls:
        latency = {f"p{p:g}": percentile(merged, p) / 1e3 for p in PERCENTILES}
        latency["mean"] = sum(merged) / calls / 1e3
        latency["min"] = merged[0] / 1e3
        latency["max"] = merged[-1] / 1e3
        out["latency_us"] = {k: round(v, 3) for k, v in latency.items()}
    else:
        out["latency_us"] = None
    return out
