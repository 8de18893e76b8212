"""The built-in secret stores: secretstores.in-memory, local.file and local.env (components-contrib
behaviour: flattening, multiValued, prefixes), called through the SPI on both anyio backends."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from layotto.builtin.secret_stores import (
    InMemorySecretStore,
    InMemorySecretStoreMetadata,
    LocalEnvSecretStore,
    LocalEnvSecretStoreMetadata,
    LocalFileSecretStore,
    LocalFileSecretStoreMetadata,
)
from layotto.plugin import (
    ComponentContext,
    ComponentError,
    NotFound,
    SecretStore,
    SecretStoreFeature,
)
from pydantic import ValidationError

pytestmark = pytest.mark.anyio

CONTEXT = ComponentContext("secrets", "app1")
MULTI = SecretStoreFeature.MULTIPLE_KEY_VALUES_PER_SECRET

# The example of Dapr's local file secret store docs, plus the JSON types it does not show.
DAPR_EXAMPLE = {
    "redisPassword": "your redis password",
    "connectionStrings": {
        "sql": "your sql connection string",
        "mysql": "your mysql connection string",
    },
}


def in_memory(**metadata: Any) -> SecretStore:
    store = InMemorySecretStore.create(
        InMemorySecretStoreMetadata.model_validate(metadata), CONTEXT
    )
    assert isinstance(store, SecretStore)
    return store


async def local_file(path: Path, **metadata: Any) -> SecretStore:
    model = LocalFileSecretStoreMetadata.model_validate({"secretsFile": str(path), **metadata})
    store = LocalFileSecretStore.create(model, CONTEXT)
    assert isinstance(store, SecretStore)
    await store.init()
    return store


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def local_env(**metadata: Any) -> SecretStore:
    model = LocalEnvSecretStoreMetadata.model_validate(metadata)
    store = LocalEnvSecretStore.create(model, CONTEXT)
    assert isinstance(store, SecretStore)
    return store


# -- secretstores.in-memory ------------------------------------------------------------------


async def test_in_memory_single_and_multi_valued_secrets() -> None:
    store = in_memory(secrets={"token": "t0k", "db": {"user": "app", "password": "pw"}})
    assert await store.get_secret("token", {}) == {"token": "t0k"}
    assert await store.get_secret("db", {}) == {"user": "app", "password": "pw"}
    assert await store.bulk_get_secrets({}) == {
        "token": {"token": "t0k"},
        "db": {"user": "app", "password": "pw"},
    }
    assert MULTI in store.features


async def test_in_memory_answers_copies() -> None:
    store = in_memory(secrets={"db": {"user": "app"}})
    (await store.get_secret("db", {}))["user"] = "changed"
    (await store.bulk_get_secrets({}))["db"]["user"] = "changed"
    assert await store.get_secret("db", {}) == {"user": "app"}


async def test_in_memory_accepts_a_json_string_as_dapr_yaml_gives_it() -> None:
    store = in_memory(secrets=json.dumps({"db": {"port": 5432, "tls": True}, "pin": 7}))
    assert await store.get_secret("db", {}) == {"port": "5432", "tls": "true"}
    assert await store.get_secret("pin", {}) == {"pin": "7"}


async def test_in_memory_default_is_empty_and_missing_is_not_found() -> None:
    store = in_memory()
    assert await store.bulk_get_secrets({}) == {}
    with pytest.raises(NotFound, match="'nope'"):
        await store.get_secret("nope", {})


@pytest.mark.parametrize("secrets", ['{"db": "hunter2"', "[1, 2]", '"hunter2"', 42])
def test_in_memory_bad_secrets_are_refused_without_quoting_them(secrets: Any) -> None:
    with pytest.raises(ValidationError) as info:
        InMemorySecretStoreMetadata.model_validate({"secrets": secrets})
    assert "secrets" in _messages(info.value)
    assert "hunter2" not in _messages(info.value)


def _messages(err: ValidationError) -> str:
    """What the loader shows of a validation error: locations and messages, not the input."""
    return "; ".join(f"{e['loc']}: {e['msg']}" for e in err.errors())


# -- secretstores.local.file -----------------------------------------------------------------


async def test_local_file_flattens_nested_keys_as_dapr_does(tmp_path: Path) -> None:
    store = await local_file(write_json(tmp_path / "s.json", DAPR_EXAMPLE))
    assert await store.get_secret("redisPassword", {}) == {"redisPassword": "your redis password"}
    assert await store.get_secret("connectionStrings:sql", {}) == {
        "connectionStrings:sql": "your sql connection string"
    }
    assert await store.bulk_get_secrets({}) == {
        "redisPassword": {"redisPassword": "your redis password"},
        "connectionStrings:sql": {"connectionStrings:sql": "your sql connection string"},
        "connectionStrings:mysql": {"connectionStrings:mysql": "your mysql connection string"},
    }
    assert store.features == frozenset()
    with pytest.raises(NotFound):
        await store.get_secret("connectionStrings", {})  # only the leaves are secrets


async def test_local_file_values_are_text_with_numbers_as_written(tmp_path: Path) -> None:
    path = tmp_path / "s.json"
    path.write_text(
        '{"port": 6379, "ratio": 1.50, "big": 100000000000000000000001, "on": true, '
        '"off": false, "none": null, "list": ["a", {"b": 2}], "empty": {}}',
        encoding="utf-8",
    )
    store = await local_file(path)
    values = {k: v[k] for k, v in (await store.bulk_get_secrets({})).items()}
    assert values == {
        "port": "6379",
        "ratio": "1.50",
        "big": "100000000000000000000001",
        "on": "true",
        "off": "false",
        "none": "",
        "list:0": "a",
        "list:1:b": "2",
    }


async def test_local_file_nested_separator(tmp_path: Path) -> None:
    store = await local_file(write_json(tmp_path / "s.json", DAPR_EXAMPLE), nestedSeparator=".")
    assert await store.get_secret("connectionStrings.mysql", {}) == {
        "connectionStrings.mysql": "your mysql connection string"
    }
    # Dapr: an empty separator is the default one.
    default = await local_file(tmp_path / "s.json", nestedSeparator="")
    assert "connectionStrings:sql" in await default.bulk_get_secrets({})


async def test_local_file_multi_valued(tmp_path: Path) -> None:
    data = {
        "redisPassword": "pw",
        "db": {"user": "app", "password": "secret", "replica": {"host": "r1", "port": 5432}},
        "count": 3,
    }
    store = await local_file(write_json(tmp_path / "s.json", data), multiValued="true")
    assert MULTI in store.features
    assert await store.get_secret("redisPassword", {}) == {"redisPassword": "pw"}
    assert await store.get_secret("db", {}) == {
        "user": "app",
        "password": "secret",
        "replica:host": "r1",
        "replica:port": "5432",
    }
    assert await store.get_secret("count", {}) == {"count": "3"}
    assert set(await store.bulk_get_secrets({})) == {"redisPassword", "db", "count"}
    with pytest.raises(NotFound):
        await store.get_secret("db:user", {})


async def test_local_file_relative_path_is_against_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "conf").mkdir()
    write_json(tmp_path / "conf" / "secrets.json", {"k": "v"})
    monkeypatch.chdir(tmp_path)
    store = await local_file(Path("conf/secrets.json"))
    assert await store.get_secret("k", {}) == {"k": "v"}


async def test_local_file_reads_the_file_once_at_init(tmp_path: Path) -> None:
    path = write_json(tmp_path / "s.json", {"k": "v1"})
    store = await local_file(path)
    write_json(path, {"k": "v2"})
    assert await store.get_secret("k", {}) == {"k": "v1"}


def test_local_file_secrets_file_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        LocalFileSecretStoreMetadata.model_validate({})
    assert "secretsFile" in _messages(info.value)


@pytest.mark.parametrize(
    ("content", "fragment"),
    [
        (None, "cannot read"),
        ('{"password": "hunter2"', "not valid JSON"),
        ('["hunter2"]', "must hold a JSON object"),
        (b"\xff\xfe hunter2", "not valid JSON"),
        ('{"a:b": "hunter2", "a": {"b": "hunter3"}}', "'a:b' occurs twice"),
    ],
    ids=["missing", "truncated", "array", "not-utf8", "duplicate"],
)
async def test_local_file_bad_file_fails_init_naming_it(
    tmp_path: Path, content: str | bytes | None, fragment: str
) -> None:
    path = tmp_path / "secrets.json"
    if isinstance(content, bytes):
        path.write_bytes(content)
    elif content is not None:
        path.write_text(content, encoding="utf-8")
    with pytest.raises(ComponentError) as info:
        await local_file(path)
    message = info.value.message
    assert str(path) in message
    assert fragment in message
    assert "hunter" not in message


# -- secretstores.local.env ------------------------------------------------------------------


async def test_local_env_conformance_scenarios(monkeypatch: pytest.MonkeyPatch) -> None:
    """components-contrib's secret store conformance suite runs on local.env with these."""
    monkeypatch.setenv("conftestsecret", "abcd")
    monkeypatch.setenv("secondsecret", "efgh")
    store = local_env()
    assert await store.get_secret("conftestsecret", {}) == {"conftestsecret": "abcd"}
    bulk = await store.bulk_get_secrets({})
    assert bulk["conftestsecret"] == {"conftestsecret": "abcd"}
    assert bulk["secondsecret"] == {"secondsecret": "efgh"}
    assert store.features == frozenset()


