"""Registered through the `pytest11` entry point, so plugin test suites get these for free.

Besides the report header, it provides the defaults of the conformance kit's optional fixtures
(`layotto.testing.conformance`). They live here, at plugin level, so that a plugin may override
them in its test class, its module or its conftest.py alike. It also has pytest rewrite the
kits' asserts, so a failing scenario shows the values it compared.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import pytest

from layotto.plugin import LockStore, PubSub, SequencerStore
from layotto.testing.integration import REQUIRE_INTEGRATION_ENV, integration_required

if TYPE_CHECKING:
    from layotto.testing.conformance.pubsub import PubSubHarness

# Before any test module imports the kits.
pytest.register_assert_rewrite("layotto.testing.conformance")


def pytest_report_header(config: pytest.Config) -> str:
    state = "required" if integration_required() else "optional (skipped when a server is missing)"
    return f"layotto: integration tests {state} [{REQUIRE_INTEGRATION_ENV}]"


@pytest.fixture
def state_store_bad_metadata() -> Callable[[], Awaitable[object]] | None:
    """Override with an async callable that creates and initialises the state store from invalid
    metadata (it must raise). None skips that conformance scenario."""
    return None


@pytest.fixture
def lock_store_factory() -> Callable[[], Awaitable[LockStore]] | None:
    """Override with an async callable returning another initialised lock store on the same
    backend (the kit closes it). None skips the cross-instance conformance scenarios."""
    return None


@pytest.fixture
def sequencer_store_factory() -> Callable[[], Awaitable[SequencerStore]] | None:
    """Override with an async callable returning another initialised sequencer store on the same
    backend (the kit closes it). None skips the cross-instance conformance scenarios."""
    return None


@pytest.fixture
def pubsub_harness(pubsub: PubSub) -> PubSubHarness:
    """What the pub/sub conformance kit drives. By default the plugin's `pubsub` fixture (an
    initialised component) behind the sidecar's envelope and delivery engine
    (`ComponentHarness`); override it to tune that harness or to drive something else."""
    # Imported here: the kit must not be imported before its asserts are set to be rewritten.
    from layotto.testing.conformance.pubsub import ComponentHarness

    return ComponentHarness(pubsub)
