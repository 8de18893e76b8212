"""GetConfiguration of 10 keys in one group, through the sidecar and straight from the backend.

One scenario per configuration store (``config_get_<store>``):

=========================  =======================  ==============================================
scenario                   sidecar component        direct (in the load-generator process)
=========================  =======================  ==============================================
``config_get_memory``      configuration.in-memory  ``InMemoryConfigStore.get``, the component
                                                    itself, created in the load generator
``config_get_redis``       configuration.redis      the component's read script (``EVALSHA``,
                                                    imported from ``layotto_redis.configuration``)
                                                    on the 10 stored keys + the tags hash
``config_get_etcd``        configuration.etcd       one range read of ``/<app>/<group>/<label>/``
                                                    with aetcd's client (``get_prefix``)
``config_get_apollo``      configuration.apollo     the component's two ``/configs`` reads with
                                                    httpx (the namespace and the tags namespace,
                                                    each revalidated with its releaseKey: 304s)
=========================  =======================  ==============================================

Every scenario also knows how to write one item straight to its backend (:meth:`_Config.
make_writer`), which the write -> subscriber latency mode (``bench.latency``) uses.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping
from typing import Any, ClassVar, TypeVar

import httpx
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.memory_config import InMemoryConfigStore
from layotto.plugin import ConfigItem, ConfigQuery

from bench.backends import (
    APOLLO_APP,
    APOLLO_CLUSTER,
    APOLLO_NAMESPACE,
    APOLLO_TOKEN,
    APOLLO_USER,
    apollo_open_api_base,
)
from bench.scenario import Scenario, register

APP_ID = "bench"
STORE = "bench-config"
N_KEYS = 10
CONTENT = "c" * 64
#: The key the latency mode writes and subscribes to.
LATENCY_KEY = "latency"

ClientT = TypeVar("ClientT")

# `layotto_redis.configuration` is being finished; a broken module skips the Redis scenario.
try:
    from layotto_redis.configuration import _READ as REDIS_READ
    from layotto_redis.configuration import TAGS_KEY as REDIS_TAGS_KEY
    from layotto_redis.configuration import KeyLayout, split_value

    REDIS_CONFIG_ERROR: str | None = None
except Exception as _err:  # pragma: no cover - depends on the plugin's state
    REDIS_READ, REDIS_TAGS_KEY = "", ""
    REDIS_CONFIG_ERROR = f"layotto_redis.configuration cannot be imported: {_err!r}"


def config_keys() -> list[str]:
    return [f"cfg-{k}" for k in range(N_KEYS)]


class ConfigWriter:
    """Writes one item straight to a store's backend (the latency mode's writer)."""

    #: How a write is made, for the report.
    how: ClassVar[str] = ""

    async def prepare(self) -> None:
        """Anything the first write needs (connections); not timed."""

    @abstractmethod
    async def write(self, content: str, n: int) -> None:
        """Write ``content`` under :data:`LATENCY_KEY`; ``n`` counts the writes (1, 2, ...)."""

    async def close(self) -> None:
        pass


class _Config(Scenario[ClientT]):
    """GetConfiguration of :data:`N_KEYS` keys of one group (store :data:`STORE`)."""

    store: ClassVar[str]  # short name: memory, redis, etcd, apollo
    component_type: ClassVar[str]
    #: The label requests carry ("" = none, Apollo's default).
    label: ClassVar[str] = "default"

    @property
    def group(self) -> str:
        return "bench"

    def component_metadata(self) -> dict[str, Any]:
        return {}

    def sidecar_config(self) -> Mapping[str, Any]:
        component: dict[str, Any] = {"name": STORE, "type": self.component_type}
        metadata = self.component_metadata()
        if metadata:
            component["metadata"] = metadata
        return {"app": {"id": APP_ID}, "components": [component]}

    def get_request(self) -> pb.GetConfigurationRequest:
        return pb.GetConfigurationRequest(
            store_name=STORE, app_id=APP_ID, group=self.group, label=self.label, keys=config_keys()
        )

    def subscribe_request(self) -> pb.SubscribeConfigurationRequest:
        """The latency mode's subscription: :data:`LATENCY_KEY`, initial values first."""
        return pb.SubscribeConfigurationRequest(
            store_name=STORE,
            app_id=APP_ID,
            group=self.group,
            label=self.label,
            keys=[LATENCY_KEY],
            metadata={"sendInitialValues": "true"},
        )

    def items(self, keys: list[str], content: str) -> list[pb.ConfigurationItem]:
        return [
            pb.ConfigurationItem(key=k, content=content, group=self.group, label=self.label)
            for k in keys
        ]

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        await self.populate()

    async def setup_direct(self, client: ClientT) -> None:
        await self.populate()

    async def populate(self) -> None:
        """Write the :data:`N_KEYS` items to the backend (idempotent)."""

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await stub.get_configuration(self.get_request())
        if len(response.items) != N_KEYS:
            raise RuntimeError(f"GetConfiguration: {len(response.items)} items, not {N_KEYS}")

    @abstractmethod
    async def make_writer(self, stub: pb.RuntimeStub) -> ConfigWriter:
        """A writer of :data:`LATENCY_KEY` straight to the backend (``stub``: the sidecar, for
        a store without an external backend)."""


