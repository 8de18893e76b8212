"""Apollo for Layotto for Python: the `configuration.apollo` store, the Apollo client it is built
on (`layotto_apollo.client`) and a protocol-faithful Apollo test server
(`layotto_apollo.testing`)."""

# Exports load on first use: the sidecar imports this package to list the plugin, and
# must not pay for the backend client until a component of this plugin is configured.

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from layotto_apollo.client import (
        ApolloConfig,
        ApolloConnectionError,
        ApolloError,
        ApolloHTTPError,
        ApolloTimeoutError,
        ConfigServiceClient,
        Notification,
        OpenApiClient,
    )
    from layotto_apollo.settings import (
        TAGS_NAMESPACE,
        ApolloMetadata,
    )
    from layotto_apollo.store import (
        ApolloConfigStore,
    )

__version__ = "0.1.0"

_EXPORTS: dict[str, str] = {
    "ApolloConfig": "layotto_apollo.client",
    "ApolloConfigStore": "layotto_apollo.store",
    "ApolloConnectionError": "layotto_apollo.client",
    "ApolloError": "layotto_apollo.client",
    "ApolloHTTPError": "layotto_apollo.client",
    "ApolloMetadata": "layotto_apollo.settings",
    "ApolloTimeoutError": "layotto_apollo.client",
    "ConfigServiceClient": "layotto_apollo.client",
    "Notification": "layotto_apollo.client",
    "OpenApiClient": "layotto_apollo.client",
    "TAGS_NAMESPACE": "layotto_apollo.settings",
}

__all__ = [
    "TAGS_NAMESPACE",
    "ApolloConfig",
    "ApolloConfigStore",
    "ApolloConnectionError",
    "ApolloError",
    "ApolloHTTPError",
    "ApolloMetadata",
    "ApolloTimeoutError",
    "ConfigServiceClient",
    "Notification",
    "OpenApiClient",
    "__version__",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
