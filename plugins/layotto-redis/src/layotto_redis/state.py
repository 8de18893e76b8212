"""`state.redis`: Dapr's data layout, ETags checked on the server, transactions in one script.

Every key is a hash with the fields `data` (the value, raw bytes) and `version` (an integer that
starts at 1 and grows by one per write). The ETag is the version in decimal. This is what Dapr's
`state.redis` writes, so either sidecar reads what the other wrote.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    BulkGetItem,
    BulkStateError,
    Component,
    ComponentContext,
    Concurrency,
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    GetRequest,
    GetResponse,
    InvalidArgument,
    LayottoError,
    SetRequest,
    StateStore,
    TransactionOperation,
)
from pydantic import Field
from redis.commands.core import AsyncScript

from layotto_redis.base import RedisComponent
from layotto_redis.settings import RedisSettings


class RedisStateMetadata(RedisSettings):
    # Dapr's component-level default TTL: applies to every set without `ttlInSeconds`.
    ttl_in_seconds: int | None = Field(default=None, ge=-1, alias="ttlInSeconds")


# -- the scripts -----------------------------------------------------------------------------
#
# `check` answers 0 (go on), 1 (ETag mismatch) or 2 (first-write: the key exists). An ETag
# arrives normalised ("" = none); a key that exists but is not a hash counts as existing with
# no version, and a set replaces it (as Dapr does).

_PRELUDE = """
local function inspect(key)
  local t = redis.call("TYPE", key)["ok"]
  if t == "none" then return false, false end
  if t == "hash" then return true, redis.call("HGET", key, "version") end
  return true, false
end
local function check(exists, version, etag, first_write)
  if etag ~= "" then
    if version and version == etag then return 0 end
    return 1
  end
  if first_write == "1" and exists then return 2 end
  return 0
end
local function apply_set(key, data, ttl)
  local t = redis.call("TYPE", key)["ok"]
  if t ~= "none" and t ~= "hash" then redis.call("DEL", key) end
  redis.call("HSET", key, "data", data)
  local v = redis.call("HINCRBY", key, "version", 1)
  if tonumber(ttl) > 0 then
    redis.call("EXPIRE", key, ttl)
  else
    redis.call("PERSIST", key)
  end
  return v
end
"""

# KEYS[1] key; ARGV: etag, first_write, data, ttl. -> {0, new version} or {code, 0}
_SET = (
    _PRELUDE
    + """
local exists, version = inspect(KEYS[1])
local c = check(exists, version, ARGV[1], ARGV[2])
if c ~= 0 then return {c, 0} end
return {0, apply_set(KEYS[1], ARGV[3], ARGV[4])}
"""
)

# KEYS[1] key; ARGV: etag, first_write. -> code
_DELETE = (
    _PRELUDE
    + """
local exists, version = inspect(KEYS[1])
local c = check(exists, version, ARGV[1], ARGV[2])
if c ~= 0 then return c end
redis.call("DEL", KEYS[1])
return 0
"""
)

# KEYS: one per operation; ARGV: 5 per operation (op, etag, first_write, data, ttl).
# Validates every operation in order against a simulated view, so later operations see the
# earlier ones' effects; applies them only when all pass. -> {0, 0} or {failed index, code}
_MULTI = (
    _PRELUDE
    + """
local view = {}
for i = 1, #KEYS do
  local key = KEYS[i]
  local s = view[key]
  if not s then
    local exists, version = inspect(key)
    s = {exists = exists, version = version}
    view[key] = s
  end
  local b = (i - 1) * 5
  local c = check(s.exists, s.version, ARGV[b + 2], ARGV[b + 3])
  if c ~= 0 then return {i, c} end
  if ARGV[b + 1] == "set" then
    s.version = tostring((tonumber(s.version) or 0) + 1)
    s.exists = true
  else
    s.version = false
    s.exists = false
  end
end
for i = 1, #KEYS do
  local b = (i - 1) * 5
  if ARGV[b + 1] == "set" then
    apply_set(KEYS[i], ARGV[b + 4], ARGV[b + 5])
  else
    redis.call("DEL", KEYS[i])
  end
