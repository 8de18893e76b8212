"""The built-in secret stores against the secret-store kit (layotto.testing.conformance):
in-memory (secrets in metadata), local.file in both modes (a JSON file), local.env (the
environment, under a prefix unique to the test).

They are backend-neutral, so the kit runs on asyncio and on trio.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import ClassVar

import pytest
from layotto.builtin.secret_stores import (
    InMemorySecretStore,
    InMemorySecretStoreMetadata,
    LocalEnvSecretStore,
    LocalEnvSecretStoreMetadata,
    LocalFileSecretStore,
    LocalFileSecretStoreMetadata,
)
from layotto.plugin import Component, ComponentContext, SecretStore
from layotto.testing.conformance import SecretSeed, SecretStoreConformance

BACKENDS = ["asyncio", "trio"]
CONTEXT = ComponentContext("secrets", "app")

Factory = Callable[[SecretSeed], Awaitable[SecretStore]]


async def started(component: Component) -> SecretStore:
    assert isinstance(component, SecretStore)
    await component.init()
    return component


class BothBackends(SecretStoreConformance):
    @pytest.fixture(params=BACKENDS)
    def anyio_backend(self, request: pytest.FixtureRequest) -> str:
        return str(request.param)


class TestInMemorySecrets(BothBackends):
    @pytest.fixture
    def secret_store_factory(self) -> Factory:
        async def create(seed: SecretSeed) -> SecretStore:
            # As from YAML: a plain value, or a mapping of values.
            secrets = {**seed.values, **{name: dict(v) for name, v in seed.multi.items()}}
            metadata = InMemorySecretStoreMetadata.model_validate({"secrets": secrets})
            return await started(InMemorySecretStore.create(metadata, CONTEXT))

        return create


class TestLocalFileSecrets(BothBackends):
    """`multiValued: false`: every leaf is a secret of its own; the multi-value secret is
    written nested anyway, so its flattened leaves must come back one per secret."""

    extra_metadata: ClassVar[dict[str, str]] = {}

    @pytest.fixture
    def secret_store_factory(self, tmp_path: Path) -> Factory:
        async def create(seed: SecretSeed) -> SecretStore:
            path = tmp_path / "secrets.json"
            document = {**seed.values, **{name: dict(v) for name, v in seed.multi.items()}}
            path.write_text(json.dumps(document), encoding="utf-8")
            metadata = LocalFileSecretStoreMetadata.model_validate(
                {"secretsFile": str(path), **self.extra_metadata}
            )
            return await started(LocalFileSecretStore.create(metadata, CONTEXT))

        return create


class TestLocalFileMultiValuedSecrets(TestLocalFileSecrets):
    """`multiValued: true`: a top-level mapping is one secret with many keys."""

    extra_metadata: ClassVar[dict[str, str]] = {"multiValued": "true"}


class TestLocalEnvSecrets(BothBackends):
    """One value per variable: the multi-value secret is not seeded."""

    @pytest.fixture
    def secret_store_factory(self, monkeypatch: pytest.MonkeyPatch) -> Factory:
        prefix = f"CONFTEST_{uuid.uuid4().hex.upper()}_"

        async def create(seed: SecretSeed) -> SecretStore:
            for name, value in seed.values.items():
                monkeypatch.setenv(prefix + name, value)
            metadata = LocalEnvSecretStoreMetadata.model_validate({"prefix": prefix})
            return await started(LocalEnvSecretStore.create(metadata, CONTEXT))

        return create
