"""What the sidecar measures, as calls on a `Meter`. No dependencies: services, resiliency and
the edges record through it without knowing how (or whether) it is exported.

The base classes record nothing: `NO_METER` is what a sidecar without metrics uses, and the
hot paths skip even the clock when they are handed `None` instead of a bound recorder.
`layotto.metrics.PrometheusMeter` is the one implementation that records (imported only when
metrics are enabled, so prometheus_client costs nothing otherwise).

Labels stay bounded: component names, topics, gRPC method paths and HTTP route templates are
configured or fixed sets; keys, ids and raw URLs never become labels.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

# Pub/sub delivery outcomes, as Dapr's `process_status` label spells them.
INGRESS_SUCCESS = "success"
INGRESS_RETRY = "retry"
INGRESS_DROP = "drop"

# Resiliency policy types and directions, as Dapr's `policy` / `flow_direction` labels.
RETRY = "retry"
TIMEOUT = "timeout"
CIRCUIT_BREAKER = "circuitbreaker"

# (policy type, status) -> None: a policy fired (a retry, a timeout, a breaker state change).
Activation = Callable[[str, str], None]


class ComponentMeter:
    """Calls to one component (its kind and name bound): `operation` is a fixed verb
    ("get", "bulk_set", "try_lock", ...), never free text."""

    __slots__ = ()

    def record(self, operation: str, success: bool, seconds: float) -> None:
        return None


class Meter:
    """Records nothing; see `layotto.metrics.PrometheusMeter`."""

    enabled = False

    def component(self, kind: str, name: str) -> ComponentMeter | None:
        """The recorder for calls to component `name` of `kind` (None: do not measure)."""
        return None

    def component_loaded(self, kind: str, name: str) -> None:
        return None

    def grpc_method(self, path: str) -> Callable[[str, float], None] | None:
        """The recorder for one gRPC method: (status name, seconds) per finished call."""
        return None

    def http_request(self, method: str, path: str, status: int, seconds: float) -> None:
        return None

    def pubsub_egress(self, component: str, topic: str, success: bool, seconds: float) -> None:
        return None

    def pubsub_ingress(self, component: str, topic: str, status: str, seconds: float) -> None:
        return None

    def resiliency(
        self, direction: str, target: str, names: Mapping[str, str]
    ) -> Activation | None:
        """The recorder for one target's policy activations; `names`: policy type -> the
        configured policy's name."""
        return None

    def resiliency_loaded(self, name: str) -> None:
        return None


NO_METER = Meter()
