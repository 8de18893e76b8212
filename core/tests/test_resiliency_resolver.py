"""Which policy a target gets: explicit targets, then Dapr's reserved default names from the
most specific to the most general; one cached Policy and one breaker per target."""

from __future__ import annotations

from typing import Any

import pytest
from layotto.errors import BackendUnavailable, ConfigError
from layotto.plugin import Kind
from layotto.resiliency import (
    NO_POLICY,
    BreakerState,
    Policy,
    Resiliency,
    merge_specs,
    parse_resiliency_spec,
)

pytestmark = pytest.mark.anyio


def _resiliency(spec: dict[str, Any]) -> Resiliency:
    parsed = parse_resiliency_spec(spec, "res.yaml")
    return Resiliency.from_spec(merge_specs([("res.yaml", parsed)]))


def _retry_name(policy: Policy) -> str | None:
    return policy.retry.name if policy.retry is not None else None


ALL_RETRY_DEFAULTS = {
    "DefaultRetryPolicy": {"maxRetries": 1},
    "DefaultAppRetryPolicy": {"maxRetries": 2},
    "DefaultComponentRetryPolicy": {"maxRetries": 3},
    "DefaultComponentOutboundRetryPolicy": {"maxRetries": 4},
    "DefaultComponentInboundRetryPolicy": {"maxRetries": 5},
    "DefaultStatestoreComponentOutboundRetryPolicy": {"maxRetries": 6},
    "DefaultPubsubComponentInboundRetryPolicy": {"maxRetries": 7},
    "named": {"maxRetries": 8},
}


def test_nothing_configured_is_no_policy() -> None:
    resiliency = Resiliency.empty()
    assert resiliency.component_outbound("statestore", Kind.STATE) is NO_POLICY
    assert resiliency.component_inbound("pubsub", Kind.PUBSUB) is NO_POLICY
    assert resiliency.app("orders") is NO_POLICY
    assert resiliency.describe() == []


def test_an_explicit_target_wins_over_every_default() -> None:
    resiliency = _resiliency(
        {
            "policies": {"retries": ALL_RETRY_DEFAULTS},
            "targets": {
                "components": {"statestore": {"outbound": {"retry": "named"}}},
                "apps": {"orders": {"retry": "named"}},
            },
        }
    )
    assert _retry_name(resiliency.component_outbound("statestore", Kind.STATE)) == "named"
    assert _retry_name(resiliency.app("orders")) == "named"


@pytest.mark.parametrize(
    ("defined", "kind", "inbound", "expected"),
    [
        (ALL_RETRY_DEFAULTS, Kind.STATE, False, "DefaultStatestoreComponentOutboundRetryPolicy"),
        (ALL_RETRY_DEFAULTS, Kind.PUBSUB, True, "DefaultPubsubComponentInboundRetryPolicy"),
        (ALL_RETRY_DEFAULTS, Kind.PUBSUB, False, "DefaultComponentOutboundRetryPolicy"),
        (ALL_RETRY_DEFAULTS, Kind.BINDINGS, True, "DefaultComponentInboundRetryPolicy"),
        (
            {"DefaultComponentRetryPolicy": {}, "DefaultRetryPolicy": {}},
            Kind.LOCK,
            False,
            "DefaultComponentRetryPolicy",
        ),
        ({"DefaultRetryPolicy": {}}, Kind.SECRETSTORES, False, "DefaultRetryPolicy"),
        ({"DefaultAppRetryPolicy": {}}, Kind.STATE, False, None),
        (
            {"DefaultBindingComponentInboundRetryPolicy": {}},
            Kind.BINDINGS,
            True,
            "DefaultBindingComponentInboundRetryPolicy",
        ),
        ({"DefaultBindingComponentInboundRetryPolicy": {}}, Kind.BINDINGS, False, None),
        ({"DefaultStatestoreComponentOutboundRetryPolicy": {}}, Kind.LOCK, False, None),
    ],
)
def test_component_defaults_go_from_most_specific_to_most_general(
    defined: dict[str, Any], kind: Kind, inbound: bool, expected: str | None
) -> None:
    resiliency = _resiliency({"policies": {"retries": defined}})
    get = resiliency.component_inbound if inbound else resiliency.component_outbound
    policy = get("c", kind)
    if expected is None:
        assert policy is NO_POLICY
    else:
        assert _retry_name(policy) == expected


@pytest.mark.parametrize(
    ("kind", "type_name"),
    [
        (Kind.STATE, "Statestore"),
        (Kind.PUBSUB, "Pubsub"),
        (Kind.BINDINGS, "Binding"),
        (Kind.SECRETSTORES, "Secretstore"),
        (Kind.CONFIGURATION, "Configuration"),
        (Kind.LOCK, "Lock"),
        (Kind.SEQUENCER, "Sequencer"),
    ],
)
def test_every_kind_has_its_dapr_type_name(kind: Kind, type_name: str) -> None:
    name = f"Default{type_name}ComponentOutboundTimeoutPolicy"
    resiliency = _resiliency({"policies": {"timeouts": {name: "5s", "DefaultTimeoutPolicy": "1s"}}})
    assert resiliency.component_outbound("c", kind).timeout == 5.0


