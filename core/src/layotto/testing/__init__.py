"""Test support for layotto and its plugins (a pytest plugin is registered as `layotto`)."""

from layotto.testing.integration import REQUIRE_INTEGRATION_ENV, integration_required, skip_or_fail

__all__ = ["REQUIRE_INTEGRATION_ENV", "integration_required", "skip_or_fail"]
