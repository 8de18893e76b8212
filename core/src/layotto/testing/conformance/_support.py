"""What the conformance classes share: the anyio setup, unique prefixes, polling, instances from a
factory. Internal: plugin authors use the classes in `layotto.testing.conformance`."""

from __future__ import annotations

import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TypeVar

import anyio
import pytest

from layotto.plugin import Component

C = TypeVar("C", bound=Component)

# Polling interval of the expiry scenarios (conformance.md: every 100-200 ms).
POLL_INTERVAL = 0.1


class ConformanceBase:
    """Runs every test under anyio on asyncio; override `anyio_backend` to add trio."""

    pytestmark = [pytest.mark.anyio]

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "asyncio"

    @pytest.fixture
    def conformance_prefix(self) -> str:
        """A run-unique prefix for every key, resource and owner this test uses. Fixtures of the
        plugin may request it too, e.g. to sweep leftovers from a shared backend."""
        return f"conftest-{uuid.uuid4().hex}-"


class Names:
    """Unique names under one prefix; remembers what it handed out, for cleanup."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self.used: list[str] = []

    def __call__(self, name: str) -> str:
        full = f"{self.prefix}{name}"
        if full not in self.used:
            self.used.append(full)
        return full


async def poll_until(
    check: Callable[[], Awaitable[bool]],
    *,
    deadline: float,
    what: str,
    since: float | None = None,
    interval: float = POLL_INTERVAL,
) -> float:
    """Call `check` every `interval` s until it is true; fail the test once `deadline` s have
    passed since `since` (a `time.monotonic()` reading; default now). Returns the seconds taken
    since `since`."""
    start = time.monotonic() if since is None else since
    while True:
        if await check():
            return time.monotonic() - start
        elapsed = time.monotonic() - start
        if elapsed >= deadline:
            pytest.fail(f"{what}: not within {deadline:g} s (polled every {interval:g} s)")
        await anyio.sleep(min(interval, max(deadline - elapsed, 0.0)))


async def sleep_until(since: float, seconds: float) -> None:
    """Sleep until `seconds` have passed since the monotonic reading `since`."""
    await anyio.sleep(max(since + seconds - time.monotonic(), 0.0))


@contextlib.asynccontextmanager
async def another_instance(
    factory: Callable[[], Awaitable[C]] | None, fixture_name: str
) -> AsyncIterator[C]:
    """A second initialised instance on the same backend from the plugin's factory fixture, closed
    when the block ends; skips the test when the plugin provides no factory."""
    if factory is None:
        pytest.skip(
            f"cross-instance scenario: override the `{fixture_name}` fixture to return an async "
            "callable that creates another initialised instance on the same backend"
        )
    instance = await factory()
    try:
        yield instance
    finally:
        await instance.close()
