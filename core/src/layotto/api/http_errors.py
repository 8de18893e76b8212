"""Errors on the HTTP port, in one place: `LayottoError` -> daprd's status code and JSON body.

The body is daprd's: `{"errorCode": "ERR_...", "message": "...", "details": [ErrorInfo]}`
(dapr-compat.md section 4). The HTTP `errorCode` is daprd's legacy code, which is not always
the `ErrorInfo.reason` the gRPC surface sends (state store not found: `ERR_STATE_STORE_NOT_FOUND`
over HTTP, reason `DAPR_STATE_NOT_FOUND`), so the reason travels in `details` as daprd does.

The status comes from the error's category, except where daprd answers a given reason with
another one (a missing secret store is 401, a missing pubsub 404): `DAPR_HTTP` lists those.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse

from layotto.errors import ErrorCategory, LayottoError

MALFORMED_REQUEST = "ERR_MALFORMED_REQUEST"
ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
ERROR_DOMAIN = "dapr.io"

HTTP_STATUS: dict[ErrorCategory, int] = {
    ErrorCategory.INVALID_ARGUMENT: 400,
    # No component of the kind configured: the sidecar's setup, not the request (daprd: 500
    # for every block but pub/sub, which DAPR_HTTP lists).
    ErrorCategory.FAILED_PRECONDITION: 500,
    ErrorCategory.NOT_FOUND: 404,
    ErrorCategory.ABORTED: 409,
    ErrorCategory.UNIMPLEMENTED: 501,
    ErrorCategory.UNAVAILABLE: 503,
    ErrorCategory.DEADLINE_EXCEEDED: 504,
    ErrorCategory.UNAUTHENTICATED: 401,
    ErrorCategory.PERMISSION_DENIED: 403,
    ErrorCategory.RESOURCE_EXHAUSTED: 429,
    ErrorCategory.INTERNAL: 500,
}

# reason -> (daprd's HTTP errorCode, its status), where either differs from the default
# (errorCode = reason, status by category). Old and new spellings of a reason both appear
# while the services move to Dapr's `DAPR_*` reasons.
DAPR_HTTP: dict[str, tuple[str, int]] = {
    # generic request errors raised by the services (a field missing or malformed)
    "ERR_INVALID_ARGUMENT": (MALFORMED_REQUEST, 400),
    "ERR_ILLEGAL_KEY": (MALFORMED_REQUEST, 400),  # a lock resource id holding `||`
    # state (pkg/api/errors/state.go)
    "DAPR_STATE_NOT_CONFIGURED": ("ERR_STATE_STORE_NOT_CONFIGURED", 500),
    "DAPR_STATE_NOT_FOUND": ("ERR_STATE_STORE_NOT_FOUND", 400),
    "DAPR_STATE_ILLEGAL_KEY": (MALFORMED_REQUEST, 400),
    "DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED": ("ERR_STATE_STORE_NOT_SUPPORTED", 500),
    "DAPR_STATE_TOO_MANY_TRANSACTIONS": ("ERR_STATE_STORE_TOO_MANY_TRANSACTIONS", 400),
    "DAPR_STATE_QUERYING_NOT_SUPPORTED": ("ERR_STATE_STORE_NOT_SUPPORTED", 500),
    "DAPR_STATE_QUERY_FAILED": ("ERR_STATE_QUERY", 500),
    # pub/sub (pkg/api/errors/pubsub.go)
    "ERR_PUBSUB_NOT_CONFIGURED": ("ERR_PUBSUB_NOT_CONFIGURED", 400),
    "DAPR_PUBSUB_NOT_CONFIGURED": ("ERR_PUBSUB_NOT_CONFIGURED", 400),
    "ERR_PUBSUB_EMPTY": ("ERR_PUBSUB_EMPTY", 404),
    "DAPR_PUBSUB_NAME_EMPTY": ("ERR_PUBSUB_EMPTY", 404),
    "ERR_PUBSUB_NOT_FOUND": ("ERR_PUBSUB_NOT_FOUND", 404),
    "DAPR_PUBSUB_NOT_FOUND": ("ERR_PUBSUB_NOT_FOUND", 404),
    "ERR_TOPIC_EMPTY": ("ERR_TOPIC_EMPTY", 404),
    "DAPR_PUBSUB_TOPIC_NAME_EMPTY": ("ERR_TOPIC_EMPTY", 404),
    "DAPR_PUBSUB_METADATA_DESERIALIZATION": ("ERR_PUBSUB_REQUEST_METADATA", 400),
    "DAPR_PUBSUB_FORBIDDEN": ("ERR_PUBSUB_FORBIDDEN", 403),
    "DAPR_PUBSUB_PUBLISH_MESSAGE": ("ERR_PUBSUB_PUBLISH_MESSAGE", 500),
    # configuration
    "ERR_CONFIGURATION_STORE_NOT_CONFIGURED": ("ERR_CONFIGURATION_STORE_NOT_CONFIGURED", 500),
    "ERR_CONFIGURATION_STORE_NOT_FOUND": ("ERR_CONFIGURATION_STORE_NOT_FOUND", 400),
    # lock (pkg/messages: the lock errors are daprd's older, unstructured kind)
    "ERR_LOCK_NOT_CONFIGURED": ("ERR_LOCK_STORE_NOT_CONFIGURED", 500),
    "ERR_LOCK_STORE_NOT_FOUND": ("ERR_LOCK_STORE_NOT_FOUND", 400),
    # secrets (pkg/api/errors/secrets.go: a missing store is 401 there)
    "ERR_SECRET_STORES_NOT_CONFIGURED": ("ERR_SECRET_STORES_NOT_CONFIGURED", 500),
    "ERR_SECRET_STORE_NOT_FOUND": ("ERR_SECRET_STORE_NOT_FOUND", 401),
    "ERR_PERMISSION_DENIED": ("ERR_PERMISSION_DENIED", 403),
    # output bindings: daprd answers every failure, the caller's included, with 500
    "ERR_INVOKE_OUTPUT_BINDING": ("ERR_INVOKE_OUTPUT_BINDING", 500),
    # invocation
    "ERR_INVOKE_NOT_CONFIGURED": ("ERR_DIRECT_INVOKE", 500),
    "ERR_DIRECT_INVOKE": ("ERR_DIRECT_INVOKE", 500),
}


def error_body(
    code: str, message: str, reason: str = "", metadata: Mapping[str, str] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"errorCode": code, "message": message}
    if reason:
        info: dict[str, Any] = {"@type": ERROR_INFO_TYPE, "reason": reason, "domain": ERROR_DOMAIN}
        if metadata:
            info["metadata"] = dict(metadata)
        body["details"] = [info]
    return body


class HttpError(Exception):
    """An answer to send instead of the endpoint's own: a status and daprd's error body."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        reason: str = "",
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.reason = reason
        self.metadata = dict(metadata or {})

    def response(self) -> JSONResponse:
        body = error_body(self.code, self.message, self.reason, self.metadata)
        return JSONResponse(body, status_code=self.status)


def malformed(message: str) -> HttpError:
    """The request itself is wrong: bad JSON, a missing or mistyped field (named in `message`)."""
    return HttpError(400, MALFORMED_REQUEST, message)


def from_layotto(err: LayottoError) -> HttpError:
    code, status = DAPR_HTTP.get(err.reason, (err.reason, HTTP_STATUS[err.category]))
    return HttpError(status, code, err.message, reason=err.reason, metadata=err.metadata)


def operation_failed(err: LayottoError, code: str, message: str) -> HttpError:
    """The operation itself failed (the store, the broker, an ETag check): daprd names the
    operation (`ERR_STATE_SAVE`) and the status follows the category (an ETag mismatch is 409,
    a malformed ETag 400, a store failure 500). Errors about the request itself (unknown store,
    illegal key) keep their own answer."""
    if err.reason in DAPR_HTTP:
        return from_layotto(err)
    return HttpError(
        HTTP_STATUS[err.category], code, message, reason=err.reason, metadata=err.metadata
    )
