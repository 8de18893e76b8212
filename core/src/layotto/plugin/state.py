"""The state-store SPI, modelled on Dapr's `state.Store` so components port across easily."""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

from layotto.errors import LayottoError, Unsupported
from layotto.plugin.component import Component
from layotto.plugin.state_query import QueryRequest, QueryResponse


class Feature(StrEnum):
    """Optional state-store features, reported as capabilities in `/v1.0/metadata`."""

    ETAG = "ETAG"
    TRANSACTIONAL = "TRANSACTIONAL"
    TTL = "TTL"
    QUERY_API = "QUERY_API"
    DELETE_WITH_PREFIX = "DELETE_WITH_PREFIX"
    KEYS_LIKE = "KEYS_LIKE"


class Concurrency(StrEnum):
    LAST_WRITE = "last-write"
    FIRST_WRITE = "first-write"


class Consistency(StrEnum):
    EVENTUAL = "eventual"
    STRONG = "strong"


TTL_METADATA = "ttlInSeconds"
TTL_EXPIRE_METADATA = "ttlExpireTime"


@dataclass(frozen=True, slots=True)
class GetRequest:
    key: str
    metadata: Mapping[str, str] = field(default_factory=dict)
    consistency: Consistency = Consistency.EVENTUAL


@dataclass(frozen=True, slots=True)
class GetResponse:
    data: bytes
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class SetRequest:
    """`etag` None means no ETag check; under FIRST_WRITE it means 'only if absent'."""

    key: str
    value: bytes
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    concurrency: Concurrency = Concurrency.LAST_WRITE
    consistency: Consistency = Consistency.EVENTUAL


@dataclass(frozen=True, slots=True)
class DeleteRequest:
    key: str
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    concurrency: Concurrency = Concurrency.LAST_WRITE
    consistency: Consistency = Consistency.EVENTUAL


@dataclass(frozen=True, slots=True)
class BulkGetItem:
    """One key of a bulk get: `data` None means missing; `error` is a per-key failure."""

    key: str
    data: bytes | None = None
    etag: str | None = None
    metadata: Mapping[str, str] = field(default_factory=dict)
    error: str = ""


TransactionOperation = SetRequest | DeleteRequest


class BulkStateError(LayottoError):
    """Some keys of a non-transactional bulk write failed; the others were applied."""

    def __init__(self, errors: Mapping[str, LayottoError]) -> None:
        self.errors = dict(errors)
        first = next(iter(self.errors.values()))
        listed = "; ".join(f"{key}: {err.message}" for key, err in self.errors.items())
        super().__init__(f"{len(self.errors)} key(s) failed: {listed}", reason=first.reason)
        # The whole call reports as its first failure's category (ABORTED for an ETag).
        self.category = first.category


class StateStore(Component):
    """Required: get, set, delete. Bulk methods default to one call per key; override them when
    the backend has a native bulk form. Transactions need `Feature.TRANSACTIONAL` and `multi`;
    queries need `Feature.QUERY_API` and `query`."""

    features: frozenset[Feature] = frozenset()

    @abstractmethod
    async def get(self, request: GetRequest) -> GetResponse | None:
        """The value, or None when the key is missing or expired."""

    @abstractmethod
    async def set(self, request: SetRequest) -> None:
        """Raise ETagMismatch / ETagInvalid for concurrency failures."""

    @abstractmethod
    async def delete(self, request: DeleteRequest) -> None:
        """Deleting a missing key without an ETag succeeds."""

    async def bulk_get(self, requests: Sequence[GetRequest]) -> list[BulkGetItem]:
        items: list[BulkGetItem] = []
        for request in requests:
            try:
                found = await self.get(request)
            except LayottoError as err:
                items.append(BulkGetItem(request.key, error=err.message))
                continue
            if found is None:
                items.append(BulkGetItem(request.key))
            else:
                items.append(BulkGetItem(request.key, found.data, found.etag, found.metadata))
        return items

    async def bulk_set(self, requests: Sequence[SetRequest]) -> None:
        errors: dict[str, LayottoError] = {}
        for request in requests:
            try:
                await self.set(request)
            except LayottoError as err:
                errors[request.key] = err
        if errors:
            raise BulkStateError(errors)

    async def bulk_delete(self, requests: Sequence[DeleteRequest]) -> None:
        errors: dict[str, LayottoError] = {}
        for request in requests:
            try:
                await self.delete(request)
            except LayottoError as err:
                errors[request.key] = err
        if errors:
            raise BulkStateError(errors)

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        """Apply every operation in order, all or nothing."""
        raise Unsupported("this state store does not support transactions")

    def max_operations_per_transaction(self) -> int | None:
        return None

    async def query(self, request: QueryRequest) -> QueryResponse:
        """Run a parsed query over the keys under `request.key_prefix`; see
        `layotto.plugin.state_query` (its `evaluate` serves stores without a query language)."""
        raise Unsupported("this state store does not support queries")
