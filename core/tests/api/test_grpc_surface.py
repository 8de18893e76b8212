"""What the one gRPC port serves: every Runtime RPC, the extension services, Lifecycle,
grpc.health.v1 and server reflection (layotto-semantics.md §1)."""

from __future__ import annotations

from typing import Any

import anyio
import grpc
import pytest
from google.protobuf import descriptor_pb2
from grpc_health.v1 import health_pb2 as grpcio_health_pb2
from grpc_health.v1 import health_pb2_grpc as grpcio_health_grpc
from grpc_reflection.v1alpha import reflection_pb2 as grpcio_reflection_pb2
from grpc_reflection.v1alpha import reflection_pb2_grpc as grpcio_reflection_grpc
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from layotto._proto.grpc.health import v1 as health_pb
from layotto._proto.grpc.reflection import v1 as reflection_pb
from layotto.health import Probe
from layotto.plugin import Health, HealthStatus

pytestmark = pytest.mark.anyio

RUNTIME = "spec.proto.runtime.v1.Runtime"

# The 26 RPCs of spec.proto.runtime.v1.Runtime -> (building block named when unimplemented,
# streaming shape as (client streams, server streams)). Implemented RPCs have None.
RUNTIME_RPCS: dict[str, tuple[str | None, tuple[bool, bool]]] = {
    "SayHello": ("Hello API", (False, False)),
    "InvokeService": (None, (False, False)),
    "GetConfiguration": (None, (False, False)),
    "SaveConfiguration": (None, (False, False)),
    "DeleteConfiguration": (None, (False, False)),
    "SubscribeConfiguration": (None, (True, True)),
    "TryLock": (None, (False, False)),
    "Unlock": (None, (False, False)),
    "LockKeepAlive": (None, (False, False)),
    "GetNextId": (None, (False, False)),
    "GetState": (None, (False, False)),
    "GetBulkState": (None, (False, False)),
    "SaveState": (None, (False, False)),
    "DeleteState": (None, (False, False)),
    "DeleteBulkState": (None, (False, False)),
    "ExecuteStateTransaction": (None, (False, False)),
    "PublishEvent": (None, (False, False)),
    "SubscribeTopicEvents": (None, (True, True)),
    "GetFile": ("File API", (False, True)),
    "PutFile": ("File API", (True, False)),
    "ListFile": ("File API", (False, False)),
    "DelFile": ("File API", (False, False)),
    "GetFileMeta": ("File API", (False, False)),
    "InvokeBinding": (None, (False, False)),
    "GetSecret": (None, (False, False)),
    "GetBulkSecret": (None, (False, False)),
}
NOT_YET = [name for name, (block, _) in RUNTIME_RPCS.items() if block is not None]
SERVED = [name for name, (block, _) in RUNTIME_RPCS.items() if block is None]
# The field a default (empty) request of each served RPC is rejected for.
FIRST_CHECKED_FIELD = {
    **dict.fromkeys(
        [
            "GetState",
            "GetBulkState",
            "SaveState",
            "DeleteState",
            "DeleteBulkState",
            "ExecuteStateTransaction",
            "GetConfiguration",
            "SaveConfiguration",
            "DeleteConfiguration",
            "SubscribeConfiguration",
            "GetSecret",
            "GetBulkSecret",
        ],
        "store_name",
    ),
    **dict.fromkeys(["TryLock", "Unlock", "LockKeepAlive"], "resource_id"),
    "GetNextId": "key",
    "PublishEvent": "pubsub name",
    "InvokeService": "'id'",
    "SubscribeTopicEvents": "initial request",
    "InvokeBinding": "output binding is not configured",
}
# The default runtime has no component of these blocks: the answer says so.
NOT_CONFIGURED = frozenset({"InvokeBinding"})

# Extension services (and Lifecycle) -> (RPCs, the API named in UNIMPLEMENTED answers).
OSS_RPCS = [
    "PutObject", "GetObject", "DeleteObject", "CopyObject", "DeleteObjects", "ListObjects",
    "GetObjectCannedAcl", "PutObjectCannedAcl", "CreateMultipartUpload", "UploadPart",
    "UploadPartCopy", "CompleteMultipartUpload", "AbortMultipartUpload", "ListMultipartUploads",
    "ListObjectVersions", "HeadObject", "IsObjectExist", "PutObjectTagging",
    "DeleteObjectTagging", "GetObjectTagging", "RestoreObject", "ListParts", "AppendObject",
    "SignURL", "UpdateDownloadBandwidthRateLimit", "UpdateUploadBandwidthRateLimit",
]  # fmt: skip
EXTENSIONS: dict[str, tuple[list[str], str]] = {
    "spec.proto.extension.v1.s3.ObjectStorageService": (OSS_RPCS, "Object Storage API"),
    "spec.proto.extension.v1.cryption.CryptionService": (["Encrypt", "Decrypt"], "Cryption API"),
    "spec.proto.extension.v1.delay_queue.DelayQueue": (["PublishDelayMessage"], "Delay Queue API"),
    "spec.proto.extension.v1.email.EmailService": (
        ["SendEmailWithTemplate", "SendEmail"],
        "Email API",
    ),
    "spec.proto.extension.v1.phone.PhoneCallService": (["SendVoiceWithTemplate"], "Phone API"),
    "spec.proto.extension.v1.sms.SmsService": (["SendSmsWithTemplate"], "SMS API"),
    "spec.proto.runtime.v1.Lifecycle": (["ApplyConfiguration"], "Lifecycle API"),
}
EXTENSION_PATHS = [f"/{svc}/{m}" for svc, (methods, _) in EXTENSIONS.items() for m in methods]