# -- in-memory -----------------------------------------------------------------------------


class _SidecarWriter(ConfigWriter):
    how = "SaveConfiguration through the sidecar (the in-memory store has no external backend)"

    def __init__(self, stub: pb.RuntimeStub, scenario: _Config[Any]) -> None:
        self.stub = stub
        self.scenario = scenario

    async def write(self, content: str, n: int) -> None:
        await self.stub.save_configuration(
            pb.SaveConfigurationRequest(
                store_name=STORE, app_id=APP_ID, items=self.scenario.items([LATENCY_KEY], content)
            )
        )


@register
class ConfigGetMemory(_Config[InMemoryConfigStore]):
    name = "config_get_memory"
    store = "memory"
    component_type = "configuration.in-memory"
    description = (
        f"GetConfiguration of {N_KEYS} keys in one group, configuration.in-memory. "
        "direct: InMemoryConfigStore.get in the load generator"
    )

    async def make_direct_client(self) -> InMemoryConfigStore:
        store = InMemoryConfigStore()
        await store.init()
        return store

    async def close_direct_client(self, client: InMemoryConfigStore) -> None:
        await client.close()

    async def setup_direct(self, client: InMemoryConfigStore) -> None:
        items = [ConfigItem(k, CONTENT, self.group, self.label) for k in config_keys()]
        await client.set(APP_ID, items, {})

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        await stub.save_configuration(
            pb.SaveConfigurationRequest(
                store_name=STORE, app_id=APP_ID, items=self.items(config_keys(), CONTENT)
            )
        )

    async def direct_call(self, client: InMemoryConfigStore, i: int) -> None:
        found = await client.get(ConfigQuery(APP_ID, self.group, self.label, config_keys()))
        if len(found) != N_KEYS:
            raise RuntimeError(f"get: {len(found)} items, not {N_KEYS}")

    async def make_writer(self, stub: pb.RuntimeStub) -> ConfigWriter:
        return _SidecarWriter(stub, self)


# -- Redis ---------------------------------------------------------------------------------


class _RedisWriter(ConfigWriter):
    how = 'redis-py SET <stored key> "<content>||<n>" (Dapr\'s layout)'

    def __init__(self, address: str, stored: str) -> None:
        import redis.asyncio

        host, _, port = address.rpartition(":")
        self.client = redis.asyncio.Redis(host=host, port=int(port))
        self.stored = stored

    async def prepare(self) -> None:
        await self.client.ping()

    async def write(self, content: str, n: int) -> None:
        await self.client.set(self.stored, f"{content}||{n}")

    async def close(self) -> None:
        await self.client.aclose()