def test_apps_use_app_defaults_then_the_general_default() -> None:
    both = _resiliency({"policies": {"retries": ALL_RETRY_DEFAULTS}})
    assert _retry_name(both.app("orders")) == "DefaultAppRetryPolicy"
    general = _resiliency({"policies": {"retries": {"DefaultRetryPolicy": {}}}})
    assert _retry_name(general.app("orders")) == "DefaultRetryPolicy"
    components_only = _resiliency({"policies": {"retries": {"DefaultComponentRetryPolicy": {}}}})
    assert components_only.app("orders") is NO_POLICY


def test_each_policy_type_resolves_on_its_own() -> None:
    resiliency = _resiliency(
        {
            "policies": {
                "timeouts": {"DefaultTimeoutPolicy": "3s"},
                "retries": {"DefaultStatestoreComponentOutboundRetryPolicy": {}},
                "circuitBreakers": {"DefaultComponentOutboundCircuitBreakerPolicy": {}},
            }
        }
    )
    policy = resiliency.component_outbound("statestore", Kind.STATE)
    assert policy.timeout == 3.0
    assert _retry_name(policy) == "DefaultStatestoreComponentOutboundRetryPolicy"
    assert policy.breaker is not None


def test_a_named_component_target_uses_no_defaults_in_either_direction() -> None:
    # daprd: once a component is a target, only the names it lists apply.
    resiliency = _resiliency(
        {
            "policies": {
                "timeouts": {"DefaultTimeoutPolicy": "3s"},
                "retries": {"fast": {}, "DefaultComponentInboundRetryPolicy": {}},
            },
            "targets": {"components": {"pubsub": {"outbound": {"retry": "fast"}}}},
        }
    )
    outbound = resiliency.component_outbound("pubsub", Kind.PUBSUB)
    assert _retry_name(outbound) == "fast"
    assert outbound.timeout is None
    assert resiliency.component_inbound("pubsub", Kind.PUBSUB) is NO_POLICY
    assert _retry_name(resiliency.component_inbound("other", Kind.PUBSUB)) == (
        "DefaultComponentInboundRetryPolicy"
    )


def test_the_same_policy_object_is_returned_for_a_target() -> None:
    resiliency = _resiliency({"policies": {"circuitBreakers": {"DefaultCircuitBreakerPolicy": {}}}})
    first = resiliency.component_outbound("statestore", Kind.STATE)
    assert resiliency.component_outbound("statestore", Kind.STATE) is first
    assert resiliency.app("orders") is resiliency.app("orders")


async def test_targets_sharing_a_breaker_policy_do_not_share_its_state() -> None:
    resiliency = _resiliency(
        {
            "policies": {"circuitBreakers": {"cb": {"trip": "consecutiveFailures >= 1"}}},
            "targets": {
                "components": {
                    "store1": {"outbound": {"circuitBreaker": "cb"}},
                    "store2": {"outbound": {"circuitBreaker": "cb"}},
                    "pubsub": {
                        "outbound": {"circuitBreaker": "cb"},
                        "inbound": {"circuitBreaker": "cb"},
                    },
                }
            },
        }
    )

    async def fail() -> None:
        raise BackendUnavailable("down")

    store1 = resiliency.component_outbound("store1", Kind.STATE)
    with pytest.raises(BackendUnavailable):
        await store1.run(fail)
    assert store1.breaker is not None
    assert store1.breaker.state is BreakerState.OPEN
    store2 = resiliency.component_outbound("store2", Kind.STATE)
    assert store2.breaker is not None
    assert store2.breaker.state is BreakerState.CLOSED

    out = resiliency.component_outbound("pubsub", Kind.PUBSUB)
    with pytest.raises(BackendUnavailable):
        await out.run(fail)
    inbound = resiliency.component_inbound("pubsub", Kind.PUBSUB)
    assert inbound.breaker is not None
    assert inbound.breaker.state is BreakerState.CLOSED


def test_a_default_breaker_is_per_component_too() -> None:
    resiliency = _resiliency({"policies": {"circuitBreakers": {"DefaultCircuitBreakerPolicy": {}}}})
    a = resiliency.component_outbound("a", Kind.STATE).breaker
    b = resiliency.component_outbound("b", Kind.STATE).breaker
    assert a is not None
    assert b is not None
    assert a is not b


def test_from_spec_checks_references() -> None:
    spec = parse_resiliency_spec({"targets": {"apps": {"x": {"timeout": "nope"}}}}, "res.yaml")
    with pytest.raises(ConfigError, match=r"spec\.targets\.apps\.x\.timeout: .*'nope'"):
        Resiliency.from_spec(spec)


def test_describe_lists_targets_defaults_and_live_breakers() -> None:
    resiliency = _resiliency(
        {
            "policies": {
                "timeouts": {"general": "5s"},
                "retries": {"DefaultRetryPolicy": {}},
                "circuitBreakers": {"cb": {}},
            },
            "targets": {
                "apps": {"orders": {"timeout": "general"}},
                "components": {"statestore": {"outbound": {"circuitBreaker": "cb"}}},
            },
        }
    )
    resiliency.component_outbound("statestore", Kind.STATE)
    described = resiliency.describe()
    assert {"target": "app", "name": "orders", "timeout": "general"} in described
    assert {
        "target": "component",
        "name": "statestore",
        "direction": "outbound",
        "circuitBreaker": "cb",
    } in described
    assert {"target": "default", "name": "DefaultRetryPolicy"} in described
    breakers = [d for d in described if d["target"] == "breaker"]
    assert len(breakers) == 1
    assert breakers[0]["state"] == "closed"
    assert breakers[0]["for"] == "component 'statestore' outbound"
