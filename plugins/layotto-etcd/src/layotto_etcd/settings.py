"""Connection settings shared by every etcd component, spelled as Layotto's etcd metadata.

Values arrive as strings from Dapr YAML; pydantic's lax mode coerces them ("5"), and durations
accept Go's notation ("5s", "500ms", "1m30s") as well as a plain number of seconds. Layotto's
`config_store` entry (`{"type": "etcd", "address": [...], "timeout": "10"}`) works too: the
config loader moves `address` and `timeout` into the metadata, where they are read as
`endpoints` and `dialTimeout`.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from layotto.plugin import ComponentMetadata
from layotto.plugin.addresses import comma_list, is_pem, split_host_port
from layotto.plugin.durations import Duration
from pydantic import (
    AliasChoices,
    BeforeValidator,
    Field,
    SecretStr,
    ValidationInfo,
    field_validator,
    model_validator,
)

DEFAULT_KEY_PREFIX_PATH = "/layotto/"
# etcd's own limit (lease.MaxLeaseTTL): a lock cannot be asked to live longer.
MAX_LEASE_TTL = 9_000_000_000

# Duration fields and parse_duration come from the SPI (layotto.plugin.durations).


@dataclass(frozen=True, slots=True)
class Endpoint:
    host: str
    port: int
    tls: bool  # written as https://

    @property
    def is_ip(self) -> bool:
        try:
            ipaddress.ip_address(self.host)
        except ValueError:
            return False
        return True

    @property
    def is_ipv6(self) -> bool:
        return self.is_ip and ipaddress.ip_address(self.host).version == 6

    def __str__(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{host}:{self.port}"


def parse_endpoint(text: str) -> Endpoint:
    """`host:port`, optionally written as a URL: `http://host:port` or `https://host:port`."""
    value = text.strip()
    tls = False
    if "://" in value:
        scheme, _, value = value.partition("://")
        if scheme.lower() not in ("http", "https"):
            raise ValueError(f"scheme {scheme!r} is not supported (use host:port or http(s)://)")
        tls = scheme.lower() == "https"
        value = value.rstrip("/")
        if "/" in value:
            raise ValueError("an endpoint must not have a path")
    host, port = split_host_port(value, example_port=2379)
    return Endpoint(host, port, tls)


class EtcdSettings(ComponentMetadata):
    """`endpoints` is required; everything else has Layotto's default."""

    endpoints: Annotated[list[str], BeforeValidator(comma_list)] = Field(
        validation_alias=AliasChoices("endpoints", "address"), min_length=1
    )
    username: str = Field(default="", alias="username")
    password: SecretStr = Field(default=SecretStr(""), alias="password")
    dial_timeout: Duration = Field(
        default=5.0, gt=0, validation_alias=AliasChoices("dialTimeout", "timeout")
    )
    # Not an upstream setting: upstream calls have no deadline of their own.
    request_timeout: Duration = Field(default=5.0, gt=0, alias="requestTimeout")
    tls_ca: str = Field(default="", alias="tlsCa")
    tls_cert: str = Field(default="", alias="tlsCert")
    tls_cert_key: SecretStr = Field(default=SecretStr(""), alias="tlsCertKey")

    @model_validator(mode="before")
    @classmethod
    def _pairs_are_checked(cls, data: Any) -> Any:
        """The second of a pair is validated (and so blamed by name) even when it is absent."""
        if isinstance(data, dict):
            for first, second in (("username", "password"), ("tlsCert", "tlsCertKey")):
                if data.get(first) and second not in data:
                    data = {**data, second: ""}
        return data

    @field_validator("endpoints")
    @classmethod
    def _check_endpoints(cls, value: list[str]) -> list[str]:
        for entry in value:
            try:
                parse_endpoint(entry)
            except ValueError as err:
                raise ValueError(f"{entry!r}: {err}") from None
        return [entry.strip() for entry in value]

    @field_validator("tls_ca", "tls_cert")
    @classmethod
    def _check_file(cls, value: str) -> str:
        value = value.strip() if not is_pem(value) else value
        if value and not is_pem(value) and not Path(value).is_file():
            raise ValueError("must be a PEM file that exists (or the PEM text itself)")
        return value

    @field_validator("password")
    @classmethod
    def _check_password(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        username = info.data.get("username", "")
        if value.get_secret_value() and not username:
            raise ValueError("password is set but username is not")
        if username and not value.get_secret_value():
            raise ValueError("username is set, so a password is required")
        return value

    @field_validator("tls_cert_key")
    @classmethod
    def _check_key_file(cls, value: SecretStr, info: ValidationInfo) -> SecretStr:
        text = value.get_secret_value()
        if "tls_cert" in info.data and bool(info.data["tls_cert"]) != bool(text):
            raise ValueError("tlsCert and tlsCertKey go together: set both or neither")
        if text and not is_pem(text) and not Path(text.strip()).is_file():
            raise ValueError("must be a PEM file that exists (or the PEM text itself)")
        return value

    # -- derived ---------------------------------------------------------------------------

    @property
    def parsed_endpoints(self) -> list[Endpoint]:
        return [parse_endpoint(entry) for entry in self.endpoints]

    @property
    def use_tls(self) -> bool:
        return bool(self.tls_ca or self.tls_cert or any(e.tls for e in self.parsed_endpoints))

    def secrets(self) -> list[str]:
        """Strings that must never appear in an error message."""
        found = [self.password.get_secret_value(), self.tls_cert_key.get_secret_value()]
        for endpoint in self.parsed_endpoints:
            found += [endpoint.host, str(endpoint), f"{endpoint.host}:{endpoint.port}"]
        found += self.endpoints
        return [s for s in found if s]


class EtcdKeyPrefixSettings(EtcdSettings):
    """Lock and sequencer keys live under `keyPrefixPath` (upstream's code default)."""

    key_prefix_path: str = Field(default=DEFAULT_KEY_PREFIX_PATH, alias="keyPrefixPath")
