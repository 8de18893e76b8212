"""The metadata of `configuration.apollo`, spelled as upstream Layotto's Apollo config store.

Layotto's entry is `{"type": "apollo", "address": [...], "metadata": {...}}`; the loader moves
`address` (and `timeout`) into the metadata. Values may be strings (`"true"`, `"5"`), as in
upstream configs; durations take a number of seconds or Go notation (`"500ms"`, `"1m"`).
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated

from layotto.plugin import ComponentMetadata
from layotto.plugin.addresses import comma_list
from layotto.plugin.durations import Duration
from pydantic import BeforeValidator, Field, SecretStr, field_validator, model_validator

from layotto_apollo.client import (
    CLUSTER_DEFAULT,
    DEFAULT_CONNECT_TIMEOUT,
    DEFAULT_ENV,
    DEFAULT_LONG_POLL_TIMEOUT,
    DEFAULT_READ_TIMEOUT,
    NAMESPACE_APPLICATION,
    default_backup_dir,
    strip_properties,
)

TAGS_NAMESPACE = "sidecar_config_tags"

# Go duration strings or seconds (layotto.plugin.durations); every Apollo timeout must be > 0.
PositiveDuration = Annotated[Duration, Field(gt=0)]


class ApolloMetadata(ComponentMetadata):
    """`address` and `app_id` are required; `open_api_address`, `open_api_token` and
    `open_api_user` go together (without them the store is read-only)."""

    address: Annotated[list[str], BeforeValidator(comma_list)] = Field(min_length=1)
    app_id: str = Field(min_length=1)
    cluster: str = Field(default=CLUSTER_DEFAULT, min_length=1)
    namespace_name: Annotated[list[str], BeforeValidator(comma_list)] = Field(
        default_factory=lambda: [NAMESPACE_APPLICATION]
    )
    is_backup_config: bool = True
    backup_path: str = ""
    secret: SecretStr = SecretStr("")
    open_api_address: str = ""
    open_api_token: SecretStr = SecretStr("")
    open_api_user: str = ""
    env: str = Field(default=DEFAULT_ENV, min_length=1)
    meta_server: bool = False
    data_center: str = ""
    ip: str = ""
    timeout: PositiveDuration = DEFAULT_READ_TIMEOUT
    connect_timeout: PositiveDuration = DEFAULT_CONNECT_TIMEOUT
    long_poll_timeout: PositiveDuration = DEFAULT_LONG_POLL_TIMEOUT

    @field_validator("address")
    @classmethod
    def _check_address(cls, value: list[str]) -> list[str]:
        cleaned = [a.strip().rstrip("/") for a in value if a and a.strip()]
        if not cleaned:
            raise ValueError("at least one config-service URL is required")
        for address in cleaned:
            if not re.match(r"https?://[^/\s]+", address):
                raise ValueError("each address must be an http:// or https:// URL")
        return cleaned

    @field_validator("open_api_address")
    @classmethod
    def _check_open_api_address(cls, value: str) -> str:
        value = value.strip().rstrip("/")
        if value and not re.match(r"https?://[^/\s]+", value):
            raise ValueError("must be an http:// or https:// URL (the portal)")
        return value

    @field_validator("namespace_name")
    @classmethod
    def _check_namespaces(cls, value: list[str]) -> list[str]:
        names: list[str] = []
        for name in (strip_properties(n.strip()) for n in value):
            if name and name not in names:
                names.append(name)
        return names or [NAMESPACE_APPLICATION]

    @field_validator("env")
    @classmethod
    def _check_env(cls, value: str) -> str:
        return value.strip().upper()

    @model_validator(mode="after")
    def _check_open_api(self) -> ApolloMetadata:
        given = {
            "open_api_address": bool(self.open_api_address),
            "open_api_token": bool(self.open_api_token.get_secret_value()),
            "open_api_user": bool(self.open_api_user.strip()),
        }
        if any(given.values()) and not all(given.values()):
            missing = ", ".join(name for name, ok in given.items() if not ok)
            raise ValueError(
                "open_api_address, open_api_token and open_api_user go together "
                f"(missing: {missing}); leave all three out for a read-only store"
            )
        return self

    # -- derived ---------------------------------------------------------------------------

    @property
    def writable(self) -> bool:
        return bool(self.open_api_address)

    @property
    def backup_dir(self) -> Path | None:
        if not self.is_backup_config:
            return None
        return Path(self.backup_path) if self.backup_path else default_backup_dir(self.app_id)

    def secrets(self) -> list[str]:
        """Strings that must never appear in an error message."""
        found = [self.secret.get_secret_value(), self.open_api_token.get_secret_value()]
        found += [*self.address, self.open_api_address]
        for url in [*self.address, self.open_api_address]:
            host = url.split("://", 1)[-1].split("/", 1)[0]
            found.append(host)
        return [s for s in found if s]
