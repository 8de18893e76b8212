"""GetState, SaveState, TryLock+Unlock and GetNextId (STRONG, WEAK) on Redis.

sidecar: the gRPC API of a sidecar whose ``state.redis`` (``bench-state``), ``lock.redis``
         (``bench-lock``) and ``sequencer.redis`` (``bench-sequencer``) components point at the
         benchmark's Redis (a private ``redis-server`` the harness starts), key prefix = the
         run id.
direct:  the same Redis work in the load-generator process with ``redis.asyncio``: the same
         commands, pipelines and Lua scripts the component sends, on the same keys, through a
         client built with the component's own settings (``layotto_redis.settings.
         create_client``: same pool size, timeouts and retry policy). The difference between the
         two modes is what the sidecar adds, not a different use of Redis.

``redis_seq_weak`` is the exception: WEAK ids come from the sidecar's segment cache, not from
one Redis command, so its direct mode is the sidecar's own WEAK path without gRPC: layotto's
``SequencerService`` over a ``RedisSequencerStore``, built from the same config the sidecar
reads, in the load-generator process. Its ``baseline`` is ``redis_seq_strong`` (INCR per id),
so the report shows WEAK/STRONG both through the sidecar and in-process.
"""

from __future__ import annotations

import json
import tempfile
from contextlib import AsyncExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.components import ComponentRegistry, build
from layotto.config import load_config
from layotto.plugin import Kind
from layotto.plugins import load_catalog
from layotto.services.keys import BlockKeys, KeyPrefix
from layotto.services.sequencer import DEFAULT_SEGMENT_SIZE, SequencerService

# The component's own Lua, so the direct baseline runs the very same script (EVALSHA).
from layotto_redis.lock import _UNLOCK
from layotto_redis.settings import RedisSettings, create_client
from layotto_redis.state import _GET, _SET
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from bench.scenario import Scenario, register, worker_index

APP_ID = "bench"
STATE_STORE = "bench-state"
LOCK_STORE = "bench-lock"
SEQUENCER = "bench-sequencer"
KEYS = 1000
VALUE = b"v" * 128
LOCK_EXPIRE_S = 10
STRONG_KEY = "strong"
WEAK_KEY = "weak"

ClientT = TypeVar("ClientT")


def key(i: int) -> str:
    return f"bench-{i % KEYS}"


def sidecar_config(redis_address: str, key_prefix: str) -> dict[str, Any]:
    """A native config: the three Redis components on ``redis_address``, keys under
    ``key_prefix`` (state: ``<prefix>||key``; lock/sequencer: ``lock|||<prefix>||id``)."""

    def component(name: str, type_: str) -> dict[str, Any]:
        metadata = {"redisHost": redis_address, "keyPrefix": key_prefix}
        return {"name": name, "type": type_, "metadata": metadata}

    return {
        "app": {"id": APP_ID},
        "components": [
            component(STATE_STORE, "state.redis"),
            component(LOCK_STORE, "lock.redis"),
            component(SEQUENCER, "sequencer.redis"),
        ],
    }


class _Redis(Scenario[ClientT]):
    requires = frozenset({"redis"})

    @property
    def redis_address(self) -> str:
        return self.backend("redis")

    @property
    def key_prefix(self) -> str:
        return self.context.run_id

    def sidecar_config(self) -> dict[str, Any]:
        return sidecar_config(self.redis_address, self.key_prefix)

    # The keys as the sidecar stores them (layotto's own prefixing code).
    def state_key(self, user_key: str) -> str:
        return KeyPrefix(self.key_prefix).apply(user_key)

    def block_key(self, block: str, user_key: str) -> str:
        return BlockKeys(block, KeyPrefix(self.key_prefix)).apply(user_key)


class _RedisPy(_Redis[Redis]):
    """Direct mode on a ``redis.asyncio.Redis`` configured as the components configure theirs."""

    async def make_direct_client(self) -> Redis:
        settings = RedisSettings.model_validate({"redisHost": self.redis_address})
        client = create_client(settings)
        await client.ping()
        return client

    async def close_direct_client(self, client: Redis) -> None:
        await client.aclose()


