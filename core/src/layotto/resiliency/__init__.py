"""Dapr `Resiliency`: timeouts, retries and circuit breakers for components and apps.

Load: `parse_resiliency_spec` per resource, `merge_specs` over all of them (checks that targets
name existing policies), `Resiliency.from_spec`. Use: `policy = resiliency.component_outbound(
name, kind)` once per call site or call, then `await policy.run(lambda: op(...))`. Targets with
nothing configured get `NO_POLICY`, a plain await.
"""

from layotto.resiliency.breaker import BreakerState, CircuitBreaker, Counts
from layotto.resiliency.policy import NO_POLICY, CircuitBreakerOpen, Policy, is_retriable
from layotto.resiliency.resolver import COMPONENT_TYPES, Resiliency
from layotto.resiliency.retry import RetryPolicy
from layotto.resiliency.spec import (
    ResiliencySpec,
    check_references,
    merge_specs,
    parse_resiliency_spec,
)
from layotto.resiliency.trip import Trip, TripSyntaxError, compile_trip

__all__ = [
    "COMPONENT_TYPES",
    "NO_POLICY",
    "BreakerState",
    "CircuitBreaker",
    "CircuitBreakerOpen",
    "Counts",
    "Policy",
    "Resiliency",
    "ResiliencySpec",
    "RetryPolicy",
    "Trip",
    "TripSyntaxError",
    "check_references",
    "compile_trip",
    "is_retriable",
    "merge_specs",
    "parse_resiliency_spec",
]
