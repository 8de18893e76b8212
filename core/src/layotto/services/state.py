"""The State building block: validation, key prefixes, bulk fan-out, error translation."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import TypeVar

import anyio

from layotto.components import ComponentRegistry
from layotto.errors import (
    ComponentError,
    ErrorCategory,
    InvalidArgument,
    LayottoError,
    NotConfigured,
    Unsupported,
)
from layotto.meter import ComponentMeter
from layotto.plugin import (
    BulkGetItem,
    BulkStateError,
    Consistency,
    DeleteRequest,
    Feature,
    GetRequest,
    GetResponse,
    Kind,
    QueryRequest,
    QueryResponse,
    SetRequest,
    StateStore,
    TransactionOperation,
    parse_query,
)
from layotto.resiliency import Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.keys import KeyPrefix

log = logging.getLogger(__name__)

T = TypeVar("T")
_W = TypeVar("_W", bound=SetRequest | DeleteRequest)

DEFAULT_BULK_PARALLELISM = 100

# Dapr's reasons for a store failure, by operation (dapr-compat.md section 4); the error keeps
# its own reason when the component gave a specific one.
GET_FAILED = "ERR_STATE_GET"
BULK_GET_FAILED = "ERR_STATE_BULK_GET"
SAVE_FAILED = "ERR_STATE_SAVE"
DELETE_FAILED = "ERR_STATE_DELETE"
BULK_DELETE_FAILED = "ERR_STATE_BULK_DELETE"
TRANSACTION_FAILED = "ERR_STATE_TRANSACTION"
QUERY_FAILED = "DAPR_STATE_QUERY_FAILED"
QUERY_UNSUPPORTED = "DAPR_STATE_QUERYING_NOT_SUPPORTED"
MALFORMED_QUERY = "ERR_MALFORMED_REQUEST"
_GENERIC_REASONS = frozenset({LayottoError.default_reason, ComponentError.default_reason})


@dataclass(frozen=True, slots=True)
class _Store:
    name: str
    store: StateStore
    keys: KeyPrefix
    policy: Policy  # the store's outbound resiliency policy
    meter: ComponentMeter | None = None  # its call metrics


class StateService:
    """One per API surface: the Layotto API defaults to no key prefix, Dapr's to `appid`."""

    def __init__(
        self,
        registry: ComponentRegistry,
        app_id: str,
        *,
        default_key_prefix: str = "none",
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._call_timeout = call_timeout
        self._app_id = app_id
        self._stores: dict[str, _Store] = {}
        for name, built in registry.of_kind(Kind.STATE).items():
            if not isinstance(built.component, StateStore):
                raise TypeError(f"state component {name!r} is not a StateStore")
            keys = KeyPrefix.resolve(
                built.config.key_prefix, default=default_key_prefix, app_id=app_id, store_name=name
            )
            self._stores[name] = _Store(
                name,
                built.component,
                keys,
                registry.outbound_policy(Kind.STATE, name),
                registry.component_meter(Kind.STATE, name),
            )

    def _resolve(self, store_name: str) -> _Store:
        if not self._stores:
            raise NotConfigured("state store is not configured", reason="DAPR_STATE_NOT_CONFIGURED")
        # An empty name is a store that is not found, as upstream says it.
        if not store_name:
            raise InvalidArgument(
                "field 'store_name' must not be empty",
                reason="DAPR_STATE_NOT_FOUND",
                metadata={"appID": self._app_id},
            )
        found = self._stores.get(store_name)
        if found is None:
            raise InvalidArgument(
                f"state store {store_name!r} is not found",
                reason="DAPR_STATE_NOT_FOUND",
                metadata={"appID": self._app_id},
            )
        return found

    @staticmethod
    def _stored(s: _Store, request: _W) -> _W:
        """The request as the component sees it: prefixed key; an empty ETag is no ETag."""
        return replace(request, key=s.keys.apply(request.key), etag=request.etag or None)

    async def _call(
        self,
        s: _Store,
        what: str,
        call: Callable[[], Awaitable[T]],
        *,
        reason: str,
        operation: str,
    ) -> T:
        """`reason`: what a generic store failure (INTERNAL) is reported as; `operation`: the
        metrics label (Dapr's verbs: get, set, delete, bulk_get, ...)."""
        try:
            return await call_component(
                what,
                "the state store",
                s.keys,
                self._call_timeout,
                call,
                policy=s.policy,
                meter=s.meter,
                operation=operation,
            )
        except BulkStateError as err:
            # Name the caller's keys, not the stored (prefixed) ones.
            raise _with_reason(
                BulkStateError({s.keys.strip(k): s.keys.scrub(e) for k, e in err.errors.items()}),
                reason,
            ) from None
        except LayottoError as err:
            raise _with_reason(err, reason) from None

    def features(self, store_name: str) -> frozenset[Feature]:
        return self._resolve(store_name).store.features

    # -- reads -----------------------------------------------------------------------------

    async def get(
        self,
        store_name: str,
        key: str,
        *,
        consistency: Consistency = Consistency.EVENTUAL,
        metadata: Mapping[str, str] | None = None,
    ) -> GetResponse | None:
        s = self._resolve(store_name)
        request = GetRequest(s.keys.apply(key), dict(metadata or {}), consistency)
        return await self._call(
            s,
            f"get {key!r} from state store {store_name!r}",
            lambda: s.store.get(request),
            reason=GET_FAILED,
            operation="get",
        )

    async def bulk_get(
        self,
        store_name: str,
        keys: Sequence[str],
        *,
        parallelism: int = 0,
        metadata: Mapping[str, str] | None = None,
    ) -> list[BulkGetItem]:
        s = self._resolve(store_name)
        if not keys:
            return []
        if parallelism < 0:
            raise InvalidArgument("field 'parallelism' must not be negative")
        requests = [GetRequest(s.keys.apply(k), dict(metadata or {})) for k in keys]
        if type(s.store).bulk_get is not StateStore.bulk_get:
            items = await self._call(
                s,
                f"bulk get from state store {store_name!r}",
                lambda: s.store.bulk_get(requests),
                reason=BULK_GET_FAILED,
                operation="bulk_get",
            )
        else:
            items = await self._fan_out_get(s, requests, parallelism or DEFAULT_BULK_PARALLELISM)
        # Answer with the keys as the caller sent them.
        return [replace(item, key=key) for key, item in zip(keys, items, strict=True)]

    async def _fan_out_get(
        self, s: _Store, requests: list[GetRequest], parallelism: int
    ) -> list[BulkGetItem]:
        results: list[BulkGetItem | None] = [None] * len(requests)
        limiter = anyio.CapacityLimiter(parallelism)

        async def one(index: int, request: GetRequest) -> None:
            async with limiter:
                try:
                    found = await self._call(
                        s,
                        f"get {request.key!r} from state store {s.name!r}",
                        lambda: s.store.get(request),
                        reason=GET_FAILED,
                        operation="get",
                    )
                except LayottoError as err:
                    results[index] = BulkGetItem(request.key, error=err.message)
                    return
            results[index] = (
                BulkGetItem(request.key)
                if found is None
                else BulkGetItem(request.key, found.data, found.etag, found.metadata)
            )

        async with anyio.create_task_group() as tg:
            for index, request in enumerate(requests):
                tg.start_soon(one, index, request)
        return [r for r in results if r is not None]

    # -- writes ----------------------------------------------------------------------------

    async def save(self, store_name: str, items: Sequence[SetRequest]) -> None:
        s = self._resolve(store_name)
        if not items:
            return
        requests = [self._stored(s, item) for item in items]
        what = f"save state in state store {store_name!r}"
        if len(requests) == 1:
            await self._call(
                s, what, lambda: s.store.set(requests[0]), reason=SAVE_FAILED, operation="set"
            )
        else:
            await self._call(
                s,
                what,
                lambda: s.store.bulk_set(requests),
                reason=SAVE_FAILED,
                operation="bulk_set",
            )

    async def delete(self, store_name: str, request: DeleteRequest) -> None:
        s = self._resolve(store_name)
        prefixed = self._stored(s, request)
        await self._call(
            s,
            f"delete {request.key!r} from state store {store_name!r}",
            lambda: s.store.delete(prefixed),
            reason=DELETE_FAILED,
            operation="delete",
        )

    async def bulk_delete(self, store_name: str, requests: Sequence[DeleteRequest]) -> None:
        s = self._resolve(store_name)
        if not requests:
            return
        prefixed = [self._stored(s, r) for r in requests]
        await self._call(
            s,
            f"bulk delete from state store {store_name!r}",
            lambda: s.store.bulk_delete(prefixed),
            reason=BULK_DELETE_FAILED,
            operation="bulk_delete",
        )

    async def transact(
        self,
        store_name: str,
        operations: Sequence[TransactionOperation],
        metadata: Mapping[str, str] | None = None,
    ) -> None:
        s = self._resolve(store_name)
        if Feature.TRANSACTIONAL not in s.store.features:
            raise Unsupported(
                f"state store {store_name!r} doesn't support transactions",
                reason="DAPR_STATE_TRANSACTIONS_NOT_SUPPORTED",
            )
        limit = s.store.max_operations_per_transaction()
        if limit is not None and len(operations) > limit:
            raise InvalidArgument(
                f"the transaction has {len(operations)} operations; state store "
                f"{store_name!r} allows at most {limit}",
                reason="DAPR_STATE_TOO_MANY_TRANSACTIONS",
            )
        prefixed = [self._stored(s, op) for op in operations]
        await self._call(
            s,
            f"transaction on state store {store_name!r}",
            lambda: s.store.multi(prefixed, dict(metadata or {})),
            reason=TRANSACTION_FAILED,
            operation="transaction",
        )

    # -- query (Dapr Alpha) ------------------------------------------------------------------

    async def query(
        self, store_name: str, query_json: str, metadata: Mapping[str, str] | None = None
    ) -> QueryResponse:
        """Run a query over the caller's own keys only; result keys come back unprefixed."""
        s = self._resolve(store_name)
        if Feature.QUERY_API not in s.store.features:
            # daprd answers INTERNAL here, not UNIMPLEMENTED (dapr-compat.md section 4).
            raise LayottoError(
                f"state store {store_name!r} doesn't support query", reason=QUERY_UNSUPPORTED
            )
        try:
            parsed = parse_query(query_json)
        except InvalidArgument as err:
            raise InvalidArgument(
                f"malformed query: {err.message}", reason=MALFORMED_QUERY
            ) from None
        request = QueryRequest(parsed, s.keys.head, dict(metadata or {}))
        found = await self._call(
            s,
            f"query state store {store_name!r}",
            lambda: s.store.query(request),
            reason=QUERY_FAILED,
            operation="query",
        )
        results = [replace(item, key=s.keys.strip(item.key)) for item in found.results]
        return replace(found, results=results)


def _with_reason(err: LayottoError, reason: str) -> LayottoError:
    """A generic store failure gets the operation's reason; a specific one (ETag mismatch,
    a component's own code) keeps its own."""
    if err.category is ErrorCategory.INTERNAL and err.reason in _GENERIC_REASONS:
        err.reason = reason
    return err


__all__ = ["BulkStateError", "StateService"]