@register
class ConfigGetRedis(_Config[Any]):
    name = "config_get_redis"
    store = "redis"
    component_type = "configuration.redis"
    requires = frozenset({"redis"})
    description = (
        f"GetConfiguration of {N_KEYS} keys in one group, configuration.redis. "
        "direct: the component's read script (EVALSHA) on the same keys, redis.asyncio"
    )

    @property
    def group(self) -> str:
        # The stored keys hold the run id (`<run id>||default||cfg-3`): an external Redis's
        # keys of this run are deleted at the end like the other Redis scenarios'.
        return self.context.run_id

    def skip_reason(self) -> str | None:
        return REDIS_CONFIG_ERROR

    def component_metadata(self) -> dict[str, Any]:
        return {"redisHost": self.backend("redis")}

    def stored(self, key: str) -> str:
        return KeyLayout("default", "default").stored(self.group, self.label, key)

    async def make_direct_client(self) -> Any:
        from layotto_redis.settings import RedisSettings, create_client

        settings = RedisSettings.model_validate({"redisHost": self.backend("redis")})
        client = create_client(settings)
        await client.ping()
        self._read = client.register_script(REDIS_READ)
        self._keys = [*(self.stored(k) for k in config_keys()), REDIS_TAGS_KEY]
        return client

    async def close_direct_client(self, client: Any) -> None:
        await client.aclose()

    async def populate(self) -> None:
        import redis.asyncio

        host, _, port = self.backend("redis").rpartition(":")
        client = redis.asyncio.Redis(host=host, port=int(port))
        try:
            async with client.pipeline(transaction=False) as pipe:
                for key in config_keys():
                    pipe.set(self.stored(key), f"{CONTENT}||1")
                await pipe.execute()
        finally:
            await client.aclose()

    async def direct_call(self, client: Any, i: int) -> None:
        replies = await self._read(keys=self._keys, client=client)
        found = [split_value(value) for value, _tags in replies if value is not None]
        if len(found) != N_KEYS:
            raise RuntimeError(f"read script: {len(found)} items, not {N_KEYS}")

    async def make_writer(self, stub: pb.RuntimeStub) -> ConfigWriter:
        return _RedisWriter(self.backend("redis"), self.stored(LATENCY_KEY))


# -- etcd ----------------------------------------------------------------------------------


def _aetcd_client(address: str) -> Any:
    import aetcd  # type: ignore[import-untyped]

    host, _, port = address.rpartition(":")
    return aetcd.Client(host=host, port=int(port), timeout=5)


class _EtcdWriter(ConfigWriter):
    how = "aetcd put /<app>/<group>/<label>/<key>"

    def __init__(self, address: str, key: bytes) -> None:
        self.client = _aetcd_client(address)
        self.key = key

    async def prepare(self) -> None:
        await self.client.get(self.key)

    async def write(self, content: str, n: int) -> None:
        await self.client.put(self.key, content.encode())

    async def close(self) -> None:
        await self.client.close()


@register
class ConfigGetEtcd(_Config[Any]):
    name = "config_get_etcd"
    store = "etcd"
    component_type = "configuration.etcd"
    requires = frozenset({"etcd"})
    description = (
        f"GetConfiguration of {N_KEYS} keys in one group, configuration.etcd. "
        "direct: one range read of /<app>/<group>/<label>/ with aetcd"
    )

    def component_metadata(self) -> dict[str, Any]:
        return {"endpoints": self.backend("etcd")}

    def prefix(self) -> bytes:
        return f"/{APP_ID}/{self.group}/{self.label}/".encode()

    def item_key(self, key: str) -> bytes:
        return self.prefix() + key.encode()

    async def make_direct_client(self) -> Any:
        client = _aetcd_client(self.backend("etcd"))
        self._wanted = {self.item_key(k) for k in config_keys()}
        return client

    async def close_direct_client(self, client: Any) -> None:
        await client.close()

    async def populate(self) -> None:
        client = _aetcd_client(self.backend("etcd"))
        try:
            for key in config_keys():
                await client.put(self.item_key(key), CONTENT.encode())
        finally:
            await client.close()

    async def direct_call(self, client: Any, i: int) -> None:
        reply = await client.get_prefix(self.prefix())
        found = {bytes(kv.key): bytes(kv.value).decode() for kv in reply}
        got = sum(1 for key in self._wanted if key in found)
        if got != N_KEYS:
            raise RuntimeError(f"range read: {got} items, not {N_KEYS}")

    async def make_writer(self, stub: pb.RuntimeStub) -> ConfigWriter:
        return _EtcdWriter(self.backend("etcd"), self.item_key(LATENCY_KEY))


# -- Apollo --------------------------------------------------------------------------------


def _open_api(address: str) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=f"{apollo_open_api_base(address)}/namespaces/{APOLLO_NAMESPACE}",
        headers={"Authorization": APOLLO_TOKEN},
        timeout=10,
    )


async def apollo_put(api: httpx.AsyncClient, key: str, value: str) -> None:
    body = {
        "key": key,
        "value": value,
        "dataChangeCreatedBy": APOLLO_USER,
        "dataChangeLastModifiedBy": APOLLO_USER,
    }
    response = await api.put(f"/items/{key}", params={"createIfNotExists": "true"}, json=body)
    response.raise_for_status()


