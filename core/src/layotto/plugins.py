"""Discover plugins (entry point group `layotto`) and build the catalog of component types."""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import pluggy

from layotto.errors import ConfigError, PluginError
from layotto.plugin import ComponentSpec, Kind
from layotto.plugin import hookspecs as _hookspecs

ENTRY_POINT_GROUP = "layotto"


@dataclass(frozen=True, slots=True)
class PluginInfo:
    name: str
    distribution: str
    version: str
    specs: tuple[ComponentSpec, ...]


@dataclass(slots=True)
class Catalog:
    """Every installed component type, keyed by (kind, type)."""

    plugins: list[PluginInfo] = field(default_factory=list)
    specs: dict[tuple[Kind, str], tuple[ComponentSpec, PluginInfo]] = field(default_factory=dict)

    def add(self, info: PluginInfo) -> None:
        self.plugins.append(info)
        for spec in info.specs:
            key = (spec.kind, spec.type)
            if key in self.specs:
                other = self.specs[key][1]
                raise PluginError(
                    f"component type {spec.qualified_type} is provided twice: by "
                    f"{other.distribution} {other.version} (plugin {other.name!r}) and by "
                    f"{info.distribution} {info.version} (plugin {info.name!r}); "
                    "uninstall one of them"
                )
            self.specs[key] = (spec, info)

    def types_of(self, kind: Kind) -> list[str]:
        return sorted(t for k, t in self.specs if k is kind)

    def resolve(self, kind: Kind, type_: str, *, where: str) -> ComponentSpec:
        found = self.specs.get((kind, type_))
        if found is None:
            installed = ", ".join(self.types_of(kind)) or "none"
            raise ConfigError(
                f"{where}: unknown component type {kind.value}.{type_}; installed {kind.value} "
                f"types: {installed}"
            )
        return found[0]


def _entry_points() -> Iterable[importlib.metadata.EntryPoint]:
    return importlib.metadata.entry_points(group=ENTRY_POINT_GROUP)


def load_catalog(entry_points: Iterable[importlib.metadata.EntryPoint] | None = None) -> Catalog:
    """Import every plugin and collect its specs. Fails naming the distribution at fault."""
    manager = pluggy.PluginManager(_hookspecs.PROJECT_NAME)
    manager.add_hookspecs(_hookspecs)
    catalog = Catalog()
    loaded: dict[str, str] = {}  # plugin name -> "distribution version"
    for ep in sorted(entry_points if entry_points is not None else _entry_points(), key=_order):
        dist = ep.dist.name if ep.dist else "<unknown distribution>"
        version = ep.dist.version if ep.dist else "?"
        if ep.name in loaded:
            raise PluginError(
                f"two plugins are named {ep.name!r}: from {loaded[ep.name]} and from "
                f"{dist} {version}; uninstall one of them"
            )
        loaded[ep.name] = f"{dist} {version}"
        try:
            plugin: Any = ep.load()
            manager.register(plugin, name=ep.name)
            specs = _collect(manager, ep.name)
        except PluginError:
            raise
        except Exception as err:  # a broken plugin must name itself, whatever it raised
            raise PluginError(
                f"plugin {ep.name!r} from {dist} {version} failed to load: "
                f"{type(err).__name__}: {err}"
            ) from err
        catalog.add(PluginInfo(ep.name, dist, version, tuple(specs)))
    return catalog


def _order(ep: importlib.metadata.EntryPoint) -> tuple[bool, str]:
    # Built-ins first, so a clash message names the third-party plugin second.
    return (ep.name != "builtin", ep.name)


def _collect(manager: pluggy.PluginManager, name: str) -> list[ComponentSpec]:
    specs: list[ComponentSpec] = []
    for impl in manager.hook.layotto_components.get_hookimpls():
        if impl.plugin_name != name:
            continue
        result = cast("list[Any] | None", impl.function())
        for spec in result or []:
            if not isinstance(spec, ComponentSpec):
                raise TypeError(
                    f"layotto_components() returned {type(spec).__name__}, not ComponentSpec"
                )
            specs.append(spec)
    return specs
