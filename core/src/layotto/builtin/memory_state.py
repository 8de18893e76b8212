"""An in-process state store with the full feature set (ETag, first-write, TTL, transactions,
queries over JSON values).

Every operation runs without awaiting, so each one, and each transaction, is atomic with
respect to the event loop: no lock is needed.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    Component,
    ComponentContext,
    ComponentMetadata,
    Concurrency,
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    GetRequest,
    GetResponse,
    InvalidArgument,
    QueryItem,
    QueryRequest,
    QueryResponse,
    SetRequest,
    StateStore,
    TransactionOperation,
)
from layotto.plugin.state_query import evaluate


class InMemoryStateMetadata(ComponentMetadata):
    pass


@dataclass(slots=True)
class _Entry:
    value: bytes
    version: int
    expires_at: float | None  # wall-clock seconds; None = never


def parse_ttl(metadata: Mapping[str, str]) -> int | None:
    """`ttlInSeconds` as Dapr reads it: absent, 0 or -1 -> no expiry; non-integer -> error."""
    raw = metadata.get(TTL_METADATA)
    if raw is None or raw == "":
        return None
    try:
        ttl = int(raw)
    except ValueError:
        raise InvalidArgument(f"metadata.{TTL_METADATA} must be an integer, got {raw!r}") from None
    if ttl < -1:
        raise InvalidArgument(f"metadata.{TTL_METADATA} must be -1 or more, got {ttl}")
    # 0 means no expiry, as in Dapr's stores (and layotto-redis); -1 removes any TTL.
    return None if ttl in (-1, 0) else ttl


def rfc3339(epoch_seconds: float) -> str:
    return datetime.fromtimestamp(epoch_seconds, UTC).isoformat().replace("+00:00", "Z")


class InMemoryStateStore(StateStore):
    features = frozenset({Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL, Feature.QUERY_API})

    def __init__(self) -> None:
        self._entries: dict[str, _Entry] = {}
        self._next_version = 1

    @classmethod
    def create(cls, metadata: InMemoryStateMetadata, context: ComponentContext) -> Component:
        return cls()

    # -- reads -----------------------------------------------------------------------------

    def _live(self, key: str) -> _Entry | None:
        entry = self._entries.get(key)
        if entry is not None and entry.expires_at is not None and entry.expires_at <= time.time():
            del self._entries[key]
            return None
        return entry

    async def get(self, request: GetRequest) -> GetResponse | None:
        entry = self._live(request.key)
        if entry is None:
            return None
        metadata = (
            {} if entry.expires_at is None else {TTL_EXPIRE_METADATA: rfc3339(entry.expires_at)}
        )
        return GetResponse(entry.value, str(entry.version), metadata)

    async def query(self, request: QueryRequest) -> QueryResponse:
        prefix = request.key_prefix
        # list(): _live deletes expired entries while we walk the keys.
        live = [(k, self._live(k)) for k in list(self._entries) if k.startswith(prefix)]
        entries = [QueryItem(k, e.value, str(e.version)) for k, e in live if e is not None]
        return evaluate(request.query, entries)

    # -- writes ----------------------------------------------------------------------------

    def _check_etag(self, key: str, etag: str | None, concurrency: Concurrency) -> None:
        entry = self._live(key)
        if not etag:  # absent and empty both mean "no ETag"
            if concurrency is Concurrency.FIRST_WRITE and entry is not None:
                raise ETagMismatch(f"key {key!r} already exists (first-write without an ETag)")
            return
        if not etag.isdigit():
            raise ETagInvalid(f"ETag {etag!r} is not valid for key {key!r}")
        if entry is None or str(entry.version) != etag:
            raise ETagMismatch(f"ETag mismatch for key {key!r}")

    def _apply_set(self, request: SetRequest, ttl: int | None) -> None:
        expires_at = None if ttl is None else time.time() + ttl
        self._entries[request.key] = _Entry(request.value, self._next_version, expires_at)
        self._next_version += 1

    async def set(self, request: SetRequest) -> None:
        ttl = parse_ttl(request.metadata)
        self._check_etag(request.key, request.etag, request.concurrency)
        self._apply_set(request, ttl)

    async def delete(self, request: DeleteRequest) -> None:
        self._check_etag(request.key, request.etag, request.concurrency)
        self._entries.pop(request.key, None)

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        # Apply in order; on the first failure restore the snapshot: all or nothing.
        # Entries are replaced, never mutated, so a shallow copy is a faithful snapshot.
        snapshot = dict(self._entries)
        try:
            for op in operations:
                if isinstance(op, SetRequest):
                    await self.set(op)
                else:
                    await self.delete(op)
        except BaseException:
            self._entries = snapshot
            raise
