"""gRPC rich error details, as daprd sends them (dapr-compat.md section 4).

Every `LayottoError` answer carries trailing metadata `grpc-status-details-bin`: a serialized
`google.rpc.Status{code, message, details}` whose details are `ErrorInfo{reason, domain:
"dapr.io", metadata}` and, when the edge said which resource the call was about,
`ResourceInfo{resource_type, resource_name}`. Dapr SDKs read `ErrorInfo.reason` as the error
code (`DaprGrpcError.error_code()`).

The messages are betterproto2's, so the sidecar never imports the protobuf runtime for this.
`Status.code` and `Status.message` repeat the call's own status exactly: grpcio's
`rpc_status.from_call` refuses details that disagree with the call.

grpclib writes `grpc-status-details-bin` only through a status-details codec (the header is
reserved: it cannot go as ordinary metadata). `RichStatusCodec` is that codec: the call guard
raises `GRPCError(status, message, details=<the LayottoError>)` and the codec encodes it.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from weakref import WeakKeyDictionary

from grpclib.const import Status
from grpclib.encoding.base import StatusDetailsCodecBase

from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.google.rpc import ErrorInfo, ResourceInfo
from layotto._proto.google.rpc import Status as RpcStatus
from layotto.errors import LayottoError

STATUS_DETAILS_HEADER = "grpc-status-details-bin"
ERROR_DOMAIN = "dapr.io"
TYPE_URL_PREFIX = "type.googleapis.com/"
ERROR_INFO_TYPE_URL = TYPE_URL_PREFIX + "google.rpc.ErrorInfo"
RESOURCE_INFO_TYPE_URL = TYPE_URL_PREFIX + "google.rpc.ResourceInfo"


@dataclass(frozen=True, slots=True)
class Resource:
    type: str  # Dapr's names: "state", "pubsub", "configuration", "lock", "secretstore", ...
    name: str


# Which resource an error was about, kept beside the error rather than on it: the error tree
# is transport-neutral and has no place for it. Weak keys: nothing outlives the answer.
_RESOURCES: WeakKeyDictionary[LayottoError, Resource] = WeakKeyDictionary()


@contextmanager
def about(resource_type: str, name: str) -> Iterator[None]:
    """Errors raised inside are reported with `ResourceInfo{resource_type, name}` (the first
    edge to say so wins; nothing is recorded for an empty name)."""
    try:
        yield
    except LayottoError as err:
        if name and err not in _RESOURCES:
            _RESOURCES[err] = Resource(resource_type, name)
        raise


def resource_of(err: LayottoError) -> Resource | None:
    return _RESOURCES.get(err)


def status_details(status: Status, message: str, err: LayottoError) -> bytes:
    """The serialized `google.rpc.Status` for `err` answered as `status` with `message`."""
    details = [
        PbAny(
            type_url=ERROR_INFO_TYPE_URL,
            value=bytes(
                ErrorInfo(reason=err.reason, domain=ERROR_DOMAIN, metadata=dict(err.metadata))
            ),
        )
    ]
    resource = resource_of(err)
    if resource is not None:
        details.append(
            PbAny(
                type_url=RESOURCE_INFO_TYPE_URL,
                value=bytes(ResourceInfo(resource_type=resource.type, resource_name=resource.name)),
            )
        )
    return bytes(RpcStatus(code=status.value, message=message, details=details))


class RichStatusCodec(StatusDetailsCodecBase):
    """grpclib's status-details codec for our errors: `details` is the `LayottoError` being
    answered. Anything else gets a bare `google.rpc.Status` (code and message only)."""

    def encode(self, status: Status, message: str | None, details: Any) -> bytes:
        if isinstance(details, LayottoError):
            return status_details(status, message or "", details)
        return bytes(RpcStatus(code=status.value, message=message or ""))

    def decode(self, status: Status, message: str | None, data: bytes) -> Any:
        return RpcStatus.parse(data).details


RICH_STATUS_CODEC = RichStatusCodec()
