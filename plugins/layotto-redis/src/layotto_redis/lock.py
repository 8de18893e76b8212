"""`lock.redis`: `SET key owner NX PX ttl` to take a lock; Lua scripts to release and renew it
only when the caller owns it."""

from __future__ import annotations

from layotto.plugin import (
    Component,
    ComponentContext,
    InvalidArgument,
    LockStatus,
    LockStore,
)
from redis.commands.core import AsyncScript

from layotto_redis.base import RedisComponent
from layotto_redis.settings import RedisSettings


class RedisLockMetadata(RedisSettings):
    pass


# KEYS[1] lock key; ARGV[1] owner. 0 = released, 1 = no such lock, 2 = someone else's.
_UNLOCK = """
local owner = redis.call("GET", KEYS[1])
if not owner then return 1 end
if owner ~= ARGV[1] then return 2 end
redis.call("DEL", KEYS[1])
return 0
"""

# KEYS[1] lock key; ARGV[1] owner, ARGV[2] new expiry in ms. Codes as above.
_KEEP_ALIVE = """
local owner = redis.call("GET", KEYS[1])
if not owner then return 1 end
if owner ~= ARGV[1] then return 2 end
redis.call("PEXPIRE", KEYS[1], ARGV[2])
return 0
"""

_STATUS = {
    0: LockStatus.SUCCESS,
    1: LockStatus.LOCK_UNEXIST,
    2: LockStatus.LOCK_BELONG_TO_OTHERS,
}


def _check(resource_id: str, owner: str, expire_seconds: int | None = None) -> None:
    if not resource_id:
        raise InvalidArgument("field 'resource_id' must not be empty")
    if not owner:
        raise InvalidArgument("field 'lock_owner' must not be empty")
    if expire_seconds is not None and expire_seconds <= 0:
        raise InvalidArgument(f"field 'expire' must be greater than 0, got {expire_seconds}")


class RedisLockStore(RedisComponent, LockStore):
    label = "lock store"

    def __init__(self, settings: RedisLockMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._unlock: AsyncScript | None = None
        self._keep_alive: AsyncScript | None = None

    @classmethod
    def create(cls, metadata: RedisLockMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def init(self) -> None:
        await super().init()
        self._unlock = self.client.register_script(_UNLOCK)
        self._keep_alive = self.client.register_script(_KEEP_ALIVE)

    def _scripts(self) -> tuple[AsyncScript, AsyncScript]:
        if self._unlock is None or self._keep_alive is None:
            raise self.failure("not started")
        return self._unlock, self._keep_alive

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        _check(resource_id, owner, expire_seconds)
        with self.errors():
            taken = await self.client.set(resource_id, owner, nx=True, px=expire_seconds * 1000)
        return bool(taken)

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        _check(resource_id, owner)
        unlock, _ = self._scripts()
        with self.errors():
            code = await unlock(keys=[resource_id], args=[owner])
        return _STATUS[int(code)]

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        _check(resource_id, owner, expire_seconds)
        _, keep_alive = self._scripts()
        with self.errors():
            code = await keep_alive(keys=[resource_id], args=[owner, expire_seconds * 1000])
        return _STATUS[int(code)]
