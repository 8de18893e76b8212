"""Apollo for Layotto for Python: the `configuration.apollo` store, the Apollo client it is built
on (`layotto_apollo.client`) and a protocol-faithful Apollo test server
(`layotto_apollo.testing`)."""

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
from layotto_apollo.settings import TAGS_NAMESPACE, ApolloMetadata
from layotto_apollo.store import ApolloConfigStore

__version__ = "0.1.0"

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
]
