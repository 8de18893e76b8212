"""Config loading: native YAML/JSON, Layotto `grpc_config` (3 shapes), Dapr resources."""

from __future__ import annotations

import json
import logging
import tempfile
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from layotto.config import (
    DEFAULT_GRPC_PORT,
    DEFAULT_HOST,
    DEFAULT_HTTP_PORT,
    DEFAULT_SOURCE,
    AppConfig,
    ComponentConfig,
    RuntimeConfig,
    ServerConfig,
    load_config,
    load_dapr_resources,
)
from layotto.errors import ConfigError
from layotto.plugin import Kind
from pydantic import ValidationError


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def write_json(path: Path, data: Any) -> Path:
    path.write_text(json.dumps(data), encoding="utf-8")
    return path


def by_name(config: RuntimeConfig) -> dict[str, ComponentConfig]:
    return {c.name: c for c in config.components}


def config_error(*args: Any) -> str:
    with pytest.raises(ConfigError) as info:
        load_config(*args)
    return str(info.value)


# -- embedded default ------------------------------------------------------------------------


def test_no_sources_gives_the_embedded_default() -> None:
    config = load_config()
    assert config.server == ServerConfig()
    assert (config.server.host, config.server.grpc_port, config.server.http_port) == (
        DEFAULT_HOST,
        DEFAULT_GRPC_PORT,
        DEFAULT_HTTP_PORT,
    )
    assert (DEFAULT_HOST, DEFAULT_GRPC_PORT, DEFAULT_HTTP_PORT) == ("127.0.0.1", 34904, 34999)
    assert config.app == AppConfig()
    built = [(c.kind, c.name, c.type, c.source) for c in config.components]
    for kind, name in [
        (Kind.STATE, "statestore"),
        (Kind.PUBSUB, "pubsub"),
        (Kind.CONFIGURATION, "configstore"),
        (Kind.LOCK, "lockstore"),
        (Kind.SEQUENCER, "sequencer"),
        (Kind.SECRETSTORES, "secretstore"),
    ]:
        assert (kind, name, "in-memory", DEFAULT_SOURCE) in built
    # Every default component is in-memory and has a unique (kind, name).
    assert all(c.type == "in-memory" for c in config.components)
    assert len({(c.kind, c.name) for c in config.components}) == len(config.components)
    assert load_config(None, []) == config


# -- native YAML / JSON ----------------------------------------------------------------------

NATIVE = {
    "app": {"id": "shop", "port": 50051, "host": "10.1.2.3"},
    "server": {"host": "0.0.0.0", "grpc_port": 40000, "http_port": 40001, "grace_period": 2.5},
    "components": [
        {
            "name": "statestore",
            "type": "state.redis",
            "metadata": {"redisHost": "localhost:6379", "keyPrefix": "name", "db": 3},
        },
        {"name": "locks", "type": "lock.redis", "version": "v2", "ignore_errors": True},
        {"name": "files", "type": "bindings.local.file"},
    ],
}


def check_native(config: RuntimeConfig, source: Path) -> None:
    assert config.app == AppConfig(id="shop", port=50051, host="10.1.2.3")
    assert config.server == ServerConfig(
        host="0.0.0.0", grpc_port=40000, http_port=40001, grace_period=2.5
    )
    assert config.components == (
        ComponentConfig(
            name="statestore",
            kind=Kind.STATE,
            type="redis",
            metadata={"redisHost": "localhost:6379", "db": 3},
            key_prefix="name",
            source=str(source),
        ),
        ComponentConfig(
            name="locks",
            kind=Kind.LOCK,
            type="redis",
            version="v2",
            ignore_errors=True,
            source=str(source),
        ),
        ComponentConfig(name="files", kind=Kind.BINDINGS, type="local.file", source=str(source)),
    )
    assert config.components[0].qualified_type == "state.redis"
    assert config.components[2].qualified_type == "bindings.local.file"


@pytest.mark.parametrize("suffix", [".yaml", ".yml"])
def test_native_yaml(tmp_path: Path, suffix: str) -> None:
    path = tmp_path / f"layotto{suffix}"
    path.write_text(yaml.safe_dump(NATIVE), encoding="utf-8")
    check_native(load_config(path), path)


