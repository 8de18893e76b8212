"""Metadata flags: Dapr's values are strings, and "true" has several spellings."""

from __future__ import annotations


def is_truthy(value: str | None) -> bool:
    """Dapr's `utils.IsTruthy`: y, yes, true, t, on, 1 (any case, surrounding space ignored)."""
    return (value or "").strip().lower() in ("y", "yes", "true", "t", "on", "1")