end
return {0, 0}
"""
)

# KEYS[1] key. -> {data, version, pttl}, or false when the key has no `data` (one round trip:
# cheaper for the sidecar than a pipeline of HMGET + PTTL). A key of another type fails with
# WRONGTYPE, as HMGET does.
_GET = """
local r = redis.call("HMGET", KEYS[1], "data", "version")
if not r[1] then return false end
return {r[1], r[2], redis.call("PTTL", KEYS[1])}
"""

_MISMATCH, _EXISTS = 1, 2
_ETAG = re.compile(r"[+-]?[0-9]+")


def _rfc3339_after(pttl_ms: int) -> str:
    expires = datetime.fromtimestamp(time.time() + pttl_ms / 1000, UTC)
    return expires.strftime("%Y-%m-%dT%H:%M:%SZ")


def _pttl_metadata(pttl: Any) -> dict[str, str]:
    if isinstance(pttl, int) and pttl > 0:
        return {TTL_EXPIRE_METADATA: _rfc3339_after(pttl)}
    return {}


@dataclass(frozen=True, slots=True)
class _Write:
    """A validated write, ready for a script: ETag normalised, TTL resolved."""

    key: str
    etag: str  # "" = no ETag
    first_write: str  # "1" / "0"
    data: bytes
    ttl: int  # > 0: EXPIRE; otherwise PERSIST


class RedisStateStore(RedisComponent, StateStore):
    label = "state store"
    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL})

    def __init__(self, settings: RedisStateMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._default_ttl = settings.ttl_in_seconds
        self._get_script: AsyncScript | None = None
        self._set_script: AsyncScript | None = None
        self._delete_script: AsyncScript | None = None
        self._multi_script: AsyncScript | None = None

    @classmethod
    def create(cls, metadata: RedisStateMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def init(self) -> None:
        await super().init()
        self._get_script = self.client.register_script(_GET)
        self._set_script = self.client.register_script(_SET)
        self._delete_script = self.client.register_script(_DELETE)
        self._multi_script = self.client.register_script(_MULTI)

    # -- validation (pure, before any I/O) -------------------------------------------------

    @staticmethod
    def _etag(key: str, etag: str | None) -> str:
        if not etag:
            return ""
        if not _ETAG.fullmatch(etag):
            raise ETagInvalid(f"ETag {etag!r} is not valid for key {key!r}: expected an integer")
        return str(int(etag))

    def _ttl(self, metadata: Mapping[str, str]) -> int:
        raw = metadata.get(TTL_METADATA)
        if raw is None or raw == "":
            ttl = self._default_ttl
        else:
            try:
                ttl = int(raw)
            except ValueError:
                raise InvalidArgument(
                    f"metadata.{TTL_METADATA} must be an integer, got {raw!r}"
                ) from None
            if ttl < -1:
                raise InvalidArgument(f"metadata.{TTL_METADATA} must be -1 or more, got {ttl}")
        return ttl if ttl is not None and ttl > 0 else 0

    def _write(self, request: SetRequest) -> _Write:
        return _Write(
            request.key,
            self._etag(request.key, request.etag),
            "1" if request.concurrency is Concurrency.FIRST_WRITE else "0",
            request.value,
            self._ttl(request.metadata),
        )

    def _delete_args(self, request: DeleteRequest) -> list[str]:
        return [
            self._etag(request.key, request.etag),
            "1" if request.concurrency is Concurrency.FIRST_WRITE else "0",
        ]

    @staticmethod
    def _conflict(key: str, code: int, etag: str) -> LayottoError:
        if code == _EXISTS:
            return ETagMismatch(f"key {key!r} already exists (first-write without an ETag)")
        return ETagMismatch(f"ETag {etag!r} does not match key {key!r}")

    def _script(self, script: AsyncScript | None) -> AsyncScript:
        if script is None:
            raise self.failure("not started")
        return script

    # -- reads -----------------------------------------------------------------------------

    @staticmethod
    def _item(key: str, fields: Any, pttl: Any) -> BulkGetItem:
        data, version = fields
        if data is None:
            return BulkGetItem(key)
        etag = None if version is None else version.decode("ascii", "replace")
        return BulkGetItem(key, bytes(data), etag, _pttl_metadata(pttl))

    async def get(self, request: GetRequest) -> GetResponse | None:
        client = self.client  # BackendUnavailable when not started or closed
        script = self._script(self._get_script)
        with self.errors():
            reply = await script(keys=[request.key], client=client)
        if reply is None:
            return None
        data, version, pttl = reply
        etag = None if version is None else version.decode("ascii", "replace")
        return GetResponse(bytes(data), etag, _pttl_metadata(pttl))

    async def bulk_get(self, requests: Sequence[GetRequest]) -> list[BulkGetItem]:
        if not requests:
            return []
        with self.errors():
            async with self.client.pipeline(transaction=False) as pipe:
                for request in requests:
                    pipe.hmget(request.key, ["data", "version"])
                    pipe.pttl(request.key)
                results = await pipe.execute(raise_on_error=False)
        items = []
        for i, request in enumerate(requests):
            fields, pttl = results[2 * i], results[2 * i + 1]
            if isinstance(fields, Exception):
                err = self._translate(fields)
                items.append(BulkGetItem(request.key, error=err.message))
            else:
                items.append(self._item(request.key, fields, pttl))
        return items

    def _translate(self, err: Exception) -> LayottoError:
        try:
            with self.errors():
                raise err
        except LayottoError as translated:
            return translated

    # -- writes ----------------------------------------------------------------------------

    async def set(self, request: SetRequest) -> None:
        w = self._write(request)
        script = self._script(self._set_script)
        with self.errors():
            code, _ = await script(keys=[w.key], args=[w.etag, w.first_write, w.data, w.ttl])
        if code != 0:
            raise self._conflict(w.key, int(code), w.etag)

    async def delete(self, request: DeleteRequest) -> None:
        args = self._delete_args(request)
        script = self._script(self._delete_script)
        with self.errors():
            code = await script(keys=[request.key], args=args)
        if code != 0:
            raise self._conflict(request.key, int(code), args[0])

    async def bulk_set(self, requests: Sequence[SetRequest]) -> None:
        """One pipeline, each key checked and written on its own (not transactional)."""
        errors: dict[str, LayottoError] = {}
        writes: list[_Write] = []
        for request in requests:
            try:
                writes.append(self._write(request))
            except LayottoError as err:
                errors[request.key] = err
        script = self._script(self._set_script)
        if writes:
            with self.errors():
                async with self.client.pipeline(transaction=False) as pipe:
                    for w in writes:
                        await script(
                            keys=[w.key], args=[w.etag, w.first_write, w.data, w.ttl], client=pipe
                        )
                    results = await pipe.execute(raise_on_error=False)
            for w, result in zip(writes, results, strict=True):
                if isinstance(result, Exception):
                    errors[w.key] = self._translate(result)
                elif int(result[0]) != 0:
                    errors[w.key] = self._conflict(w.key, int(result[0]), w.etag)
        if errors:
            raise BulkStateError(errors)

    async def bulk_delete(self, requests: Sequence[DeleteRequest]) -> None:
        errors: dict[str, LayottoError] = {}
        deletes: list[tuple[str, list[str]]] = []
        for request in requests:
            try:
                deletes.append((request.key, self._delete_args(request)))
            except LayottoError as err:
                errors[request.key] = err
        script = self._script(self._delete_script)
        if deletes:
            with self.errors():
                async with self.client.pipeline(transaction=False) as pipe:
                    for key, args in deletes:
                        await script(keys=[key], args=args, client=pipe)
                    results = await pipe.execute(raise_on_error=False)
            for (key, args), result in zip(deletes, results, strict=True):
                if isinstance(result, Exception):
                    errors[key] = self._translate(result)
                elif int(result) != 0:
                    errors[key] = self._conflict(key, int(result), args[0])
        if errors:
            raise BulkStateError(errors)

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        if not operations:
            return
        keys: list[str] = []
        args: list[str | bytes | int] = []
        for op in operations:
            keys.append(op.key)
            if isinstance(op, SetRequest):
                w = self._write(op)
                args += ["set", w.etag, w.first_write, w.data, w.ttl]
            else:
                etag, first_write = self._delete_args(op)
                args += ["delete", etag, first_write, b"", 0]
        script = self._script(self._multi_script)
        with self.errors():
            index, code = await script(keys=keys, args=args)
        if int(index) != 0:
            op = operations[int(index) - 1]
            kind = "set" if isinstance(op, SetRequest) else "delete"
            conflict = self._conflict(op.key, int(code), self._etag(op.key, op.etag))
            raise ETagMismatch(
                f"transaction aborted, nothing was applied: operation {int(index)} "
                f"({kind} {op.key!r}): {conflict.message}"
            )
