"""aiokafka failures -> the SPI's errors, at the edge of the component.

aiokafka's connection errors name the broker ("Unable to bootstrap from [('10.0.0.5', 9092,
...)]", "No connection to broker at 10.0.0.5:9092"), so their text is never passed on: each gets
a fixed, host-free reason. Broker error responses are reported by their Kafka error name
(`MESSAGE_TOO_LARGE`, `TOPIC_AUTHORIZATION_FAILED`), which carries no host either.
"""

from __future__ import annotations

import asyncio
import errno
import os

from aiokafka import errors as kx
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentError,
    InvalidArgument,
    LayottoError,
    NotFound,
    PermissionDenied,
)

CHECK_BROKERS = "check metadata.brokers"
CHECK_AUTH = "check authType, saslUsername, saslPassword and saslMechanism"
CHECK_TLS = "check disableTls, caCert, clientCert, clientKey and skipVerify"

_AUTH_ERRORS: tuple[type[BaseException], ...] = (
    kx.AuthenticationFailedError,
    kx.AuthenticationMethodNotSupported,
    kx.SaslAuthenticationFailed,
    kx.UnsupportedSaslMechanismError,
    kx.IllegalSaslStateError,
)
_DENIED_ERRORS: tuple[type[BaseException], ...] = (
    kx.TopicAuthorizationFailedError,
    kx.GroupAuthorizationFailedError,
    kx.ClusterAuthorizationFailedError,
    kx.TransactionalIdAuthorizationFailed,
)
_TOO_LARGE_ERRORS: tuple[type[BaseException], ...] = (
    kx.MessageSizeTooLargeError,
    kx.RecordTooLargeError,
    kx.RecordListTooLargeError,
)
_UNREACHABLE_ERRORS: tuple[type[BaseException], ...] = (
    kx.KafkaConnectionError,
    kx.NodeNotReadyError,
    kx.NoBrokersAvailable,
    kx.KafkaUnavailableError,
    kx.ProducerClosed,
    kx.ConsumerStoppedError,
    ConnectionError,
)


# aiokafka's SASL exchange (`AIOKafkaConnection._do_sasl_handshake` in aiokafka/conn.py).
_SASL_FRAME = "_do_sasl_handshake"


def during_sasl(err: BaseException) -> bool:
    """Whether `err` (or what caused it) was raised inside aiokafka's SASL exchange.

    Not every authentication failure reaches aiokafka as a Kafka error: a broker that puts the
    SCRAM server-error (`e=invalid-proof`, `e=unknown-user`) into a successful
    SaslAuthenticate response (Tansu does) makes aiokafka's SCRAM client fail with a bare
    `KeyError('v')`, and a broker that offers no shared mechanism may just close the
    connection. Whatever is raised there, the client could not authenticate."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        tb = cause.__traceback__
        while tb is not None:
            code = tb.tb_frame.f_code
            if code.co_name == _SASL_FRAME and os.path.basename(code.co_filename) == "conn.py":
                return True
            tb = tb.tb_next
        cause = cause.__cause__ or cause.__context__
    return False


def is_auth_failure(err: BaseException) -> bool:
    """A rejected SASL login, however aiokafka reports it."""
    return isinstance(err, _AUTH_ERRORS) or during_sasl(err)


def connection_reason(err: BaseException) -> str:
    """A host-free description of why a connection failed."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
        if isinstance(cause, OSError) and cause.errno in (errno.ECONNRESET, errno.EPIPE):
            return "connection reset"
        if isinstance(cause, OSError) and "ssl" in type(cause).__name__.lower():
            return f"TLS handshake failed; {CHECK_TLS}"
        cause = cause.__cause__ or cause.__context__
    text = str(err).lower()
    if "refused" in text:
        return "connection refused"
    if "ssl" in text or "certificate" in text or "handshake" in text:
        return f"TLS handshake failed; {CHECK_TLS}"
    if "name or service not known" in text or "nodename" in text:
        return "the host name does not resolve"
    return "connection failed"


def kafka_error_name(err: BaseException) -> str:
    """`MESSAGE_TOO_LARGE` for a broker error response, the class name otherwise."""
    if isinstance(err, kx.BrokerResponseError):
        return str(getattr(err, "message", "") or type(err).__name__)
    return type(err).__name__


def translate(err: BaseException, what: str) -> LayottoError:
    """`what` says who failed, e.g. "pubsub 'pubsub': publish to 'orders'"."""
    if isinstance(err, LayottoError):
        return err
    if is_auth_failure(err):
        return BackendUnavailable(f"{what}: Kafka authentication failed ({CHECK_AUTH})")
    if isinstance(err, _DENIED_ERRORS):
        return PermissionDenied(
            f"{what}: Kafka denied the request ({kafka_error_name(err)}: check the ACLs of the "
            "client's principal)"
        )
    if isinstance(err, _TOO_LARGE_ERRORS):
        return InvalidArgument(
            f"{what}: the message is larger than the broker or metadata.maxMessageBytes allows"
        )
    if isinstance(err, kx.InvalidTopicError):
        return InvalidArgument(f"{what}: the topic name is not valid for Kafka")
    if isinstance(err, kx.UnknownTopicOrPartitionError):
        return NotFound(
            f"{what}: the topic does not exist (and the broker does not create topics on use)"
        )
    if isinstance(err, asyncio.TimeoutError | TimeoutError | kx.KafkaTimeoutError):
        return BackendTimeout(f"{what}: Kafka did not answer in time")
    if isinstance(err, kx.RequestTimedOutError):
        return BackendTimeout(f"{what}: Kafka did not answer in time")
    if isinstance(err, _UNREACHABLE_ERRORS):
        return BackendUnavailable(f"{what}: Kafka is unavailable ({connection_reason(err)})")
    if isinstance(err, kx.BrokerResponseError):
        name = kafka_error_name(err)
        if getattr(err, "retriable", False):
            return BackendUnavailable(f"{what}: Kafka is unavailable (the broker answered {name})")
        return ComponentError(f"{what}: Kafka answered with an error: {name}")
    if isinstance(err, kx.IncompatibleBrokerVersion | kx.UnsupportedVersionError):
        return ComponentError(f"{what}: the broker does not support a request this client needs")
    if isinstance(err, kx.KafkaError):
        if getattr(err, "retriable", False):
            return BackendUnavailable(f"{what}: Kafka is unavailable ({type(err).__name__})")
        return ComponentError(f"{what}: Kafka client error ({type(err).__name__})")
    if isinstance(err, OSError):
        return BackendUnavailable(f"{what}: Kafka is unavailable ({connection_reason(err)})")
    return ComponentError(f"{what}: unexpected failure ({type(err).__name__})")
