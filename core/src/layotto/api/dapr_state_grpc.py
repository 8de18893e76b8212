"""Dapr state messages (`dapr.proto.common.v1` / `runtime.v1`) to and from the SPI's requests.

Semantics are Dapr's (dapr-compat.md 3.1): no ETag and an empty ETag both mean "no check" (under
first-write both mean "insert only if absent", which the store decides), unset options mean
last-write and eventual consistency, and a transaction's operations keep their order.
"""

from __future__ import annotations

from collections.abc import Sequence

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

_CONSISTENCY = {
    common.StateOptionsStateConsistency.CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    common.StateOptionsStateConsistency.CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    common.StateOptionsStateConsistency.CONSISTENCY_STRONG: Consistency.STRONG,
}
_CONCURRENCY = {
    common.StateOptionsStateConcurrency.CONCURRENCY_UNSPECIFIED: Concurrency.LAST_WRITE,
    common.StateOptionsStateConcurrency.CONCURRENCY_LAST_WRITE: Concurrency.LAST_WRITE,
    common.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE: Concurrency.FIRST_WRITE,
}
UPSERT, DELETE = "upsert", "delete"


def consistency(value: common.StateOptionsStateConsistency, field: str) -> Consistency:
    try:
        return _CONSISTENCY[value]
    except KeyError:
        raise InvalidArgument(f"field {field!r} has an unknown value {int(value)}") from None


def _concurrency(value: common.StateOptionsStateConcurrency, field: str) -> Concurrency:
    try:
        return _CONCURRENCY[value]
    except KeyError:
        raise InvalidArgument(f"field {field!r} has an unknown value {int(value)}") from None


def _etag(etag: common.Etag | None) -> str | None:
    return etag.value if etag is not None and etag.value else None


def options(value: common.StateOptions | None, field: str) -> tuple[Concurrency, Consistency]:
    if value is None:
        return Concurrency.LAST_WRITE, Consistency.EVENTUAL
    return (
        _concurrency(value.concurrency, f"{field}.concurrency"),
        consistency(value.consistency, f"{field}.consistency"),
    )


def set_request(item: common.StateItem, field: str) -> SetRequest:
    concurrency, consistent = options(item.options, f"{field}.options")
    return SetRequest(
        item.key, item.value, _etag(item.etag), dict(item.metadata), concurrency, consistent
    )


def delete_item(item: common.StateItem, field: str) -> DeleteRequest:
    concurrency, consistent = options(item.options, f"{field}.options")
    return DeleteRequest(item.key, _etag(item.etag), dict(item.metadata), concurrency, consistent)


def delete_request(message: pb.DeleteStateRequest) -> DeleteRequest:
    concurrency, consistent = options(message.options, "options")
    return DeleteRequest(
        message.key, _etag(message.etag), dict(message.metadata), concurrency, consistent
    )


def transaction(operations: Sequence[pb.TransactionalStateOperation]) -> list[TransactionOperation]:
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
        request = f"{field}.request"
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