# -- state ---------------------------------------------------------------------------------


class _RedisState(_RedisPy):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored = [self.state_key(key(i)) for i in range(KEYS)]
        self._set: AsyncScript | None = None

    def set_script(self) -> AsyncScript:
        if self._set is None:
            raise RuntimeError("setup_direct has not run")
        return self._set

    async def setup_direct(self, client: Redis) -> None:
        self._set = client.register_script(_SET)
        async with client.pipeline(transaction=False) as pipe:
            for stored in self._stored:
                # ARGV: etag ("" = none), first-write ("0"), data, ttl (0 = PERSIST)
                await self._set(keys=[stored], args=["", "0", VALUE, 0], client=pipe)
            await pipe.execute()

    async def setup_sidecar(self, stub: pb.RuntimeStub) -> None:
        batch = 100
        for start in range(0, KEYS, batch):
            items = [pb.StateItem(key=key(i), value=VALUE) for i in range(start, start + batch)]
            await stub.save_state(pb.SaveStateRequest(store_name=STATE_STORE, states=items))


@register
class RedisStateGet(_RedisState):
    name = "redis_state_get"
    description = (
        f"GetState of a {len(VALUE)}-byte value, {KEYS} pre-populated keys, state.redis. "
        "direct: the component's read script (EVALSHA: HMGET data version + PTTL, one round trip)"
    )

    async def setup_direct(self, client: Redis) -> None:
        await super().setup_direct(client)
        self._get = client.register_script(_GET)

    async def direct_call(self, client: Redis, i: int) -> None:
        stored = self._stored[i % KEYS]
        found = await self._get(keys=[stored])
        if not found:
            raise RuntimeError(f"GetState {stored!r}: no value")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await stub.get_state(pb.GetStateRequest(store_name=STATE_STORE, key=key(i)))
        if not response.data:
            raise RuntimeError(f"GetState {key(i)!r}: no value")


@register
class RedisStateSave(_RedisState):
    name = "redis_state_save"
    description = (
        f"SaveState of one {len(VALUE)}-byte value over {KEYS} keys (no ETag), state.redis. "
        "direct: the component's set script (EVALSHA), same arguments"
    )

    async def direct_call(self, client: Redis, i: int) -> None:
        stored = self._stored[i % KEYS]
        code, _version = await self.set_script()(keys=[stored], args=["", "0", VALUE, 0])
        if int(code) != 0:
            raise RuntimeError(f"SaveState {stored!r}: script answered {int(code)}")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        await stub.save_state(
            pb.SaveStateRequest(
                store_name=STATE_STORE, states=[pb.StateItem(key=key(i), value=VALUE)]
            )
        )


# -- lock ----------------------------------------------------------------------------------


