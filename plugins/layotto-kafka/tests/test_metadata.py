"""Metadata parsing, the plugin's registration, the commit bookkeeping and error translation:
no broker needed."""

from __future__ import annotations

import shutil
import ssl
import subprocess
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest
from aiokafka import errors as kx
from aiokafka.structs import TopicPartition
from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    ComponentContext,
    ComponentError,
    HealthStatus,
    InvalidArgument,
    Kind,
    NotFound,
    PermissionDenied,
)
from layotto.testing import skip_or_fail
from layotto_kafka import KafkaBinding, KafkaMetadata, KafkaPubSub
from layotto_kafka.consumer import _Track
from layotto_kafka.errors import translate
from layotto_kafka.settings import AuthType, InitialOffset
from pydantic import ValidationError


def parse(**values: Any) -> KafkaMetadata:
    return KafkaMetadata.model_validate({"brokers": "localhost:9092", **values})


def errors_of(**values: Any) -> dict[str, str]:
    """{field named by the error: its message} for metadata that must not validate."""
    with pytest.raises(ValidationError) as info:
        KafkaMetadata.model_validate(values)
    return {".".join(str(p) for p in e["loc"]): e["msg"] for e in info.value.errors()}


def error_of(**values: Any) -> tuple[str, str]:
    """(the field the error names, its message): exactly one error expected."""
    errors = errors_of(**values)
    assert len(errors) == 1, errors
    return next(iter(errors.items()))


# -- defaults and aliases ------------------------------------------------------------------


def test_defaults() -> None:
    m = parse()
    assert m.brokers == ["localhost:9092"]
    assert m.auth_type is AuthType.NONE
    assert m.initial_offset is InitialOffset.NEWEST
    assert m.max_message_bytes is None
    assert m.idempotence is False
    assert m.session_timeout == 10.0
    assert m.heartbeat == 3.0
    assert m.publish_timeout == 5.0
    assert m.group_id("orders-app") == "orders-app"
    assert m.client_id_for("orders-app") == "layotto-orders-app"
    assert m.security_protocol == "PLAINTEXT"
    assert m.ssl_context() is None
    assert not m.model_extra


def test_dapr_names_and_string_values() -> None:
    m = KafkaMetadata.model_validate(
        {
            "brokers": " a:9092, b:9093 ,[::1]:9094",
            "consumerGroup": "group1",
            "clientID": "my-client",
            "authType": "PASSWORD",
            "saslUsername": "user",
            "saslPassword": "secret",
            "saslMechanism": "SHA-512",
            "disableTls": "true",
            "initialOffset": "Oldest",
            "maxMessageBytes": "2048",
            "idempotence": "true",
            "sessionTimeout": "15s",
            "heartbeatInterval": "500ms",
            "publishTimeout": "1m30s",
            "consumeRetryInterval": "200ms",  # a Dapr setting this component ignores
        }
    )
    assert m.brokers == ["a:9092", "b:9093", "[::1]:9094"]
    assert m.group_id("app") == "group1"
    assert m.client_id_for("app") == "my-client"
    assert m.auth_type is AuthType.PASSWORD
    assert m.sasl_mechanism == "SCRAM-SHA-512"
    assert m.security_protocol == "SASL_PLAINTEXT"
    assert m.initial_offset is InitialOffset.OLDEST
    assert m.max_message_bytes == 2048
    assert m.idempotence is True
    assert (m.session_timeout, m.heartbeat, m.publish_timeout) == (15.0, 0.5, 90.0)
    assert m.model_extra == {"consumeRetryInterval": "200ms"}  # the loader warns about it


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("PLAIN", "PLAIN"),
        ("plaintext", "PLAIN"),
        ("SHA-256", "SCRAM-SHA-256"),
        ("scram-sha-256", "SCRAM-SHA-256"),
        ("SCRAM-SHA-512", "SCRAM-SHA-512"),
    ],
)
def test_sasl_mechanisms(given: str, expected: str) -> None:
    m = parse(authType="password", saslUsername="u", saslPassword="p", saslMechanism=given)
    assert m.sasl_mechanism == expected


