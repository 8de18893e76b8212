"""gRPC / etcd failures -> the SPI's errors, at the edge of every component.

gRPC's transport errors name the server ("ipv4:10.0.0.5:2379: Failed to connect to remote host:
Connection refused"), so their text is never passed on: each gets a fixed, host-free reason.
etcd's own replies ("etcdserver: no leader", "etcdserver: permission denied") explain the
failure and carry no host, so they are passed on after scrubbing.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import grpc  # type: ignore[import-untyped]
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    LayottoError,
)

_SERVER_PREFIX = "etcdserver: "
_CHECK_AUTH = "(check metadata.username / metadata.password)"
_CHECK_TLS = "(check metadata.tlsCa / tlsCert / tlsCertKey)"


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def transport_reason(details: str) -> str:
    """A host-free description of why gRPC could not reach etcd."""
    text = details.lower()
    if "refused" in text:
        return "connection refused"
    if "reset" in text:
        return "connection reset"
    if "socket closed" in text or "stream removed" in text or "goaway" in text:
        return "connection closed by the server"
    if "dns" in text or "resolution" in text or "name not found" in text:
        return "the host name does not resolve"
    if "unreachable" in text:
        return "host unreachable"
    if "ssl" in text or "tls" in text or "handshake" in text or "certificate" in text:
        return "TLS handshake failed"
    if "timeout" in text or "timed out" in text or "deadline" in text:
        return "connect timed out"
    return "connection failed"


def _unavailable(what: str, reason: str) -> BackendUnavailable:
    hint = f" {_CHECK_TLS}" if reason.startswith("TLS") else ""
    return BackendUnavailable(f"{what}: etcd is unavailable ({reason}){hint}")


def is_token_error(err: Any) -> bool:
    """etcd rejected the auth token (it expired, or etcd restarted and forgot simple tokens):
    authenticating again fixes it."""
    details = (err.details() or "").lower() if hasattr(err, "details") else ""
    return "invalid auth token" in details or "user name is empty" in details


def is_compacted(err: Any) -> bool:
    details = (err.details() or "").lower() if hasattr(err, "details") else ""
    return "compacted" in details


def translate(
    err: BaseException, what: str, secrets: Iterable[str] = (), *, connected: bool = True
) -> LayottoError:
    """`what` says who failed, e.g. "lock store 'lockstore'". `connected` is False when the
    channel had no live connection when the call failed (a deadline then means etcd is out of
    reach, not slow)."""
    if isinstance(err, LayottoError):
        return err
    if isinstance(err, grpc.aio.UsageError):
        return BackendUnavailable(f"{what}: the etcd connection is closed")
    if not isinstance(err, grpc.RpcError) or not hasattr(err, "code"):
        if isinstance(err, TimeoutError):
            return BackendTimeout(f"{what}: etcd did not answer in time")
        if isinstance(err, OSError):
            return BackendUnavailable(f"{what}: etcd is unavailable (connection failed)")
        return ComponentError(f"{what}: unexpected failure ({type(err).__name__})")
    code = err.code()
    details = str(err.details() or "")
    server = details.startswith(_SERVER_PREFIX)
    message = scrub(_first_line(details[len(_SERVER_PREFIX) :]), secrets) if server else ""
    if code == grpc.StatusCode.DEADLINE_EXCEEDED:
        if not connected:
            return BackendUnavailable(f"{what}: etcd is unavailable (connect timed out)")
        return BackendTimeout(f"{what}: etcd did not answer in time")
    if is_token_error(err):
        return BackendUnavailable(f"{what}: etcd requires authentication {_CHECK_AUTH}")
    if "authentication failed" in details or code == grpc.StatusCode.UNAUTHENTICATED:
        return BackendUnavailable(f"{what}: etcd authentication failed {_CHECK_AUTH}")
    if code == grpc.StatusCode.PERMISSION_DENIED:
        return ComponentError(
            f"{what}: etcd denied the request (permission denied: check the roles of "
            "metadata.username)"
        )
    if code == grpc.StatusCode.UNAVAILABLE:
        if server:
            return BackendUnavailable(f"{what}: etcd is unavailable ({message})")
        return _unavailable(what, transport_reason(details))
    if code == grpc.StatusCode.CANCELLED:
        return BackendUnavailable(f"{what}: etcd is unavailable (the call was cancelled)")
    if code == grpc.StatusCode.RESOURCE_EXHAUSTED and "too many requests" in details:
        return BackendUnavailable(f"{what}: etcd is unavailable (too many requests)")
    if server:
        return ComponentError(f"{what}: etcd answered with an error: {message}")
    if code == grpc.StatusCode.UNKNOWN and transport_reason(details) != "connection failed":
        return _unavailable(what, transport_reason(details))
    return ComponentError(f"{what}: the etcd call failed ({code.name})")
