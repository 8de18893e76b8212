"""Everything the one gRPC port serves, each service behind the call guard: Layotto's Runtime,
Dapr's Dapr, the extension services (not built yet), health and reflection."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from layotto.api.api_access import ApiAccess
from layotto.api.dapr_grpc import (
    CONFIG_SUBSCRIBE_PATHS,
    DaprRuntime,
    DaprServices,
    dapr_building_block,
)
from layotto.api.dapr_metadata_grpc import SidecarControl
from layotto.api.gate import CallGate
from layotto.api.grpc_guard import CallGuard, GuardedService
from layotto.api.grpc_health import HealthService
from layotto.api.grpc_reflection import DescriptorIndex, ReflectionV1, ReflectionV1Alpha
from layotto.api.grpc_unimplemented import UnimplementedService
from layotto.api.layotto_grpc import RUNTIME_BUILDING_BLOCKS, LayottoRuntime
from layotto.meter import NO_METER, Meter
from layotto.services.bindings import BindingService
from layotto.services.configuration import ConfigurationService
from layotto.services.invoke import InvokeService
from layotto.services.lock import LockService
from layotto.services.pubsub import PubSubService
from layotto.services.secrets import SecretService
from layotto.services.sequencer import SequencerService
from layotto.services.state import StateService
from layotto.tracing import NO_TRACER, Tracer

# Services answered for, whose building blocks are not built yet: (full name, what to call it).
PLANNED_SERVICES: list[tuple[str, str]] = [
    ("spec.proto.extension.v1.s3.ObjectStorageService", "Object Storage API"),
    ("spec.proto.extension.v1.cryption.CryptionService", "Cryption API"),
    ("spec.proto.extension.v1.delay_queue.DelayQueue", "Delay Queue API"),
    ("spec.proto.extension.v1.email.EmailService", "Email API"),
    ("spec.proto.extension.v1.phone.PhoneCallService", "Phone API"),
    ("spec.proto.extension.v1.sms.SmsService", "SMS API"),
    ("spec.proto.runtime.v1.Lifecycle", "Lifecycle API (dynamic component configuration)"),
]

REFLECTION_SERVICES = (
    "grpc.reflection.v1.ServerReflection",
    "grpc.reflection.v1alpha.ServerReflection",
)


def _service_name(service: Any) -> str:
    path: str = next(iter(service.__mapping__()))
    return path.split("/")[1]


def _describe(service_name: str) -> Callable[[str], str]:
    """RPC name -> the building block to name in an UNIMPLEMENTED answer."""
    if service_name == "Runtime":
        return lambda method: RUNTIME_BUILDING_BLOCKS.get(method, "Runtime API")
    if service_name == "Dapr":
        return dapr_building_block
    return lambda method: service_name


@dataclass(frozen=True, slots=True)
class ApiServices:
    """The building blocks the API edges call. State and lock come twice: the surfaces share
    the implementation but not the key scheme (Layotto: no state prefix, `lock|||`; Dapr:
    `<appid>||key`, `lock||<appid>||resource`), as each upstream stores them."""

    state: StateService
    lock: LockService
    sequencer: SequencerService
    configuration: ConfigurationService
    pubsub: PubSubService
    invoke: InvokeService
    secrets: SecretService
    bindings: BindingService
    dapr_state: StateService
    dapr_lock: LockService


@dataclass(frozen=True, slots=True)
class GrpcServices:
    handlers: list[Any]  # what grpclib's Server takes
    health: HealthService


def build_grpc_services(
    services: ApiServices,
    gate: CallGate,
    api_token: str | None,
    *,
    app_id: str = "",
    allow_tokenless_config_subscribe: bool = False,
    control: SidecarControl | None = None,
    meter: Meter = NO_METER,
    tracer: Tracer = NO_TRACER,
    access: ApiAccess | None = None,
) -> GrpcServices:
    """`allow_tokenless_config_subscribe`: Dapr's configuration subscribe streams may come
    without the API token (never with a wrong one), as the Dapr SDKs send them."""
    tokenless = CONFIG_SUBSCRIBE_PATHS if allow_tokenless_config_subscribe else frozenset()
    guard = CallGuard(
        gate, api_token, tokenless_paths=tokenless, meter=meter, tracer=tracer, access=access
    )
    dapr = DaprServices(
        services.dapr_state,
        services.dapr_lock,
        services.configuration,
        services.pubsub,
        services.invoke,
        services.secrets,
        services.bindings,
    )
    api: list[tuple[Any, str]] = [
        (
            LayottoRuntime(
                services.state,
                services.lock,
                services.sequencer,
                services.configuration,
                services.pubsub,
                services.invoke,
                services.secrets,
                services.bindings,
                gate.drain_started,
            ),
            "Runtime",
        ),
        (DaprRuntime(dapr, app_id, control or SidecarControl(), gate.drain_started), "Dapr"),
        *((UnimplementedService(full), name) for full, name in PLANNED_SERVICES),
    ]
    api_names = [_service_name(svc) for svc, _ in api]
    health = HealthService(api_names, gate.drain_started)
    all_names = [*api_names, _service_name(health), *REFLECTION_SERVICES]
    index = DescriptorIndex()
    extras = [health, ReflectionV1(all_names, index), ReflectionV1Alpha(all_names, index)]
    handlers = [GuardedService(svc, guard, _describe(name)) for svc, name in api]
    handlers += [GuardedService(s, guard, _describe(_service_name(s))) for s in extras]
    return GrpcServices(handlers, health)


__all__ = [
    "PLANNED_SERVICES",
    "REFLECTION_SERVICES",
    "ApiServices",
    "GrpcServices",
    "SidecarControl",
    "build_grpc_services",
]
