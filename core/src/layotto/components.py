"""The started components, by kind and name, and how they are planned, built, started and closed.

Startup (`ComponentRegistry.start_planned`): `plan` checks every component without I/O (type,
metadata, secret references), then the secret stores are built and started, every secret
reference is read through its store and injected into the metadata, and only then is each
other component's metadata validated, the component built and started. `layotto check` runs
`validate`: the same checks, with secret references checked against the configured secret
stores but never read.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from typing import Any

import anyio
from pydantic import AliasChoices, ValidationError

from layotto.config import ComponentConfig, RuntimeConfig, SecretRef
from layotto.errors import ConfigError, LayottoError, NotFound
from layotto.meter import NO_METER, ComponentMeter, Meter
from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    Kind,
    SecretStore,
)
from layotto.plugins import Catalog
from layotto.resiliency import Policy, Resiliency
from layotto.tracing import NO_TRACER, Tracer

log = logging.getLogger(__name__)

INIT_TIMEOUT_SECONDS = 5.0
CLOSE_TIMEOUT_SECONDS = 2.0
# Reading one secret reference at startup.
SECRET_READ_TIMEOUT_SECONDS = 5.0

# Validator messages of fields fed by a secret are withheld: a plugin's message may quote the
# value ("not a valid host: <value>").
_MESSAGES_THAT_MAY_QUOTE = frozenset({"value_error", "assertion_error"})


@dataclass(frozen=True, slots=True)
class BuiltComponent:
    config: ComponentConfig
    spec: ComponentSpec
    component: Component


@cache
def _input_names(model: type[ComponentMetadata]) -> dict[str, str]:
    """Every metadata name the model reads -> its field (aliases and, as `populate_by_name` is
    on, field names)."""
    names: dict[str, str] = {}
    for field, info in model.model_fields.items():
        names[field] = field
        if info.alias:
            names[info.alias] = field
        alias = info.validation_alias
        if isinstance(alias, str):
            names[alias] = field
        elif isinstance(alias, AliasChoices):
            names.update((c, field) for c in alias.choices if isinstance(c, str))
    return names


@dataclass(frozen=True, slots=True)
class PlannedComponent:
    """A configured component whose type, metadata and secret references are checked; built
    once its secrets are read."""

    config: ComponentConfig
    spec: ComponentSpec
    context: ComponentContext
    where: str  # "<source>: component '<name>' (<kind>.<type>)", for messages
    # The component's secret references, each naming its store (the only one when the
    # config names none).
    refs: tuple[SecretRef, ...]

    @property
    def model(self) -> type[ComponentMetadata]:
        return self.spec.metadata_model

    def build(self, secrets: Mapping[str, str] | None = None) -> BuiltComponent:
        """Validate the metadata, with `secrets` (field -> value) injected, and create the
        component (factories do no I/O)."""
        metadata = self._validate({**self.config.metadata, **(secrets or {})})
        assert metadata is not None
        component = self.spec.create(metadata, self.context)
        return BuiltComponent(self.config, self.spec, component)

    def check_metadata(self) -> None:
        """Validate the metadata as far as it is known before the secrets are read (a field a
        secret feeds may be missing), and warn about names the component does not read."""
        self._validate(self.config.metadata, pending=frozenset(r.field for r in self.refs))
        known = _input_names(self.model)
        unknown = sorted({*self.config.metadata, *(r.field for r in self.refs)} - known.keys())
        if unknown and self.model.model_config.get("extra") != "forbid":
            log.warning("%s: ignoring unknown metadata %s", self.where, unknown)

    def _validate(
        self, values: Mapping[str, Any], pending: frozenset[str] = frozenset()
    ) -> ComponentMetadata | None:
        try:
            return self.model.model_validate(values)
        except ValidationError as err:
            names = _input_names(self.model)
            secret_fields = {names.get(r.field, r.field) for r in self.refs}
            pending_fields = {names.get(f, f) for f in pending}
            problems = []
            for e in err.errors():
                top = str(e["loc"][0]) if e["loc"] else ""
                field = names.get(top, top)
                if e["type"] == "missing" and field in pending_fields:
                    continue  # a secret fills it at startup
                message = e["msg"]
                # A model-level validator (no field) may quote any field, secrets included.
                fed = field in secret_fields or (not field and bool(self.refs))
                if fed and e["type"] in _MESSAGES_THAT_MAY_QUOTE:
                    message = "invalid value (the message is withheld: it may quote the secret)"
                problems.append(f"metadata.{'.'.join(str(p) for p in e['loc'])}: {message}")
            if problems:
                raise ConfigError(f"{self.where}: {'; '.join(problems)}") from None
            return None


def plan(config: RuntimeConfig, catalog: Catalog) -> list[PlannedComponent]:
    """Resolve every component's type and secret references and validate its metadata (the
    fields secrets feed excepted); no I/O, nothing created."""
    stores = [c.name for c in config.components if c.kind is Kind.SECRETSTORES]
    planned = []
    for cc in config.components:
        where = f"{cc.source}: component {cc.name!r} ({cc.qualified_type})"
        spec = catalog.resolve(cc.kind, cc.type, where=where)
        try:
            _ = spec.metadata_model
            _ = spec.create
        except Exception as err:  # a plugin whose component module fails to import
            raise ConfigError(
                f"{where}: the plugin providing {cc.qualified_type} failed to load it: "
                f"{type(err).__name__}: {err}"
            ) from err
        refs = tuple(
            resolve_store(
                ref,
                stores,
                f"{where}: metadata.{ref.field} reads secret {ref.secret!r} key {ref.key!r}",
                itself=cc.name if cc.kind is Kind.SECRETSTORES else "",
            )
            for ref in cc.secret_refs
        )
        item = PlannedComponent(cc, spec, ComponentContext(cc.name, config.app.id), where, refs)
        item.check_metadata()
        planned.append(item)
    _secret_store_order([p for p in planned if p.config.kind is Kind.SECRETSTORES])
    return planned


def resolve_store(ref: SecretRef, stores: list[str], about: str, *, itself: str = "") -> SecretRef:
    """`ref` naming its secret store: the only one configured when it names none. `about`
    starts every error ("<source>: <what> reads secret ..."); `itself` is the name of the
    secret store holding the reference, which cannot read from itself."""
    configured = ", ".join(map(repr, stores)) or "none"
    if not ref.store:
        if not stores:
            raise ConfigError(f"{about}, but no secret store is configured")
        if len(stores) > 1:
            raise ConfigError(
                f"{about} and names no secret store, while {len(stores)} are configured "
                f"({configured}): name one with {ref.store_field}"
            )
        ref = ref.model_copy(update={"store": stores[0]})
    elif ref.store not in stores:
        raise ConfigError(
            f"{about} from secret store {ref.store!r}, which is not configured "
            f"(secret stores: {configured})"
        )
    if itself and ref.store == itself:
        raise ConfigError(f"{about} from secret store {ref.store!r}: that is itself")
    return ref


def _secret_store_order(stores: Sequence[PlannedComponent]) -> list[PlannedComponent]:
    """Secret stores in start order: each after the stores its own metadata reads from
    (otherwise config order). A cycle is a ConfigError."""
    ordered: list[PlannedComponent] = []
    pending = list(stores)
    while pending:
        done = {p.config.name for p in ordered}
        ready = [p for p in pending if all(r.store in done for r in p.refs)]
        if not ready:
            names = ", ".join(repr(p.config.name) for p in pending)
            raise ConfigError(
                f"secret stores {names} read their metadata from each other in a cycle: "
                "none of them can start first"
            )
        ordered += ready
        pending = [p for p in pending if p not in ready]
    return ordered


def build(config: RuntimeConfig, catalog: Catalog) -> list[BuiltComponent]:
    """Plan and create every component, for configs without secret references (tools and
    tests); the runtime uses `ComponentRegistry.start_planned`, which reads them first."""
    planned = plan(config, catalog)
    for item in planned:
        if item.refs:
            raise ConfigError(
                f"{item.where}: reads metadata from a secret store, so it is built at startup "
                "(ComponentRegistry.start_planned), not by build()"
            )
    return [item.build() for item in planned]


def validate(config: RuntimeConfig, catalog: Catalog) -> list[PlannedComponent]:
    """What `layotto check` runs: `plan`, and create every component that needs no secret.
    Secret references are checked to name a configured secret store, never read."""
    planned = plan(config, catalog)
    for item in planned:
        if not item.refs:
            item.build()
    return planned


SecretCache = dict[tuple[str, str], dict[str, str]]


class ComponentRegistry:
    """Started components. Services look components up here by kind and name."""

    def __init__(self, resiliency: Resiliency | None = None) -> None:
        self._by_kind: dict[Kind, dict[str, BuiltComponent]] = {}
        self.resiliency = resiliency or Resiliency.empty()
        self.meter: Meter = NO_METER  # what services record their component calls with
        self.tracer: Tracer = NO_TRACER  # what services start spans with (deliveries, bindings)

    def add(self, item: BuiltComponent) -> None:
        self._by_kind.setdefault(item.config.kind, {})[item.config.name] = item

    def outbound_policy(self, kind: Kind, name: str) -> Policy:
        """The resiliency policy for the sidecar's calls to component `name` (NO_POLICY when
        none applies); services look it up once per component."""
        return self.resiliency.component_outbound(name, kind)

    def component_meter(self, kind: Kind, name: str) -> ComponentMeter | None:
        """The recorder for the sidecar's calls to component `name` (None without metrics);
        services look it up once per component, as they do the policy."""
        return self.meter.component(kind.value, name)

    def inbound_policy(self, kind: Kind, name: str) -> Policy:
        """The resiliency policy for delivering the component's events to the app."""
        return self.resiliency.component_inbound(name, kind)

    def of_kind(self, kind: Kind) -> dict[str, BuiltComponent]:
        return self._by_kind.get(kind, {})

    def __iter__(self) -> Iterator[BuiltComponent]:
        for items in self._by_kind.values():
            yield from items.values()

    async def start_planned(self, planned: Iterable[PlannedComponent]) -> None:
        """Secret stores first, one by one (each after the stores it reads from), then every
        other component with its secret references read and injected; fail fast, closing
        what started."""
        planned = list(planned)
        cache: SecretCache = {}
        rest: list[BuiltComponent] = []
        try:
            stores = [p for p in planned if p.config.kind is Kind.SECRETSTORES]
            for item in _secret_store_order(stores):
                built = await self._build_with_secrets(item, cache)
                if built is not None:
                    await self.start([built])
            for item in planned:
                if item.config.kind is not Kind.SECRETSTORES:
                    built = await self._build_with_secrets(item, cache)
                    if built is not None:
                        rest.append(built)
        except Exception:
            await self.close()
            raise
        await self.start(rest)

    async def _build_with_secrets(
        self, item: PlannedComponent, cache: SecretCache
    ) -> BuiltComponent | None:
        secrets: dict[str, str] = {}
        for ref in item.refs:
            try:
                secrets[ref.field] = await self.read_secret(item.where, ref, cache)
            except ConfigError as err:
                if not item.config.ignore_errors:
                    raise
                log.warning("%s is skipped (ignoreErrors): %s", item.where, err)
                return None
        return item.build(secrets)

    async def read_secret(
        self, where: str, ref: SecretRef, cache: SecretCache, *, section: str = "metadata"
    ) -> str:
        """One reference's value (a component's, or an HTTPEndpoint header's: `section`);
        every failure is a ConfigError naming the resource, the field, the store and the key,
        never a value."""
        about = f"{where}: {section}.{ref.field} reads {ref.describe()}"
        built = self.of_kind(Kind.SECRETSTORES).get(ref.store)
        if built is None:
            raise ConfigError(
                f"{about}, but that store is not running (it failed to start and ignoreErrors "
                "is set)"
            )
        store = built.component
        if not isinstance(store, SecretStore):
            raise ConfigError(f"{about}, but that component is not a SecretStore")
        values = cache.get((ref.store, ref.secret))
        if values is None:
            try:
                with anyio.fail_after(SECRET_READ_TIMEOUT_SECONDS):
                    values = await store.get_secret(ref.secret, {})
            except NotFound:
                raise ConfigError(f"{about}, but the store has no secret {ref.secret!r}") from None
            except TimeoutError:
                raise ConfigError(
                    f"{about}: the store did not answer within {SECRET_READ_TIMEOUT_SECONDS:g} s"
                ) from None
            except LayottoError as err:
                raise ConfigError(f"{about}: the store failed: {err.message}") from None
            except Exception as err:
                # A foreign exception's text is not known to be free of credentials.
                raise ConfigError(f"{about}: the store failed: {type(err).__name__}") from None
            cache[(ref.store, ref.secret)] = values
        if ref.key not in values:
            keys = ", ".join(map(repr, sorted(values))) or "none"
            raise ConfigError(f"{about}, but that secret has no key {ref.key!r} (its keys: {keys})")
        return values[ref.key]

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