def test_the_table_covers_26_runtime_rpcs() -> None:
    assert len(RUNTIME_RPCS) == 26
    assert len(NOT_YET) == 6
    assert set(SERVED) == set(FIRST_CHECKED_FIELD)


# -- Runtime RPCs --------------------------------------------------------------------------


@pytest.mark.parametrize("method", NOT_YET)
async def test_unbuilt_runtime_rpc_is_unimplemented_naming_its_block(
    channel: Channel, rpc: Any, method: str
) -> None:
    block, _ = RUNTIME_RPCS[method]
    assert block is not None
    with pytest.raises(GRPCError) as info:
        await rpc(channel, f"/{RUNTIME}/{method}")
    assert info.value.status is Status.UNIMPLEMENTED
    message = info.value.message or ""
    # Not grpclib's generic "Method not found": the guard names the method and the block.
    assert method in message
    assert block in message


@pytest.mark.parametrize("method", SERVED)
async def test_served_rpc_validates_its_request(channel: Channel, rpc: Any, method: str) -> None:
    """A default request lacks required fields: the building block itself answers, not
    UNIMPLEMENTED."""
    with pytest.raises(GRPCError) as info:
        await rpc(channel, f"/{RUNTIME}/{method}")
    expected = Status.FAILED_PRECONDITION if method in NOT_CONFIGURED else Status.INVALID_ARGUMENT
    assert info.value.status is expected
    assert FIRST_CHECKED_FIELD[method] in (info.value.message or "")


async def test_unknown_method_is_unimplemented(sidecar: Any) -> None:
    """The baseline the UNIMPLEMENTED tests above differ from: an unknown path gets no
    building block in its message. (grpcio client: grpclib's own client rejects the
    trailers-only answer of grpclib's router for lack of a content-type.)"""
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        call = chan.unary_unary(f"/{RUNTIME}/NoSuchMethod")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(b"", timeout=5)
    assert info.value.code() is grpc.StatusCode.UNIMPLEMENTED
    assert "API" not in (info.value.details() or "")


@pytest.mark.parametrize("path", EXTENSION_PATHS)
async def test_extension_service_is_unimplemented_naming_itself(
    channel: Channel, rpc: Any, path: str
) -> None:
    service, method = path.strip("/").split("/")
    _, api = EXTENSIONS[service]
    with pytest.raises(GRPCError) as info:
        await rpc(channel, path)
    assert info.value.status is Status.UNIMPLEMENTED
    message = info.value.message or ""
    assert method in message
    assert api in message


# -- grpc.health.v1 ------------------------------------------------------------------------

SERVING = health_pb.HealthCheckResponseServingStatus.SERVING
NOT_SERVING = health_pb.HealthCheckResponseServingStatus.NOT_SERVING


async def health_check(
    channel: Channel, service: str
) -> health_pb.HealthCheckResponseServingStatus:
    reply = await health_pb.HealthStub(channel, timeout=10).check(
        health_pb.HealthCheckRequest(service=service)
    )
    return reply.status


@pytest.mark.parametrize("service", ["", RUNTIME, *EXTENSIONS])
async def test_health_is_serving_when_ready(channel: Channel, service: str) -> None:
    assert await health_check(channel, service) == SERVING


async def test_health_of_an_unknown_service_is_not_found(channel: Channel) -> None:
    with pytest.raises(GRPCError) as info:
        await health_check(channel, "no.such.Service")
    assert info.value.status is Status.NOT_FOUND


async def test_health_follows_readiness(channel: Channel, runtime: Any) -> None:
    runtime.health.set("test:blocker", Health.down("test"), frozenset({Probe.READINESS}))
    assert await health_check(channel, "") == NOT_SERVING
    assert await health_check(channel, RUNTIME) == NOT_SERVING
    runtime.health.update("test:blocker", Health(HealthStatus.INIT))
    assert await health_check(channel, RUNTIME) == NOT_SERVING
    runtime.health.update("test:blocker", Health.up())
    assert await health_check(channel, "") == SERVING
    assert await health_check(channel, RUNTIME) == SERVING


