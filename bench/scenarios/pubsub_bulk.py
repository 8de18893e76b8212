"""Bulk publish of 100 events: the component's native bulk publish (``BULK_PUBSUB``) against the
sidecar's one-by-one path, on the in-memory and Redis components. One call = one bulk of 100.

- ``bulk_publish_memory``: sidecar: Dapr ``BulkPublishEvent`` of 100 entries to
  ``bench-pubsub-bulk`` (``pubsub.in-memory`` with ``bulkPublish: true``: native); direct:
  ``PubSubService.publish_bulk`` over an ``InMemoryPubSub(bulk_publish=True)``.
- ``bulk_publish_memory_one_by_one``: the same request to ``bench-pubsub`` (``bulkPublish``
  off: the sidecar publishes entry by entry); direct: the same over an ``InMemoryPubSub``
  without it.
- ``bulk_publish_redis``: sidecar: Dapr ``BulkPublishEvent`` of 100 entries, ``pubsub.redis``
  (one pipeline of 100 ``XADD``); direct: ``PubSubService.publish_bulk`` over a ``RedisPubSub``
  on the same server.
- ``bulk_publish_redis_one_by_one``: sidecar: 100 Dapr ``PublishEvent`` calls one after the
  other (the app's own one-by-one: ``pubsub.redis`` always publishes a bulk natively, there is
  no switch); direct: ``PubSubService.publish_bulk`` over a ``RedisPubSub`` whose
  ``BULK_PUBSUB`` is taken away: 100 ``XADD`` round trips, the sidecar's one-by-one path
  without gRPC.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, ClassVar

from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.memory_pubsub import InMemoryPubSub
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    Kind,
    PubSub,
    PubSubFeature,
)
from layotto.services.pubsub import BulkEntry, PubSubService

from bench.scenario import Scenario, register
from bench.scenarios.dapr import _DaprStubs
from bench.scenarios.pubsub import (
    APP_ID,
    CONTENT_TYPE,
    METADATA,
    PUBSUB,
    REDIS_MAX_LEN,
    component_config,
    payload,
)

#: Entries per bulk call.
ENTRIES = 100
#: The in-memory component that publishes bulks natively (`bulkPublish: true`).
PUBSUB_BULK = "bench-pubsub-bulk"


def _service(pubsub: PubSub) -> PubSubService:
    """The sidecar's pub/sub service over one initialised component, named :data:`PUBSUB`."""
    spec = ComponentSpec(Kind.PUBSUB, "bench", ComponentMetadata, lambda _m, _c: pubsub)
    config = ComponentConfig(name=PUBSUB, kind=Kind.PUBSUB, type="bench")
    registry = ComponentRegistry()
    registry.add(BuiltComponent(config, spec, pubsub))
    return PubSubService(registry)


