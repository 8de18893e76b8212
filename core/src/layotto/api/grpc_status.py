"""LayottoError categories -> gRPC status codes (ARCHITECTURE.md, "Errors")."""

from __future__ import annotations

from grpclib.const import Status

from layotto.errors import ErrorCategory

GRPC_STATUS: dict[ErrorCategory, Status] = {
    ErrorCategory.INVALID_ARGUMENT: Status.INVALID_ARGUMENT,
    ErrorCategory.FAILED_PRECONDITION: Status.FAILED_PRECONDITION,
    ErrorCategory.NOT_FOUND: Status.NOT_FOUND,
    ErrorCategory.ABORTED: Status.ABORTED,
    ErrorCategory.UNIMPLEMENTED: Status.UNIMPLEMENTED,
    ErrorCategory.UNAVAILABLE: Status.UNAVAILABLE,
    ErrorCategory.DEADLINE_EXCEEDED: Status.DEADLINE_EXCEEDED,
    ErrorCategory.UNAUTHENTICATED: Status.UNAUTHENTICATED,
    ErrorCategory.PERMISSION_DENIED: Status.PERMISSION_DENIED,
    ErrorCategory.RESOURCE_EXHAUSTED: Status.RESOURCE_EXHAUSTED,
    ErrorCategory.INTERNAL: Status.INTERNAL,
}
