"""The `layotto` entry point of this distribution: the component types it provides.

Models and factories are import strings, loaded only for configured components."""

from __future__ import annotations

from layotto.plugin import ComponentSpec, Kind, hookimpl


@hookimpl
def layotto_components() -> list[ComponentSpec]:
    return [
        ComponentSpec(
            Kind.CONFIGURATION,
            "apollo",
            "layotto_apollo.settings:ApolloMetadata",
            "layotto_apollo.store:ApolloConfigStore.create",
            description="Apollo config service + long poll; writes through the Open API",
        ),
    ]
