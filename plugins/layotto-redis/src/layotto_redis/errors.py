"""redis-py exceptions -> the SPI's errors, at the edge of every component.

redis-py's connection errors name the server ("Error 111 connecting to 10.0.0.5:6379"), so
their text is never passed on: each class gets a fixed, host-free description. Server replies
(`ResponseError`) are passed on after scrubbing, since they explain the failure (`WRONGTYPE ...`).
"""

from __future__ import annotations

import errno
from collections.abc import Iterable
from types import TracebackType

from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    LayottoError,
)
from redis import exceptions as rx


def scrub(text: str, secrets: Iterable[str]) -> str:
    for secret in sorted((s for s in secrets if s), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


def _first_line(text: str, limit: int = 200) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def connection_reason(err: BaseException) -> str:
    """A host-free description of why a connection failed."""
    if isinstance(err, rx.AuthenticationError):
        return "authentication failed (check redisUsername / redisPassword)"
    if isinstance(err, rx.AuthorizationError):
        return "the Redis user is not allowed to run this command"
    if isinstance(err, rx.MaxConnectionsError):
        return "the connection pool is exhausted (poolSize)"
    if isinstance(err, rx.BusyLoadingError):
        return "Redis is loading its dataset"
    if isinstance(err, rx.ConnectionError) and str(err).startswith("No connection available"):
        return "no pooled connection became free in time (poolSize / poolTimeout)"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
        if isinstance(cause, OSError) and cause.errno in (errno.ECONNRESET, errno.EPIPE):
            return "connection reset"
        if isinstance(cause, TimeoutError | rx.TimeoutError):
            return "connect timed out"
        cause = cause.__cause__ or cause.__context__
    text = str(err).lower()
    if "refused" in text:
        return "connection refused"
    if "closed" in text:
        return "connection closed by the server"
    if "name or service not known" in text or "nodename" in text:
        return "the host name does not resolve"
    return "connection failed"


def translate(err: BaseException, what: str, secrets: Iterable[str] = ()) -> LayottoError:
    """`what` says who failed, e.g. "state store 'statestore'"."""
    if isinstance(err, LayottoError):
        return err
    if isinstance(err, rx.TimeoutError) and str(err).startswith("Timeout connecting"):
        # Nothing was sent: the server is out of reach, not slow.
        return BackendUnavailable(f"{what}: Redis is unavailable (connect timed out)")
    if isinstance(err, rx.TimeoutError | TimeoutError):
        return BackendTimeout(f"{what}: Redis did not answer in time")
    if isinstance(err, rx.ConnectionError | ConnectionError):
        return BackendUnavailable(f"{what}: Redis is unavailable ({connection_reason(err)})")
    if isinstance(err, OSError):
        return BackendUnavailable(f"{what}: Redis is unavailable ({connection_reason(err)})")
    if isinstance(err, rx.ResponseError):
        reply = scrub(_first_line(str(err)), secrets)
        return ComponentError(f"{what}: Redis answered with an error: {reply}")
    if isinstance(err, rx.InvalidResponse):
        return ComponentError(f"{what}: the server does not answer in the Redis protocol")
    if isinstance(err, rx.RedisError):
        return ComponentError(f"{what}: Redis client error ({type(err).__name__})")
    return ComponentError(f"{what}: unexpected failure ({type(err).__name__})")


class Translator:
    """`with translator: ...` re-raises redis-py and socket errors as LayottoErrors (the
    original is the cause). An object rather than a generator-based context manager: it is on
    every call's path. Stateless, so one instance serves every call, concurrent ones too."""

    __slots__ = ("secrets", "what")

    def __init__(self, what: str, secrets: Iterable[str] = ()) -> None:
        self.what = what
        self.secrets = tuple(secrets)

    def __enter__(self) -> None:
        return None

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is None or isinstance(exc, LayottoError):
            return
        if isinstance(exc, rx.RedisError | OSError):
            raise translate(exc, self.what, self.secrets) from exc
