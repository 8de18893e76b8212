"""Integration tests skip only when their server binary is missing, and CI turns such skips
into failures by setting LAYOTTO_REQUIRE_INTEGRATION=1."""

from __future__ import annotations

import os
from typing import NoReturn

import pytest

REQUIRE_INTEGRATION_ENV = "LAYOTTO_REQUIRE_INTEGRATION"


def integration_required() -> bool:
    return os.environ.get(REQUIRE_INTEGRATION_ENV, "") not in ("", "0", "false")


def skip_or_fail(reason: str) -> NoReturn:
    """Skip with `reason`, or fail with it when integration tests are required."""
    if integration_required():
        pytest.fail(f"{reason} ({REQUIRE_INTEGRATION_ENV} is set, so this is a failure)")
    pytest.skip(reason)