def test_native_json(tmp_path: Path) -> None:
    path = write_json(tmp_path / "layotto.json", NATIVE)
    check_native(load_config(path), path)


def test_native_yaml_written_by_hand(tmp_path: Path) -> None:
    path = write(
        tmp_path / "layotto.yaml",
        """\
        # a comment
        app:
          id: shop
        components:
          - name: statestore
            type: state.in-memory
            metadata:
              keyPrefix: appid
        """,
    )
    config = load_config(path)
    assert config.app.id == "shop"
    assert config.server == ServerConfig()
    [state] = config.components
    assert (state.name, state.kind, state.type, state.key_prefix, state.metadata) == (
        "statestore",
        Kind.STATE,
        "in-memory",
        "appid",
        {},
    )


def test_native_without_components(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "server: {grpc_port: 1234}\n")
    config = load_config(path)
    assert config.server.grpc_port == 1234
    assert config.components == ()


def test_a_non_string_key_prefix_is_kept_as_text(tmp_path: Path) -> None:
    path = write_json(
        tmp_path / "c.json",
        {"components": [{"name": "s", "type": "state.x", "metadata": {"keyPrefix": 7}}]},
    )
    assert load_config(path).components[0].key_prefix == "7"


# -- Layotto grpc_config ---------------------------------------------------------------------

GRPC_CONFIG: dict[str, Any] = {
    "app": {"app_id": "app1", "grpc_callback_port": 9999, "grpc_callback_host": "10.0.0.9"},
    "state": {
        "state_demo": {
            "type": "redis",
            "metadata": {"redisHost": "localhost:6380", "redisPassword": "", "keyPrefix": "appid"},
        }
    },
    "pub_subs": {"pub_subs_demo": {"type": "redis", "metadata": {"redisHost": "localhost:6380"}}},
    "config_store": {
        "config_demo": {
            "type": "etcd",
            "address": ["127.0.0.1:2379"],
            "timeout": "10",
            "metadata": {"tls": "false"},
        }
    },
    "lock": {"lock_demo": {"type": "redis", "metadata": {"redisHost": "localhost:6380"}}},
    "sequencer": {"sequencer_demo": {"type": "redis", "biggerThan": {"key1": 10}}},
    "secret_store": {"secret_demo": {"type": "local.env", "metadata": {}}},
    "bindings": {"http_demo": {"type": "http", "metadata": {"url": "http://x"}}},
}


def layotto_shape(shape: str) -> dict[str, Any]:
    if shape == "bare":
        return GRPC_CONFIG
    if shape == "wrapped":
        return {"grpc_config": GRPC_CONFIG}
    return {
        "servers": [
            {
                "listeners": [
                    {
                        "name": "grpc",
                        "filter_chains": [
                            {
                                "filters": [
                                    {
                                        "type": "grpc",
                                        "config": {
                                            "server_name": "runtime",
                                            "grpc_config": GRPC_CONFIG,
                                        },
                                    }
                                ]
                            }
                        ],
                    }
                ]
            }
        ]
    }


@pytest.mark.parametrize("shape", ["bare", "wrapped", "mosn"])
def test_layotto_grpc_config_in_every_shape(tmp_path: Path, shape: str) -> None:
    path = write_json(tmp_path / "runtime_config.json", layotto_shape(shape))
    config = load_config(path)
    assert config.app == AppConfig(id="app1", port=9999, host="10.0.0.9")
    assert config.server == ServerConfig()
    components = by_name(config)
    assert {name: c.qualified_type for name, c in components.items()} == {
        "state_demo": "state.redis",
        "pub_subs_demo": "pubsub.redis",
        "config_demo": "configuration.etcd",
        "lock_demo": "lock.redis",
        "sequencer_demo": "sequencer.redis",
        "secret_demo": "secretstores.local.env",
        "http_demo": "bindings.http",
    }
    state = components["state_demo"]
    assert state.key_prefix == "appid"
    assert state.metadata == {"redisHost": "localhost:6380", "redisPassword": ""}
    assert components["lock_demo"].key_prefix is None
    # Settings kept beside `metadata` upstream end up in the metadata.
    assert components["config_demo"].metadata == {
        "tls": "false",
        "address": ["127.0.0.1:2379"],
        "timeout": "10",
    }
    assert components["sequencer_demo"].metadata == {}
    assert components["sequencer_demo"].bigger_than == {"key1": 10}
    assert all(c.source == str(path) for c in config.components)