async def apollo_release(api: httpx.AsyncClient) -> None:
    response = await api.post(
        "/releases", json={"releaseTitle": "bench", "releasedBy": APOLLO_USER}
    )
    response.raise_for_status()


class _ApolloWriter(ConfigWriter):
    how = "Open API item PUT + release POST (timed from before the PUT)"

    def __init__(self, address: str) -> None:
        self.api = _open_api(address)

    async def write(self, content: str, n: int) -> None:
        await apollo_put(self.api, LATENCY_KEY, content)  # invisible until the release
        await apollo_release(self.api)

    async def close(self) -> None:
        await self.api.aclose()


class ApolloReader:
    """The component's reads of one GetConfiguration: ``/configs`` of the namespace and of the
    tags namespace, each with the releaseKey last seen (a 304 keeps the cached copy)."""

    def __init__(self, address: str) -> None:
        from layotto_apollo import TAGS_NAMESPACE

        self.http = httpx.AsyncClient(base_url=f"http://{address}", timeout=10)
        self.namespaces = (APOLLO_NAMESPACE, TAGS_NAMESPACE)
        self.cache: dict[str, tuple[str, dict[str, str]]] = {}

    async def read(self, namespace: str) -> dict[str, str]:
        release_key, values = self.cache.get(namespace, ("-1", {}))
        response = await self.http.get(
            f"/configs/{APOLLO_APP}/{APOLLO_CLUSTER}/{namespace}",
            params={"releaseKey": release_key},
        )
        if response.status_code == 304:
            return values
        if response.status_code == 404:
            return {}
        response.raise_for_status()
        body = response.json()
        values = dict(body.get("configurations") or {})
        self.cache[namespace] = (str(body.get("releaseKey", "")), values)
        return values

    async def aclose(self) -> None:
        await self.http.aclose()


@register
class ConfigGetApollo(_Config[ApolloReader]):
    name = "config_get_apollo"
    store = "apollo"
    component_type = "configuration.apollo"
    requires = frozenset({"apollo"})
    label = ""
    description = (
        f"GetConfiguration of {N_KEYS} keys in one namespace, configuration.apollo on the Apollo "
        "test server (own process). direct: the component's two /configs reads (namespace + "
        "tags namespace, releaseKey revalidation), httpx"
    )

    @property
    def group(self) -> str:
        return APOLLO_NAMESPACE

    def component_metadata(self) -> dict[str, Any]:
        url = f"http://{self.backend('apollo')}"
        return {
            "address": [url],
            "app_id": APOLLO_APP,
            "cluster": APOLLO_CLUSTER,
            "namespace_name": APOLLO_NAMESPACE,
            "is_backup_config": "false",
            "open_api_address": url,
            "open_api_token": APOLLO_TOKEN,
            "open_api_user": APOLLO_USER,
        }

    async def populate(self) -> None:
        async with _open_api(self.backend("apollo")) as api:
            current = await api.get("/items")
            existing = {}
            if current.status_code == 200:
                existing = {i["key"]: i["value"] for i in current.json() if "key" in i}
            missing = [k for k in config_keys() if existing.get(k) != CONTENT]
            for key in missing:
                await apollo_put(api, key, CONTENT)
            if missing:
                await apollo_release(api)

    async def make_direct_client(self) -> ApolloReader:
        return ApolloReader(self.backend("apollo"))

    async def close_direct_client(self, client: ApolloReader) -> None:
        await client.aclose()

    async def direct_call(self, client: ApolloReader, i: int) -> None:
        values = await client.read(client.namespaces[0])
        await client.read(client.namespaces[1])
        got = sum(1 for k in config_keys() if k in values)
        if got != N_KEYS:
            raise RuntimeError(f"/configs: {got} items, not {N_KEYS}")

    async def make_writer(self, stub: pb.RuntimeStub) -> ConfigWriter:
        return _ApolloWriter(self.backend("apollo"))


#: Store short name -> its scenario.
CONFIG_SCENARIOS: dict[str, type[_Config[Any]]] = {
    cls.store: cls for cls in (ConfigGetMemory, ConfigGetRedis, ConfigGetEtcd, ConfigGetApollo)
}
