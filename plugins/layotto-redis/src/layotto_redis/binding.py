"""`bindings.redis`: an output binding on plain Redis strings, as components-contrib
`bindings/redis`.

Every operation needs request metadata `key`:
- `create`: `SET key data`, with `EX ttlInSeconds` when that metadata is given (one command,
  so the key never exists without its expiry);
- `get`: the value as `data` (an absent key answers empty data); metadata `delete: "true"`
  reads and removes it in one step (`GETDEL`);
- `delete`: `DEL key`;
- `increment`: `INCR key` (and `EXPIRE key ttlInSeconds` in the same transaction when given).

The connection metadata is `state.redis`'s (`redisHost`, `redisPassword`, `enableTLS`, ...).
"""

from __future__ import annotations

from collections.abc import Mapping

from layotto.plugin import (
    BindingRequest,
    BindingResponse,
    Component,
    ComponentContext,
    InvalidArgument,
    OutputBinding,
)
from layotto.plugin.bindings import BINDING_TTL_SECONDS_METADATA

from layotto_redis.base import RedisComponent
from layotto_redis.settings import RedisSettings

KEY_METADATA = "key"
DELETE_METADATA = "delete"  # `get` only: read and remove
OPERATIONS = ("create", "get", "delete", "increment")


class RedisBindingMetadata(RedisSettings):
    # Read by the sidecar (which side of the binding it uses); declared so it is not "unknown".
    direction: str = ""


def _key(metadata: Mapping[str, str]) -> str:
    key = metadata.get(KEY_METADATA, "")
    if not key:
        raise InvalidArgument("redis binding: missing key in request metadata")
    return key


def _ttl(metadata: Mapping[str, str]) -> int | None:
    """Seconds from `ttlInSeconds`, None when absent; as Dapr, it must be a positive integer."""
    raw = metadata.get(BINDING_TTL_SECONDS_METADATA, "")
    if not raw:
        return None
    try:
        seconds = int(raw.strip())
    except ValueError:
        raise InvalidArgument(
            f"{BINDING_TTL_SECONDS_METADATA} value must be a valid integer: actual is '{raw}'"
        ) from None
    if seconds <= 0:
        raise InvalidArgument(
            f"{BINDING_TTL_SECONDS_METADATA} value must be higher than zero: actual is {seconds}"
        )
    return seconds


class RedisBinding(RedisComponent, OutputBinding):
    label = "binding"

    @classmethod
    def create(cls, metadata: RedisBindingMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    def operations(self) -> tuple[str, ...]:
        return OPERATIONS

    async def invoke(self, request: BindingRequest) -> BindingResponse:
        key = _key(request.metadata)
        operation = request.operation
        if operation == "create":
            ttl = _ttl(request.metadata)
            with self.errors():
                await self.client.set(key, request.data, ex=ttl)
            return BindingResponse()
        if operation == "get":
            remove = request.metadata.get(DELETE_METADATA, "").strip().lower() == "true"
            with self.errors():
                value = await (self.client.getdel(key) if remove else self.client.get(key))
            if value is None:
                return BindingResponse()  # an absent key: empty data, as upstream
            return BindingResponse(data=value.encode() if isinstance(value, str) else value)
        if operation == "delete":
            with self.errors():
                await self.client.delete(key)
            return BindingResponse()
        if operation == "increment":
            ttl = _ttl(request.metadata)
            with self.errors():
                async with self.client.pipeline(transaction=True) as pipe:
                    pipe.incr(key)
                    if ttl is not None:
                        pipe.expire(key, ttl)
                    await pipe.execute()
            return BindingResponse()
        raise InvalidArgument(f"invalid operation type: {operation}")