async def test_local_env_prefix_filters_and_is_stripped(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MYAPP_DB_PASSWORD", "pw")
    monkeypatch.setenv("MYAPP_TOKEN", "t")
    monkeypatch.setenv("MYAPP_", "just the prefix")
    monkeypatch.setenv("myapp_lower", "other case")
    monkeypatch.setenv("OTHER_TOKEN", "x")
    store = local_env(prefix="MYAPP_")
    assert await store.bulk_get_secrets({}) == {
        "DB_PASSWORD": {"DB_PASSWORD": "pw"},
        "TOKEN": {"TOKEN": "t"},
    }
    assert await store.get_secret("TOKEN", {}) == {"TOKEN": "t"}
    for missing in ("OTHER_TOKEN", "MYAPP_TOKEN", "lower"):
        with pytest.raises(NotFound):
            await store.get_secret(missing, {})


async def test_local_env_reads_the_environment_at_each_call(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    store = local_env()
    with pytest.raises(NotFound, match="LATE_SECRET"):
        await store.get_secret("LATE_SECRET", {})
    monkeypatch.setenv("LATE_SECRET", "now")
    assert await store.get_secret("LATE_SECRET", {}) == {"LATE_SECRET": "now"}


@pytest.mark.parametrize(
    "name", ["APP_API_TOKEN", "DAPR_API_TOKEN", "dapr_http_port", "LAYOTTO_API_TOKEN"]
)
async def test_local_env_withholds_the_sidecars_own_settings(
    monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    monkeypatch.setenv(name, "hunter2")
    store = local_env()
    with pytest.raises(NotFound):
        await store.get_secret(name, {})
    assert name not in await store.bulk_get_secrets({})
    # A prefix does not get around it: the full variable name counts.
    prefix, rest = name[:4], name[4:]
    prefixed = local_env(prefix=prefix)
    with pytest.raises(NotFound):
        await prefixed.get_secret(rest, {})
    assert rest not in await prefixed.bulk_get_secrets({})
