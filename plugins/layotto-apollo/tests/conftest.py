"""Fixtures: a PRIVATE Apollo test server per test (layotto_apollo.testing), stores on it.

The server is `ApolloTestServer`, shipped in the package: the config service, the meta service
and the Open API from memory, on a free port, in a thread of its own. Each test gets its own, so
it may stop, restart, slow down or break it. The long-poll hold is 1 s (60 s upstream), and the
stores use the same value so their read timeout (1.5 x the hold) stays short.
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

_SUPPORT_NAME = "layotto_apollo_test_support"
if _SUPPORT_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _SUPPORT_NAME, Path(__file__).with_name("apollo_support.py")
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT_NAME] = _module
    _spec.loader.exec_module(_module)

from layotto.plugin import ComponentContext  # noqa: E402
from layotto_apollo import ApolloConfigStore, ApolloMetadata  # noqa: E402
from layotto_apollo.testing import ApolloTestServer  # noqa: E402
from layotto_apollo_test_support import (  # noqa: E402
    APP_ID,
    HOLD,
    TOKEN,
    StoreFactory,
    store_metadata,
)


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
def apollo() -> Iterator[ApolloTestServer]:
    """A fresh server: app `SampleApp` (namespaces `application`, `db`), a token for it."""
    server = ApolloTestServer(long_poll_timeout=HOLD)
    server.add_app(APP_ID, namespaces=["db"])
    server.add_token(TOKEN, apps=[APP_ID])
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
async def make_store(apollo: ApolloTestServer, tmp_path: Path) -> AsyncIterator[StoreFactory]:
    """`await make_store(**metadata_overrides)`: an initialised store, closed at teardown."""
    made: list[ApolloConfigStore] = []

    async def make(**overrides: Any) -> ApolloConfigStore:
        metadata = ApolloMetadata.model_validate(
            store_metadata(apollo, tmp_path / "backup", **overrides)
        )
        store = ApolloConfigStore(metadata, ComponentContext("apollo", "app"))
        await store.init()
        made.append(store)
        return store

    yield make
    for store in made:
        await store.close()


@pytest.fixture
async def store(make_store: StoreFactory) -> ApolloConfigStore:
    return await make_store()
