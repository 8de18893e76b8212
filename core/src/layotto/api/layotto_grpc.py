"""`spec.proto.runtime.v1.Runtime`: proto messages in, service calls, proto messages out."""

from __future__ import annotations

from collections.abc import Mapping

import anyio
import grpclib.const

from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api import dapr_state_grpc as state_msg
from layotto.api.config_messages import from_pb, to_pb
from layotto.api.config_stream import ConfigSubscriptions
from layotto.api.invoke_grpc import InvokeHandler
from layotto.api.pubsub_grpc import PublishHandler, TopicEventStreams
from layotto.plugin import (
    LockStatus,
)
from layotto.services.bindings import BindingService
from layotto.services.configuration import ConfigurationService
from layotto.services.invoke import InvokeService
from layotto.services.lock import LockService
from layotto.services.pubsub import PubSubService
from layotto.services.secrets import SecretService
from layotto.services.sequencer import SequencerService
from layotto.services.state import StateService

SUBSCRIBE_CONFIGURATION = "/spec.proto.runtime.v1.Runtime/SubscribeConfiguration"
PUBLISH_EVENT = "/spec.proto.runtime.v1.Runtime/PublishEvent"
INVOKE_SERVICE = "/spec.proto.runtime.v1.Runtime/InvokeService"
SUBSCRIBE_TOPIC_EVENTS = "/spec.proto.runtime.v1.Runtime/SubscribeTopicEvents"

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

_UNLOCK_STATUS = {
    LockStatus.SUCCESS: pb.UnlockResponseStatus.SUCCESS,
    LockStatus.LOCK_UNEXIST: pb.UnlockResponseStatus.LOCK_UNEXIST,
    LockStatus.LOCK_BELONG_TO_OTHERS: pb.UnlockResponseStatus.LOCK_BELONG_TO_OTHERS,
    LockStatus.INTERNAL_ERROR: pb.UnlockResponseStatus.INTERNAL_ERROR,
}
_KEEP_ALIVE_STATUS = {
    LockStatus.SUCCESS: pb.LockKeepAliveResponseStatus.SUCCESS,
    LockStatus.LOCK_UNEXIST: pb.LockKeepAliveResponseStatus.LOCK_UNEXIST,
    LockStatus.LOCK_BELONG_TO_OTHERS: pb.LockKeepAliveResponseStatus.LOCK_BELONG_TO_OTHERS,
    LockStatus.INTERNAL_ERROR: pb.LockKeepAliveResponseStatus.INTERNAL_ERROR,
}
# WEAK is the default: no `options` at all means WEAK too (layotto-semantics 8).
_STRONG: dict[int, bool] = {
    pb.SequencerOptionsAutoIncrement.WEAK: False,
    pb.SequencerOptionsAutoIncrement.STRONG: True,
}


def _strong(options: pb.SequencerOptions | None) -> bool:
    if options is None:
        return False
    return state_msg.enum_value(_STRONG, options.increment, "options.increment")


