"""Shared fixtures for the core unit tests.

Backend-neutral code runs on both anyio backends: mark an async test `@pytest.mark.anyio` and it
runs once on asyncio and once on trio.
"""

from __future__ import annotations

import pytest


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