def test_layotto_app_id_alone_is_layotto(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"app": {"app_id": "solo"}})
    config = load_config(path)
    assert config.app.id == "solo"
    assert config.app.port == 0
    assert config.components == ()


def test_layotto_callback_port_as_a_string(tmp_path: Path) -> None:
    data = {"grpc_config": {"app": {"app_id": "a", "grpc_callback_port": "9999"}}}
    assert load_config(write_json(tmp_path / "c.json", data)).app.port == 9999


# layotto-semantics.md §15: upstream configs/config_redis.json (xDS boilerplate removed).
UPSTREAM_CONFIG_REDIS = """
{ "servers": [ { "default_log_path": "stdout", "default_log_level": "DEBUG",
    "routers": [ { "router_config_name": "actuator_dont_need_router" } ],
    "listeners": [
      { "name": "grpc", "address": "127.0.0.1:34904", "bind_port": true,
        "filter_chains": [ { "filters": [ { "type": "grpc", "config": {
          "server_name": "runtime",
          "grpc_config": {
            "hellos":    { "helloworld":    { "type": "helloworld", "hello": "greeting" } },
            "state":     { "state_demo":    { "type": "redis", "metadata": { "redisHost": "localhost:6380", "redisPassword": "" } } },
            "sequencer": { "sequencer_demo":{ "type": "redis", "metadata": { "redisHost": "127.0.0.1:6380", "redisPassword": "" } } },
            "lock":      { "lock_demo":     { "type": "redis", "metadata": { "redisHost": "localhost:6380", "redisPassword": "" } } },
            "pub_subs":  { "pub_subs_demo": { "type": "redis", "metadata": { "redisHost": "localhost:6380", "redisPassword": "" } } },
            "app": { "app_id": "app1", "grpc_callback_port": 9999 } } } } ] } ] },
      { "name": "actuator", "address": "127.0.0.1:34999", "bind_port": true,
        "filter_chains": [ { "filters": [ { "type": "proxy", "config": {
          "downstream_protocol": "Http1", "upstream_protocol": "Http1",
          "router_config_name": "actuator_dont_need_router" } } ] } ],
        "stream_filters": [ { "type": "actuator_filter" } ] } ] } ] }
"""  # noqa: E501


@pytest.mark.parametrize("suffix", [".json", ".yaml"])  # JSON is valid YAML too
def test_the_upstream_mosn_example(
    tmp_path: Path, suffix: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = write(tmp_path / f"config_redis{suffix}", UPSTREAM_CONFIG_REDIS)
    with caplog.at_level(logging.WARNING, logger="layotto.config"):
        config = load_config(path)
    assert config.app == AppConfig(id="app1", port=9999)
    assert [(c.name, c.qualified_type) for c in config.components] == [
        ("state_demo", "state.redis"),
        ("sequencer_demo", "sequencer.redis"),
        ("lock_demo", "lock.redis"),
        ("pub_subs_demo", "pubsub.redis"),
    ]
    assert by_name(config)["sequencer_demo"].metadata == {
        "redisHost": "127.0.0.1:6380",
        "redisPassword": "",
    }
    # The unsupported `hellos` section is skipped, with a warning naming it.
    warnings = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert any("hellos" in w and str(path) in w for w in warnings), warnings


def test_layotto_entry_without_type(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"state": {"cache": {"metadata": {}}}})
    message = config_error(path)
    assert str(path) in message
    assert "'cache'" in message
    assert "'type'" in message


def test_layotto_section_that_is_not_a_mapping(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"grpc_config": {"lock": ["redis"]}})
    message = config_error(path)
    assert str(path) in message
    assert "'lock'" in message


# -- Dapr resources --------------------------------------------------------------------------

STATESTORE_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: statestore
  namespace: default
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: keyPrefix
    value: name
  - name: consumerID
    value: "{appID}-group"
---
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders-sub
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    default: /orders
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.redis
  ignoreErrors: true
  metadata:
  - name: redisHost
    value: localhost:6379
  - name: maxLen
    value: 100
---
"""

SCOPED_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mine
spec:
  type: lock.redis
  version: v2
scopes: [shop, billing]
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: theirs
spec:
  type: lock.redis
scopes:
- other-app
"""


