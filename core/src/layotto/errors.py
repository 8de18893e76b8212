"""The error tree every layer raises; the edges (gRPC, HTTP) map each class to a status once.

Messages are written for the API caller: they name the field or component at fault and never
carry backend hosts or credentials (components translate foreign errors before raising).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import Enum


class ErrorCategory(Enum):
    """Transport-neutral categories; `api/` maps them to gRPC and HTTP statuses."""

    INVALID_ARGUMENT = "invalid_argument"
    FAILED_PRECONDITION = "failed_precondition"
    NOT_FOUND = "not_found"
    ABORTED = "aborted"
    UNIMPLEMENTED = "unimplemented"
    UNAVAILABLE = "unavailable"
    DEADLINE_EXCEEDED = "deadline_exceeded"
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"
    RESOURCE_EXHAUSTED = "resource_exhausted"
    INTERNAL = "internal"


class LayottoError(Exception):
    """Base of all errors raised on purpose. `reason` is a Dapr-style machine-readable code."""

    category = ErrorCategory.INTERNAL
    default_reason = "ERR_INTERNAL"

    def __init__(
        self,
        message: str,
        *,
        reason: str | None = None,
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.reason = reason or self.default_reason
        self.metadata = dict(metadata or {})


class InvalidArgument(LayottoError):
    """A request field is missing or malformed, or it names an unknown component."""

    category = ErrorCategory.INVALID_ARGUMENT
    default_reason = "ERR_INVALID_ARGUMENT"


class NotConfigured(LayottoError):
    """No component of the kind the call needs is configured at all."""

    category = ErrorCategory.FAILED_PRECONDITION
    default_reason = "ERR_NOT_CONFIGURED"


class NotFound(LayottoError):
    category = ErrorCategory.NOT_FOUND
    default_reason = "ERR_NOT_FOUND"


class ETagMismatch(LayottoError):
    """Optimistic concurrency failed: the stored ETag is not the one the caller sent."""

    category = ErrorCategory.ABORTED
    default_reason = "DAPR_STATE_ETAG_MISMATCH"


class ETagInvalid(LayottoError):
    """The ETag is not of a form this store can ever produce."""

    category = ErrorCategory.INVALID_ARGUMENT
    default_reason = "DAPR_STATE_ETAG_INVALID"


class Unsupported(LayottoError):
    """The building block, the component or this operation of it does not exist here."""

    category = ErrorCategory.UNIMPLEMENTED
    default_reason = "ERR_NOT_SUPPORTED"


class BackendUnavailable(LayottoError):
    """The backend cannot be reached; the call may succeed later."""

    category = ErrorCategory.UNAVAILABLE
    default_reason = "ERR_BACKEND_UNAVAILABLE"


class BackendTimeout(LayottoError):
    category = ErrorCategory.DEADLINE_EXCEEDED
    default_reason = "ERR_BACKEND_TIMEOUT"


class Unauthenticated(LayottoError):
    category = ErrorCategory.UNAUTHENTICATED
    default_reason = "ERR_UNAUTHENTICATED"


class PermissionDenied(LayottoError):
    category = ErrorCategory.PERMISSION_DENIED
    default_reason = "ERR_PERMISSION_DENIED"


class ComponentError(LayottoError):
    """The component failed for a reason that is neither the caller's nor transient."""

    category = ErrorCategory.INTERNAL
    default_reason = "ERR_COMPONENT"


class ResourceExhausted(LayottoError):
    """A bound was reached (a full queue, a quota); the call may succeed once it drains."""

    category = ErrorCategory.RESOURCE_EXHAUSTED
    default_reason = "ERR_RESOURCE_EXHAUSTED"


class SubscriberTooSlow(ResourceExhausted):
    """A streaming subscriber stopped reading: its buffer overflowed or stayed full too long,
    so it was dropped. The client should subscribe again (and read the current values)."""

    default_reason = "ERR_SUBSCRIBER_TOO_SLOW"


class ShuttingDown(LayottoError):
    """The sidecar is draining and takes no new calls."""

    category = ErrorCategory.UNAVAILABLE
    default_reason = "ERR_SHUTTING_DOWN"


class ConfigError(Exception):
    """Startup configuration is wrong. Not an API error: the CLI prints it and exits non-zero."""


class PluginError(ConfigError):
    """A plugin failed to import, or two plugins claim the same component type."""
