"""Constants and helpers the Apollo tests share.

`conftest.py` loads this module under the unique name `layotto_apollo_test_support` (the
workspace runs pytest with --import-mode=importlib, and other test folders have support modules
too), so test modules import it by that name.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from layotto_apollo import ApolloConfigStore
from layotto_apollo.testing import ApolloTestServer

APP_ID = "SampleApp"
TOKEN = "open-api-token-3f1c9d"
SECRET = "df23df3f59884980844ff3dada30fa97"
USER = "apollo"
HOLD = 1.0  # the server's long-poll hold in these tests

StoreFactory = Callable[..., Awaitable[ApolloConfigStore]]


def store_metadata(server: ApolloTestServer, backup: Path, **overrides: Any) -> dict[str, Any]:
    """Layotto-style metadata (strings, as in upstream configs) for a writable store. An
    override of None drops that setting."""
    values: dict[str, Any] = {
        "address": [server.url],
        "app_id": APP_ID,
        "cluster": "default",
        "namespace_name": "application,db",
        "is_backup_config": "true",
        "backup_path": str(backup),
        "open_api_address": server.url,
        "open_api_token": TOKEN,
        "open_api_user": USER,
        "long_poll_timeout": str(HOLD),
        "timeout": "2s",
    }
    values.update(overrides)
    return {k: v for k, v in values.items() if v is not None}