class _Bulk(_DaprStubs, Scenario[PubSubService]):
    component: ClassVar[str]  # memory | redis
    native: ClassVar[bool]
    #: The sidecar's component this scenario publishes to.
    target: ClassVar[str] = PUBSUB

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.topic = f"{self.context.run_id}-bulk"
        data = payload("bulk")
        self.entries = [BulkEntry(f"e{i}", data, CONTENT_TYPE, METADATA) for i in range(ENTRIES)]
        self.request = dapr_pb.BulkPublishRequest(
            pubsub_name=self.target,
            topic=self.topic,
            entries=[
                dapr_pb.BulkPublishRequestEntry(
                    entry_id=e.entry_id,
                    event=e.data,
                    content_type=e.content_type,
                    metadata=dict(e.metadata),
                )
                for e in self.entries
            ],
        )
        self.single = dapr_pb.PublishEventRequest(
            pubsub_name=self.target,
            topic=self.topic,
            data=data,
            data_content_type=CONTENT_TYPE,
            metadata=dict(METADATA),
        )

    def sidecar_config(self) -> Mapping[str, Any]:
        components = [component_config(self.component, self.context.backends)]
        if self.component == "memory":
            components.append(
                {"name": PUBSUB_BULK, "type": "pubsub.in-memory", "metadata": {"bulkPublish": True}}
            )
        return {"app": {"id": APP_ID}, "components": components}

    # -- direct: the service layer over the component, in this process ---------------------

    async def make_pubsub(self) -> PubSub:
        raise NotImplementedError

    async def make_direct_client(self) -> PubSubService:
        self.pubsub = await self.make_pubsub()
        assert (PubSubFeature.BULK_PUBSUB in self.pubsub.features) is self.native
        return _service(self.pubsub)

    async def close_direct_client(self, client: PubSubService) -> None:
        await self.pubsub.close()

    async def setup_direct(self, client: PubSubService) -> None:
        await self.direct_call(client, 0)

    async def direct_call(self, client: PubSubService, i: int) -> None:
        failures = await client.publish_bulk(PUBSUB, self.topic, self.entries)
        if failures:
            raise RuntimeError(f"{len(failures)} entries failed: {failures[0].error}")

    # -- sidecar ----------------------------------------------------------------------------

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        await self.sidecar_call(stub, 0)

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await self.dapr_stub(stub).bulk_publish_event(self.request)
        if response.failed_entries:
            first = response.failed_entries[0]
            raise RuntimeError(f"{len(response.failed_entries)} entries failed: {first.error}")


class _Memory(_Bulk):
    component = "memory"

    async def make_pubsub(self) -> PubSub:
        pubsub = InMemoryPubSub(app_id=APP_ID, bulk_publish=self.native)
        await pubsub.init()
        return pubsub


@register
class BulkPublishMemory(_Memory):
    name = "bulk_publish_memory"
    description = (
        f"Dapr BulkPublishEvent of {ENTRIES} entries, pubsub.in-memory with bulkPublish "
        "(native, no subscriber); direct: PubSubService.publish_bulk, native"
    )
    native = True
    target = PUBSUB_BULK
    baseline = "bulk_publish_memory_one_by_one"


@register
class BulkPublishMemoryOneByOne(_Memory):
    name = "bulk_publish_memory_one_by_one"
    description = (
        f"Dapr BulkPublishEvent of {ENTRIES} entries, pubsub.in-memory without bulkPublish "
        "(the sidecar publishes entry by entry); direct: PubSubService.publish_bulk, the same"
    )
    native = False


class _Redis(_Bulk):
    component = "redis"
    requires = frozenset({"redis"})

    async def make_pubsub(self) -> PubSub:
        from layotto_redis.pubsub import RedisPubSub
        from layotto_redis.settings import RedisPubSubMetadata

        settings = RedisPubSubMetadata.model_validate(
            {"redisHost": self.backend("redis"), "maxLenApprox": REDIS_MAX_LEN}
        )
        built: Component = RedisPubSub.create(settings, ComponentContext(PUBSUB, APP_ID))
        assert isinstance(built, RedisPubSub)
        await built.init()
        if not self.native:  # this instance only: the service then goes entry by entry
            built.features = built.features - {PubSubFeature.BULK_PUBSUB}
        return built


@register
class BulkPublishRedis(_Redis):
    name = "bulk_publish_redis"
    description = (
        f"Dapr BulkPublishEvent of {ENTRIES} entries, pubsub.redis (one pipeline of XADD); "
        "direct: PubSubService.publish_bulk over RedisPubSub, native"
    )
    native = True
    baseline = "bulk_publish_redis_one_by_one"


@register
class BulkPublishRedisOneByOne(_Redis):
    name = "bulk_publish_redis_one_by_one"
    description = (
        f"{ENTRIES} Dapr PublishEvent calls one after the other, pubsub.redis; direct: "
        "PubSubService.publish_bulk over RedisPubSub without BULK_PUBSUB (one XADD per entry)"
    )
    native = False

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        dapr = self.dapr_stub(stub)
        for _ in range(ENTRIES):
            await dapr.publish_event(self.single)
