"""The sidecar side of the kits whose checklist has service-level scenarios (secret access lists,
binding operation checks): a registry holding just the component under test, as the services
find components at runtime. Internal: plugin authors use the classes in
`layotto.testing.conformance`."""

from __future__ import annotations

from collections.abc import Mapping

from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.plugin import Component, ComponentMetadata, ComponentSpec, Kind

CONFORMANCE_TYPE = "conformance"


def registry_with(
    kind: Kind, name: str, component: Component, metadata: Mapping[str, str] | None = None
) -> ComponentRegistry:
    """A registry with `component` (already initialised: it is not started again) under `name`.
    The registry is not closed by the kits: the plugin's fixture closes the component."""
    spec = ComponentSpec(
        kind=kind,
        type=CONFORMANCE_TYPE,
        config_model=ComponentMetadata,
        factory=lambda _metadata, _context: component,
    )
    config = ComponentConfig(
        name=name, kind=kind, type=CONFORMANCE_TYPE, metadata=dict(metadata or {})
    )
    registry = ComponentRegistry()
    registry.add(BuiltComponent(config, spec, component))
    return registry
