"""The `layotto` entry point of this distribution: the component types it provides."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl

from layotto_apollo.settings import ApolloMetadata
from layotto_apollo.store import ApolloConfigStore


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.CONFIGURATION,
            "apollo",
            ApolloMetadata,
            ApolloConfigStore.create,
            description="Apollo config service + long poll; writes through the Open API",
        ),
    ]
