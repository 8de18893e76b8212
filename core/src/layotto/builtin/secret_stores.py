"""Built-in secret stores: secrets in the component's own metadata, a local JSON file, and the
sidecar's environment. The two local ones follow components-contrib `secretstores/local/file`
and `secretstores/local/env` (metadata names, flattening, prefix handling), except that a
missing secret is a `NotFound` here (Dapr's env store answers an empty value instead).

Values are always strings. Numbers and booleans in JSON become their JSON text (`5`, `1.50`,
`true`; Dapr formats them with Go's `%s`, which garbles them), `null` becomes the empty string.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
from pydantic import Field, field_validator

from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentError,
    ComponentMetadata,
    NotFound,
    SecretStore,
    SecretStoreFeature,
)

_MULTI = frozenset({SecretStoreFeature.MULTIPLE_KEY_VALUES_PER_SECRET})


def _text(value: Any) -> str:
    """A JSON scalar as a secret value (numbers arrive as their text: see `_parse_json`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return ""
    if isinstance(value, str | int | float):
        return str(value)
    raise ValueError(
        f"a secret value must be a string, number or boolean, not {type(value).__name__}"
    )


def _parse_json(text: str | bytes) -> Any:
    # Numbers keep the spelling they have in the file: "1.50" stays "1.50", 10**30 stays exact.
    return json.loads(text, parse_int=str, parse_float=str, parse_constant=str)


class _DuplicateKey(Exception):
    pass


def _flatten(value: Any, path: tuple[str, ...], separator: str, out: dict[str, str]) -> None:
    """Nested objects and arrays -> `a<sep>b<sep>0` keys, each holding one value."""
    if isinstance(value, Mapping):
        for key, item in value.items():
            _flatten(item, (*path, str(key)), separator, out)
    elif isinstance(value, list):
        for index, item in enumerate(value):
            _flatten(item, (*path, str(index)), separator, out)
    else:
        key = separator.join(path)
        if key in out:
            raise _DuplicateKey(key)
        out[key] = _text(value)


def _secret_values(name: str, value: Any, separator: str) -> dict[str, str]:
    """One secret's value map: a scalar is `{name: value}`, a container is flattened."""
    if isinstance(value, Mapping | list):
        values: dict[str, str] = {}
        _flatten(value, (), separator, values)
        return values
    return {name: _text(value)}


class _MapSecretStore(SecretStore):
    """Secrets held in memory as name -> values."""

    def __init__(self, secrets: Mapping[str, Mapping[str, str]] | None = None) -> None:
        self._secrets: dict[str, dict[str, str]] = {k: dict(v) for k, v in (secrets or {}).items()}

    async def get_secret(self, key: str, metadata: Mapping[str, str]) -> dict[str, str]:
        values = self._secrets.get(key)
        if values is None:
            raise NotFound(f"secret {key!r} not found")
        return dict(values)

    async def bulk_get_secrets(self, metadata: Mapping[str, str]) -> dict[str, dict[str, str]]:
        return {key: dict(values) for key, values in self._secrets.items()}


# -- secretstores.in-memory ------------------------------------------------------------------


class InMemorySecretStoreMetadata(ComponentMetadata):
    # name -> a value, or a mapping of values. Dapr YAML values are strings: a JSON object
    # given as a string is accepted too.
    secrets: dict[str, dict[str, str]] = Field(default_factory=dict)

    @field_validator("secrets", mode="before")
    @classmethod
    def _normalise(cls, value: Any) -> Any:
        if isinstance(value, str | bytes):
            try:
                value = _parse_json(value) if value.strip() else {}
            except json.JSONDecodeError as err:
                # The position only: the text itself is secret.
                raise ValueError(
                    f"must be a mapping, or a JSON object in a string ({err.msg} at line "
                    f"{err.lineno} column {err.colno})"
                ) from None
        if not isinstance(value, Mapping):
            raise ValueError("must map secret names to a value or to a mapping of values")
        try:
            return {str(name): _secret_values(str(name), item, ":") for name, item in value.items()}
        except _DuplicateKey as dup:
            raise ValueError(f"key {dup.args[0]!r} occurs twice once flattened") from None


class InMemorySecretStore(_MapSecretStore):
    features = _MULTI

    @classmethod
    def create(cls, metadata: InMemorySecretStoreMetadata, context: ComponentContext) -> Component:
        return cls(metadata.secrets)


# -- secretstores.local.file -----------------------------------------------------------------


class LocalFileSecretStoreMetadata(ComponentMetadata):
    # A path relative to the sidecar's working directory, as in Dapr.
    secrets_file: str = Field(alias="secretsFile", min_length=1)
    nested_separator: str = Field(default=":", alias="nestedSeparator")
    multi_valued: bool = Field(default=False, alias="multiValued")

    @field_validator("nested_separator")
    @classmethod
    def _default_separator(cls, value: str) -> str:
        return value or ":"  # Dapr: an empty separator means the default


class LocalFileSecretStore(_MapSecretStore):
    """Reads the file once, at init. `multiValued: false`: every leaf is a secret of its own,
    named by its flattened path (`connectionStrings:sql`). `multiValued: true`: the top-level
    keys are the secrets, and what is nested below each one is flattened into its value map."""

    def __init__(self, path: Path, separator: str, multi_valued: bool) -> None:
        super().__init__()
        self._path = path
        self._separator = separator
        self._multi_valued = multi_valued
        self.features = _MULTI if multi_valued else frozenset()

    @classmethod
    def create(cls, metadata: LocalFileSecretStoreMetadata, context: ComponentContext) -> Component:
        return cls(Path(metadata.secrets_file), metadata.nested_separator, metadata.multi_valued)

    async def init(self) -> None:
        where = f"secretsFile {str(self._path.absolute())!r}"
        try:
            raw = await anyio.to_thread.run_sync(self._path.read_bytes)
        except OSError as err:
            raise ComponentError(f"{where}: cannot read: {err.strerror}") from None
        try:
            document = _parse_json(raw)
        except (json.JSONDecodeError, UnicodeDecodeError) as err:
            detail = (
                f"{err.msg} at line {err.lineno} column {err.colno}"
                if isinstance(err, json.JSONDecodeError)
                else "not UTF-8 text"
            )
            raise ComponentError(f"{where}: not valid JSON: {detail}") from None
        if not isinstance(document, dict):
            raise ComponentError(f"{where}: must hold a JSON object (secret name -> value)")
        try:
            self._secrets = self._load(document)
        except _DuplicateKey as dup:
            raise ComponentError(
                f"{where}: key {dup.args[0]!r} occurs twice once nested keys are joined with "
                f"{self._separator!r}"
            ) from None

    def _load(self, document: dict[str, Any]) -> dict[str, dict[str, str]]:
        if self._multi_valued:
            return {
                name: _secret_values(name, value, self._separator)
                for name, value in document.items()
            }
        flat: dict[str, str] = {}
        _flatten(document, (), self._separator, flat)
        return {name: {name: value} for name, value in flat.items()}


# -- secretstores.local.env ------------------------------------------------------------------


def _withheld(name: str) -> bool:
    """The sidecar's own settings are never secrets an app can read (Dapr withholds
    `APP_API_TOKEN` and `DAPR_*`; this sidecar's are `LAYOTTO_*`)."""
    upper = name.upper()
    return upper == "APP_API_TOKEN" or upper.startswith(("DAPR_", "LAYOTTO_"))


class LocalEnvSecretStoreMetadata(ComponentMetadata):
    # Only variables starting with it are secrets, named without it. Case-sensitive, except
    # on Windows, whose environment is case-insensitive.
    prefix: str = ""


class LocalEnvSecretStore(SecretStore):
    """Reads the environment at each call, so values set after startup are seen."""

    def __init__(self, prefix: str) -> None:
        self._prefix = prefix

    @classmethod
    def create(cls, metadata: LocalEnvSecretStoreMetadata, context: ComponentContext) -> Component:
        return cls(metadata.prefix)

    async def get_secret(self, key: str, metadata: Mapping[str, str]) -> dict[str, str]:
        name = self._prefix + key
        value = None if _withheld(name) else os.environ.get(name)
        if value is None:
            raise NotFound(f"secret {key!r} not found (no environment variable {name!r})")
        return {key: value}

    def _strip(self, name: str) -> str | None:
        """`name` without the prefix, or None when it does not have it."""
        prefix, candidate = self._prefix, name
        if os.name == "nt":
            prefix, candidate = prefix.upper(), candidate.upper()
        if not candidate.startswith(prefix) or len(name) == len(prefix):
            return None
        return name[len(prefix) :]

    async def bulk_get_secrets(self, metadata: Mapping[str, str]) -> dict[str, dict[str, str]]:
        found: dict[str, dict[str, str]] = {}
        for name, value in os.environ.items():
            key = self._strip(name)
            if key is not None and not _withheld(name):
                found[key] = {key: value}
        return found