def test_password_auth_uses_tls_by_default_as_dapr_does() -> None:
    m = parse(authType="password", saslUsername="u", saslPassword="p")
    assert m.use_tls
    assert m.security_protocol == "SASL_SSL"
    assert isinstance(m.ssl_context(), ssl.SSLContext)


def test_deprecated_auth_required_means_password() -> None:
    m = parse(authRequired="true", saslUsername="u", saslPassword="p", disableTls="true")
    assert m.auth_type is AuthType.PASSWORD
    assert m.security_protocol == "SASL_PLAINTEXT"


def test_skip_verify() -> None:
    m = parse(authType="certificate", skipVerify="true")
    context = m.ssl_context()
    assert context is not None
    assert context.verify_mode == ssl.CERT_NONE
    assert not context.check_hostname


# -- errors name the field -----------------------------------------------------------------


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"brokers": ""}, "brokers", "at least 1"),
        ({"brokers": "localhost"}, "brokers", "host:port"),
        ({"brokers": "localhost:99999"}, "brokers", "1..65535"),
        ({"brokers": "kafka://h:9092"}, "brokers", "without a scheme"),
        ({"authType": "kerberos"}, "authType", "'none'"),
        ({"authType": "oidc"}, "authType", "not supported"),
        ({"authType": "password", "saslPassword": "p"}, "saslUsername", "required"),
        ({"authType": "password", "saslUsername": "u"}, "saslPassword", "required"),
        ({"saslMechanism": "GSSAPI"}, "saslMechanism", "not supported"),
        ({"authType": "mtls"}, "clientCert", "required"),
        ({"authType": "mtls", "disableTls": "true"}, "disableTls", "needs TLS"),
        ({"caCert": "not a pem"}, "caCert", "PEM"),
        ({"clientCert": "not a pem"}, "clientCert", "PEM"),
        ({"initialOffset": "latest"}, "initialOffset", "'newest'"),
        ({"maxMessageBytes": "-1"}, "maxMessageBytes", "greater than 0"),
        ({"maxMessageBytes": "lots"}, "maxMessageBytes", "integer"),
        ({"idempotence": "maybe"}, "idempotence", "boolean"),
        ({"sessionTimeout": "ten seconds"}, "sessionTimeout", "not a duration"),
        ({"heartbeatInterval": "10s"}, "heartbeatInterval", "below sessionTimeout"),
        ({"publishTimeout": "0s"}, "publishTimeout", "greater than or equal"),
    ],
)
def test_bad_values_name_the_field(values: dict[str, str], field: str, text: str) -> None:
    errors = errors_of(**{"brokers": "localhost:9092", **values})
    assert field in errors, errors
    assert text in errors[field]


def test_heartbeat_follows_a_short_session_timeout() -> None:
    assert parse(sessionTimeout="3s").heartbeat == 1.0
    assert parse(sessionTimeout="30s").heartbeat == 3.0


def test_brokers_are_required() -> None:
    assert error_of(consumerGroup="g") == ("brokers", "Field required")


def test_password_never_appears_in_errors_or_repr() -> None:
    m = parse(authType="password", saslUsername="u", saslPassword="hunter2")
    assert "hunter2" not in repr(m)
    with pytest.raises(ValidationError) as info:
        KafkaMetadata.model_validate(
            {"brokers": "h:1", "authType": "password", "saslPassword": "hunter2"}
        )
    assert "hunter2" not in str(info.value)


def _self_signed(tmp_path: Path) -> tuple[str, str]:
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail("openssl is not installed: the TLS key-pair tests need it")
    tmp_path.mkdir(parents=True, exist_ok=True)
    key, cert = tmp_path / "k.pem", tmp_path / "c.pem"
    subprocess.run(
        [
            *(openssl, "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", "/CN=layotto-test", "-keyout", str(key), "-out", str(cert)),
        ],
        check=True,
        capture_output=True,
    )
    return cert.read_text(), key.read_text()