def resources_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "components"
    write(directory / "statestore.yaml", STATESTORE_YAML)
    write(directory / "scoped.yml", SCOPED_YAML)
    write(directory / "README.md", "not: [a component")
    write(directory / "notes.txt", "kind: Component\n")
    write(directory / "resiliency.yaml", "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\n")
    return directory


def test_dapr_resources(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    components = load_dapr_resources(directory, app_id="shop")
    assert [c.name for c in components] == ["mine", "statestore", "pubsub"]  # file order
    named = {c.name: c for c in components}

    state = named["statestore"]
    assert (state.kind, state.type, state.version) == (Kind.STATE, "redis", "v1")
    assert state.key_prefix == "name"  # runtime-level: out of the component's metadata
    assert state.metadata == {"redisHost": "localhost:6379", "consumerID": "shop-group"}
    assert state.source == str(directory / "statestore.yaml")
    assert state.ignore_errors is False

    pubsub = named["pubsub"]
    assert pubsub.qualified_type == "pubsub.redis"
    assert pubsub.ignore_errors is True
    assert pubsub.metadata == {"redisHost": "localhost:6379", "maxLen": 100}
    assert pubsub.source.startswith(str(directory / "statestore.yaml"))
    assert pubsub.source != state.source  # the document is named too

    assert named["mine"].version == "v2"
    assert "theirs" not in named  # scoped to another app


def test_dapr_resources_through_load_config(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    other = write(
        tmp_path / "more" / "secrets.yaml",
        """\
        apiVersion: dapr.io/v1alpha1
        kind: Component
        metadata: {name: secretstore}
        spec: {type: secretstores.local.env}
        """,
    )
    config = load_config(None, [directory, other.parent])
    assert {c.name for c in config.components} >= {"statestore", "pubsub", "secretstore"}
    assert config.app == AppConfig()
    assert by_name(config)["secretstore"].kind is Kind.SECRETSTORES


def test_config_file_and_resources_combine(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    path = write(
        tmp_path / "layotto.yaml",
        """\
        app: {id: shop}
        server: {grpc_port: 40000}
        components:
          - {name: sequencer, type: sequencer.in-memory}
        """,
    )
    config = load_config(path, [directory])
    assert config.server.grpc_port == 40000
    assert [c.name for c in config.components] == ["sequencer", "mine", "statestore", "pubsub"]
    # The file's app id drives `{appID}` and `scopes`.
    assert by_name(config)["statestore"].metadata["consumerID"] == "shop-group"
    assert by_name(config)["sequencer"].source == str(path)


def test_scopes_follow_the_app_id_of_the_config_file(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    path = write_json(tmp_path / "c.json", {"app": {"id": "other-app"}})
    names = {c.name for c in load_config(path, [directory]).components}
    assert "theirs" in names
    assert "mine" not in names


def test_layotto_config_and_resources_combine(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    path = write_json(tmp_path / "c.json", {"grpc_config": {"app": {"app_id": "billing"}}})
    config = load_config(path, [directory])
    assert config.app.id == "billing"
    assert by_name(config)["statestore"].metadata["consumerID"] == "billing-group"
    assert "mine" in by_name(config)


def test_duplicate_names_across_sources_name_both(tmp_path: Path) -> None:
    directory = resources_dir(tmp_path)
    path = write(
        tmp_path / "layotto.yaml",
        """\
        components:
          - {name: statestore, type: state.in-memory}
          - {name: statestore, type: lock.in-memory}
        """,
    )
    message = config_error(path, [directory])
    assert "'statestore'" in message
    assert str(path) in message
    assert str(directory / "statestore.yaml") in message


def test_duplicate_names_across_resource_dirs(tmp_path: Path) -> None:
    first, second = resources_dir(tmp_path / "a"), resources_dir(tmp_path / "b")
    message = config_error(None, [first, second])
    assert str(first) in message
    assert str(second) in message


def test_duplicate_names_within_one_file(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """\
        components:
          - {name: cache, type: state.in-memory}
          - {name: cache, type: state.redis}
        """,
    )
    message = config_error(path)
    assert "'cache'" in message
    assert str(path) in message


def test_same_name_different_kinds_is_fine(tmp_path: Path) -> None:
    path = write(
        tmp_path / "c.yaml",
        """\
        components:
          - {name: redis, type: state.redis}
          - {name: redis, type: lock.redis}
        """,
    )
    assert len(load_config(path).components) == 2


# -- bad files -------------------------------------------------------------------------------


def test_missing_config_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.yaml"
    message = config_error(path)
    assert str(path) in message
    assert "cannot read" in message


def test_invalid_yaml(tmp_path: Path) -> None:
    path = write(tmp_path / "c.yaml", "components: [\n  - {name: x\n")
    message = config_error(path)
    assert str(path) in message
    assert "YAML" in message


def test_invalid_json(tmp_path: Path) -> None:
    path = write(tmp_path / "c.json", '{"components": [}')
    message = config_error(path)
    assert str(path) in message
    assert "JSON" in message


def test_invalid_yaml_in_resources(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    bad = write(directory / "bad.yaml", "kind: Component\nmetadata: {name: [\n")
    message = config_error(None, [directory])
    assert str(bad) in message
    assert "YAML" in message


def test_resources_path_must_be_a_directory(tmp_path: Path) -> None:
    path = write(tmp_path / "file.yaml", "kind: Component\n")
    assert str(path) in config_error(None, [path])


@pytest.mark.parametrize(
    ("document", "fragments"),
    [
        ("[1, 2]", ["top level"]),
        ("components: {a: 1}", ["'components'"]),
        ("components: [statestore]", ["components[0]"]),
        ("bogus: 1", ["'bogus'"]),
        ("server: {grpc_port: abc}", ["'server.grpc_port'"]),
        ("server: {http_port: 70000}", ["'server.http_port'"]),
        ("app: {port: -1}", ["'app.port'"]),
        ("server: {grace_period: -1}", ["'server.grace_period'"]),
    ],
)
def test_wrong_types_at_the_top(tmp_path: Path, document: str, fragments: list[str]) -> None:
    path = write(tmp_path / "c.yaml", document + "\n")
    message = config_error(path)
    assert str(path) in message
    for fragment in fragments:
        assert fragment in message


@pytest.mark.parametrize(
    ("entry", "field"),
    [
        ({"name": "cache", "type": "state.redis", "version": 5}, "'version'"),
        ({"name": "cache", "type": "state.redis", "ignore_errors": "maybe"}, "'ignore_errors'"),
        ({"name": "cache", "type": "state.redis", "metadata": ["a", "b"]}, "'metadata'"),
        ({"name": "cache", "type": "state."}, "'type'"),
        ({"name": "cache"}, "'type'"),  # missing type
        ({"name": "cache", "type": "redis"}, "'type'"),  # no kind
        ({"name": "cache", "type": ["state.redis"]}, "'type'"),
        ({"name": "cache", "type": "widgets.redis"}, "'widgets'"),  # unknown kind
    ],
)
def test_bad_native_component(tmp_path: Path, entry: dict[str, Any], field: str) -> None:
    path = write_json(tmp_path / "c.json", {"components": [entry]})
    message = config_error(path)
    assert str(path) in message
    assert "'cache'" in message
    assert field in message


def test_a_native_component_without_name(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"components": [{"type": "state.redis"}]})
    message = config_error(path)
    assert str(path) in message
    assert "'name'" in message


def test_unknown_kind_lists_the_kinds(tmp_path: Path) -> None:
    path = write_json(tmp_path / "c.json", {"components": [{"name": "x", "type": "db.redis"}]})
    message = config_error(path)
    assert all(kind.value in message for kind in Kind)


DAPR_HEAD = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: cache
"""


@pytest.mark.parametrize(
    ("spec", "fragments"),
    [
        ("spec: {version: v1}", ["'spec.type'"]),  # missing type
        ("spec: {type: redis}", ["'spec.type'"]),
        ("spec: {type: widgets.redis}", ["type", "'widgets.redis'", "unknown kind 'widgets'"]),
        ("spec: {type: state.redis, metadata: [plain]}", ["'spec.metadata[0]'"]),
        ("spec: {type: state.redis, metadata: [{value: x}]}", ["'spec.metadata[0]'"]),
        (
            """\
            spec:
              type: state.redis
              metadata:
              - name: redisHost
                value: localhost:6379
              - name: redisPassword
                secretKeyRef: {key: password}
            """,
            ["'spec.metadata[1]'", "redisPassword", "secretKeyRef", "'name'"],
        ),
    ],
)
def test_bad_dapr_component(tmp_path: Path, spec: str, fragments: list[str]) -> None:
    directory = tmp_path / "components"
    path = write(directory / "cache.yaml", DAPR_HEAD + textwrap.dedent(spec))
    message = config_error(None, [directory])
    assert str(path) in message
    assert "'cache'" in message
    for fragment in fragments:
        assert fragment in message


def test_unknown_kind_in_a_dapr_component_names_spec_type(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    write(directory / "cache.yaml", DAPR_HEAD + "spec: {type: widgets.redis}\n")
    assert "'spec.type'" in config_error(None, [directory])


def test_a_dapr_component_without_name(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    path = write(directory / "x.yaml", "kind: Component\nmetadata: {}\nspec: {type: state.x}\n")
    message = config_error(None, [directory])
    assert str(path) in message
    assert "'metadata.name'" in message


def test_an_error_in_a_later_document_names_it(tmp_path: Path) -> None:
    directory = tmp_path / "components"
    good = "kind: Component\nmetadata: {name: ok}\nspec: {type: state.x}\n"
    path = write(directory / "x.yaml", good + "---\n" + DAPR_HEAD + "spec: {type: nokind}\n")
    message = config_error(None, [directory])
    assert f"{path}[1]" in message
    assert "'cache'" in message


@pytest.mark.parametrize(
    "data",
    [
        {"servers": [1]},
        {"servers": [{"listeners": ["grpc"]}]},
        {"grpc_config": {"app": "app1"}},
        {"grpc_config": {"state": {"s": {"type": "redis", "metadata": "oops"}}}},
        {"grpc_config": {"state": {"s": {"type": "redis", "metadata": [1, 2]}}}},
        {"app": None, "components": []},
    ],
    ids=[
        "server-int",
        "listener-str",
        "layotto-app-str",
        "metadata-str",
        "metadata-list",
        "app-null",
    ],
)
def test_wrong_types_are_config_errors(tmp_path: Path, data: dict[str, Any]) -> None:
    path = write_json(tmp_path / "c.json", data)
    directory = tmp_path / "empty-dir"
    directory.mkdir()
    with pytest.raises(ConfigError) as info:
        load_config(path, [directory])
    assert str(path) in str(info.value)


def test_unknown_keys_in_a_native_component_are_errors(tmp_path: Path) -> None:
    entry = {"name": "cache", "type": "state.redis", "metdata": {"redisHost": "x"}}
    path = write_json(tmp_path / "c.json", {"components": [entry]})
    message = config_error(path)
    assert str(path) in message
    assert "'cache'" in message
    assert "metdata" in message


# -- command-line overrides ------------------------------------------------------------------


def test_with_overrides() -> None:
    base = RuntimeConfig(
        app=AppConfig(id="from-file", port=1),
        server=ServerConfig(grpc_port=1000, api_token="t"),
        components=(ComponentConfig(name="s", kind=Kind.STATE, type="x"),),
    )
    changed = base.with_overrides(
        grpc_port=2000,
        http_port=None,
        host="0.0.0.0",
        api_token=None,
        grace_period=0.5,
        app_id="from-flag",
        app_port=None,
    )
    assert changed.server == ServerConfig(
        host="0.0.0.0", grpc_port=2000, http_port=DEFAULT_HTTP_PORT, api_token="t", grace_period=0.5
    )
    assert changed.app == AppConfig(id="from-flag", port=1)
    assert changed.components == base.components
    # The original is unchanged (frozen models).
    assert base.server.grpc_port == 1000
    assert base.app.id == "from-file"
    assert base.with_overrides() == base
    assert base.with_overrides(app_port=0).app.port == 0  # 0 is a value, not "not given"


@pytest.mark.parametrize(
    "override", [{"grpc_port": 70000}, {"grace_period": -1.0}, {"app_port": -5}]
)
def test_with_overrides_validates(override: dict[str, Any]) -> None:
    with pytest.raises((ConfigError, ValidationError)):
        RuntimeConfig().with_overrides(**override)


# -- round trip (hypothesis) -------------------------------------------------------------------

text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), min_size=0, max_size=12)
nonempty = text.filter(bool)
metadata_values = st.one_of(
    text,
    st.integers(),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.lists(st.integers(), max_size=3),
)
components = st.builds(
    ComponentConfig,
    name=nonempty,
    kind=st.sampled_from(list(Kind)),
    type=nonempty,
    version=text,
    # `keyPrefix` and `biggerThan` are read out of the metadata into fields of their own.
    metadata=st.dictionaries(
        text.filter(lambda k: k not in ("keyPrefix", "biggerThan")), metadata_values, max_size=4
    ),
    key_prefix=st.none() | text,
    ignore_errors=st.booleans(),
)
runtime_configs = st.builds(
    RuntimeConfig,
    app=st.builds(AppConfig, id=text, port=st.integers(0, 65535), host=text),
    server=st.builds(
        ServerConfig,
        host=text,
        grpc_port=st.integers(0, 65535),
        http_port=st.integers(0, 65535),
        api_token=st.none() | text,
        grace_period=st.floats(0, 1e9, allow_nan=False, allow_infinity=False),
    ),
    components=st.lists(components, max_size=4, unique_by=lambda c: (c.kind, c.name)).map(tuple),
)


def to_native(config: RuntimeConfig) -> dict[str, Any]:
    """The native file form of a config. config.py has no serializer of its own (yet): its
    `model_dump` form (`kind` + `type`, `key_prefix`, `source`) is not what the loader reads."""
    data = config.model_dump(mode="json")
    data["components"] = [
        {
            "name": c["name"],
            "type": f"{c['kind']}.{c['type']}",
            "version": c["version"],
            "metadata": {
                **c["metadata"],
                **({"keyPrefix": c["key_prefix"]} if c["key_prefix"] is not None else {}),
            },
            "ignore_errors": c["ignore_errors"],
        }
        for c in data["components"]
    ]
    return data


def without_sources(config: RuntimeConfig) -> RuntimeConfig:
    return config.model_copy(
        update={"components": tuple(c.model_copy(update={"source": ""}) for c in config.components)}
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(config=runtime_configs, suffix=st.sampled_from([".yaml", ".json"]))
def test_round_trip_through_a_native_file(config: RuntimeConfig, suffix: str) -> None:
    native = to_native(config)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / f"layotto{suffix}"
        if suffix == ".json":
            path.write_text(json.dumps(native), encoding="utf-8")
        else:
            path.write_text(yaml.safe_dump(native, allow_unicode=True), encoding="utf-8")
        loaded = load_config(path)
    assert without_sources(loaded) == without_sources(config)
    assert all(c.source == str(path) for c in loaded.components)


def test_layotto_rpcs_become_a_channel_a_mesh_resolver_and_filters(tmp_path: Path) -> None:
    path = tmp_path / "layotto.json"
    path.write_text(
        json.dumps(
            {
                "grpc_config": {
                    "rpcs": {
                        "mosn": {
                            "config": {
                                "before_invoke": [{"name": "dubbo_json_rpc"}],
                                "channel": [
                                    {"size": 4, "protocol": "http", "listener": "127.0.0.1:45678"}
                                ],
                            }
                        }
                    }
                }
            }
        )
    )
    config = load_config(path)
    by_name = {(c.kind, c.name): c for c in config.components}
    channel = by_name[(Kind.RPC, "mosn")]
    assert (channel.type, channel.metadata) == ("http", {"maxConnections": 4})
    resolver = by_name[(Kind.NAMERESOLUTION, "mosn-listener")]
    assert (resolver.type, resolver.metadata) == ("mesh", {"address": "127.0.0.1:45678"})
    assert by_name[(Kind.RPCFILTER, "dubbo_json_rpc")].type == "dubbo_json_rpc"
    assert config.rpc.resolver == "mosn-listener"
    assert config.rpc.filters["mosn"].before == ["dubbo_json_rpc"]


def test_layotto_rpcs_with_a_mosn_listener_name_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "layotto.json"
    rpcs = {"mosn": {"config": {"channel": [{"protocol": "http", "listener": "egress_http"}]}}}
    path.write_text(json.dumps({"grpc_config": {"rpcs": rpcs}}))
    with pytest.raises(ConfigError, match="must be host:port"):
        load_config(path)
