"""Plugin discovery (load_catalog), the Catalog, components.build and the ComponentRegistry."""

from __future__ import annotations

import importlib
import importlib.metadata
import logging
import subprocess
import sys
import textwrap
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import pytest
from layotto import components as components_module
from layotto.builtin.memory_state import InMemoryStateStore
from layotto.components import BuiltComponent, ComponentRegistry, build
from layotto.config import ComponentConfig, RuntimeConfig
from layotto.errors import ConfigError, PluginError
from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    Kind,
)
from layotto.plugins import ENTRY_POINT_GROUP, Catalog, PluginInfo, load_catalog

# -- fake plugin distributions ---------------------------------------------------------------


@dataclass(frozen=True)
class FakeDist:
    name: str
    version: str


class FakeEntryPoint:
    """What load_catalog reads of an entry point; loading goes through a real EntryPoint."""

    def __init__(self, name: str, value: str, dist: FakeDist | None) -> None:
        self.name = name
        self.value = value
        self.group = ENTRY_POINT_GROUP
        self.dist = dist
        self._real = importlib.metadata.EntryPoint(name, value, ENTRY_POINT_GROUP)

    def load(self) -> Any:
        return self._real.load()


HEADER = """\
from pydantic import Field
from layotto.plugin import Component, ComponentMetadata, ComponentSpec, Kind, hookimpl

class Meta(ComponentMetadata):
    port: int = 6379
    host: str = Field(min_length=1, default="localhost")

class Thing(Component):
    def __init__(self, metadata, context):
        self.metadata = metadata
        self.context = context
"""


@pytest.fixture
def make_plugin(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Callable[..., FakeEntryPoint]]:
    """Writes a plugin module on sys.path; returns an entry point for it."""
    monkeypatch.syspath_prepend(str(tmp_path))
    created: list[str] = []

    def make(
        dist: str,
        body: str,
        *,
        name: str | None = None,
        version: str = "1.2.3",
        header: bool = True,
    ) -> FakeEntryPoint:
        module = f"fake_layotto_plugin_{uuid.uuid4().hex}"
        source = (HEADER if header else "") + textwrap.dedent(body)
        (tmp_path / f"{module}.py").write_text(source, encoding="utf-8")
        importlib.invalidate_caches()
        created.append(module)
        return FakeEntryPoint(
            name or dist.removeprefix("layotto-"), module, FakeDist(dist, version)
        )

    yield make
    for module in created:
        sys.modules.pop(module, None)


def provides(*types: tuple[str, str]) -> str:
    specs = ", ".join(f"ComponentSpec(Kind({k!r}), {t!r}, Meta, Thing)" for k, t in types)
    return f"""
@hookimpl
def layotto_components():
    return [{specs}]
"""


def real_entry_points() -> list[importlib.metadata.EntryPoint]:
    return list(importlib.metadata.entry_points(group=ENTRY_POINT_GROUP))


# -- load_catalog ----------------------------------------------------------------------------


def test_the_builtin_plugin_is_found_through_its_entry_point() -> None:
    catalog = load_catalog()
    builtin = [p for p in catalog.plugins if p.name == "builtin"]
    assert len(builtin) == 1
    assert builtin[0].distribution == "layotto"
    assert builtin[0].version == importlib.metadata.version("layotto")
    spec = catalog.resolve(Kind.STATE, "in-memory", where="test")
    assert spec.qualified_type == "state.in-memory"
    assert catalog.specs[(Kind.STATE, "in-memory")][1] is builtin[0]
    assert "in-memory" in catalog.types_of(Kind.STATE)


