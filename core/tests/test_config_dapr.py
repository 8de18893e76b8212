"""daprd's `kind: Configuration` file as `--config`, and the API allow/deny lists it carries."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from layotto.api.api_access import ApiAccess
from layotto.config import ApiAccessConfig, ApiRule, load_config
from layotto.errors import ConfigError

DAPR_CONFIG = """\
apiVersion: dapr.io/v1alpha1
kind: Configuration
metadata:
  name: appconfig
spec:
  tracing:
    samplingRate: "0.5"
    stdout: true
    zipkin:
      endpointAddress: "http://localhost:9411/api/v2/spans"
    otel:
      endpointAddress: "collector:4318"
      isSecure: false
      protocol: http
  metric:
    enabled: false
  api:
    allowed:
      - {name: state, version: v1.0, protocol: http}
      - {name: state, version: v1, protocol: grpc}
    denied:
      - {name: invoke, version: v1.0}
  secrets:
    scopes:
      - storeName: vault
        defaultAccess: deny
        allowedSecrets: ["db-password"]
  features:
    - {name: SomeFeature, enabled: true}
"""


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "config.yaml"
    path.write_text(text, encoding="utf-8")
    return path


def test_the_parts_we_serve_are_read(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "state.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Component\nmetadata: {name: statestore}\n"
        "spec: {type: state.in-memory, version: v1}\n",
        encoding="utf-8",
    )
    config = load_config(write(tmp_path, DAPR_CONFIG), [resources])
    assert [c.name for c in config.components] == ["statestore"]
    assert config.tracing.sampling_rate == 0.5
    assert config.tracing.stdout is True
    assert config.tracing.zipkin_endpoint == "http://localhost:9411/api/v2/spans"
    assert config.tracing.otlp_endpoint == "http://collector:4318/v1/traces"
    assert config.server.metrics_enabled is False
    assert config.secrets.scopes["vault"].default_access == "deny"
    assert config.secrets.scopes["vault"].allowed_secrets == ["db-password"]
    assert [(r.name, r.version, r.protocol) for r in config.api.allowed] == [
        ("state", "v1.0", "http"),
        ("state", "v1", "grpc"),
    ]
    assert "spec.features" in caplog.text  # ignored, and said so


@pytest.mark.parametrize(
    ("spec", "field"),
    [
        ("tracing: {samplingRate: lots}", "spec.tracing.samplingRate"),
        ("tracing: {samplingRate: '2'}", "spec.tracing.samplingRate"),
        ("tracing: {otel: {endpointAddress: 'c:4317', protocol: grpc}}", "spec.tracing.otel"),
        ("api: {allowed: [{version: v1}]}", "spec.api.allowed[0].name"),
        ("api: {allowed: [{name: state, protocol: smtp}]}", "spec.api.allowed[0].protocol"),
        ("secrets: {scopes: [{defaultAccess: deny}]}", "spec.secrets.scopes[0].storeName"),
        ("secrets: {scopes: [{storeName: s, defaultAccess: maybe}]}", "defaultAccess"),
    ],
)
def test_bad_values_name_the_file_and_field(tmp_path: Path, spec: str, field: str) -> None:
    path = write(tmp_path, f"apiVersion: dapr.io/v1alpha1\nkind: Configuration\nspec: {{{spec}}}\n")
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    assert str(path) in str(caught.value)
    assert field in str(caught.value)


def access(*allowed: ApiRule, denied: tuple[ApiRule, ...] = ()) -> ApiAccess:
    return ApiAccess(ApiAccessConfig(allowed=allowed, denied=denied))


def test_nothing_listed_serves_everything() -> None:
    everything = access()
    assert everything.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetState")
    assert everything.http_allows("/v1.0/invoke/app/method/x")


def test_an_allowlist_serves_only_its_groups_on_its_protocol() -> None:
    only_state = access(
        ApiRule(name="state", version="v1", protocol="grpc"),
        ApiRule(name="state", version="v1.0"),  # no protocol: HTTP, as daprd
    )
    assert only_state.grpc_allows("/dapr.proto.runtime.v1.Dapr/SaveState")
    assert only_state.grpc_allows("/spec.proto.runtime.v1.Runtime/GetState")
    assert not only_state.grpc_allows("/dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert not only_state.grpc_allows("/spec.proto.runtime.v1.Runtime/TryLock")
    assert not only_state.grpc_allows("/dapr.proto.runtime.v1.Dapr/QueryStateAlpha1")  # v1alpha1
    # Other services on the port are never subject to the lists.
    assert only_state.grpc_allows("/grpc.health.v1.Health/Check")
    assert only_state.http_allows("/v1.0/state/store/key")
    assert not only_state.http_allows("/v1.0/publish/pubsub/orders")
    assert not only_state.http_allows("/v1.0-alpha1/state/store/query")
    assert only_state.http_allows("/v1.0/healthz")
    assert only_state.http_allows("/v1.0/healthz/outbound")
    assert only_state.http_allows("/actuator/health/readiness")


def test_denied_wins_over_allowed() -> None:
    rules = access(
        ApiRule(name="state", version="v1.0"),
        ApiRule(name="invoke", version="v1.0"),
        denied=(ApiRule(name="invoke", version="v1.0"),),
    )
    assert rules.http_allows("/v1.0/state/s/k")
    assert not rules.http_allows("/v1.0/invoke/app/method/m")


def test_a_denylist_alone_refuses_only_its_groups() -> None:
    rules = access(denied=(ApiRule(name="publish", version="v1", protocol="grpc"),))
    assert not rules.grpc_allows("/dapr.proto.runtime.v1.Dapr/PublishEvent")
    assert not rules.grpc_allows("/dapr.proto.runtime.v1.Dapr/BulkPublishEvent")
    assert rules.grpc_allows("/dapr.proto.runtime.v1.Dapr/BulkPublishEventAlpha1")
    assert rules.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetState")
    assert rules.http_allows("/v1.0/publish/p/t")  # a gRPC rule says nothing about HTTP


def test_unknown_groups_restrict_nothing_as_in_daprd() -> None:
    rules = access(ApiRule(name="nosuch", version="v9", protocol="grpc"))
    assert rules.grpc_allows("/dapr.proto.runtime.v1.Dapr/GetState")