class LayottoRuntime(pb.RuntimeBase):
    """Building blocks not built yet keep the generated UNIMPLEMENTED answer; the call guard
    names the building block in the message.

    Unlock and LockKeepAlive: when the lock store fails, the answer is the error status alone
    (e.g. INTERNAL, UNAVAILABLE), not a response with `INTERNAL_ERROR` beside it as upstream
    sends: gRPC carries one or the other, and the error status says more.
    """

    def __init__(
        self,
        state: StateService,
        lock: LockService,
        sequencer: SequencerService,
        configuration: ConfigurationService,
        pubsub: PubSubService,
        invoke: InvokeService,
        secrets: SecretService,
        bindings: BindingService,
        drain_started: anyio.Event,
    ) -> None:
        self._state = state
        self._secrets = secrets
        self._bindings = bindings
        self._lock = lock
        self._sequencer = sequencer
        self._configuration = configuration
        self._stream_handlers = {
            # The bidi streams read and write at once; PublishEvent sets a response header.
            SUBSCRIBE_CONFIGURATION: ConfigSubscriptions(configuration, drain_started).handle,
            PUBLISH_EVENT: PublishHandler(pubsub).handle,
            SUBSCRIBE_TOPIC_EVENTS: TopicEventStreams(pubsub, drain_started).handle,
            # InvokeService forwards request metadata and returns response headers.
            INVOKE_SERVICE: InvokeHandler(invoke).handle,
        }

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        for path, func in self._stream_handlers.items():
            mapping[path] = mapping[path]._replace(func=func)
        return mapping

    # -- configuration ---------------------------------------------------------------------

    async def get_configuration(
        self, message: pb.GetConfigurationRequest
    ) -> pb.GetConfigurationResponse:
        # `subscribe_update` is a documented no-op, as upstream: use SubscribeConfiguration.
        items = await self._configuration.get(
            message.store_name,
            message.app_id,
            message.group,
            message.label,
            message.keys,
            message.metadata,
        )
        return pb.GetConfigurationResponse(items=[to_pb(item) for item in items])

    async def save_configuration(self, message: pb.SaveConfigurationRequest) -> Empty:
        await self._configuration.save(
            message.store_name,
            message.app_id,
            [from_pb(item) for item in message.items],
            message.metadata,
        )
        return Empty()

    async def delete_configuration(self, message: pb.DeleteConfigurationRequest) -> Empty:
        await self._configuration.delete(
            message.store_name,
            message.app_id,
            message.group,
            message.label,
            message.keys,
            message.metadata,
        )
        return Empty()

    # -- state -----------------------------------------------------------------------------

    async def get_state(self, message: pb.GetStateRequest) -> pb.GetStateResponse:
        found = await self._state.get(
            message.store_name,
            message.key,
            consistency=state_msg.consistency(message.consistency, "consistency"),
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
        await self._state.save(
            message.store_name, [state_msg.set_request(s, "") for s in message.states]
        )
        return Empty()

    async def delete_state(self, message: pb.DeleteStateRequest) -> Empty:
        await self._state.delete(message.store_name, state_msg.delete_request(message))
        return Empty()

    async def delete_bulk_state(self, message: pb.DeleteBulkStateRequest) -> Empty:
        await self._state.bulk_delete(
            message.store_name, [state_msg.delete_item(s, "") for s in message.states]
        )
        return Empty()

    async def execute_state_transaction(self, message: pb.ExecuteStateTransactionRequest) -> Empty:
        operations = state_msg.transaction(message.operations, item_paths=False)
        await self._state.transact(message.store_name, operations, message.metadata)
        return Empty()

    # -- lock ------------------------------------------------------------------------------

    async def try_lock(self, message: pb.TryLockRequest) -> pb.TryLockResponse:
        success = await self._lock.try_lock(
            message.store_name, message.resource_id, message.lock_owner, message.expire
        )
        return pb.TryLockResponse(success=success)

    async def unlock(self, message: pb.UnlockRequest) -> pb.UnlockResponse:
        status = await self._lock.unlock(
            message.store_name, message.resource_id, message.lock_owner
        )
        return pb.UnlockResponse(status=_UNLOCK_STATUS[status])

    async def lock_keep_alive(self, message: pb.LockKeepAliveRequest) -> pb.LockKeepAliveResponse:
        status = await self._lock.keep_alive(
            message.store_name, message.resource_id, message.lock_owner, message.expire
        )
        return pb.LockKeepAliveResponse(status=_KEEP_ALIVE_STATUS[status])

    # -- sequencer -------------------------------------------------------------------------

    async def get_next_id(self, message: pb.GetNextIdRequest) -> pb.GetNextIdResponse:
        strong = _strong(message.options)
        next_id = await self._sequencer.get_next_id(message.store_name, message.key, strong=strong)
        return pb.GetNextIdResponse(next_id=next_id)

    # -- secrets ---------------------------------------------------------------------------

    async def get_secret(self, message: pb.GetSecretRequest) -> pb.GetSecretResponse:
        data = await self._secrets.get(message.store_name, message.key, message.metadata)
        return pb.GetSecretResponse(data=data)

    async def get_bulk_secret(self, message: pb.GetBulkSecretRequest) -> pb.GetBulkSecretResponse:
        found = await self._secrets.bulk_get(message.store_name, message.metadata)
        return pb.GetBulkSecretResponse(
            data={key: pb.SecretResponse(secrets=values) for key, values in found.items()}
        )

    # -- bindings --------------------------------------------------------------------------

    async def invoke_binding(self, message: pb.InvokeBindingRequest) -> pb.InvokeBindingResponse:
        response = await self._bindings.invoke(
            message.name, message.operation, message.data, message.metadata
        )
        return pb.InvokeBindingResponse(data=response.data, metadata=dict(response.metadata))
