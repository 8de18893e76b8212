"""`pubsub.kafka` metadata, spelled as Dapr's Kafka component metadata.

Values arrive as strings from Dapr YAML; pydantic's lax mode coerces them ("true", "1048576"),
and durations accept Go's notation ("5s", "500ms", "1m30s") or a plain number of seconds.
Dapr settings this component does not implement (`consumeRetryInterval`, `version`,
`channelBufferSize`, ...) are kept as unknown keys, which the config loader warns about.
"""

from __future__ import annotations

import contextlib
import os
import ssl
import tempfile
from enum import StrEnum
from typing import Annotated, Any

from layotto.plugin import ComponentMetadata
from layotto.plugin.addresses import comma_list, is_pem, split_host_port
from layotto.plugin.durations import Duration
from pydantic import (
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_PUBLISH_TIMEOUT = 5.0
DEFAULT_SESSION_TIMEOUT = 10.0  # Dapr's (sarama's) default, and aiokafka's
DEFAULT_HEARTBEAT_INTERVAL = 3.0
DEFAULT_FETCH_MAX_WAIT = 0.25


class AuthType(StrEnum):
    NONE = "none"
    PASSWORD = "password"  # SASL PLAIN / SCRAM
    MTLS = "mtls"  # a TLS client certificate (clientCert + clientKey required)
    CERTIFICATE = "certificate"  # TLS, with a client certificate when one is given


class InitialOffset(StrEnum):
    NEWEST = "newest"
    OLDEST = "oldest"


# Dapr's spellings first (`SHA-512`, `PLAINTEXT`), then Kafka's.
_SASL_MECHANISMS = {
    "PLAIN": "PLAIN",
    "PLAINTEXT": "PLAIN",
    "SHA-256": "SCRAM-SHA-256",
    "SCRAM-SHA-256": "SCRAM-SHA-256",
    "SHA-512": "SCRAM-SHA-512",
    "SCRAM-SHA-512": "SCRAM-SHA-512",
}
_UNSUPPORTED_AUTH = {
    "oidc": "authType 'oidc' (SASL OAUTHBEARER) is not supported by this component",
    "awsiam": "authType 'awsiam' (AWS MSK IAM) is not supported by this component",
}


def _lower(value: Any) -> Any:
    return value.strip().lower() if isinstance(value, str) else value


def _snake(name: str) -> str:
    return "".join(f"_{c.lower()}" if c.isupper() else c for c in name)


def _load_client_pair(context: ssl.SSLContext, cert: str, key: str) -> None:
    """`ssl` loads certificates only from files: write both to a private temporary directory,
    load them, and remove them at once."""
    with tempfile.TemporaryDirectory(prefix="layotto-kafka-") as tmp:
        cert_path = os.path.join(tmp, "client.crt")
        key_path = os.path.join(tmp, "client.key")
        for path, text in ((cert_path, cert), (key_path, key)):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(text)
        try:
            context.load_cert_chain(cert_path, key_path)
        finally:
            for path in (cert_path, key_path):
                with contextlib.suppress(OSError):
                    os.unlink(path)


class KafkaMetadata(ComponentMetadata):
    """`brokers` is required; everything else has Dapr's default."""

    brokers: Annotated[list[str], BeforeValidator(comma_list)] = Field(
        alias="brokers", min_length=1
    )
    # Default: the app id (see `group_id`). Subscription metadata `consumerGroup` overrides it.
    consumer_group: str = Field(default="", alias="consumerGroup")
    # Default: "layotto-<app id>" (see `client_id_for`).
    client_id: str = Field(default="", alias="clientID")
    auth_type: Annotated[AuthType, BeforeValidator(_lower)] = Field(
        default=AuthType.NONE, alias="authType"
    )
    # Dapr's deprecated switch: `authRequired: "true"` without an authType means `password`.
    auth_required: bool = Field(default=False, alias="authRequired")
    sasl_username: str = Field(default="", alias="saslUsername")
    sasl_password: SecretStr = Field(default=SecretStr(""), alias="saslPassword")
    sasl_mechanism: str = Field(default="PLAIN", alias="saslMechanism")
    disable_tls: bool = Field(default=False, alias="disableTls")
    skip_verify: bool = Field(default=False, alias="skipVerify")
    ca_cert: str = Field(default="", alias="caCert")
    client_cert: str = Field(default="", alias="clientCert")
    client_key: SecretStr = Field(default=SecretStr(""), alias="clientKey")
    initial_offset: Annotated[InitialOffset, BeforeValidator(_lower)] = Field(
        default=InitialOffset.NEWEST, alias="initialOffset"
    )
    # None: the client's defaults (1 MiB per request and per partition fetch).
    max_message_bytes: int | None = Field(default=None, gt=0, alias="maxMessageBytes")
    idempotence: bool = Field(default=False, alias="idempotence")
    session_timeout: Duration = Field(
        default=DEFAULT_SESSION_TIMEOUT, ge=1.0, alias="sessionTimeout"
    )
    # Default: 3 s, or a third of sessionTimeout when that is shorter (see `heartbeat`).
    heartbeat_interval: Duration | None = Field(default=None, ge=0.05, alias="heartbeatInterval")
    # Not a Dapr setting: the longest a fetch waits at the broker for new records. Apache Kafka
    # answers as soon as a record arrives; brokers that hold the fetch (Tansu) add up to this
    # much latency. Default: sarama's (Dapr's client), 250 ms.
    fetch_max_wait: Duration = Field(
        default=DEFAULT_FETCH_MAX_WAIT, ge=0.001, le=60, alias="fetchMaxWait"
    )
    # Not a Dapr setting: how long a publish may take in all (metadata, enqueue, broker ack).
    publish_timeout: Duration = Field(
        default=DEFAULT_PUBLISH_TIMEOUT, ge=0.1, alias="publishTimeout"
    )

    @model_validator(mode="before")
    @classmethod
    def _prepare(cls, data: Any) -> Any:
        """Dapr's deprecated `authRequired`, and: fields that another one requires are given
        as empty when absent, so that their validators run and the error names them."""
        if not isinstance(data, dict):
            return data
        data = dict(data)
        if "authType" not in data and "auth_type" not in data:
            required = str(data.get("authRequired", "")).strip().lower()
            if required in ("true", "1", "yes", "on"):
                data["authType"] = "password"
        auth = str(data.get("authType", data.get("auth_type", ""))).strip().lower()
        needed: list[str] = []
        if auth == "password":
            needed += ["saslUsername", "saslPassword"]
        if auth == "mtls":
            needed += ["clientCert", "clientKey"]
        if "clientCert" in data or "clientKey" in data:
            needed += ["clientCert", "clientKey"]
        for name in needed:
            if name not in data and _snake(name) not in data:
                data[name] = ""
        return data

    @field_validator("auth_type", mode="wrap")
    @classmethod
    def _check_auth_type(cls, value: Any, handler: Any) -> Any:
        key = value.strip().lower() if isinstance(value, str) else value
        if isinstance(key, str) and key in _UNSUPPORTED_AUTH:
            raise ValueError(_UNSUPPORTED_AUTH[key])
        return handler(value)

    @field_validator("brokers")
    @classmethod
    def _check_brokers(cls, value: list[str]) -> list[str]:
        for entry in value:
            if "://" in entry:
                raise ValueError(f"{entry!r}: write host:port, without a scheme")
            try:
                split_host_port(entry, example_port=9092)
            except ValueError as err:
                raise ValueError(f"{entry!r}: {err}") from None
        return [entry.strip() for entry in value]

    @field_validator("consumer_group", "client_id")
    @classmethod
    def _strip(cls, value: str) -> str:
        return value.strip()

    @field_validator("sasl_mechanism")
    @classmethod
    def _check_mechanism(cls, value: str) -> str:
        mechanism = _SASL_MECHANISMS.get(value.strip().upper())
        if mechanism is None:
            raise ValueError(
                f"{value!r} is not supported: use PLAIN, SCRAM-SHA-256 or SCRAM-SHA-512 "
                "(Dapr's SHA-256 / SHA-512 also work)"
            )
        return mechanism

    @field_validator("ca_cert")
    @classmethod
    def _check_ca(cls, value: str) -> str:
        if not value.strip():
            return ""
        if not is_pem(value):
            raise ValueError("must be a PEM certificate ('-----BEGIN CERTIFICATE-----...')")
        try:
            ssl.create_default_context(cadata=value)
        except (ssl.SSLError, ValueError) as err:
            raise ValueError(
                f"the CA certificate could not be loaded ({err.__class__.__name__})"
            ) from None
        return value

    @field_validator("sasl_username", "sasl_password")
    @classmethod
    def _check_sasl(cls, value: str | SecretStr, info: ValidationInfo) -> str | SecretStr:
        text = value.get_secret_value() if isinstance(value, SecretStr) else value
        if info.data.get("auth_type") is AuthType.PASSWORD and not text:
            raise ValueError("is required when authType is 'password'")
        return value

    @field_validator("disable_tls")
    @classmethod
    def _check_disable_tls(cls, value: bool, info: ValidationInfo) -> bool:
        auth = info.data.get("auth_type")
        if value and auth in (AuthType.MTLS, AuthType.CERTIFICATE):
            raise ValueError(f"must be false: authType '{auth}' needs TLS")
        return value

    @field_validator("client_cert")
    @classmethod
    def _check_cert(cls, value: str, info: ValidationInfo) -> str:
        if value.strip() and not is_pem(value):
            raise ValueError("must be a PEM certificate ('-----BEGIN CERTIFICATE-----...')")
        if info.data.get("auth_type") is AuthType.MTLS and not value.strip():
            raise ValueError("is required when authType is 'mtls'")
        return value if value.strip() else ""

    @field_validator("client_key")
    @classmethod
    def _check_key(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        text = value.get_secret_value()
        if text.strip() and not is_pem(text):
            raise ValueError("must be a PEM private key ('-----BEGIN PRIVATE KEY-----...')")
        if "client_cert" not in info.data:
            return value  # clientCert itself is wrong: that error is enough
        cert = info.data["client_cert"]
        if info.data.get("auth_type") is AuthType.MTLS and not text.strip():
            raise ValueError("is required when authType is 'mtls'")
        if bool(cert) != bool(text.strip()):
            raise ValueError("clientCert and clientKey go together: set both or neither")
        if cert:
            try:
                _load_client_pair(ssl.create_default_context(), cert, text)
            except (ssl.SSLError, ValueError, OSError) as err:
                raise ValueError(
                    f"clientCert and clientKey could not be loaded as a pair "
                    f"({err.__class__.__name__})"
                ) from None
        return value if text.strip() else SecretStr("")

    @field_validator("heartbeat_interval")
    @classmethod
    def _check_heartbeat(cls, value: float | None, info: ValidationInfo) -> float | None:
        session = info.data.get("session_timeout")
        if value is not None and session is not None and value >= session:
            raise ValueError(
                f"must be below sessionTimeout ({session:g} s); a third of it is usual"
            )
        return value

    # -- derived ---------------------------------------------------------------------------

    @property
    def heartbeat(self) -> float:
        if self.heartbeat_interval is not None:
            return self.heartbeat_interval
        return min(DEFAULT_HEARTBEAT_INTERVAL, self.session_timeout / 3)

    @property
    def use_tls(self) -> bool:
        """Dapr's rule: TLS unless `disableTls` is set or `authType` is `none`."""
        return not self.disable_tls and self.auth_type is not AuthType.NONE

    @property
    def use_sasl(self) -> bool:
        return self.auth_type is AuthType.PASSWORD

    @property
    def security_protocol(self) -> str:
        if self.use_sasl:
            return "SASL_SSL" if self.use_tls else "SASL_PLAINTEXT"
        return "SSL" if self.use_tls else "PLAINTEXT"

    def group_id(self, app_id: str) -> str:
        return self.consumer_group or app_id or "layotto"

    def client_id_for(self, app_id: str) -> str:
        return self.client_id or f"layotto-{app_id or 'sidecar'}"

    def ssl_context(self) -> ssl.SSLContext | None:
        if not self.use_tls:
            return None
        context = ssl.create_default_context(cadata=self.ca_cert or None)
        if self.skip_verify:
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        if self.client_cert:
            _load_client_pair(context, self.client_cert, self.client_key.get_secret_value())
        return context

    def secrets(self) -> list[str]:
        """Strings that must never appear in an error message: credentials and addresses."""
        found = [self.sasl_password.get_secret_value(), self.client_key.get_secret_value()]
        for entry in self.brokers:
            found.append(entry)
            with contextlib.suppress(ValueError):
                host, port = split_host_port(entry, example_port=9092)
                found += [host, f"{host}:{port}"]
        return [s for s in found if s]
