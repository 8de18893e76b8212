"""The Dapr surfaces: Dapr's gRPC and HTTP APIs against the same components as the Layotto API.

========================  ===============================================  =====================
scenario                  sidecar                                          direct / ``baseline``
========================  ===============================================  =====================
``dapr_state_get``        ``dapr.proto.runtime.v1.Dapr/GetState``          as ``state_get``
``dapr_state_save``       ``Dapr/SaveState``, one item                     as ``state_save``
``dapr_http_state_get``   ``GET /v1.0/state/statestore/<key>``             as ``state_get``
``dapr_http_state_save``  ``POST /v1.0/state/statestore``, one item        as ``state_save``
``dapr_publish``          ``Dapr/PublishEvent`` on ``pubsub.in-memory``    as
                                                                           ``pubsub_publish_memory``
========================  ===============================================  =====================

Same value (128 bytes), key space (1000 pre-populated keys) and direct mode (the in-memory
component in the load generator) as the Layotto-surface scenarios they name as ``baseline``, and
the same sidecar config, so one sidecar serves both and the report's "throughput against another
scenario" table is Dapr surface / Layotto surface. The Dapr gRPC stub shares the channel of the
harness's ``RuntimeStub`` (one HTTP/2 connection per 16 workers, as the Layotto scenarios); the
HTTP scenarios use one ``httpx.AsyncClient`` per worker (one HTTP/1.1 keep-alive connection
each: one client shared by 16 workers halved the throughput and pushed p99 over 100 ms, httpx's
pool being the bottleneck). ``dapr_publish`` reuses the direct mode of ``pubsub_publish_memory``
(its Layotto-style envelope: dropping it costs the component the same). Over HTTP the value is a
JSON string of 128 bytes, quotes included (what Dapr's HTTP API stores is JSON). Dapr state keys
are the app-id-prefixed ones, so the Dapr scenarios populate their own keys.
"""

from __future__ import annotations

import httpx
from layotto._proto.dapr.proto.common import v1 as dapr_common
from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.memory_state import InMemoryStateStore

from bench.scenario import Scenario, register, worker_index
from bench.scenarios.pubsub import CONTENT_TYPE, METADATA, PUBSUB, PublishMemory
from bench.scenarios.state_memory import KEYS, STORE, VALUE, StateGet, StateSave, key

#: The HTTP value: a JSON string as long as :data:`VALUE`, quotes included.
JSON_VALUE = b'"' + b"v" * (len(VALUE) - 2) + b'"'
JSON_HEADERS = {"content-type": "application/json"}
PATH = f"/v1.0/state/{STORE}"


class _DaprStubs:
    """Mixin: a ``DaprStub`` on the channel of each harness stub, built on first use."""

    _dapr: dict[int, dapr_pb.DaprStub] | None = None

    def dapr_stub(self, stub: pb.RuntimeStub) -> dapr_pb.DaprStub:
        cache = self._dapr
        if cache is None:
            cache = self._dapr = {}
        client = cache.get(id(stub))
        if client is None:
            client = cache[id(stub)] = dapr_pb.DaprStub(stub.channel)
        return client


def _items(start: int, stop: int) -> list[dapr_common.StateItem]:
    return [dapr_common.StateItem(key=key(i), value=VALUE) for i in range(start, stop)]


class _DaprGrpcState(_DaprStubs):
    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        client = self.dapr_stub(stub)
        for start in range(0, KEYS, 100):
            await client.save_state(
                dapr_pb.SaveStateRequest(store_name=STORE, states=_items(start, start + 100))
            )


@register
class DaprStateGet(_DaprGrpcState, StateGet):
    name = "dapr_state_get"
    description = f"Dapr gRPC GetState of a {len(VALUE)}-byte value, {KEYS} keys, in-memory"
    baseline = "state_get"

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await self.dapr_stub(stub).get_state(
            dapr_pb.GetStateRequest(store_name=STORE, key=key(i))
        )
        if not response.data:
            raise RuntimeError(f"GetState {key(i)!r}: no value")


@register
class DaprStateSave(_DaprGrpcState, StateSave):
    name = "dapr_state_save"
    description = f"Dapr gRPC SaveState of one {len(VALUE)}-byte value over {KEYS} keys, in-memory"
    baseline = "state_save"

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        await self.dapr_stub(stub).save_state(
            dapr_pb.SaveStateRequest(store_name=STORE, states=_items(i, i + 1))
        )


class _DaprHttpState(Scenario[InMemoryStateStore]):
    """One ``httpx.AsyncClient`` (one keep-alive connection) per worker."""

    _clients: dict[int, httpx.AsyncClient]

    def http(self) -> httpx.AsyncClient:
        index = worker_index()
        client = self._clients.get(index)
        if client is None:
            client = self._clients[index] = httpx.AsyncClient(
                base_url=f"http://{self.context.sidecar_http}",
                limits=httpx.Limits(max_connections=1),
                trust_env=False,
            )
        return client

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        self._clients = {}
        for start in range(0, KEYS, 100):
            body = b"[" + b",".join(_json_item(i) for i in range(start, start + 100)) + b"]"
            response = await self.http().post(PATH, content=body, headers=JSON_HEADERS)
            response.raise_for_status()

    async def close_sidecar(self) -> None:
        for client in self._clients.values():
            await client.aclose()


def _json_item(i: int) -> bytes:
    return b'{"key":"' + key(i).encode() + b'","value":' + JSON_VALUE + b"}"


@register
class DaprHttpStateGet(_DaprHttpState, StateGet):
    name = "dapr_http_state_get"
    description = f"Dapr HTTP GET /v1.0/state of a {len(VALUE)}-byte JSON value, {KEYS} keys"
    baseline = "state_get"

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await self.http().get(f"{PATH}/{key(i)}")
        if response.status_code != 200 or response.content != JSON_VALUE:
            raise RuntimeError(f"GET state {key(i)!r}: {response.status_code}")


@register
class DaprHttpStateSave(_DaprHttpState, StateSave):
    name = "dapr_http_state_save"
    description = f"Dapr HTTP POST /v1.0/state of one {len(VALUE)}-byte JSON value, {KEYS} keys"
    baseline = "state_save"

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        body = b"[" + _json_item(i) + b"]"
        response = await self.http().post(PATH, content=body, headers=JSON_HEADERS)
        if response.status_code != 204:
            raise RuntimeError(f"POST state {key(i)!r}: {response.status_code}")


@register
class DaprPublish(_DaprStubs, PublishMemory):
    name = "dapr_publish"
    description = (
        "Dapr gRPC PublishEvent of the pubsub_publish_memory event (pubsub.in-memory, no "
        "subscriber); direct: as pubsub_publish_memory"
    )
    baseline = "pubsub_publish_memory"

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        self.dapr_request = dapr_pb.PublishEventRequest(
            pubsub_name=PUBSUB,
            topic=self.topic,
            data=self.data,
            data_content_type=CONTENT_TYPE,
            metadata=dict(METADATA),
        )
        await self.sidecar_call(stub, 0)

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        await self.dapr_stub(stub).publish_event(self.dapr_request)
