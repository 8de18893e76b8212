"""Everything the one gRPC port serves, each service behind the call guard."""

from __future__ import annotations

from collections.abc import Callable
from functools import cached_property
from importlib import resources
from typing import Any

from google.protobuf import descriptor_pb2, descriptor_pool
from grpclib.health.check import ServiceStatus
from grpclib.health.service import Health
from grpclib.reflection.service import ServerReflection

from layotto._proto.spec.proto.extension.v1.cryption import CryptionServiceBase
from layotto._proto.spec.proto.extension.v1.delay_queue import DelayQueueBase
from layotto._proto.spec.proto.extension.v1.email import EmailServiceBase
from layotto._proto.spec.proto.extension.v1.phone import PhoneCallServiceBase
from layotto._proto.spec.proto.extension.v1.s3 import ObjectStorageServiceBase
from layotto._proto.spec.proto.extension.v1.sms import SmsServiceBase
from layotto._proto.spec.proto.runtime.v1 import LifecycleBase
from layotto.api.grpc_guard import CallGuard, GuardedService
from layotto.api.layotto_grpc import RUNTIME_BUILDING_BLOCKS, LayottoRuntime
from layotto.services.state import StateService

# Extension services the sidecar answers for (UNIMPLEMENTED until their component lands).
EXTENSION_SERVICES: list[tuple[type[Any], str]] = [
    (ObjectStorageServiceBase, "Object Storage API"),
    (CryptionServiceBase, "Cryption API"),
    (DelayQueueBase, "Delay Queue API"),
    (EmailServiceBase, "Email API"),
    (PhoneCallServiceBase, "Phone API"),
    (SmsServiceBase, "SMS API"),
    (LifecycleBase, "Lifecycle API (dynamic component configuration)"),
]


class LazyDescriptorPool:
    """Our FileDescriptorSet, parsed on the first reflection request rather than at startup."""

    @cached_property
    def _pool(self) -> descriptor_pool.DescriptorPool:
        data = resources.files("layotto._proto").joinpath("descriptors.binpb").read_bytes()
        files = descriptor_pb2.FileDescriptorSet.FromString(data)
        pool = descriptor_pool.DescriptorPool()
        for file in files.file:
            pool.Add(file)
        return pool

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pool, name)


def build_grpc_services(state: StateService, guard: CallGuard, serving: ServiceStatus) -> list[Any]:
    """`serving` feeds grpc.health.v1 (overall and per service) from readiness."""
    runtime = LayottoRuntime(state)
    plain: list[tuple[Any, str]] = [
        (runtime, "Runtime"),
        *((cls(), name) for cls, name in EXTENSION_SERVICES),
    ]

    def describe(service_name: str) -> Callable[[str], str]:
        if service_name == "Runtime":
            return lambda method: RUNTIME_BUILDING_BLOCKS.get(method, "Runtime API")
        return lambda method: service_name

    services: list[Any] = [GuardedService(svc, guard, describe(name)) for svc, name in plain]
    health = Health({svc: [serving] for svc, _ in plain})
    names = [path.split("/")[1] for svc, _ in plain for path in svc.__mapping__()]
    names = sorted({*names, "grpc.health.v1.Health", "grpc.reflection.v1alpha.ServerReflection"})
    reflection = ServerReflection(_service_names=names, _pool=LazyDescriptorPool())
    services.append(GuardedService(health, guard, lambda m: "health service"))
    services.append(GuardedService(reflection, guard, lambda m: "reflection service"))
    return services
