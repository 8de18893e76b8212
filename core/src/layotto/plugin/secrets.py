"""The secret-store SPI: read-only lookups of named secrets, each a map of values.

A secret is a map because one name may hold several values (a username and a password); stores
that keep one value per name answer `{name: value}`. Access policy (`allowedSecrets`,
`deniedSecrets`, `defaultAccess`) is the sidecar's business, not the component's.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from enum import StrEnum

from layotto.plugin.component import Component


class SecretStoreFeature(StrEnum):
    """Optional features, reported as capabilities in `/v1.0/metadata`."""

    # One secret name holds several key/value pairs (a JSON object in a file, a Vault path).
    MULTIPLE_KEY_VALUES_PER_SECRET = "MULTIPLE_KEY_VALUES_PER_SECRET"


class SecretStore(Component):
    """Raise `NotFound` for a missing secret; other failures as the usual LayottoErrors."""

    features: frozenset[SecretStoreFeature] = frozenset()

    @abstractmethod
    async def get_secret(self, key: str, metadata: Mapping[str, str]) -> dict[str, str]:
        """The values of secret `key`."""

    @abstractmethod
    async def bulk_get_secrets(self, metadata: Mapping[str, str]) -> dict[str, dict[str, str]]:
        """Every secret this store holds: name -> its values."""