def test_fake_plugins_are_loaded_with_their_distribution(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    fakedb = make_plugin("layotto-fakedb", provides(("state", "fakedb"), ("lock", "fakedb")))
    fakemq = make_plugin("layotto-fakemq", provides(("pubsub", "fakemq")), version="0.9.0")
    catalog = load_catalog([*real_entry_points(), fakemq, fakedb])  # type: ignore[list-item]
    names = [p.name for p in catalog.plugins]
    assert names[0] == "builtin"  # built-ins load first
    assert set(names) >= {"builtin", "fakedb", "fakemq"}
    info = {p.name: p for p in catalog.plugins}
    assert (info["fakemq"].distribution, info["fakemq"].version) == ("layotto-fakemq", "0.9.0")
    assert [s.qualified_type for s in info["fakedb"].specs] == ["state.fakedb", "lock.fakedb"]
    assert catalog.types_of(Kind.STATE) == sorted(t for k, t in catalog.specs if k is Kind.STATE)
    assert {"in-memory", "fakedb"} <= set(catalog.types_of(Kind.STATE))
    assert "fakemq" in catalog.types_of(Kind.PUBSUB)


def test_a_plugin_without_hooks_provides_nothing(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    empty = make_plugin("layotto-empty", "x = 1\n", header=False)
    catalog = load_catalog([empty])  # type: ignore[list-item]
    assert [(p.name, p.specs) for p in catalog.plugins] == [("empty", ())]


def test_a_duplicate_type_names_both_distributions(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    clash = make_plugin("layotto-imposter", provides(("state", "in-memory")), version="6.6.6")
    with pytest.raises(PluginError) as info:
        load_catalog([clash, *real_entry_points()])  # type: ignore[list-item]
    message = str(info.value)
    assert "state.in-memory" in message
    assert f"layotto {importlib.metadata.version('layotto')}" in message
    assert "layotto-imposter 6.6.6" in message


def test_a_duplicate_between_two_third_party_plugins(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    a = make_plugin("layotto-a", provides(("lock", "zk")))
    b = make_plugin("layotto-b", provides(("lock", "zk")))
    with pytest.raises(PluginError) as info:
        load_catalog([a, b])  # type: ignore[list-item]
    assert isinstance(info.value, ConfigError)  # the CLI exits with a config error
    assert "lock.zk" in str(info.value)
    assert "layotto-a" in str(info.value)
    assert "layotto-b" in str(info.value)


def test_a_plugin_whose_import_fails_names_its_distribution(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    broken = make_plugin(
        "layotto-broken", "import module_that_does_not_exist_anywhere\n", header=False
    )
    with pytest.raises(PluginError) as info:
        load_catalog([*real_entry_points(), broken])  # type: ignore[list-item]
    message = str(info.value)
    assert "layotto-broken 1.2.3" in message
    assert "'broken'" in message
    assert "ModuleNotFoundError" in message
    assert "module_that_does_not_exist_anywhere" in message


def test_a_plugin_raising_at_import_names_its_distribution(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    broken = make_plugin("layotto-angry", "raise RuntimeError('no config for you')\n")
    with pytest.raises(PluginError, match=r"layotto-angry 1\.2\.3.*RuntimeError"):
        load_catalog([broken])  # type: ignore[list-item]


def test_a_hook_returning_something_else_fails_clearly(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    odd = make_plugin(
        "layotto-odd",
        """
        @hookimpl
        def layotto_components():
            return ["state.redis"]
        """,
    )
    with pytest.raises(PluginError) as info:
        load_catalog([odd])  # type: ignore[list-item]
    message = str(info.value)
    assert "layotto-odd" in message
    assert "ComponentSpec" in message
    assert "str" in message


def test_a_hook_raising_names_its_distribution(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    bad = make_plugin(
        "layotto-bad",
        """
        @hookimpl
        def layotto_components():
            raise KeyError("missing")
        """,
    )
    with pytest.raises(PluginError, match="layotto-bad"):
        load_catalog([bad])  # type: ignore[list-item]


def test_an_entry_point_without_a_distribution_still_loads(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    ep = make_plugin("layotto-x", provides(("sequencer", "x")))
    ep.dist = None
    catalog = load_catalog([ep])  # type: ignore[list-item]
    assert catalog.plugins[0].distribution == "<unknown distribution>"


# -- Catalog ---------------------------------------------------------------------------------


class Meta(ComponentMetadata):
    port: int = 6379
    host: str = "localhost"


class Thing(Component):
    def __init__(self, metadata: Meta, context: ComponentContext) -> None:
        self.metadata = metadata
        self.context = context


def catalog_of(*types: tuple[Kind, str]) -> Catalog:
    catalog = Catalog()
    specs = tuple(ComponentSpec(k, t, Meta, Thing) for k, t in types)
    catalog.add(PluginInfo("fake", "layotto-fake", "1.0", specs))
    return catalog


def test_resolve_of_an_unknown_type_lists_the_installed_types() -> None:
    catalog = catalog_of((Kind.STATE, "redis"), (Kind.STATE, "etcd"), (Kind.LOCK, "redis"))
    with pytest.raises(ConfigError) as info:
        catalog.resolve(Kind.STATE, "mongo", where="conf.yaml: component 'db'")
    message = str(info.value)
    assert message.startswith("conf.yaml: component 'db'")
    assert "state.mongo" in message
    assert "etcd, redis" in message
    with pytest.raises(ConfigError, match="installed pubsub types: none"):
        catalog.resolve(Kind.PUBSUB, "kafka", where="x")


# -- components.build --------------------------------------------------------------------------


def config_with(*components: ComponentConfig, app_id: str = "app1") -> RuntimeConfig:
    return RuntimeConfig.model_validate({"app": {"id": app_id}, "components": components})


def test_build_validates_and_coerces_metadata() -> None:
    catalog = catalog_of((Kind.STATE, "redis"))
    cc = ComponentConfig(
        name="cache",
        kind=Kind.STATE,
        type="redis",
        metadata={"port": "6380"},
        source="/etc/layotto/components.yaml",
    )
    [item] = build(config_with(cc), catalog)
    assert isinstance(item, BuiltComponent)
    assert item.config is cc
    assert item.spec.qualified_type == "state.redis"
    assert isinstance(item.component, Thing)
    assert item.component.metadata == Meta(port=6380, host="localhost")
    assert item.component.context == ComponentContext("cache", "app1")


def test_build_error_names_file_component_and_field() -> None:
    catalog = catalog_of((Kind.STATE, "redis"))
    cc = ComponentConfig(
        name="cache",
        kind=Kind.STATE,
        type="redis",
        metadata={"port": "not-a-port"},
        source="/etc/layotto/components.yaml",
    )
    with pytest.raises(ConfigError) as info:
        build(config_with(cc), catalog)
    message = str(info.value)
    assert "/etc/layotto/components.yaml" in message
    assert "'cache'" in message
    assert "metadata.port" in message
    assert "integer" in message


def test_build_of_an_unknown_type_names_the_component() -> None:
    cc = ComponentConfig(name="db", kind=Kind.STATE, type="mongo", source="a.yaml")
    with pytest.raises(ConfigError, match=r"a\.yaml: component 'db' \(state\.mongo\).*redis"):
        build(config_with(cc), catalog_of((Kind.STATE, "redis")))


def test_build_warns_about_unknown_metadata(caplog: pytest.LogCaptureFixture) -> None:
    cc = ComponentConfig(
        name="cache",
        kind=Kind.STATE,
        type="redis",
        metadata={"port": "1", "redisHots": "typo", "other": "x"},
        source="c.yaml",
    )
    with caplog.at_level(logging.WARNING, logger="layotto.components"):
        [item] = build(config_with(cc), catalog_of((Kind.STATE, "redis")))
    assert isinstance(item.component, Thing)
    assert item.component.metadata.port == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "'cache'" in warnings[0]
    assert "redisHots" in warnings[0]
    assert "other" in warnings[0]


def test_build_with_the_real_catalog() -> None:
    cc = ComponentConfig(name="statestore", kind=Kind.STATE, type="in-memory")
    [item] = build(config_with(cc), load_catalog())
    assert isinstance(item.component, InMemoryStateStore)


# -- ComponentRegistry (backend-neutral: both backends) ----------------------------------------


class Lifecycle(Component):
    def __init__(
        self,
        name: str,
        journal: list[str],
        *,
        fail: Exception | None = None,
        hang: bool = False,
        close_fails: bool = False,
    ) -> None:
        self.name = name
        self.journal = journal
        self.fail = fail
        self.hang = hang
        self.close_fails = close_fails

    async def init(self) -> None:
        self.journal.append(f"init {self.name}")
        if self.hang:
            await anyio.sleep_forever()
        if self.fail is not None:
            raise self.fail

    async def close(self) -> None:
        self.journal.append(f"close {self.name}")
        if self.close_fails:
            raise RuntimeError("close failed")


def item(
    name: str, kind: Kind, component: Component, *, ignore_errors: bool = False
) -> BuiltComponent:
    config = ComponentConfig(name=name, kind=kind, type="fake", ignore_errors=ignore_errors)
    return BuiltComponent(config, ComponentSpec(kind, "fake", Meta, Thing), component)


@pytest.mark.anyio
async def test_registry_starts_secret_and_configuration_stores_first() -> None:
    journal: list[str] = []
    registry = ComponentRegistry()
    items = [
        item("state", Kind.STATE, Lifecycle("state", journal)),
        item("conf", Kind.CONFIGURATION, Lifecycle("conf", journal)),
        item("lock", Kind.LOCK, Lifecycle("lock", journal)),
        item("secrets", Kind.SECRETSTORES, Lifecycle("secrets", journal)),
    ]
    await registry.start(items)
    assert journal == ["init conf", "init secrets", "init state", "init lock"]
    assert set(registry.of_kind(Kind.STATE)) == {"state"}
    assert registry.of_kind(Kind.PUBSUB) == {}
    assert {b.config.name for b in registry} == {"state", "conf", "lock", "secrets"}
    journal.clear()
    await registry.close()
    assert journal == ["close lock", "close state", "close secrets", "close conf"]  # reversed
    assert list(registry) == []


@pytest.mark.anyio
async def test_registry_fails_fast_and_closes_what_started() -> None:
    journal: list[str] = []
    registry = ComponentRegistry()
    items = [
        item("a", Kind.STATE, Lifecycle("a", journal)),
        item("b", Kind.STATE, Lifecycle("b", journal, fail=ConnectionError("refused"))),
        item("c", Kind.STATE, Lifecycle("c", journal)),
    ]
    with pytest.raises(ConfigError) as info:
        await registry.start(items)
    assert "'b'" in str(info.value)
    assert "state.fake" in str(info.value)
    assert "ConnectionError" in str(info.value)
    assert journal == ["init a", "init b", "close a"]
    assert list(registry) == []


@pytest.mark.anyio
async def test_registry_skips_a_failing_component_with_ignore_errors() -> None:
    journal: list[str] = []
    registry = ComponentRegistry()
    items = [
        item("a", Kind.STATE, Lifecycle("a", journal, fail=RuntimeError("x")), ignore_errors=True),
        item("b", Kind.STATE, Lifecycle("b", journal)),
    ]
    await registry.start(items)
    assert set(registry.of_kind(Kind.STATE)) == {"b"}


@pytest.mark.anyio
async def test_registry_init_timeout(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(components_module, "INIT_TIMEOUT_SECONDS", 0.05)
    journal: list[str] = []
    registry = ComponentRegistry()
    with anyio.fail_after(5), pytest.raises(ConfigError, match=r"'slow'.*timed out"):
        await registry.start([item("slow", Kind.STATE, Lifecycle("slow", journal, hang=True))])


@pytest.mark.anyio
async def test_registry_close_survives_failures_and_cancellation() -> None:
    journal: list[str] = []
    registry = ComponentRegistry()
    await registry.start(
        [
            item("a", Kind.STATE, Lifecycle("a", journal)),
            item("b", Kind.LOCK, Lifecycle("b", journal, close_fails=True)),
        ]
    )
    journal.clear()
    with anyio.CancelScope() as scope:
        scope.cancel()
        await registry.close()  # shielded: still closes everything
    assert sorted(journal) == ["close a", "close b"]


def test_two_plugins_with_one_name_name_both_distributions(
    make_plugin: Callable[..., FakeEntryPoint],
) -> None:
    first = make_plugin("layotto-one", provides(("state", "one")), name="same")
    second = make_plugin("layotto-two", provides(("state", "two")), name="same")
    with pytest.raises(PluginError) as info:
        load_catalog([first, second])  # type: ignore[list-item]
    assert "layotto-one" in str(info.value)
    assert "layotto-two" in str(info.value)


def test_specs_given_as_import_strings_load_only_when_built() -> None:
    spec = ComponentSpec(
        Kind.STATE,
        "lazy",
        "layotto.builtin.memory_state:InMemoryStateMetadata",
        "layotto.builtin.memory_state:InMemoryStateStore.create",
    )
    from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore

    assert spec.metadata_model is InMemoryStateMetadata
    assert isinstance(
        spec.create(InMemoryStateMetadata(), ComponentContext("s", "a")), InMemoryStateStore
    )


def test_a_spec_whose_module_fails_to_import_is_a_config_error() -> None:
    catalog = Catalog()
    catalog.add(
        PluginInfo(
            "broken",
            "layotto-broken",
            "1.0",
            (ComponentSpec(Kind.STATE, "broken", "no_such_module:Meta", "no_such_module:make"),),
        )
    )
    config = RuntimeConfig(
        components=(ComponentConfig(name="s", kind=Kind.STATE, type="broken", source="f.yaml"),)
    )
    with pytest.raises(ConfigError) as info:
        build(config, catalog)
    assert "state.broken" in str(info.value)
    assert "no_such_module" in str(info.value)


def test_listing_plugins_imports_no_backend_client() -> None:
    """Installed plugins must not cost startup time: their modules load only when used."""
    probe = (
        "import sys; from layotto.plugins import load_catalog; load_catalog(); "
        "print(sorted(m for m in ('redis', 'aetcd', 'grpc', 'httpx') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
