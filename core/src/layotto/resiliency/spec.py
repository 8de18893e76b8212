"""The `spec` of a Dapr `Resiliency` resource as typed, frozen models, plus the loaders that turn
YAML mappings into them and merge several resources into one.

Field names are Dapr's (camelCase aliases); the Python attributes are snake_case. Durations take
Go duration strings ("5s", "500ms"); a bare integer is milliseconds, as daprd's decoder reads it.
`actors` targets are accepted and ignored: this sidecar hosts no actors.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from functools import partial
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, PlainSerializer, ValidationError

from layotto.errors import ConfigError
from layotto.plugin.durations import parse_duration
from layotto.resiliency.trip import DEFAULT_TRIP, Trip, TripSyntaxError, compile_trip

_MODEL = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

HTTP_CODES = (100, 599)
GRPC_CODES = (0, 16)

CodeRange = tuple[int, int]


def _duration(value: Any) -> float:
    """Seconds; a bare integer (or a string of digits) is milliseconds, as daprd decodes it."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = value / 1000
    elif isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip()) / 1000
    try:
        seconds = parse_duration(value)
    except ValueError:
        raise ValueError(
            f"{value!r} is not a duration: use e.g. '5s', '500ms', '1m30s' "
            "or a number of milliseconds"
        ) from None
    if seconds < 0:
        raise ValueError(f"{value!r} is negative")
    return seconds


Duration = Annotated[float, BeforeValidator(_duration)]


def _code_ranges(bounds: CodeRange, what: str, value: Any) -> tuple[CodeRange, ...]:
    """Parse "429,500-599" into ranges within `bounds`; empty pieces are skipped, as in daprd."""
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str):
        raise ValueError(f"expected a comma-separated list of {what} codes such as '429,500-599'")
    low, high = bounds
    ranges: list[CodeRange] = []
    for piece in (p.strip() for p in value.split(",")):
        if not piece:
            continue
        ends = piece.split("-")
        if len(ends) > 2 or not all(e.strip().isdigit() for e in ends):
            raise ValueError(f"{piece!r} is not a {what} code or a range like '500-599'")
        start, end = int(ends[0]), int(ends[-1])
        if not (low <= start <= high and low <= end <= high):
            raise ValueError(f"{piece!r}: {what} codes must be within {low}-{high}")
        if end < start:
            raise ValueError(f"{piece!r}: the range starts after it ends")
        ranges.append((start, end))
    return tuple(ranges)


def _codes_text(ranges: tuple[CodeRange, ...]) -> str:
    """The ranges written back as daprd's string ("429,500-599"), so a dumped config
    validates again to the same ranges."""
    return ",".join(str(a) if a == b else f"{a}-{b}" for a, b in ranges)


HttpCodes = Annotated[
    tuple[CodeRange, ...],
    BeforeValidator(partial(_code_ranges, HTTP_CODES, "HTTP status")),
    PlainSerializer(_codes_text),
]
GrpcCodes = Annotated[
    tuple[CodeRange, ...],
    BeforeValidator(partial(_code_ranges, GRPC_CODES, "gRPC status")),
    PlainSerializer(_codes_text),
]


def _trip(value: Any) -> Trip:
    if isinstance(value, Trip):
        return value
    if not isinstance(value, str):
        raise ValueError("expected a CEL expression such as 'consecutiveFailures > 5'")
    try:
        return compile_trip(value)
    except TripSyntaxError as err:
        raise ValueError(f"{value!r}: {err}") from None


TripRule = Annotated[Trip, BeforeValidator(_trip), PlainSerializer(str)]


def _lower(value: Any) -> Any:
    return value.lower() if isinstance(value, str) else value


class RetryMatching(BaseModel):
    """Which status codes a retry policy retries; an empty list retries every code."""

    model_config = _MODEL

    http_status_codes: HttpCodes = Field(default=(), alias="httpStatusCodes")
    grpc_status_codes: GrpcCodes = Field(default=(), alias="gRPCStatusCodes")


class RetrySpec(BaseModel):
    model_config = _MODEL

    policy: Annotated[Literal["constant", "exponential"], BeforeValidator(_lower)] = "constant"
    duration: Duration = 5.0
    max_interval: Duration = Field(default=60.0, alias="maxInterval")
    # -1 retries forever (daprd's default), 0 never retries.
    max_retries: int = Field(default=-1, alias="maxRetries", ge=-1)
    matching: RetryMatching | None = None


class CircuitBreakerSpec(BaseModel):
    model_config = _MODEL

    # gobreaker reads 0 as "the default" for both; kept here so the model shows the real values.
    max_requests: int = Field(default=1, alias="maxRequests", ge=0)
    interval: Duration = 0.0
    timeout: Duration = 60.0
    trip: TripRule = Field(default_factory=lambda: compile_trip(DEFAULT_TRIP))


class Policies(BaseModel):
    model_config = _MODEL

    timeouts: dict[str, Duration] = Field(default_factory=dict)
    retries: dict[str, RetrySpec] = Field(default_factory=dict)
    circuit_breakers: dict[str, CircuitBreakerSpec] = Field(
        default_factory=dict, alias="circuitBreakers"
    )


class PolicyNames(BaseModel):
    """The policies one target (or one direction of a component) uses, by name."""

    model_config = _MODEL

    timeout: str | None = None
    retry: str | None = None
    circuit_breaker: str | None = Field(default=None, alias="circuitBreaker")