@register
class RedisLock(_RedisPy):
    name = "redis_lock"
    description = (
        "TryLock then Unlock (one call = both), one resource per worker, a new owner per call, "
        f"expire {LOCK_EXPIRE_S} s, lock.redis. direct: SET NX PX + the component's unlock script"
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._unlock: AsyncScript | None = None
        self._stored: dict[int, str] = {}

    @staticmethod
    def resource(worker: int) -> str:
        return f"res-{worker}"

    def _lock_key(self, worker: int) -> str:
        stored = self._stored.get(worker)
        if stored is None:
            stored = self._stored[worker] = self.block_key("lock", self.resource(worker))
        return stored

    async def setup_direct(self, client: Redis) -> None:
        self._unlock = client.register_script(_UNLOCK)

    async def direct_call(self, client: Redis, i: int) -> None:
        assert self._unlock is not None, "setup_direct has not run"
        stored, owner = self._lock_key(worker_index()), f"owner-{i}"
        if not await client.set(stored, owner, nx=True, px=LOCK_EXPIRE_S * 1000):
            raise RuntimeError(f"TryLock {stored!r}: not acquired")
        code = int(await self._unlock(keys=[stored], args=[owner]))
        if code != 0:
            raise RuntimeError(f"Unlock {stored!r}: script answered {code}")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        resource, owner = self.resource(worker_index()), f"owner-{i}"
        locked = await stub.try_lock(
            pb.TryLockRequest(
                store_name=LOCK_STORE, resource_id=resource, lock_owner=owner, expire=LOCK_EXPIRE_S
            )
        )
        if not locked.success:
            raise RuntimeError(f"TryLock {resource!r}: not acquired")
        unlocked = await stub.unlock(
            pb.UnlockRequest(store_name=LOCK_STORE, resource_id=resource, lock_owner=owner)
        )
        if unlocked.status != pb.UnlockResponseStatus.SUCCESS:
            raise RuntimeError(f"Unlock {resource!r}: {unlocked.status!r}")


# -- sequencer -----------------------------------------------------------------------------


@register
class RedisSeqStrong(_RedisPy):
    name = "redis_seq_strong"
    description = "GetNextId STRONG, one key, sequencer.redis. direct: INCR"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._stored = self.block_key("sequencer", STRONG_KEY)

    async def direct_call(self, client: Redis, i: int) -> None:
        if int(await client.incr(self._stored)) <= 0:
            raise RuntimeError("INCR answered a non-positive id")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await stub.get_next_id(
            pb.GetNextIdRequest(
                store_name=SEQUENCER,
                key=STRONG_KEY,
                options=pb.SequencerOptions(increment=pb.SequencerOptionsAutoIncrement.STRONG),
            )
        )
        if response.next_id <= 0:
            raise RuntimeError(f"GetNextId STRONG: id {response.next_id}")


@dataclass(slots=True)
class InProcessSequencer:
    """layotto's SequencerService over a started RedisSequencerStore, and what closes them."""

    service: SequencerService
    stack: AsyncExitStack


@register
class RedisSeqWeak(_Redis[InProcessSequencer]):
    name = "redis_seq_weak"
    description = (
        f"GetNextId WEAK, one key, sequencer.redis, segments of {DEFAULT_SEGMENT_SIZE:,} ids "
        "(INCRBY). direct: the sidecar's WEAK path without gRPC, layotto's SequencerService + "
        "RedisSequencerStore in the load generator"
    )
    baseline = "redis_seq_strong"

    async def make_direct_client(self) -> InProcessSequencer:
        """What the runtime does at startup, for the sequencer component only: the same config
        document the sidecar reads, the installed plugins, the same service defaults."""
        stack = AsyncExitStack()
        try:
            with tempfile.TemporaryDirectory(prefix="layotto-bench-") as tmp:
                path = Path(tmp) / "config.json"
                path.write_text(json.dumps(self.sidecar_config()), encoding="utf-8")
                config = load_config(path)
            sequencers = tuple(c for c in config.components if c.kind is Kind.SEQUENCER)
            config = config.model_copy(update={"components": sequencers})
            registry = ComponentRegistry()
            await registry.start(build(config, load_catalog()))
            stack.push_async_callback(registry.close)
            service = SequencerService(registry, config.app.id)
            await stack.enter_async_context(service.running())
        except BaseException:
            await stack.aclose()
            raise
        return InProcessSequencer(service, stack)

    async def close_direct_client(self, client: InProcessSequencer) -> None:
        await client.stack.aclose()

    async def direct_call(self, client: InProcessSequencer, i: int) -> None:
        next_id = await client.service.get_next_id(SEQUENCER, WEAK_KEY)
        if next_id <= 0:
            raise RuntimeError(f"get_next_id WEAK: id {next_id}")

    async def sidecar_call(self, stub: pb.RuntimeStub, i: int) -> None:
        response = await stub.get_next_id(
            pb.GetNextIdRequest(
                store_name=SEQUENCER,
                key=WEAK_KEY,
                options=pb.SequencerOptions(increment=pb.SequencerOptionsAutoIncrement.WEAK),
            )
        )
        if response.next_id <= 0:
            raise RuntimeError(f"GetNextId WEAK: id {response.next_id}")
