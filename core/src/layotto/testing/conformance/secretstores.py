"""Secret-store conformance (conformance.md §6): the component, and the sidecar's
`SecretService` over it for the error mapping and access lists.

Subclass `SecretStoreConformance` in a test module (the name must start with `Test`) and
provide `secret_store_factory`: an async callable that takes a `SecretSeed` and returns an
initialised store holding the seed's secrets (the kit closes it). How a store is seeded is
its own business: write a JSON file, set environment variables, pass metadata, write to the
backend::

    import json
    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import SecretSeed, SecretStoreConformance

    class TestLocalFile(SecretStoreConformance):
        @pytest.fixture
        def secret_store_factory(self, tmp_path):
            async def create(seed: SecretSeed):
                path = tmp_path / "secrets.json"
                path.write_text(json.dumps(dict(seed.values)))
                store = LocalFileSecretStore.create(
                    LocalFileSecretStoreMetadata(secretsFile=str(path)),
                    ComponentContext("secrets", "app"),
                )
                await store.init()
                return store
            return create

The seed holds Dapr's two single-value secrets (`seed.values`: `conftestsecret: abcd`,
`secondsecret: efgh`) and one secret with several values (`seed.multi`: `multisecret`). Every
store must hold the single-value ones; a store that declares
`SecretStoreFeature.MULTIPLE_KEY_VALUES_PER_SECRET` must hold `multisecret` with all its keys,
and one that does not may leave it out (a multi-value scenario then skips with the reason).
`seed.answers()` is what a store answers for each seeded secret.

The names are Dapr's and fixed: a store on a shared backend isolates runs itself (a prefix, a
path of its own; `conformance_prefix` is a fresh one per test). Bulk get is checked to
*include* the seeded secrets: a store may hold others too (an environment has many variables).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field

import anyio
import pytest

from layotto.config import SecretScope
from layotto.errors import ErrorCategory
from layotto.plugin import (
    ComponentError,
    HealthStatus,
    Kind,
    NotFound,
    PermissionDenied,
    SecretStore,
    SecretStoreFeature,
)
from layotto.services.secrets import SecretService
from layotto.testing.conformance._services import registry_with
from layotto.testing.conformance._support import ConformanceBase

MULTI = SecretStoreFeature.MULTIPLE_KEY_VALUES_PER_SECRET
# The store's name in the sidecar-level scenarios.
STORE_NAME = "conftestsecretstore"


@dataclass(frozen=True, slots=True)
class SecretSeed:
    """The secrets the kit expects a new store to hold."""

    # Single-value secrets, name -> value (conformance.md §6: Dapr's two).
    values: Mapping[str, str] = field(
        default_factory=lambda: {"conftestsecret": "abcd", "secondsecret": "efgh"}
    )
    # Secrets with several values, name -> key -> value. Only for stores that declare
    # MULTIPLE_KEY_VALUES_PER_SECRET; the separator-like ':' in a value must come back as is.
    multi: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "multisecret": {"username": "conftest", "password": "p4ss:w0rd", "host": "db:5432"}
        }
    )

    def answers(self, *, multi: bool = True) -> dict[str, dict[str, str]]:
        """name -> the map a get answers: `{name: value}` for a single-value secret."""
        found = {name: {name: value} for name, value in self.values.items()}
        if multi:
            found.update({name: dict(values) for name, values in self.multi.items()})
        return found


SecretStoreFactory = Callable[[SecretSeed], Awaitable[SecretStore]]


class SecretStoreConformance(ConformanceBase):
    """conformance.md §6 against the store from `secret_store_factory`. See the module
    docstring."""

    @pytest.fixture
    def secret_seed(self) -> SecretSeed:
        """What the factory is asked to seed. Override to change values, not names."""
        return SecretSeed()

    @pytest.fixture
    async def secret_store(
        self, secret_store_factory: SecretStoreFactory, secret_seed: SecretSeed
    ) -> AsyncIterator[SecretStore]:
        store = await secret_store_factory(secret_seed)
        assert isinstance(store, SecretStore), f"{type(store).__name__} is not a SecretStore"
        try:
            yield store
        finally:
            await store.close()

    @staticmethod
    def require_multi(store: SecretStore) -> None:
        if MULTI not in store.features:
            pytest.skip(f"{type(store).__name__} does not declare {MULTI.value}")

    @staticmethod
    def service(store: SecretStore, scope: SecretScope | None = None) -> SecretService:
        """The sidecar's secret service over `store` (named STORE_NAME), with `scope` as its
        access policy."""
        registry = registry_with(Kind.SECRETSTORES, STORE_NAME, store)
        return SecretService(registry, {STORE_NAME: scope} if scope is not None else None)

    # -- component level -----------------------------------------------------------------------

    async def test_init_and_ping(self, secret_store: SecretStore) -> None:
        with anyio.fail_after(1):
            health = await secret_store.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_close_is_idempotent(self, secret_store: SecretStore) -> None:
        with anyio.fail_after(5):
            await secret_store.close()
            await secret_store.close()  # the fixture closes it a third time

    async def test_get(self, secret_store: SecretStore, secret_seed: SecretSeed) -> None:
        # A single-value secret is a map with one entry, named after the secret.
        for name, value in secret_seed.values.items():
            assert await secret_store.get_secret(name, {}) == {name: value}

    async def test_bulk_get(self, secret_store: SecretStore, secret_seed: SecretSeed) -> None:
        found = await secret_store.bulk_get_secrets({})
        for name, values in secret_seed.answers(multi=False).items():
            assert name in found, f"bulk get lacks {name!r}: {sorted(found)}"
            assert found[name] == values

    async def test_get_a_missing_secret(
        self, secret_store: SecretStore, conformance_prefix: str
    ) -> None:
        with pytest.raises(NotFound):
            await secret_store.get_secret(f"{conformance_prefix}missing", {})

    async def test_multi_value_get(
        self, secret_store: SecretStore, secret_seed: SecretSeed
    ) -> None:
        self.require_multi(secret_store)
        for name, values in secret_seed.multi.items():
            assert await secret_store.get_secret(name, {}) == values
        # Single-value secrets keep their one-entry shape in a multi-value store.
        for name, value in secret_seed.values.items():
            assert await secret_store.get_secret(name, {}) == {name: value}

    async def test_multi_value_bulk_get(
        self, secret_store: SecretStore, secret_seed: SecretSeed
    ) -> None:
        self.require_multi(secret_store)
        found = await secret_store.bulk_get_secrets({})
        for name, values in secret_seed.answers().items():
            assert found.get(name) == values, f"bulk get of {name!r}: {found.get(name)!r}"

    async def test_without_multi_values(self, secret_store: SecretStore) -> None:
        """A store without the capability answers every secret as `{name: value}`."""
        if MULTI in secret_store.features:
            pytest.skip(f"{type(secret_store).__name__} declares {MULTI.value}")
        found = await secret_store.bulk_get_secrets({})
        assert found, "bulk get of a seeded store is empty"
        for name, values in found.items():
            assert list(values) == [name], f"{name!r} holds several keys: {sorted(values)}"
            assert await secret_store.get_secret(name, {}) == values

    # -- sidecar level (SecretService) -------------------------------------------------------

    async def test_service_get_and_bulk_get(
        self, secret_store: SecretStore, secret_seed: SecretSeed
    ) -> None:
        service = self.service(secret_store)
        for name, value in secret_seed.values.items():
            assert await service.get(STORE_NAME, name) == {name: value}
        found = await service.bulk_get(STORE_NAME)
        for name, values in secret_seed.answers(multi=False).items():
            assert found.get(name) == values

    async def test_service_maps_a_missing_secret_to_internal(
        self, secret_store: SecretStore, conformance_prefix: str
    ) -> None:
        # Dapr parity: a missing secret is a failed get (INTERNAL), not NOT_FOUND.
        missing = f"{conformance_prefix}missing"
        with pytest.raises(ComponentError) as caught:
            await self.service(secret_store).get(STORE_NAME, missing)
        assert caught.value.category is ErrorCategory.INTERNAL
        assert caught.value.reason == "ERR_SECRET_GET"
        assert missing in caught.value.message

    async def test_deny_list(self, secret_store: SecretStore, secret_seed: SecretSeed) -> None:
        service = self.service(secret_store, SecretScope(denied_secrets=["secondsecret"]))
        with pytest.raises(PermissionDenied):
            await service.get(STORE_NAME, "secondsecret")
        assert await service.get(STORE_NAME, "conftestsecret") == {
            "conftestsecret": secret_seed.values["conftestsecret"]
        }
        found = await service.bulk_get(STORE_NAME)
        assert "secondsecret" not in found, "bulk get returned a denied secret"
        assert "conftestsecret" in found

    async def test_allow_list(self, secret_store: SecretStore, secret_seed: SecretSeed) -> None:
        scope = SecretScope(default_access="deny", allowed_secrets=["conftestsecret"])
        service = self.service(secret_store, scope)
        with pytest.raises(PermissionDenied):
            await service.get(STORE_NAME, "secondsecret")
        expected = {"conftestsecret": {"conftestsecret": secret_seed.values["conftestsecret"]}}
        assert await service.get(STORE_NAME, "conftestsecret") == expected["conftestsecret"]
        # Everything else the store holds is hidden, not only the other seeded secret.
        assert await service.bulk_get(STORE_NAME) == expected

    async def test_deny_all(self, secret_store: SecretStore) -> None:
        service = self.service(secret_store, SecretScope(default_access="deny"))
        with pytest.raises(PermissionDenied):
            await service.get(STORE_NAME, "conftestsecret")
        assert await service.bulk_get(STORE_NAME) == {}
