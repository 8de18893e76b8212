"""Secret references in component metadata: Dapr `secretKeyRef` + `auth.secretstore`, the native
format's same spelling, Layotto's `secret_ref`; read at startup through the secret stores,
checked (never read) by `layotto check`; every failure names the component, the field, the store
and the key, and no secret value reaches a message or a log."""

from __future__ import annotations

import json
import logging
import subprocess
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import pytest
from layotto import components as components_module
from layotto.components import ComponentRegistry, build, plan, validate
from layotto.config import ComponentConfig, RuntimeConfig, SecretRef, load_config
from layotto.errors import ConfigError
from layotto.plugin import (
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    Kind,
    NotFound,
    SecretStore,
)
from layotto.plugins import Catalog, PluginInfo, load_catalog
from pydantic import Field, field_validator

SECRET = "s3cr3t-value-42"  # must never show up in a message or a log
STORE_SECRETS = {"redis": {"password": SECRET, "port": "6380"}, "token": "t0k3n-value"}


# -- test components -------------------------------------------------------------------------


class ProbeMetadata(ComponentMetadata):
    password: str = Field(min_length=1)  # required: a secret must fill it
    port: int = 0
    host: str = "localhost"

    @field_validator("host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        if value.startswith("bad"):
            raise ValueError(f"not a host: {value}")  # quotes the value, as plugins may
        return value


class Probe(Component):
    def __init__(self, metadata: ProbeMetadata) -> None:
        self.metadata = metadata

    @classmethod
    def create(cls, metadata: ProbeMetadata, context: ComponentContext) -> Probe:
        return cls(metadata)


class TripwireMetadata(ComponentMetadata):
    mode: str = "ok"  # ok | hang | fail-foreign | fail-unavailable | fail-init


TRIPPED: list[str] = []


class Tripwire(SecretStore):
    """A secret store that records every call: proves what is (not) read, and fails on demand."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    @classmethod
    def create(cls, metadata: TripwireMetadata, context: ComponentContext) -> Tripwire:
        return cls(metadata.mode)

    async def init(self) -> None:
        TRIPPED.append("init")
        if self.mode == "fail-init":
            raise ConnectionError("vault unreachable")

    async def get_secret(self, key: str, metadata: Mapping[str, str]) -> dict[str, str]:
        TRIPPED.append(f"get {key}")
        if self.mode == "hang":
            await anyio.sleep_forever()
        if self.mode == "fail-foreign":
            raise ConnectionError(f"cannot reach vault://admin:{SECRET}@10.0.0.7")
        if self.mode == "fail-unavailable":
            raise BackendUnavailable("the vault is unreachable")
        if key not in STORE_SECRETS:
            raise NotFound(f"secret {key!r} not found")
        value = STORE_SECRETS[key]
        return dict(value) if isinstance(value, dict) else {key: value}

    async def bulk_get_secrets(self, metadata: Mapping[str, str]) -> dict[str, dict[str, str]]:
        raise AssertionError("not used")


@pytest.fixture
def catalog() -> Catalog:
    catalog = load_catalog()
    catalog.add(
        PluginInfo(
            "test-secret-refs",
            "layotto-tests",
            "0",
            (
                ComponentSpec(Kind.STATE, "probe", ProbeMetadata, Probe.create),
                ComponentSpec(Kind.SECRETSTORES, "tripwire", TripwireMetadata, Tripwire.create),
            ),
        )
    )
    TRIPPED.clear()
    return catalog


async def start(config: RuntimeConfig, catalog: Catalog) -> ComponentRegistry:
    registry = ComponentRegistry()
    await registry.start_planned(plan(config, catalog))
    return registry


def probe(registry: ComponentRegistry, name: str = "cache") -> ProbeMetadata:
    component = registry.of_kind(Kind.STATE)[name].component
    assert isinstance(component, Probe)
    return component.metadata


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


# -- the three config formats ----------------------------------------------------------------

NATIVE = """\
components:
  - name: vault
    type: secretstores.in-memory
    metadata:
      secrets: {redis: {password: s3cr3t-value-42, port: "6380"}}
  - name: cache
    type: state.probe
    auth: {secretstore: vault}
    metadata:
      host: db.local
      password: {secretKeyRef: {name: redis, key: password}}
      port: {secretKeyRef: {name: redis, key: port}}
"""

DAPR = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {name: vault}
spec:
  type: secretstores.in-memory
  version: v1
  metadata:
  - name: secrets
    value: '{"redis": {"password": "s3cr3t-value-42", "port": "6380"}}'
---
apiVersion: dapr.io/v1alpha1
kind: Component
auth:
  secretstore: vault
metadata: {name: cache}
spec:
  type: state.probe
  version: v1
  metadata:
  - name: host
    value: db.local
  - name: password
    secretKeyRef: {name: redis, key: password}
  - name: port
    secretKeyRef: {name: redis, key: port}
"""

LAYOTTO = {
    "grpc_config": {
        "secret_store": {
            "vault": {
                "type": "in-memory",
                "metadata": {"secrets": {"redis": STORE_SECRETS["redis"]}},
            }
        },
        "state": {
            "cache": {
                "type": "probe",
                "metadata": {"host": "db.local", "password": ""},
                "secret_ref": [
                    {"store_name": "vault", "key": "redis", "sub_key": "password"},
                    {"store_name": "vault", "key": "redis", "sub_key": "port", "inject_as": "port"},
                ],
            }
        },
    }
}

EXPECTED_REFS = (
    SecretRef(field="password", store="vault", secret="redis", key="password"),
    SecretRef(field="port", store="vault", secret="redis", key="port"),
)


def load(tmp_path: Path, fmt: str) -> RuntimeConfig:
    if fmt == "native":
        return load_config(write(tmp_path / "layotto.yaml", NATIVE))
    if fmt == "dapr":
        write(tmp_path / "components" / "all.yaml", DAPR)
        return load_config(None, [tmp_path / "components"])
    path = tmp_path / "layotto.json"
    path.write_text(json.dumps(LAYOTTO), encoding="utf-8")
    return load_config(path)


FORMATS = ["native", "dapr", "layotto"]


@pytest.mark.parametrize("fmt", FORMATS)
def test_references_are_kept_apart_from_the_metadata(tmp_path: Path, fmt: str) -> None:
    config = load(tmp_path, fmt)
    cache = next(c for c in config.components if c.name == "cache")
    # The Layotto format names its store field differently: compare the rest.
    refs = tuple(
        r.model_copy(update={"store_field": "auth.secretstore"}) for r in cache.secret_refs
    )
    assert refs == EXPECTED_REFS
    assert cache.metadata == {"host": "db.local"}  # the ref wins over an inline placeholder
    assert SECRET not in repr(cache)


@pytest.mark.anyio
@pytest.mark.parametrize("fmt", FORMATS)
async def test_every_format_resolves_at_startup(
    tmp_path: Path, fmt: str, catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    config = load(tmp_path, fmt)
    with caplog.at_level(logging.DEBUG):
        registry = await start(config, catalog)
    try:
        metadata = probe(registry)
        assert metadata.password == SECRET
        assert metadata.port == 6380  # a secret is text: coerced by the component's model
        assert metadata.host == "db.local"
    finally:
        await registry.close()
    assert "component started" in caplog.text
    assert SECRET not in caplog.text


def test_dapr_key_defaults_to_the_secret_name(tmp_path: Path) -> None:
    write(
        tmp_path / "c" / "cache.yaml",
        """\
        kind: Component
        auth: {secretstore: vault}
        metadata: {name: cache}
        spec:
          type: state.probe
          metadata:
          - {name: password, secretKeyRef: {name: token}}
        """,
    )
    [cache] = load_config(None, [tmp_path / "c"]).components
    assert cache.secret_refs == (
        SecretRef(field="password", store="vault", secret="token", key="token"),
    )


def test_layotto_sub_key_defaults_to_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.json"
    entry = {"type": "probe", "secret_ref": [{"store_name": "vault", "key": "token"}]}
    path.write_text(json.dumps({"grpc_config": {"state": {"cache": entry}}}), encoding="utf-8")
    [cache] = load_config(path).components
    assert cache.secret_refs == (
        SecretRef(
            field="token", store="vault", secret="token", key="token", store_field="store_name"
        ),
    )


@pytest.mark.anyio
async def test_the_only_secret_store_needs_no_name(catalog: Catalog) -> None:
    config = RuntimeConfig(
        components=(
            ComponentConfig(name="tw", kind=Kind.SECRETSTORES, type="tripwire"),
            ComponentConfig(
                name="cache",
                kind=Kind.STATE,
                type="probe",
                secret_refs=(SecretRef(field="password", secret="token", key="token"),),
            ),
        )
    )
    registry = await start(config, catalog)
    try:
        assert probe(registry).password == "t0k3n-value"
    finally:
        await registry.close()
    assert TRIPPED == ["init", "get token"]


@pytest.mark.anyio
async def test_a_secret_is_read_once_for_several_fields(catalog: Catalog) -> None:
    refs = (
        SecretRef(field="password", store="tw", secret="redis", key="password"),
        SecretRef(field="port", store="tw", secret="redis", key="port"),
    )
    config = RuntimeConfig(
        components=(
            ComponentConfig(name="tw", kind=Kind.SECRETSTORES, type="tripwire"),
            ComponentConfig(name="cache", kind=Kind.STATE, type="probe", secret_refs=refs),
        )
    )
    registry = await start(config, catalog)
    await registry.close()
    assert TRIPPED == ["init", "get redis"]


@pytest.mark.anyio
async def test_a_secret_store_may_read_its_metadata_from_another(
    tmp_path: Path, catalog: Catalog
) -> None:
    """local.file's `secretsFile` from an in-memory store: the stores start in dependency
    order, whatever order the config lists them in."""
    secrets_file = tmp_path / "s.json"
    secrets_file.write_text(json.dumps({"password": SECRET}), encoding="utf-8")
    config = load_config(
        write(
            tmp_path / "layotto.yaml",
            f"""\
            components:
              - name: cache
                type: state.probe
                auth: {{secretstore: files}}
                metadata: {{password: {{secretKeyRef: {{name: password}}}}}}
              - name: files
                type: secretstores.local.file
                auth: {{secretstore: paths}}
                metadata: {{secretsFile: {{secretKeyRef: {{name: where}}}}}}
              - name: paths
                type: secretstores.in-memory
                metadata: {{secrets: {{where: "{secrets_file}"}}}}
            """,
        )
    )
    registry = await start(config, catalog)
    try:
        assert probe(registry).password == SECRET
    finally:
        await registry.close()


# -- errors ----------------------------------------------------------------------------------


def refs_config(*stores: str, store: str = "tw", secret: str = "redis", key: str = "password",
                ignore_errors: bool = False) -> RuntimeConfig:  # fmt: skip
    return RuntimeConfig(
        components=(
            *(ComponentConfig(name=s, kind=Kind.SECRETSTORES, type="tripwire") for s in stores),
            ComponentConfig(
                name="cache",
                kind=Kind.STATE,
                type="probe",
                source="conf.yaml",
                ignore_errors=ignore_errors,
                secret_refs=(SecretRef(field="password", store=store, secret=secret, key=key),),
            ),
        )
    )


def assert_names_everything(message: str, store: str = "tw", key: str = "password") -> None:
    assert "conf.yaml" in message
    assert "component 'cache'" in message
    assert "metadata.password" in message
    assert "secret 'redis'" in message
    assert f"key {key!r}" in message
    assert repr(store) in message
    assert SECRET not in message


def test_a_store_that_is_not_configured_fails_the_plan(catalog: Catalog) -> None:
    with pytest.raises(ConfigError) as info:
        plan(refs_config("tw", store="vault"), catalog)
    assert_names_everything(str(info.value), store="vault")
    assert "not configured" in str(info.value)
    assert "'tw'" in str(info.value)  # the stores there are
    assert TRIPPED == []


@pytest.mark.parametrize("stores", [(), ("a", "b")])
def test_no_store_named_needs_exactly_one_store(catalog: Catalog, stores: tuple[str, ...]) -> None:
    with pytest.raises(ConfigError) as info:
        plan(refs_config(*stores, store=""), catalog)
    message = str(info.value)
    assert "component 'cache'" in message
    assert "metadata.password" in message
    assert "secret 'redis' key 'password'" in message
    if stores:
        assert "2 are configured ('a', 'b'): name one with auth.secretstore" in message
    else:
        assert "no secret store is configured" in message


def test_the_layotto_format_says_store_name_when_it_names_no_store(
    tmp_path: Path, catalog: Catalog
) -> None:
    path = tmp_path / "c.json"
    entry = {"type": "probe", "secret_ref": [{"key": "redis", "sub_key": "password"}]}
    stores = {"a": {"type": "local.env"}, "b": {"type": "local.env"}}
    grpc_config = {"secret_store": stores, "state": {"cache": entry}}
    path.write_text(json.dumps({"grpc_config": grpc_config}), encoding="utf-8")
    with pytest.raises(ConfigError, match="name one with store_name"):
        plan(load_config(path), catalog)


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("secret", "key", "fragment"),
    [
        ("nope", "password", "has no secret 'nope'"),
        ("redis", "user", "has no key 'user' (its keys: 'password', 'port')"),
    ],
)
async def test_a_missing_secret_or_key_stops_startup(
    catalog: Catalog, caplog: pytest.LogCaptureFixture, secret: str, key: str, fragment: str
) -> None:
    registry = ComponentRegistry()
    with caplog.at_level(logging.DEBUG), pytest.raises(ConfigError) as info:
        await registry.start_planned(plan(refs_config("tw", secret=secret, key=key), catalog))
    message = str(info.value)
    assert fragment in message
    assert "component 'cache'" in message
    assert "metadata.password" in message
    assert f"secret {secret!r} key {key!r} in secret store 'tw'" in message
    assert SECRET not in message
    assert SECRET not in caplog.text
    assert list(registry) == []  # the secret store that started is closed again


@pytest.mark.anyio
@pytest.mark.parametrize(
    ("mode", "fragment"),
    [
        ("hang", "did not answer within 0.2 s"),
        ("fail-foreign", "the store failed: ConnectionError"),
        ("fail-unavailable", "the store failed: the vault is unreachable"),
    ],
)
async def test_a_failing_store_stops_startup_without_leaking(
    catalog: Catalog, monkeypatch: pytest.MonkeyPatch, mode: str, fragment: str
) -> None:
    monkeypatch.setattr(components_module, "SECRET_READ_TIMEOUT_SECONDS", 0.2)
    config = refs_config()
    tw = ComponentConfig(
        name="tw", kind=Kind.SECRETSTORES, type="tripwire", metadata={"mode": mode}
    )
    config = config.model_copy(update={"components": (tw, config.components[-1])})
    with pytest.raises(ConfigError) as info:
        await start(config, catalog)
    assert fragment in str(info.value)
    assert_names_everything(str(info.value))
    assert "10.0.0.7" not in str(info.value)


@pytest.mark.anyio
async def test_a_reference_to_a_store_that_failed_with_ignore_errors(catalog: Catalog) -> None:
    config = refs_config()
    tw = ComponentConfig(
        name="tw",
        kind=Kind.SECRETSTORES,
        type="tripwire",
        metadata={"mode": "fail-init"},
        ignore_errors=True,
    )
    config = config.model_copy(update={"components": (tw, config.components[-1])})
    registry = ComponentRegistry()
    with pytest.raises(ConfigError) as info:
        await registry.start_planned(plan(config, catalog))
    assert "that store is not running" in str(info.value)
    assert_names_everything(str(info.value))
    assert list(registry) == []


@pytest.mark.anyio
async def test_ignore_errors_skips_a_component_whose_secret_is_missing(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING):
        registry = await start(refs_config("tw", secret="nope", ignore_errors=True), catalog)
    assert registry.of_kind(Kind.STATE) == {}
    assert set(registry.of_kind(Kind.SECRETSTORES)) == {"tw"}
    await registry.close()
    assert "ignoreErrors" in caplog.text
    assert "has no secret 'nope'" in caplog.text


@pytest.mark.anyio
async def test_a_bad_secret_value_is_reported_without_quoting_it(catalog: Catalog) -> None:
    refs = (
        SecretRef(field="password", store="tw", secret="token", key="token"),
        SecretRef(field="host", store="tw", secret="redis", key="password"),
        SecretRef(field="port", store="tw", secret="redis", key="password"),
    )
    STORE_SECRETS["redis"]["password"] = "bad-" + SECRET
    try:
        config = RuntimeConfig(
            components=(
                ComponentConfig(name="tw", kind=Kind.SECRETSTORES, type="tripwire"),
                ComponentConfig(name="cache", kind=Kind.STATE, type="probe", secret_refs=refs),
            )
        )
        with pytest.raises(ConfigError) as info:
            await start(config, catalog)
    finally:
        STORE_SECRETS["redis"]["password"] = SECRET
    message = str(info.value)
    assert "metadata.host: invalid value (the message is withheld" in message
    assert "metadata.port: Input should be a valid integer" in message
    assert SECRET not in message


def test_a_secret_store_reading_from_itself_or_in_a_cycle(catalog: Catalog) -> None:
    def store(name: str, reads_from: str) -> ComponentConfig:
        ref = SecretRef(field="mode", store=reads_from, secret="m", key="m")
        return ComponentConfig(
            name=name, kind=Kind.SECRETSTORES, type="tripwire", secret_refs=(ref,)
        )

    with pytest.raises(ConfigError, match=r"'a'.*that is itself"):
        plan(RuntimeConfig(components=(store("a", "a"),)), catalog)
    with pytest.raises(ConfigError, match="'a', 'b' read their metadata from each other"):
        plan(RuntimeConfig(components=(store("a", "b"), store("b", "a"))), catalog)


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        (
            {"metadata": {"password": {"secretKeyRef": {"name": "r"}, "x": 1}}},
            "only 'secretKeyRef'",
        ),
        ({"metadata": {"password": {"secretKeyRef": {"key": "k"}}}}, "needs 'name'"),
        ({"metadata": {"password": {"secretKeyRef": "r"}}}, "must be a mapping"),
        ({"auth": {"secretstore": "v", "other": 1}}, "field 'auth'"),
        ({"auth": "vault"}, "field 'auth'"),
        ({"metadata": {"keyPrefix": {"secretKeyRef": {"name": "r"}}}}, "sidecar's own setting"),
    ],
)
def test_bad_native_references(tmp_path: Path, entry: dict[str, Any], fragment: str) -> None:
    component = {"name": "cache", "type": "state.probe", **entry}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"components": [component]}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(path) in str(info.value)
    assert "'cache'" in str(info.value)
    assert fragment in str(info.value)