def test_client_certificate_from_pem_strings(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path)
    m = parse(authType="mtls", caCert=cert, clientCert=cert, clientKey=key)
    assert m.security_protocol == "SSL"
    assert isinstance(m.ssl_context(), ssl.SSLContext)
    assert key not in repr(m)


def test_client_certificate_errors(tmp_path: Path) -> None:
    cert, key = _self_signed(tmp_path / "a")
    other_cert, _ = _self_signed(tmp_path / "b")
    where, message = error_of(brokers="h:1", authType="mtls", clientCert=cert)
    assert where == "clientKey"
    assert "required" in message
    where, message = error_of(brokers="h:1", clientKey=key)
    assert where == "clientKey"
    assert "go together" in message
    where, message = error_of(brokers="h:1", authType="mtls", clientCert=other_cert, clientKey=key)
    assert where == "clientKey"
    assert "could not be loaded" in message


# -- the plugin ----------------------------------------------------------------------------


def test_entry_point_registers_pubsub_and_bindings_kafka() -> None:
    (ep,) = [ep for ep in entry_points(group="layotto") if ep.name == "kafka"]
    specs = ep.load().layotto_components()
    assert [(s.kind, s.type) for s in specs] == [(Kind.PUBSUB, "kafka"), (Kind.BINDINGS, "kafka")]
    for spec in specs:
        assert isinstance(spec.config_model, str)
        assert isinstance(spec.factory, str)  # loaded only when configured
    pubsub, binding = specs
    assert pubsub.metadata_model is KafkaMetadata
    assert isinstance(pubsub.create(parse(), ComponentContext("pubsub", "app")), KafkaPubSub)
    assert issubclass(binding.metadata_model, KafkaMetadata)  # the same connection settings
    made = binding.create(
        binding.metadata_model.model_validate({"brokers": "localhost:9092"}),
        ComponentContext("events", "app"),
    )
    assert isinstance(made, KafkaBinding)


@pytest.mark.anyio
async def test_health_before_init_is_down() -> None:
    component = KafkaPubSub.create(parse(), ComponentContext("pubsub", "app"))
    health = await component.check_health()
    assert health.status is HealthStatus.DOWN


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


# -- contiguous commits --------------------------------------------------------------------


def test_commit_offset_is_the_first_offset_not_acked() -> None:
    track = _Track(TopicPartition("t", 0))
    for offset in range(10, 16):
        track.deliver(offset)
    assert track.pending() is None
    assert not track.ack(12)  # above a gap: nothing committable yet
    assert track.ack(10)
    assert track.pending() == 11
    assert track.ack(11)  # 10, 11, 12 done: commit 13
    assert track.pending() == 13
    track.committed = 13
    assert track.pending() is None
    assert not track.ack(14)
    assert track.ack(13)
    assert track.pending() == 15
    assert track.ack(15)
    assert track.pending() == 16
    track.alive = False  # revoked: acks are ignored, nothing is pending
    assert not track.ack(16)
    assert track.pending() is None


def test_offsets_with_gaps_compaction_or_markers() -> None:
    track = _Track(TopicPartition("t", 0))
    for offset in (3, 7, 8):
        track.deliver(offset)
    assert track.ack(3)
    assert track.pending() == 4  # 4..6 do not exist; committing 4 skips nothing
    assert not track.ack(8)
    assert track.ack(7)
    assert track.pending() == 9


