"""The errors a component raises. Translate backend exceptions into these at the edge of the
component, with messages free of hosts and credentials."""

from layotto.errors import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    ETagInvalid,
    ETagMismatch,
    InvalidArgument,
    LayottoError,
    NotFound,
    PermissionDenied,
    ResourceExhausted,
    Unsupported,
)

__all__ = [
    "BackendTimeout",
    "BackendUnavailable",
    "ComponentError",
    "ETagInvalid",
    "ETagMismatch",
    "InvalidArgument",
    "LayottoError",
    "NotFound",
    "PermissionDenied",
    "ResourceExhausted",
    "Unsupported",
]
