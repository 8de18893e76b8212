"""GetState / SaveState on the in-memory state store.

sidecar: ``Runtime.GetState`` / ``Runtime.SaveState`` on the sidecar's embedded ``statestore``.
direct:  ``InMemoryStateStore.get`` / ``.set``, the same component, created inside the
         load-generator process (so the baseline is the component itself, no network at all).
"""

from __future__ import annotations

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin.memory_state import InMemoryStateStore
from layotto.plugin import GetRequest, SetRequest

from bench.scenario import Scenario, register

STORE = "statestore"
KEYS = 1000
VALUE = b"v" * 128


def key(i: int) -> str:
    return f"bench-{i % KEYS}"


class _InMemoryState(Scenario[InMemoryStateStore]):
    async def make_direct_client(self) -> InMemoryStateStore:
        store = InMemoryStateStore()
        await store.init()
        return store

    async def close_direct_client(self, client: InMemoryStateStore) -> None:
        await client.close()

    async def setup_direct(self, client: InMemoryStateStore) -> None:
        for i in range(KEYS):
            await client.set(SetRequest(key(i), VALUE))

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        batch = 100
        for start in range(0, KEYS, batch):
            items = [pb.StateItem(key=key(i), value=VALUE) for i in range(start, start + batch)]
            await stub.save_state(pb.SaveStateRequest(store_name=STORE, states=items))


@register
class StateGet(_InMemoryState):
    name = "state_get"
    description = f"GetState of a {len(VALUE)}-byte value, {KEYS} pre-populated keys, in-memory"

    async def direct_call(self, client: InMemoryStateStore, i: int) -> None:
        response = await client.get(GetRequest(key(i)))
        if response is None or not response.data:
            raise RuntimeError(f"GetState {key(i)!r}: no value")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await stub.get_state(pb.GetStateRequest(store_name=STORE, key=key(i)))
        if not response.data:
            raise RuntimeError(f"GetState {key(i)!r}: no value")


@register
class StateSave(_InMemoryState):
    name = "state_save"
    description = f"SaveState of one {len(VALUE)}-byte value over {KEYS} keys, in-memory"

    async def direct_call(self, client: InMemoryStateStore, i: int) -> None:
        await client.set(SetRequest(key(i), VALUE))

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        await stub.save_state(
            pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key=key(i), value=VALUE)])
        )
