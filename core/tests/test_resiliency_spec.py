"""Loading Dapr `Resiliency` resources: defaults, validation messages that name the field,
merging several resources, and checking that targets name existing policies."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from layotto.errors import ConfigError
from layotto.resiliency import ResiliencySpec, merge_specs, parse_resiliency_spec

# The overview example from the Dapr docs (operations/resiliency), trimmed of comments.
DAPR_EXAMPLE = """
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata:
  name: myresiliency
scopes:
  - app1
spec:
  policies:
    timeouts:
      general: 5s
      important: 60s
      largeResponse: 10s
    retries:
      pubsubRetry:
        policy: constant
        duration: 5s
        maxRetries: 10
      retryForever:
        policy: exponential
        maxInterval: 15s
        maxRetries: -1
      important:
        policy: constant
        duration: 5s
        maxRetries: 30
      someOperation:
        policy: exponential
        maxInterval: 15s
      largeResponse:
        policy: constant
        duration: 5s
        maxRetries: 3
      retry5xxOnly:
        policy: constant
        duration: 5s
        maxRetries: 3
        matching:
          httpStatusCodes: "429,500-599"
          gRPCStatusCodes: "1-4,8-11,13,14"
    circuitBreakers:
      simpleCB:
        maxRequests: 1
        timeout: 30s
        trip: consecutiveFailures >= 5
      pubsubCB:
        maxRequests: 1
        interval: 8s
        timeout: 45s
        trip: consecutiveFailures > 8
  targets:
    apps:
      appB:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerCacheSize: 1000
    actors:
      myActorType:
        timeout: general
        retry: important
        circuitBreaker: simpleCB
        circuitBreakerScope: both
        circuitBreakerCacheSize: 5000
    components:
      statestore1:
        outbound:
          timeout: general
          retry: retryForever
          circuitBreaker: simpleCB
      pubsub1:
        outbound:
          retry: pubsubRetry
          circuitBreaker: pubsubCB
      pubsub2:
        outbound:
          retry: pubsubRetry
          circuitBreaker: pubsubCB
        inbound:
          timeout: general
          retry: important
          circuitBreaker: pubsubCB