@pytest.mark.parametrize(
    ("secret_ref", "fragment"),
    [
        ("vault", "must be a list"),
        (["vault"], "secret_ref[0] must be a mapping"),
        ([{"store_name": "v"}], "'key' (the secret's name) is required"),
        ([{"key": "k", "subkey": "x"}], "unknown field(s) 'subkey'"),
        ([{"key": "k", "inject_as": "a"}, {"key": "j", "inject_as": "a"}], "two secret references"),
    ],
)
def test_bad_layotto_references(tmp_path: Path, secret_ref: Any, fragment: str) -> None:
    entry = {"type": "probe", "secret_ref": secret_ref}
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"grpc_config": {"state": {"cache": entry}}}), encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert "state component 'cache'" in str(info.value)
    assert fragment in str(info.value)


def test_build_refuses_components_that_need_secrets(catalog: Catalog) -> None:
    with pytest.raises(ConfigError, match=r"component 'cache'.*secret store"):
        build(refs_config("tw"), catalog)


# -- layotto check ---------------------------------------------------------------------------


def test_validate_checks_references_without_reading_them(catalog: Catalog) -> None:
    # `password` is required and only a secret gives it: the check accepts that.
    planned = validate(refs_config("tw"), catalog)
    assert [p.config.name for p in planned] == ["tw", "cache"]
    assert [r.store for r in planned[1].refs] == ["tw"]
    assert TRIPPED == []  # not started, nothing read


