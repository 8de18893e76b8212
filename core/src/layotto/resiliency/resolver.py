"""Which policy applies to a target, resolved once per target and cached.

Precedence follows daprd (pkg/resiliency): a target named under `spec.targets` uses exactly the
policies it names, and no defaults (for a component, that holds for both directions once it is
named at all). Otherwise each of timeout, retry and circuit breaker is looked up on its own among
the reserved default names, most specific first:

    component:  Default<Type>Component<Dir>XPolicy, DefaultComponent<Dir>XPolicy,
                DefaultComponentXPolicy, DefaultXPolicy
    app:        DefaultAppXPolicy, DefaultXPolicy

with X in Retry | Timeout | CircuitBreaker and Dir in Inbound | Outbound.

Breakers: every target gets its own instance built from the named template, so two targets
sharing a breaker policy never share state. daprd keys component breakers by component name
only (both directions share one) and app breakers per endpoint; here a breaker belongs to one
(component kind, name, direction) or one app id.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from typing import Final

from layotto.meter import CIRCUIT_BREAKER, NO_METER, RETRY, TIMEOUT, Meter
from layotto.plugin import Kind
from layotto.resiliency.breaker import CircuitBreaker
from layotto.resiliency.policy import NO_POLICY, Policy
from layotto.resiliency.retry import RetryPolicy
from layotto.resiliency.spec import PolicyNames, ResiliencySpec, check_references

# Our kinds as daprd's component type names in default policy names. `Sequencer` is an extension
# (daprd has no sequencer building block): `DefaultSequencerComponentOutboundRetryPolicy` works
# here. Kinds without an entry (rpc, nameresolution, rpcfilter) skip the type-specific level.
COMPONENT_TYPES: Final[dict[Kind, str]] = {
    Kind.STATE: "Statestore",
    Kind.PUBSUB: "Pubsub",
    Kind.BINDINGS: "Binding",
    Kind.SECRETSTORES: "Secretstore",
    Kind.CONFIGURATION: "Configuration",
    Kind.LOCK: "Lock",
    Kind.SEQUENCER: "Sequencer",
}

INBOUND: Final = "inbound"
OUTBOUND: Final = "outbound"

_TargetKey = tuple[str, ...]


class Resiliency:
    """The sidecar's resiliency configuration; hands out one cached `Policy` per target."""

    def __init__(
        self,
        spec: ResiliencySpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        meter: Meter = NO_METER,
    ) -> None:
        check_references(spec, "resiliency")
        self._spec = spec
        self._meter = meter
        self._clock = clock
        self._rng = rng or random.Random()
        policies = spec.policies
        self._retries = {
            n: RetryPolicy.from_spec(n, s, self._rng) for n, s in policies.retries.items()
        }
        self._cache: dict[_TargetKey, Policy] = {}

    @classmethod
    def from_spec(
        cls,
        spec: ResiliencySpec,
        *,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
        meter: Meter = NO_METER,
    ) -> Resiliency:
        return cls(spec, clock=clock, rng=rng, meter=meter)

    @classmethod
    def empty(cls) -> Resiliency:
        return cls(ResiliencySpec())

    @property
    def spec(self) -> ResiliencySpec:
        return self._spec

    def component_outbound(self, name: str, kind: Kind) -> Policy:
        """Calls from the sidecar to the component (get state, publish, invoke a binding)."""
        return self._component(name, kind, OUTBOUND)

    def component_inbound(self, name: str, kind: Kind) -> Policy:
        """Calls the component triggers towards the app (pub/sub delivery, input bindings)."""
        return self._component(name, kind, INBOUND)

    def app(self, app_id: str) -> Policy:
        """Service invocation to `app_id`."""
        key = ("app", app_id)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        explicit = self._spec.targets.apps.get(app_id)
        names = explicit if explicit is not None else self._defaults(["App"])
        return self._build(key, f"app {app_id!r}", names, (OUTBOUND, f"app_{app_id}"))

    def describe(self) -> list[dict[str, object]]:
        """The configured targets and reserved defaults, plus breaker states of targets in use,
        for `/v1.0/metadata` and startup logs."""
        out: list[dict[str, object]] = []
        for app_id, app in self._spec.targets.apps.items():
            out.append({"target": "app", "name": app_id, **_names(app)})
        for name, component in self._spec.targets.components.items():
            for direction, names in ((INBOUND, component.inbound), (OUTBOUND, component.outbound)):
                if _names(names):
                    out.append(
                        {
                            "target": "component",
                            "name": name,
                            "direction": direction,
                            **_names(names),
                        }
                    )
        policies = self._spec.policies
        defined = [*policies.timeouts, *policies.retries, *policies.circuit_breakers]
        for policy_name in sorted({n for n in defined if n.startswith("Default")}):
            out.append({"target": "default", "name": policy_name})
        for policy in self._cache.values():
            if policy.breaker is not None:
                out.append({"target": "breaker", "for": policy.name, **policy.breaker.describe()})
        return out

    def _component(self, name: str, kind: Kind, direction: str) -> Policy:
        key = ("component", kind.value, name, direction)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        explicit = self._spec.targets.components.get(name)
        if explicit is not None:
            names = explicit.inbound if direction == INBOUND else explicit.outbound
        else:
            dir_ = direction.capitalize()
            levels = [f"Component{dir_}", "Component"]
            type_name = COMPONENT_TYPES.get(kind)
            if type_name is not None:
                levels.insert(0, f"{type_name}Component{dir_}")
            names = self._defaults(levels)
        target = (direction, f"{kind.value}_{name}")
        return self._build(key, f"component {name!r} {direction}", names, target)

    def _defaults(self, levels: list[str]) -> PolicyNames:
        """The most specific reserved default name for each policy type, or None."""
        policies = self._spec.policies

        def pick(kind: str, defined: dict[str, object]) -> str | None:
            for level in [*levels, ""]:
                candidate = f"Default{level}{kind}Policy"
                if candidate in defined:
                    return candidate
            return None

        return PolicyNames(
            timeout=pick("Timeout", dict(policies.timeouts)),
            retry=pick("Retry", dict(policies.retries)),
            circuitBreaker=pick("CircuitBreaker", dict(policies.circuit_breakers)),
        )

    def _build(
        self, key: _TargetKey, label: str, names: PolicyNames, target: tuple[str, str]
    ) -> Policy:
        """`target`: (flow direction, target) as Dapr's resiliency metrics label them."""
        policies = self._spec.policies
        breaker = None
        if names.circuit_breaker is not None:
            template = policies.circuit_breakers[names.circuit_breaker]
            breaker = CircuitBreaker.from_spec(
                f"{names.circuit_breaker}-{label}", template, clock=self._clock
            )
        policy = Policy(
            label,
            timeout=None if names.timeout is None else policies.timeouts[names.timeout],
            retry=None if names.retry is None else self._retries[names.retry],
            breaker=breaker,
        )
        if not policy:
            policy = NO_POLICY
        else:
            self._observe(policy, names, target)
        self._cache[key] = policy
        return policy

    def _observe(self, policy: Policy, names: PolicyNames, target: tuple[str, str]) -> None:
        by_type = {
            TIMEOUT: names.timeout,
            RETRY: names.retry,
            CIRCUIT_BREAKER: names.circuit_breaker,
        }
        activated = self._meter.resiliency(
            *target, {k: v for k, v in by_type.items() if v is not None}
        )
        if activated is None:
            return
        policy.activated = activated
        if policy.breaker is not None:
            policy.breaker.on_change = lambda state: activated(CIRCUIT_BREAKER, state.value)


def _names(names: PolicyNames) -> dict[str, object]:
    fields = {
        "timeout": names.timeout,
        "retry": names.retry,
        "circuitBreaker": names.circuit_breaker,
    }
    return {k: v for k, v in fields.items() if v is not None}