"""


def _spec(text: str) -> dict[str, Any]:
    data = yaml.safe_load(text)
    assert isinstance(data, dict)
    return data


def test_the_dapr_docs_example_loads_with_its_values() -> None:
    spec = parse_resiliency_spec(_spec(DAPR_EXAMPLE), "res.yaml")
    policies = spec.policies
    assert policies.timeouts == {"general": 5.0, "important": 60.0, "largeResponse": 10.0}
    assert policies.retries["pubsubRetry"].max_retries == 10
    assert policies.retries["retryForever"].policy == "exponential"
    assert policies.retries["retryForever"].max_interval == 15.0
    matching = policies.retries["retry5xxOnly"].matching
    assert matching is not None
    assert matching.http_status_codes == ((429, 429), (500, 599))
    assert matching.grpc_status_codes == ((1, 4), (8, 11), (13, 13), (14, 14))
    cb = policies.circuit_breakers["pubsubCB"]
    assert (cb.max_requests, cb.interval, cb.timeout) == (1, 8.0, 45.0)
    assert cb.trip.source == "consecutiveFailures > 8"
    assert spec.targets.apps["appB"].circuit_breaker == "simpleCB"
    assert spec.targets.components["pubsub2"].inbound.retry == "important"
    assert spec.targets.components["pubsub1"].inbound.retry is None
    # Actors are accepted (a Dapr resource loads unchanged) and otherwise ignored.
    assert "myActorType" in spec.targets.actors
    # Referenced policies all exist.
    assert merge_specs([("res.yaml", spec)]) == spec


def test_the_bare_spec_mapping_is_accepted_too() -> None:
    whole = _spec(DAPR_EXAMPLE)
    assert parse_resiliency_spec(whole["spec"], "x") == parse_resiliency_spec(whole, "x")


def test_defaults_are_daprs() -> None:
    spec = parse_resiliency_spec(
        {"policies": {"retries": {"r": {}}, "circuitBreakers": {"cb": {}}}}, "res.yaml"
    )
    retry = spec.policies.retries["r"]
    assert (retry.policy, retry.duration, retry.max_interval, retry.max_retries) == (
        "constant",
        5.0,
        60.0,
        -1,
    )
    assert retry.matching is None
    cb = spec.policies.circuit_breakers["cb"]
    assert (cb.max_requests, cb.interval, cb.timeout) == (1, 0.0, 60.0)
    assert cb.trip.source == "consecutiveFailures > 5"


def test_an_empty_spec_means_no_policies() -> None:
    assert parse_resiliency_spec({}, "res.yaml") == ResiliencySpec()
    assert merge_specs([]) == ResiliencySpec()


def test_durations_take_go_strings_and_bare_integers_are_milliseconds() -> None:
    spec = parse_resiliency_spec(
        {"policies": {"timeouts": {"a": "1m30s", "b": "250ms", "c": 1500, "d": "20"}}}, "r"
    )
    assert spec.policies.timeouts == {"a": 90.0, "b": 0.25, "c": 1.5, "d": 0.02}


def test_the_policy_kind_is_case_insensitive_like_daprs() -> None:
    spec = parse_resiliency_spec({"policies": {"retries": {"r": {"policy": "Exponential"}}}}, "r")
    assert spec.policies.retries["r"].policy == "exponential"


@pytest.mark.parametrize(
    ("spec", "path"),
    [
        (
            {"policies": {"retries": {"fast": {"maxRetries": -2}}}},
            "policies.retries.fast.maxRetries",
        ),
        (
            {"policies": {"retries": {"fast": {"maxRetries": "x"}}}},
            "policies.retries.fast.maxRetries",
        ),
        ({"policies": {"retries": {"fast": {"policy": "linear"}}}}, "policies.retries.fast.policy"),
        (
            {"policies": {"retries": {"fast": {"duration": "5 s"}}}},
            "policies.retries.fast.duration",
        ),
        ({"policies": {"retries": {"fast": {"maxInterval": "-1s"}}}}, "retries.fast.maxInterval"),
        ({"policies": {"retries": {"fast": {"jitter": 1}}}}, "policies.retries.fast.jitter"),
        ({"policies": {"timeouts": {"general": "soon"}}}, "policies.timeouts.general"),
        ({"policies": {"circuitBreakers": {"cb": {"maxRequests": -1}}}}, "cb.maxRequests"),
        ({"policies": {"circuitBreakers": {"cb": {"timeout": "x"}}}}, "circuitBreakers.cb.timeout"),
        ({"policies": {"circuitBreakers": {"cb": {"trip": "x > 1"}}}}, "circuitBreakers.cb.trip"),
        ({"policies": {"circuitBreakers": {"cb": {"trip": 5}}}}, "circuitBreakers.cb.trip"),
        ({"targets": {"apps": {"a": {"retries": "r"}}}}, "spec.targets.apps.a.retries"),
        ({"targets": {"components": {"s": {"output": {}}}}}, "targets.components.s.output"),
        ({"target": {}}, "spec.target"),
    ],
)
def test_errors_name_the_source_and_the_field(spec: dict[str, Any], path: str) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_resiliency_spec(spec, "res.yaml")
    message = str(caught.value)
    assert message.startswith("res.yaml: spec.")
    assert path in message


@pytest.mark.parametrize(
    ("field", "codes", "why"),
    [
        ("httpStatusCodes", "99", "100-599"),
        ("httpStatusCodes", "500-600", "100-599"),
        ("httpStatusCodes", "599-500", "starts after it ends"),
        ("httpStatusCodes", "5xx", "not a HTTP status code"),
        ("httpStatusCodes", "1-2-3", "range"),
        ("gRPCStatusCodes", "17", "0-16"),
        ("gRPCStatusCodes", "-1", "gRPC status"),
    ],
)
def test_matching_codes_are_validated(field: str, codes: str, why: str) -> None:
    data = {"policies": {"retries": {"r": {"matching": {field: codes}}}}}
    with pytest.raises(ConfigError) as caught:
        parse_resiliency_spec(data, "res.yaml")
    assert f"res.yaml: spec.policies.retries.r.matching.{field}: " in str(caught.value)
    assert why in str(caught.value)


def test_matching_skips_empty_pieces_and_accepts_a_single_number() -> None:
    data = {"policies": {"retries": {"r": {"matching": {"httpStatusCodes": "429,,503, "}}}}}
    spec = parse_resiliency_spec(data, "r")
    matching = spec.policies.retries["r"].matching
    assert matching is not None
    assert matching.http_status_codes == ((429, 429), (503, 503))
    single = {"policies": {"retries": {"r": {"matching": {"gRPCStatusCodes": 14}}}}}
    matching = parse_resiliency_spec(single, "r").policies.retries["r"].matching
    assert matching is not None
    assert matching.grpc_status_codes == ((14, 14),)


def test_a_resource_of_another_kind_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"res.yaml: kind: expected 'Resiliency'"):
        parse_resiliency_spec({"kind": "Component", "spec": {}}, "res.yaml")


def test_a_non_mapping_spec_is_refused() -> None:
    with pytest.raises(ConfigError, match=r"res.yaml: spec: expected a mapping"):
        parse_resiliency_spec(["x"], "res.yaml")  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("targets", "path", "policy"),
    [
        ({"apps": {"appB": {"retry": "nope"}}}, "spec.targets.apps.appB.retry", "retry"),
        (
            {"components": {"statestore": {"outbound": {"timeout": "nope"}}}},
            "spec.targets.components.statestore.outbound.timeout",
            "timeout",
        ),
        (
            {"components": {"pubsub": {"inbound": {"circuitBreaker": "nope"}}}},
            "spec.targets.components.pubsub.inbound.circuitBreaker",
            "circuit breaker",
        ),
    ],
)
def test_a_target_naming_a_missing_policy_is_an_error(
    targets: dict[str, Any], path: str, policy: str
) -> None:
    spec = parse_resiliency_spec({"targets": targets}, "res.yaml")
    with pytest.raises(ConfigError) as caught:
        merge_specs([("res.yaml", spec)])
    assert str(caught.value).startswith(f"res.yaml: {path}: no {policy} policy named 'nope'")


def test_merge_combines_resources_and_resolves_references_across_them() -> None:
    policies = parse_resiliency_spec({"policies": {"retries": {"fast": {}}}}, "policies.yaml")
    targets = parse_resiliency_spec(
        {"targets": {"components": {"statestore": {"outbound": {"retry": "fast"}}}}},
        "targets.yaml",
    )
    merged = merge_specs([("policies.yaml", policies), ("targets.yaml", targets)])
    assert set(merged.policies.retries) == {"fast"}
    assert merged.targets.components["statestore"].outbound.retry == "fast"


def test_a_missing_reference_after_merging_names_the_targets_source() -> None:
    a = parse_resiliency_spec({"policies": {"retries": {"fast": {}}}}, "a.yaml")
    b = parse_resiliency_spec({"targets": {"apps": {"x": {"retry": "slow"}}}}, "b.yaml")
    with pytest.raises(ConfigError, match=r"^b\.yaml: spec\.targets\.apps\.x\.retry: .*'slow'"):
        merge_specs([("a.yaml", a), ("b.yaml", b)])


@pytest.mark.parametrize(
    ("first", "second", "what"),
    [
        ({"policies": {"retries": {"r": {}}}}, {"policies": {"retries": {"r": {}}}}, "retry"),
        (
            {"policies": {"timeouts": {"t": "1s"}}},
            {"policies": {"timeouts": {"t": "2s"}}},
            "timeout",
        ),
        (
            {"policies": {"circuitBreakers": {"c": {}}}},
            {"policies": {"circuitBreakers": {"c": {}}}},
            "circuit breaker",
        ),
        ({"targets": {"apps": {"a": {}}}}, {"targets": {"apps": {"a": {}}}}, "app target"),
        (
            {"targets": {"components": {"s": {}}}},
            {"targets": {"components": {"s": {}}}},
            "component target",
        ),
    ],
)
def test_a_name_defined_twice_names_both_sources(
    first: dict[str, Any], second: dict[str, Any], what: str
) -> None:
    specs = [("a.yaml", parse_resiliency_spec(first, "a.yaml"))]
    specs.append(("b.yaml", parse_resiliency_spec(second, "b.yaml")))
    with pytest.raises(ConfigError) as caught:
        merge_specs(specs)
    message = str(caught.value)
    assert what in message
    assert "a.yaml" in message
    assert "b.yaml" in message


def test_the_same_name_for_different_policy_types_is_fine() -> None:
    spec = parse_resiliency_spec(
        {"policies": {"timeouts": {"x": "1s"}, "retries": {"x": {}}, "circuitBreakers": {"x": {}}}},
        "r",
    )
    assert merge_specs([("r", spec)]) == spec
