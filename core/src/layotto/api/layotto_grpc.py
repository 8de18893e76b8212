"""`spec.proto.runtime.v1.Runtime`: proto messages in, service calls, proto messages out."""

from __future__ import annotations

from collections.abc import Mapping

from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.errors import InvalidArgument, Unsupported
from layotto.plugin import Concurrency, Consistency, DeleteRequest, SetRequest, TransactionOperation
from layotto.services.state import StateService

# Which building block each Runtime RPC belongs to; named in UNIMPLEMENTED answers.
RUNTIME_BUILDING_BLOCKS: Mapping[str, str] = {
    "SayHello": "Hello API",
    "InvokeService": "RPC API",
    "GetConfiguration": "Configuration API",
    "SaveConfiguration": "Configuration API",
    "DeleteConfiguration": "Configuration API",
    "SubscribeConfiguration": "Configuration API",
    "TryLock": "Lock API",
    "Unlock": "Lock API",
    "LockKeepAlive": "Lock API",
    "GetNextId": "Sequencer API",
    "PublishEvent": "Pub/Sub API",
    "SubscribeTopicEvents": "Pub/Sub API",
    "GetFile": "File API",
    "PutFile": "File API",
    "ListFile": "File API",
    "DelFile": "File API",
    "GetFileMeta": "File API",
    "InvokeBinding": "Bindings API",
    "GetSecret": "Secrets API",
    "GetBulkSecret": "Secrets API",
}

_CONSISTENCY = {
    pb.StateOptionsStateConsistency.CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    pb.StateOptionsStateConsistency.CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    pb.StateOptionsStateConsistency.CONSISTENCY_STRONG: Consistency.STRONG,
}
_CONCURRENCY = {
    pb.StateOptionsStateConcurrency.CONCURRENCY_UNSPECIFIED: Concurrency.LAST_WRITE,
    pb.StateOptionsStateConcurrency.CONCURRENCY_LAST_WRITE: Concurrency.LAST_WRITE,
    pb.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE: Concurrency.FIRST_WRITE,
}
_UPSERT, _DELETE = "upsert", "delete"


def _consistency(value: pb.StateOptionsStateConsistency, field: str) -> Consistency:
    try:
        return _CONSISTENCY[value]
    except KeyError:
        raise InvalidArgument(f"field {field!r} has an unknown value {int(value)}") from None


def _concurrency(value: pb.StateOptionsStateConcurrency, field: str) -> Concurrency:
    try:
        return _CONCURRENCY[value]
    except KeyError:
        raise InvalidArgument(f"field {field!r} has an unknown value {int(value)}") from None


def _etag(etag: pb.Etag | None) -> str | None:
    # An absent ETag and an empty one mean the same: no ETag check (layotto-semantics 9).
    return etag.value if etag is not None and etag.value else None


def _options(options: pb.StateOptions | None) -> tuple[Concurrency, Consistency]:
    if options is None:
        return Concurrency.LAST_WRITE, Consistency.EVENTUAL
    return (
        _concurrency(options.concurrency, "options.concurrency"),
        _consistency(options.consistency, "options.consistency"),
    )


def _set_request(item: pb.StateItem) -> SetRequest:
    concurrency, consistency = _options(item.options)
    return SetRequest(
        item.key, item.value, _etag(item.etag), dict(item.metadata), concurrency, consistency
    )


def _delete_request(item: pb.StateItem) -> DeleteRequest:
    concurrency, consistency = _options(item.options)
    return DeleteRequest(item.key, _etag(item.etag), dict(item.metadata), concurrency, consistency)


class LayottoRuntime(pb.RuntimeBase):
    """Building blocks not built yet keep the generated UNIMPLEMENTED answer; the call guard
    names the building block in the message."""

    def __init__(self, state: StateService) -> None:
        self._state = state

    async def get_state(self, message: pb.GetStateRequest) -> pb.GetStateResponse:
        found = await self._state.get(
            message.store_name,
            message.key,
            consistency=_consistency(message.consistency, "consistency"),
            metadata=message.metadata,
        )
        if found is None:
            return pb.GetStateResponse()
        return pb.GetStateResponse(
            data=found.data, etag=found.etag or "", metadata=dict(found.metadata)
        )

    async def get_bulk_state(self, message: pb.GetBulkStateRequest) -> pb.GetBulkStateResponse:
        items = await self._state.bulk_get(
            message.store_name,
            message.keys,
            parallelism=message.parallelism,
            metadata=message.metadata,
        )
        return pb.GetBulkStateResponse(
            items=[
                pb.BulkStateItem(
                    key=item.key,
                    data=item.data or b"",
                    etag=item.etag or "",
                    error=item.error,
                    metadata=dict(item.metadata),
                )
                for item in items
            ]
        )

    async def save_state(self, message: pb.SaveStateRequest) -> Empty:
        await self._state.save(message.store_name, [_set_request(s) for s in message.states])
        return Empty()

    async def delete_state(self, message: pb.DeleteStateRequest) -> Empty:
        concurrency, consistency = _options(message.options)
        request = DeleteRequest(
            message.key, _etag(message.etag), dict(message.metadata), concurrency, consistency
        )
        await self._state.delete(message.store_name, request)
        return Empty()

    async def delete_bulk_state(self, message: pb.DeleteBulkStateRequest) -> Empty:
        await self._state.bulk_delete(
            message.store_name, [_delete_request(s) for s in message.states]
        )
        return Empty()

    async def execute_state_transaction(self, message: pb.ExecuteStateTransactionRequest) -> Empty:
        operations: list[TransactionOperation] = []
        for index, op in enumerate(message.operations):
            if op.operation_type not in (_UPSERT, _DELETE):
                raise Unsupported(
                    f"operations[{index}].operationType {op.operation_type!r} is not supported; "
                    f"use {_UPSERT!r} or {_DELETE!r}",
                    reason="ERR_NOT_SUPPORTED_STATE_OPERATION",
                )
            if op.request is None:
                continue  # upstream skips operations without a request
            if not op.request.key:
                raise InvalidArgument(f"field 'operations[{index}].request.key' must not be empty")
            operations.append(
                _set_request(op.request)
                if op.operation_type == _UPSERT
                else _delete_request(op.request)
            )
        await self._state.transact(message.store_name, operations, message.metadata)
        return Empty()
