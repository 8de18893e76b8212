"""Declarative Dapr subscriptions in the config (dapr-compat.md §6): `kind: Subscription`
documents in resources folders (v2alpha1 and v1alpha1), the native `subscriptions:` list,
scopes, and the errors naming the file and the field."""

from __future__ import annotations

import logging
import textwrap
from pathlib import Path

import pytest
from layotto.config import load_config
from layotto.config_subscriptions import DeclaredBulk, DeclaredRule
from layotto.errors import ConfigError

PUBSUB_YAML = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: pubsub
spec:
  type: pubsub.in-memory
  version: v1
"""

V2_YAML = """\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: orders-sub
spec:
  pubsubname: pubsub
  topic: orders
  routes:
    rules:
      - match: event.type == "widget"
        path: /widgets
    default: /orders
  deadLetterTopic: orders-dlq
  bulkSubscribe:
    enabled: true
    maxMessagesCount: 10
  metadata:
    maxRetries: 3
scopes:
  - shop
---
apiVersion: dapr.io/v1alpha1
kind: Subscription
metadata:
  name: legacy
spec:
  pubsubname: pubsub
  topic: legacy
  route: /legacy
"""

SCOPED_OUT_YAML = """\
apiVersion: dapr.io/v2alpha1
kind: Subscription
metadata:
  name: theirs
spec:
  pubsubname: pubsub
  topic: theirs
scopes: [other-app]
"""


def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


def resources(tmp_path: Path, *subscriptions: str) -> Path:
    directory = tmp_path / "resources"
    write(directory / "a-pubsub.yaml", PUBSUB_YAML)
    for i, text in enumerate(subscriptions):
        write(directory / f"sub-{i}.yaml", text)
    return directory


def test_both_versions_are_loaded_in_file_order_and_scopes_apply(tmp_path: Path) -> None:
    directory = resources(tmp_path, V2_YAML, SCOPED_OUT_YAML)
    config = load_config(resources_paths=[directory], app_id="shop")
    assert [s.name for s in config.subscriptions] == ["orders-sub", "legacy"]
    orders, legacy = config.subscriptions
    assert (orders.pubsub_name, orders.topic) == ("pubsub", "orders")
    assert orders.rules == (DeclaredRule(match='event.type == "widget"', path="/widgets"),)
    assert orders.default_path == "/orders"
    assert orders.dead_letter_topic == "orders-dlq"
    assert orders.bulk == DeclaredBulk(max_messages=10, max_await_ms=0)
    assert orders.metadata == {"maxRetries": "3"}
    assert orders.source == str(directory / "sub-0.yaml")
    assert (legacy.topic, legacy.default_path, legacy.rules) == ("legacy", "/legacy", ())
    assert legacy.bulk is None


def test_another_app_id_leaves_the_scoped_subscription_out(tmp_path: Path) -> None:
    directory = resources(tmp_path, V2_YAML)
    config = load_config(resources_paths=[directory], app_id="billing")
    assert [s.name for s in config.subscriptions] == ["legacy"]


def test_the_native_config_lists_subscriptions(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "config.yaml",
        """\
        app: {id: shop}
        components:
          - {name: pubsub, type: pubsub.in-memory}
        subscriptions:
          - name: n1
            pubsubname: pubsub
            topic: t1
            routes: {rules: [{match: 'event.data.x > 1', path: big}], default: small}
          - pubsubname: pubsub
            topic: t2
            scopes: [other-app]
        """,
    )
    config = load_config(config_file)
    (only,) = config.subscriptions
    assert (only.name, only.topic, only.default_path) == ("n1", "t1", "small")
    assert only.rules == (DeclaredRule(match="event.data.x > 1", path="big"),)
    # The command line's overrides keep them.
    assert config.with_overrides(grpc_port=0).subscriptions == config.subscriptions


def test_an_unconfigured_pubsub_is_an_error_naming_both(tmp_path: Path) -> None:
    directory = resources(tmp_path, V2_YAML.replace("pubsubname: pubsub", "pubsubname: kafka"))
    with pytest.raises(ConfigError) as caught:
        load_config(resources_paths=[directory], app_id="shop")
    message = str(caught.value)
    assert "sub-0.yaml" in message
    assert "'orders-sub'" in message
    assert "'kafka'" in message
    assert "pubsub" in message


@pytest.mark.parametrize(
    ("change", "field"),
    [
        (("  topic: orders\n", ""), "spec.topic"),
        (("  pubsubname: pubsub\n", ""), "spec.pubsubname"),
        (("        path: /widgets\n", ""), "spec.routes.rules[0]"),
        (("    maxMessagesCount: 10", "    maxMessagesCount: many"), "bulkSubscribe"),
        (("  deadLetterTopic:", "  deadLetter:"), "spec.deadLetter"),
        (("dapr.io/v2alpha1", "dapr.io/v3"), "apiVersion"),
        (("  - shop\n", "  shop: yes\n"), "scopes"),
        (("  name: orders-sub\n", ""), "metadata.name"),
    ],
)
def test_errors_name_the_file_and_the_field(
    tmp_path: Path, change: tuple[str, str], field: str
) -> None:
    broken = V2_YAML.replace(*change, 1)
    assert broken != V2_YAML
    directory = resources(tmp_path, broken)
    with pytest.raises(ConfigError) as caught:
        load_config(resources_paths=[directory], app_id="shop")
    assert "sub-0.yaml" in str(caught.value)
    assert field in str(caught.value)


def test_route_and_routes_together_are_refused(tmp_path: Path) -> None:
    directory = resources(tmp_path, V2_YAML.replace("  routes:\n", "  route: /x\n  routes:\n"))
    with pytest.raises(ConfigError, match=r"spec\.routes"):
        load_config(resources_paths=[directory], app_id="shop")


def test_duplicate_names_are_an_error(tmp_path: Path) -> None:
    directory = resources(tmp_path, V2_YAML, V2_YAML.replace("topic: orders", "topic: other"))
    with pytest.raises(ConfigError, match="duplicate subscription 'orders-sub'"):
        load_config(resources_paths=[directory], app_id="shop")


def test_a_second_declaration_of_one_topic_is_ignored(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    # daprd keeps the first declarative subscription of a (pubsub, topic).
    second = V2_YAML.replace("name: orders-sub", "name: again").replace(
        "name: legacy", "name: legacy2"
    )
    directory = resources(tmp_path, V2_YAML, second)
    with caplog.at_level(logging.WARNING):
        config = load_config(resources_paths=[directory], app_id="shop")
    assert [s.name for s in config.subscriptions] == ["orders-sub", "legacy"]
    assert "already subscribed by 'orders-sub'" in caplog.text


def test_a_native_entry_with_an_unknown_field_is_refused(tmp_path: Path) -> None:
    config_file = write(
        tmp_path / "config.yaml",
        """\
        components:
          - {name: pubsub, type: pubsub.in-memory}
        subscriptions:
          - {pubsubname: pubsub, topic: t, deadletter: x}
        """,
    )
    with pytest.raises(ConfigError) as caught:
        load_config(config_file)
    assert "config.yaml" in str(caught.value)
    assert "subscriptions[0]" in str(caught.value)
    assert "'deadletter'" in str(caught.value)
