"""The layotto configuration conformance kit against `configuration.apollo` on the Apollo test
server. The updater writes straight to the backend: the Open API over plain HTTP (item PUT or
DELETE, then a release), as an operator or the portal would; not through the store."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from urllib.parse import quote

import httpx
import pytest
from layotto.plugin import ComponentContext, ConfigStore
from layotto.testing.conformance import ConfigStoreConformance
from layotto_apollo import ApolloConfigStore, ApolloMetadata
from layotto_apollo.testing import ApolloTestServer
from layotto_apollo_test_support import APP_ID, TOKEN, USER, store_metadata

pytestmark = pytest.mark.integration


class OpenApiUpdater:
    """`ConfigUpdater` for Apollo: `key@$label` items through the Open API, then a release."""

    def __init__(self, client: httpx.AsyncClient) -> None:
        self.client = client

    @staticmethod
    def _namespace(app_id: str, group: str) -> str:
        app, ns = quote(app_id, safe=""), quote(group, safe="")
        return f"/openapi/v1/envs/DEV/apps/{app}/clusters/default/namespaces/{ns}"

    @staticmethod
    def _stored(key: str, label: str) -> str:
        return f"{key}@${label}" if label else key

    async def _release(self, app_id: str, group: str) -> None:
        r = await self.client.post(
            f"{self._namespace(app_id, group)}/releases",
            json={"releaseTitle": "conformance", "releasedBy": USER},
        )
        r.raise_for_status()

    async def write(self, app_id: str, group: str, label: str, key: str, content: str) -> None:
        stored = self._stored(key, label)
        r = await self.client.put(
            f"{self._namespace(app_id, group)}/items/{quote(stored, safe='')}",
            params={"createIfNotExists": "true"},
            json={
                "key": stored,
                "value": content,
                "dataChangeCreatedBy": USER,
                "dataChangeLastModifiedBy": USER,
            },
        )
        r.raise_for_status()
        await self._release(app_id, group)

    async def remove(self, app_id: str, group: str, label: str, key: str) -> None:
        stored = self._stored(key, label)
        r = await self.client.delete(
            f"{self._namespace(app_id, group)}/items/{quote(stored, safe='')}",
            params={"operator": USER},
        )
        if r.status_code == 404:
            return  # removing a missing item succeeds
        r.raise_for_status()
        await self._release(app_id, group)


class TestApolloConfig(ConfigStoreConformance):
    @pytest.fixture
    async def config_store(
        self, apollo: ApolloTestServer, tmp_path: Path
    ) -> AsyncIterator[ConfigStore]:
        metadata = ApolloMetadata.model_validate(store_metadata(apollo, tmp_path / "backup"))
        store = ApolloConfigStore(metadata, ComponentContext("apollo", "app"))
        await store.init()
        yield store
        await store.close()

    @pytest.fixture
    async def config_updater(self, apollo: ApolloTestServer) -> AsyncIterator[OpenApiUpdater]:
        async with httpx.AsyncClient(
            base_url=apollo.url, headers={"Authorization": TOKEN}, timeout=10
        ) as client:
            yield OpenApiUpdater(client)

    @pytest.fixture
    def config_app_id(self) -> str:
        return APP_ID  # an Apollo store reads one app

    @pytest.fixture
    def config_groups(self) -> tuple[str, str]:
        return ("application", "db")  # two existing namespaces of that app


class TestApolloConfigReadOnly(ConfigStoreConformance):
    """Without the Open API settings: reads and the watch work, writes are UNIMPLEMENTED."""

    writable = False

    @pytest.fixture
    async def config_store(
        self, apollo: ApolloTestServer, tmp_path: Path
    ) -> AsyncIterator[ConfigStore]:
        metadata = ApolloMetadata.model_validate(
            store_metadata(
                apollo,
                tmp_path / "backup",
                open_api_address=None,
                open_api_token=None,
                open_api_user=None,
            )
        )
        store = ApolloConfigStore(metadata, ComponentContext("apollo", "app"))
        await store.init()
        yield store
        await store.close()

    @pytest.fixture
    async def config_updater(self, apollo: ApolloTestServer) -> AsyncIterator[OpenApiUpdater]:
        async with httpx.AsyncClient(
            base_url=apollo.url, headers={"Authorization": TOKEN}, timeout=10
        ) as client:
            yield OpenApiUpdater(client)

    @pytest.fixture
    def config_app_id(self) -> str:
        return APP_ID

    @pytest.fixture
    def config_groups(self) -> tuple[str, str]:
        return ("application", "db")


class TestApolloConfigOnTrio(TestApolloConfig):
    """The store is anyio + httpx only: the kit passes on trio too."""

    @pytest.fixture
    def anyio_backend(self) -> str:
        return "trio"
