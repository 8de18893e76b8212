"""`sequencer.redis`: `INCR` per id, `INCRBY size` per segment, a Lua "set if smaller" for
`biggerThan`. The counter is a plain Redis string holding the last id handed out."""

from __future__ import annotations

from layotto.plugin import (
    Component,
    ComponentContext,
    InvalidArgument,
    Segment,
    SequencerStore,
)
from redis.commands.core import AsyncScript

from layotto_redis.base import RedisComponent
from layotto_redis.settings import RedisSettings


class RedisSequencerMetadata(RedisSettings):
    pass


# KEYS[1] counter; ARGV[1] a decimal integer. Raises the counter to ARGV[1] when it is lower
# (or absent); returns the counter afterwards. Compared as decimal strings: Lua numbers are
# doubles and would round int64 values above 2^53.
_BIGGER_THAN = """
local function lt(a, b)
  local an, bn = a:sub(1, 1) == "-", b:sub(1, 1) == "-"
  if an ~= bn then return an end
  local ad = an and a:sub(2) or a
  local bd = bn and b:sub(2) or b
  if ad == bd then return false end
  local less
  if #ad ~= #bd then less = #ad < #bd else less = ad < bd end
  if an then return not less end
  return less
end
local cur = redis.call("GET", KEYS[1])
if not cur then cur = "0" end
if not string.match(cur, "^%-?%d+$") then
  return redis.error_reply("the counter at this key is not an integer")
end
if lt(cur, ARGV[1]) then
  redis.call("SET", KEYS[1], ARGV[1])
  return ARGV[1]
end
return cur
"""


class RedisSequencerStore(RedisComponent, SequencerStore):
    label = "sequencer"
    supports_segments = True

    def __init__(self, settings: RedisSequencerMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._bigger_than: AsyncScript | None = None

    @classmethod
    def create(cls, metadata: RedisSequencerMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def init(self) -> None:
        await super().init()
        self._bigger_than = self.client.register_script(_BIGGER_THAN)

    @staticmethod
    def _check_key(key: str) -> None:
        if not key:
            raise InvalidArgument("field 'key' must not be empty")

    async def next_id(self, key: str) -> int:
        self._check_key(key)
        with self.errors():
            return int(await self.client.incr(key))

    async def next_segment(self, key: str, size: int) -> Segment:
        self._check_key(key)
        if size < 1:
            raise InvalidArgument(f"segment size must be at least 1, got {size}")
        with self.errors():
            last = int(await self.client.incrby(key, size))
        return Segment(last - size + 1, last)

    async def ensure_bigger_than(self, key: str, value: int) -> None:
        self._check_key(key)
        if self._bigger_than is None:
            raise self.failure("not started")
        with self.errors():
            await self._bigger_than(keys=[key], args=[str(int(value))])
