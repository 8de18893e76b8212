"""Dapr state messages (`dapr.proto.common.v1` / `runtime.v1`) to and from the SPI's requests.

Semantics are Dapr's (dapr-compat.md 3.1): no ETag and an empty ETag both mean "no check" (under
first-write both mean "insert only if absent", which the store decides), unset options mean
last-write and eventual consistency, and a transaction's operations keep their order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Protocol, TypeVar

from layotto._proto.dapr.proto.common import v1 as common
from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto.errors import InvalidArgument, Unsupported
from layotto.plugin import (
    BulkGetItem,
    Concurrency,
    Consistency,
    DeleteRequest,
    GetResponse,
    QueryResponse,
    SetRequest,
    TransactionOperation,
)

_CONSISTENCY: dict[int, Consistency] = {
    common.StateOptionsStateConsistency.CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    common.StateOptionsStateConsistency.CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    common.StateOptionsStateConsistency.CONSISTENCY_STRONG: Consistency.STRONG,
}
_CONCURRENCY: dict[int, Concurrency] = {
    common.StateOptionsStateConcurrency.CONCURRENCY_UNSPECIFIED: Concurrency.LAST_WRITE,
    common.StateOptionsStateConcurrency.CONCURRENCY_LAST_WRITE: Concurrency.LAST_WRITE,
    common.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE: Concurrency.FIRST_WRITE,
}
UPSERT, DELETE = "upsert", "delete"

# Layotto's `spec.proto.runtime.v1` state messages carry the same fields and enum numbers as
# Dapr's, so the functions below read either through these protocols (the enums are IntEnums).


class StateOptions(Protocol):
    @property
    def concurrency(self) -> int: ...
    @property
    def consistency(self) -> int: ...


class Etag(Protocol):
    @property
    def value(self) -> str: ...


class KeyRequest(Protocol):
    """A `StateItem` or a `DeleteStateRequest`."""

    @property
    def key(self) -> str: ...
    @property
    def etag(self) -> Etag | None: ...
    @property
    def metadata(self) -> Mapping[str, str]: ...
    @property
    def options(self) -> StateOptions | None: ...


class StateItem(KeyRequest, Protocol):
    @property
    def value(self) -> bytes: ...


class TransactionalOperation(Protocol):
    @property
    def operation_type(self) -> str: ...
    @property
    def request(self) -> StateItem | None: ...


_V = TypeVar("_V")


def enum_value(table: Mapping[int, _V], value: int, field: str) -> _V:
    """`table[value]`; an unknown number is refused naming `field`."""
    try:
        return table[value]
    except KeyError:
        raise InvalidArgument(f"field {field!r} has an unknown value {int(value)}") from None


def consistency(value: int, field: str) -> Consistency:
    return enum_value(_CONSISTENCY, value, field)


def etag(value: Etag | None) -> str | None:
    # An absent ETag and an empty one mean the same: no ETag check.
    return value.value if value is not None and value.value else None


def options(value: StateOptions | None, field: str) -> tuple[Concurrency, Consistency]:
    if value is None:
        return Concurrency.LAST_WRITE, Consistency.EVENTUAL
    return (
        enum_value(_CONCURRENCY, value.concurrency, f"{field}.concurrency"),
        consistency(value.consistency, f"{field}.consistency"),
    )


def _options_field(field: str) -> str:
    # `field` is where the item stands in the request: empty names its options just `options`.
    return f"{field}.options" if field else "options"


def set_request(item: StateItem, field: str) -> SetRequest:
    concurrency, consistent = options(item.options, _options_field(field))
    return SetRequest(
        item.key, item.value, etag(item.etag), dict(item.metadata), concurrency, consistent
    )


def delete_item(item: KeyRequest, field: str) -> DeleteRequest:
    concurrency, consistent = options(item.options, _options_field(field))
    return DeleteRequest(item.key, etag(item.etag), dict(item.metadata), concurrency, consistent)


def delete_request(message: KeyRequest) -> DeleteRequest:
    return delete_item(message, "")


def transaction(
    operations: Sequence[TransactionalOperation], *, item_paths: bool = True
) -> list[TransactionOperation]:
    """The operations in order. Errors about an operation's options name it by its place, or
    (`item_paths=False`, Layotto's API) just `options`."""
    result: list[TransactionOperation] = []
    for index, op in enumerate(operations):
        field = f"operations[{index}]"
        if op.operation_type not in (UPSERT, DELETE):
            raise Unsupported(
                f"{field}.operationType {op.operation_type!r} is not supported; "
                f"use {UPSERT!r} or {DELETE!r}",
                reason="ERR_NOT_SUPPORTED_STATE_OPERATION",
            )
        if op.request is None:
            continue  # upstream skips operations without a request
        if not op.request.key:
            raise InvalidArgument(f"field '{field}.request.key' must not be empty")
        request = f"{field}.request" if item_paths else ""
        result.append(
            set_request(op.request, request)
            if op.operation_type == UPSERT
            else delete_item(op.request, request)
        )
    return result


def get_response(found: GetResponse | None) -> pb.GetStateResponse:
    # A missing key is an empty answer, not an error (dapr-compat.md 3.1).
    if found is None:
        return pb.GetStateResponse()
    return pb.GetStateResponse(
        data=found.data, etag=found.etag or "", metadata=dict(found.metadata)
    )


def bulk_item(item: BulkGetItem) -> pb.BulkStateItem:
    return pb.BulkStateItem(
        key=item.key,
        data=item.data or b"",
        etag=item.etag or "",
        error=item.error,
        metadata=dict(item.metadata),
    )


def query_response(found: QueryResponse) -> pb.QueryStateResponse:
    return pb.QueryStateResponse(
        results=[
            pb.QueryStateItem(key=i.key, data=i.data, etag=i.etag or "", error=i.error)
            for i in found.results
        ],
        token=found.token,
        metadata=dict(found.metadata),
    )