def test_validate_still_reports_what_is_wrong_besides_the_secrets(catalog: Catalog) -> None:
    config = refs_config("tw")
    cache = config.components[1].model_copy(update={"metadata": {"port": "many"}})
    with pytest.raises(ConfigError, match=r"metadata\.port") as info:
        validate(config.model_copy(update={"components": (config.components[0], cache)}), catalog)
    assert "metadata.password" not in str(info.value)  # a secret fills that one


def test_validate_warns_about_unknown_names_once(
    catalog: Catalog, caplog: pytest.LogCaptureFixture
) -> None:
    config = refs_config("tw")
    cache = config.components[1].model_copy(update={"metadata": {"pasword": "typo"}})
    extra = SecretRef(field="passwrd", store="tw", secret="redis", key="password")
    cache = cache.model_copy(update={"secret_refs": (*cache.secret_refs, extra)})
    with caplog.at_level(logging.WARNING, logger="layotto.components"):
        validate(config.model_copy(update={"components": (config.components[0], cache)}), catalog)
    [warning] = [r.getMessage() for r in caplog.records]
    assert "'cache'" in warning
    assert "pasword" in warning
    assert "passwrd" in warning


def test_layotto_check_reads_no_secret(tmp_path: Path) -> None:
    """The CLI: a local.file store whose file does not exist passes the check (nothing is
    read), and a reference to a store that is not configured fails it."""
    good = write(
        tmp_path / "good.yaml",
        f"""\
        components:
          - name: files
            type: secretstores.local.file
            metadata: {{secretsFile: "{tmp_path / "absent.json"}"}}
          - name: statestore
            type: state.in-memory
            auth: {{secretstore: files}}
            metadata: {{keyPrefix: none, anything: {{secretKeyRef: {{name: x}}}}}}
        """,
    )
    bad = write(
        tmp_path / "bad.yaml", good.read_text().replace("secretstore: files", "secretstore: vault")
    )
    result = check_cli(good)
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 2 component(s)" in result.stdout
    result = check_cli(bad)
    assert result.returncode != 0
    assert "secret store 'vault', which is not configured" in result.stderr
    assert "Traceback" not in result.stderr


def check_cli(config: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "layotto", "check", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        stdin=subprocess.DEVNULL,
    )