# -- error translation ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("error", "kind", "text"),
    [
        (
            kx.KafkaConnectionError("Unable to bootstrap from [('10.1.2.3', 9092)]"),
            BackendUnavailable,
            "unavailable",
        ),
        (kx.NodeNotReadyError("node 1 at 10.1.2.3:9092"), BackendUnavailable, "unavailable"),
        (kx.RequestTimedOutError(), BackendTimeout, "in time"),
        (TimeoutError(), BackendTimeout, "in time"),
        (kx.MessageSizeTooLargeError(), InvalidArgument, "maxMessageBytes"),
        (kx.TopicAuthorizationFailedError(), PermissionDenied, "TOPIC_AUTHORIZATION_FAILED"),
        (kx.SaslAuthenticationFailed(), BackendUnavailable, "authentication failed"),
        (kx.NotLeaderForPartitionError(), BackendUnavailable, "NOT_LEADER"),
        (kx.UnknownTopicOrPartitionError(), NotFound, "does not exist"),
        (ValueError("boom at 10.1.2.3"), ComponentError, "ValueError"),
    ],
)
def test_translate_hides_hosts(error: BaseException, kind: type, text: str) -> None:
    translated = translate(error, "pubsub 'p'")
    assert isinstance(translated, kind)
    assert text in translated.message
    assert "10.1.2.3" not in translated.message
    assert translated.message.startswith("pubsub 'p': ")


@pytest.mark.anyio
@pytest.mark.parametrize("anyio_backend", ["asyncio"])
@pytest.mark.parametrize("server_final", [b"e=invalid-proof", b"e=unknown-user"])
async def test_a_scram_server_error_is_an_authentication_failure(
    anyio_backend: str, server_final: bytes
) -> None:
    """A broker that puts the SCRAM server-error into a *successful* SaslAuthenticate response
    (Tansu does; Apache Kafka answers SASL_AUTHENTICATION_FAILED) makes aiokafka's SCRAM client
    fail with a bare KeyError('v'). It is still an authentication failure, not "unexpected"."""
    import base64

    from aiokafka.conn import AIOKafkaConnection
    from aiokafka.protocol.admin import SaslAuthenticateRequest

    conn = AIOKafkaConnection(
        "10.1.2.3",
        9092,
        security_protocol="SASL_PLAINTEXT",
        sasl_mechanism="SCRAM-SHA-256",
        sasl_plain_username="alice",
        sasl_plain_password="hunter2",
    )

    class Handshake:
        API_VERSION = 1
        error_code = 0
        enabled_mechanisms = ["SCRAM-SHA-256"]

    class Authenticate:
        error_code = 0
        error_message = None

        def __init__(self, auth_bytes: bytes) -> None:
            self.sasl_auth_bytes = auth_bytes

    async def send(request: Any, expect_response: bool = True) -> Any:
        if not isinstance(request, SaslAuthenticateRequest):
            return Handshake()
        payload = request._payload.decode()  # aiokafka 0.14
        if payload.startswith("n,,"):  # client-first: answer with a server-first
            nonce = dict(p.split("=", 1) for p in payload[3:].split(","))["r"]
            salt = base64.b64encode(b"salt").decode()
            return Authenticate(f"r={nonce}srv,s={salt},i=4096".encode())
        return Authenticate(server_final)

    conn.send = send  # type: ignore[method-assign]
    with pytest.raises(KeyError) as info:  # aiokafka 0.14: no "v=" in the server-final
        await conn._do_sasl_handshake()
    translated = translate(info.value, "pubsub 'p'")
    assert isinstance(translated, BackendUnavailable)
    assert "authentication failed" in translated.message
    assert "hunter2" not in translated.message


def test_fetch_max_wait_is_a_duration_with_sarama_s_default() -> None:
    assert KafkaMetadata.model_validate({"brokers": "b:9092"}).fetch_max_wait == 0.25
    assert (
        KafkaMetadata.model_validate({"brokers": "b:9092", "fetchMaxWait": "10ms"}).fetch_max_wait
        == 0.01
    )
    with pytest.raises(ValidationError, match="fetchMaxWait"):
        KafkaMetadata.model_validate({"brokers": "b:9092", "fetchMaxWait": "0s"})