async def test_health_with_the_grpcio_client(sidecar: Any) -> None:
    """The reference client (what k8s gRPC probes and grpc-health-probe speak)."""
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        stub = grpcio_health_grpc.HealthStub(chan)
        for service in ("", RUNTIME):
            request = grpcio_health_pb2.HealthCheckRequest(service=service)
            reply = await stub.Check(request, timeout=5)
            assert reply.status == grpcio_health_pb2.HealthCheckResponse.SERVING


# -- server reflection ---------------------------------------------------------------------


@pytest.fixture
def reflect(channel: Channel) -> Any:
    """Asks grpc.reflection.v1 the given questions on one stream; returns the answers."""

    async def ask(
        *requests: reflection_pb.ServerReflectionRequest,
    ) -> list[reflection_pb.ServerReflectionResponse]:
        stub = reflection_pb.ServerReflectionStub(channel, timeout=10)
        with anyio.fail_after(10):
            replies = [r async for r in stub.server_reflection_info(list(requests))]
        assert len(replies) == len(requests)
        return replies

    return ask


def list_services() -> reflection_pb.ServerReflectionRequest:
    return reflection_pb.ServerReflectionRequest(list_services="")


def containing(symbol: str) -> reflection_pb.ServerReflectionRequest:
    return reflection_pb.ServerReflectionRequest(file_containing_symbol=symbol)


def file_descriptors(reply: Any) -> list[descriptor_pb2.FileDescriptorProto]:
    assert reply.file_descriptor_response is not None, reply
    return [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in reply.file_descriptor_response.file_descriptor_proto
    ]


def defines(files: list[descriptor_pb2.FileDescriptorProto], service: str) -> bool:
    package, _, name = service.rpartition(".")
    return any(f.package == package and name in {s.name for s in f.service} for f in files)


async def test_reflection_lists_the_services(reflect: Any) -> None:
    (reply,) = await reflect(list_services())
    names = {s.name for s in reply.list_services_response.service}
    assert {RUNTIME, "grpc.health.v1.Health", *EXTENSIONS} <= names


async def test_reflection_describes_every_listed_service(reflect: Any) -> None:
    (reply,) = await reflect(list_services())
    names = [s.name for s in reply.list_services_response.service]
    answers = await reflect(*(containing(name) for name in names))
    for name, answer in zip(names, answers, strict=True):
        assert defines(file_descriptors(answer), name), name


async def test_every_listed_service_is_served(reflect: Any, channel: Channel) -> None:
    """Each listed API service is known to the health service of this port (health and
    reflection themselves are exercised directly above and below)."""
    (reply,) = await reflect(list_services())
    for name in (s.name for s in reply.list_services_response.service):
        if name.startswith(("grpc.reflection.", "grpc.health.")):
            continue
        assert await health_check(channel, name) == SERVING, name


async def test_reflection_gives_all_26_runtime_rpcs(reflect: Any) -> None:
    (reply,) = await reflect(containing(RUNTIME))
    files = {f.name: f for f in file_descriptors(reply)}
    runtime_file = files["spec/proto/runtime/v1/runtime.proto"]
    (service,) = [s for s in runtime_file.service if s.name == "Runtime"]
    shapes = {m.name: (m.client_streaming, m.server_streaming) for m in service.method}
    assert shapes == {name: shape for name, (_, shape) in RUNTIME_RPCS.items()}
    # Imports come along, so a client can build the message types without another request.
    assert set(runtime_file.dependency) <= set(files)


async def test_reflection_unknown_symbol_is_not_found(reflect: Any) -> None:
    (reply,) = await reflect(containing("no.such.Symbol"))
    assert reply.error_response is not None
    assert reply.error_response.error_code == Status.NOT_FOUND.value


async def test_reflection_v1alpha_with_the_grpcio_client(sidecar: Any) -> None:
    """grpc_cli, Postman and older grpcurl speak v1alpha."""
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        stub = grpcio_reflection_grpc.ServerReflectionStub(chan)
        requests = [
            grpcio_reflection_pb2.ServerReflectionRequest(list_services=""),
            grpcio_reflection_pb2.ServerReflectionRequest(file_containing_symbol=RUNTIME),
        ]
        replies = [r async for r in stub.ServerReflectionInfo(iter(requests), timeout=5)]
    assert len(replies) == 2
    names = {s.name for s in replies[0].list_services_response.service}
    assert {RUNTIME, "grpc.health.v1.Health", *EXTENSIONS} <= names
    files = [
        descriptor_pb2.FileDescriptorProto.FromString(raw)
        for raw in replies[1].file_descriptor_response.file_descriptor_proto
    ]
    assert defines(files, RUNTIME)
