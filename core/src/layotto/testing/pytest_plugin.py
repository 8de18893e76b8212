"""Registered through the `pytest11` entry point, so plugin test suites get these for free."""

from __future__ import annotations

import pytest

from layotto.testing.integration import REQUIRE_INTEGRATION_ENV, integration_required


def pytest_report_header(config: pytest.Config) -> str:
    state = "required" if integration_required() else "optional (skipped when a server is missing)"
    return f"layotto: integration tests {state} [{REQUIRE_INTEGRATION_ENV}]"
