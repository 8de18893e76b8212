"""The started components, by kind and name, and how they are built and closed."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import anyio
from pydantic import ValidationError

from layotto.config import ComponentConfig, RuntimeConfig
from layotto.errors import ConfigError
from layotto.plugin import Component, ComponentContext, ComponentSpec, Kind
from layotto.plugins import Catalog

log = logging.getLogger(__name__)

INIT_TIMEOUT_SECONDS = 5.0
CLOSE_TIMEOUT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class BuiltComponent:
    config: ComponentConfig
    spec: ComponentSpec
    component: Component


def build(config: RuntimeConfig, catalog: Catalog) -> list[BuiltComponent]:
    """Resolve and validate every configured component; no I/O (also what `layotto check` runs)."""
    built = []
    for cc in config.components:
        where = f"{cc.source}: component {cc.name!r} ({cc.qualified_type})"
        spec = catalog.resolve(cc.kind, cc.type, where=where)
        try:
            model = spec.metadata_model
            create = spec.create
        except Exception as err:  # a plugin whose component module fails to import
            raise ConfigError(
                f"{where}: the plugin providing {cc.qualified_type} failed to load it: "
                f"{type(err).__name__}: {err}"
            ) from err
        try:
            metadata = model.model_validate(cc.metadata)
        except ValidationError as err:
            fields = "; ".join(
                f"metadata.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
            )
            raise ConfigError(f"{where}: {fields}") from None
        if metadata.model_extra:
            log.warning("%s: ignoring unknown metadata %s", where, sorted(metadata.model_extra))
        component = create(metadata, ComponentContext(cc.name, config.app.id))
        built.append(BuiltComponent(cc, spec, component))
    return built


class ComponentRegistry:
    """Started components. Services look components up here by kind and name."""

    def __init__(self) -> None:
        self._by_kind: dict[Kind, dict[str, BuiltComponent]] = {}

    def add(self, item: BuiltComponent) -> None:
        self._by_kind.setdefault(item.config.kind, {})[item.config.name] = item

    def of_kind(self, kind: Kind) -> dict[str, BuiltComponent]:
        return self._by_kind.get(kind, {})

    def __iter__(self) -> Iterator[BuiltComponent]:
        for items in self._by_kind.values():
            yield from items.values()

    async def start(self, items: list[BuiltComponent]) -> None:
        """Init in order, secret stores and configuration stores first; fail fast."""
        first = (Kind.SECRETSTORES, Kind.CONFIGURATION)
        ordered = sorted(items, key=lambda b: b.config.kind not in first)
        for item in ordered:
            where = f"component {item.config.name!r} ({item.config.qualified_type})"
            try:
                with anyio.fail_after(INIT_TIMEOUT_SECONDS):
                    await item.component.init()
            except Exception as err:
                if item.config.ignore_errors:
                    log.warning("%s failed to start and is skipped (ignoreErrors): %s", where, err)
                    continue
                await self.close()
                reason = (
                    "timed out" if isinstance(err, TimeoutError) else f"{type(err).__name__}: {err}"
                )
                raise ConfigError(f"{where} failed to start: {reason}") from err
            self.add(item)
            log.info(
                "component started",
                extra={"component": item.config.name, "type": item.config.qualified_type},
            )

    async def close(self) -> None:
        """Close every started component, each bounded, all shielded from cancellation."""
        with anyio.CancelScope(shield=True):
            for item in reversed(list(self)):
                with anyio.move_on_after(CLOSE_TIMEOUT_SECONDS) as scope:
                    try:
                        await item.component.close()
                    except Exception:
                        log.exception("closing component %r failed", item.config.name)
                if scope.cancelled_caught:
                    log.warning("closing component %r timed out", item.config.name)
        self._by_kind.clear()