class AppTarget(PolicyNames):
    # daprd keeps one breaker per app endpoint in an LRU of this size; here one per app, so the
    # field is accepted for compatibility and unused.
    circuit_breaker_cache_size: int | None = Field(
        default=None, alias="circuitBreakerCacheSize", ge=0
    )


class ComponentTarget(BaseModel):
    model_config = _MODEL

    inbound: PolicyNames = Field(default_factory=PolicyNames)
    outbound: PolicyNames = Field(default_factory=PolicyNames)


class Targets(BaseModel):
    model_config = _MODEL

    apps: dict[str, AppTarget] = Field(default_factory=dict)
    # No actors here: accepted in any shape so a Dapr resource loads unchanged, then ignored.
    actors: dict[str, Any] = Field(default_factory=dict)
    components: dict[str, ComponentTarget] = Field(default_factory=dict)


class ResiliencySpec(BaseModel):
    """One resource's `spec`, or several merged. `ResiliencySpec()` means "no policies"."""

    model_config = _MODEL

    policies: Policies = Field(default_factory=Policies)
    targets: Targets = Field(default_factory=Targets)


def _describe(err: ValidationError) -> str:
    parts = []
    for e in err.errors():
        where = ".".join(["spec", *(str(p) for p in e["loc"])])
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{where}: {msg}")
    return "; ".join(parts)


def parse_resiliency_spec(data: Mapping[str, Any], source: str) -> ResiliencySpec:
    """Validate one resource's `spec` mapping (a whole `kind: Resiliency` document is accepted too:
    its `spec` is taken; `metadata` and `scopes` are the caller's business). Errors name `source`
    and the field path. Policy references are checked by `merge_specs`, since a target may use a
    policy that another resource defines."""
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: spec: expected a mapping, got {type(data).__name__}")
    if "kind" in data or "apiVersion" in data:
        if data.get("kind") != "Resiliency":
            raise ConfigError(f"{source}: kind: expected 'Resiliency', got {data.get('kind')!r}")
        data = data.get("spec") or {}
        if not isinstance(data, Mapping):
            raise ConfigError(f"{source}: spec: expected a mapping, got {type(data).__name__}")
    try:
        return ResiliencySpec.model_validate(dict(data))
    except ValidationError as err:
        raise ConfigError(f"{source}: {_describe(err)}") from None


def _merge_names(
    kind: str, parts: Sequence[tuple[str, Mapping[str, Any]]], seen: dict[str, str]
) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for source, items in parts:
        for name, value in items.items():
            if name in seen:
                raise ConfigError(f"{kind} {name!r} is defined twice: in {seen[name]} and {source}")
            seen[name] = source
            merged[name] = value
    return merged


def merge_specs(specs: Sequence[tuple[str, ResiliencySpec]]) -> ResiliencySpec:
    """Merge several resources (`(source, spec)` pairs) into one, then check that every target
    names policies that exist. A name defined twice (per policy type or target type) is an error
    naming both sources."""

    def merge(kind: str, pick: Callable[[ResiliencySpec], Mapping[str, Any]]) -> dict[str, Any]:
        return _merge_names(kind, [(src, pick(spec)) for src, spec in specs], {})

    merged = ResiliencySpec(
        policies=Policies(
            timeouts=merge("timeout policy", lambda s: s.policies.timeouts),
            retries=merge("retry policy", lambda s: s.policies.retries),
            circuitBreakers=merge("circuit breaker policy", lambda s: s.policies.circuit_breakers),
        ),
        targets=Targets(
            apps=merge("app target", lambda s: s.targets.apps),
            actors=merge("actor target", lambda s: s.targets.actors),
            components=merge("component target", lambda s: s.targets.components),
        ),
    )
    origin = {}
    for src, spec in specs:
        origin.update({("apps", n): src for n in spec.targets.apps})
        origin.update({("components", n): src for n in spec.targets.components})
    for (group, name), path, names in _target_names(merged):
        missing = _missing_policy(merged.policies, names)
        if missing is not None:
            raise ConfigError(f"{origin[group, name]}: {path}.{missing}")
    return merged


def check_references(spec: ResiliencySpec, source: str) -> None:
    """Raise ConfigError naming the first target that uses a policy `spec` does not define."""
    for _key, path, names in _target_names(spec):
        missing = _missing_policy(spec.policies, names)
        if missing is not None:
            raise ConfigError(f"{source}: {path}.{missing}")


def _target_names(spec: ResiliencySpec) -> list[tuple[tuple[str, str], str, PolicyNames]]:
    out: list[tuple[tuple[str, str], str, PolicyNames]] = []
    for app_id, app in spec.targets.apps.items():
        out.append((("apps", app_id), f"spec.targets.apps.{app_id}", app))
    for name, component in spec.targets.components.items():
        base = f"spec.targets.components.{name}"
        out.append((("components", name), f"{base}.inbound", component.inbound))
        out.append((("components", name), f"{base}.outbound", component.outbound))
    return out


def _missing_policy(policies: Policies, names: PolicyNames) -> str | None:
    """`<field>: <why>` for the first name that `policies` lacks, else None."""
    checks: tuple[tuple[str, str, str | None, Mapping[str, object]], ...] = (
        ("timeout", "timeout", names.timeout, policies.timeouts),
        ("retry", "retry", names.retry, policies.retries),
        ("circuitBreaker", "circuit breaker", names.circuit_breaker, policies.circuit_breakers),
    )
    for field, kind, wanted, defined in checks:
        if wanted is not None and wanted not in defined:
            known = ", ".join(sorted(defined)) or "none"
            return f"{field}: no {kind} policy named {wanted!r} (defined: {known})"
    return None
