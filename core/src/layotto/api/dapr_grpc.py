"""`dapr.proto.runtime.v1.Dapr`: Dapr's messages in, the shared building-block services, Dapr's
messages out (dapr-compat.md 1.2), so unmodified Dapr SDK apps work against this sidecar.

The services are the ones the Layotto API uses; state and lock come in their Dapr flavour
(`<appid>||key`, `lock||<appid>||resource`). Stable and Alpha1 names that share messages are
both served. RPCs of blocks this sidecar does not have (actors, workflows, jobs, crypto,
conversation) keep the generated UNIMPLEMENTED answer, which the call guard words with the
block's name; the SDK relies on UNIMPLEMENTED for its stable -> Alpha fallbacks.

Errors carry Dapr's reasons; state and pub/sub errors also name the store (`ResourceInfo`), as
daprd's rich errors do.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

import anyio
import grpclib.const

from layotto._proto.dapr.proto.common import v1 as common
from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto._proto.google.protobuf import Any as PbAny
from layotto._proto.google.protobuf import Empty
from layotto.api import dapr_state_grpc as state_msg
from layotto.api.dapr_config_grpc import DaprConfiguration
from layotto.api.dapr_metadata_grpc import SidecarControl, metadata_response
from layotto.api.dapr_pubsub_grpc import (
    DaprBulkPublisher,
    DaprPublishHandler,
    DaprTopicEventStreams,
)
from layotto.api.invoke_grpc import InvokeEdge, rpc_request
from layotto.api.rich_errors import about
from layotto.errors import InvalidArgument
from layotto.plugin import LockStatus
from layotto.plugin.rpc import RpcRequest, RpcResponse
from layotto.services.bindings import BindingService
from layotto.services.configuration import ConfigurationService
from layotto.services.invoke import InvokeService
from layotto.services.lock import LockService
from layotto.services.pubsub import PubSubService
from layotto.services.secrets import SecretService
from layotto.services.state import StateService

SERVICE = "dapr.proto.runtime.v1.Dapr"
SUBSCRIBE_CONFIGURATION = f"/{SERVICE}/SubscribeConfiguration"
SUBSCRIBE_CONFIGURATION_ALPHA1 = f"/{SERVICE}/SubscribeConfigurationAlpha1"
# The Dapr SDKs send no API token on these server streams (dapr-compat.md 2.3).
CONFIG_SUBSCRIBE_PATHS = frozenset({SUBSCRIBE_CONFIGURATION, SUBSCRIBE_CONFIGURATION_ALPHA1})
PUBLISH_EVENT = f"/{SERVICE}/PublishEvent"
SUBSCRIBE_TOPIC_EVENTS = f"/{SERVICE}/SubscribeTopicEventsAlpha1"
INVOKE_SERVICE = f"/{SERVICE}/InvokeService"

STATE = "state"
INVOKE_TIMEOUT_SECONDS = 60.0

# Name fragments of the out-of-scope RPCs -> the block named in their UNIMPLEMENTED answer.
_BLOCKS = (
    ("Actor", "Actors API"),
    ("Workflow", "Workflow API"),
    ("Job", "Jobs API"),
    ("Encrypt", "Crypto API"),
    ("Decrypt", "Crypto API"),
    ("Subtle", "Crypto API"),
    ("Converse", "Conversation API"),
)


def dapr_building_block(method: str) -> str:
    for fragment, block in _BLOCKS:
        if fragment in method:
            return block
    return "Dapr API"


_UNLOCK_STATUS = {
    LockStatus.SUCCESS: pb.UnlockResponseStatus.SUCCESS,
    LockStatus.LOCK_UNEXIST: pb.UnlockResponseStatus.LOCK_DOES_NOT_EXIST,
    LockStatus.LOCK_BELONG_TO_OTHERS: pb.UnlockResponseStatus.LOCK_BELONGS_TO_OTHERS,
    LockStatus.INTERNAL_ERROR: pb.UnlockResponseStatus.INTERNAL_ERROR,
}


def _invoke_request(
    request: pb.InvokeServiceRequest, headers: dict[str, str], seconds_left: float | None
) -> RpcRequest:
    """The call is bounded by the caller's gRPC deadline, as daprd bounds it; without one, by
    the same default as Dapr's HTTP invocation."""
    message = request.message or common.InvokeRequest()
    timeout = seconds_left if seconds_left is not None else INVOKE_TIMEOUT_SECONDS
    return rpc_request(request.id, message, headers, timeout)


def _invoke_response(response: RpcResponse) -> common.InvokeResponse:
    return common.InvokeResponse(
        data=PbAny(value=response.data), content_type=response.content_type
    )


@dataclass(frozen=True, slots=True)
class DaprServices:
    state: StateService  # with Dapr's default `appid` key prefix
    lock: LockService  # with Dapr's key scheme
    configuration: ConfigurationService
    pubsub: PubSubService
    invoke: InvokeService
    secrets: SecretService
    bindings: BindingService


class DaprRuntime(pb.DaprBase):
    def __init__(
        self,
        services: DaprServices,
        app_id: str,
        control: SidecarControl,
        drain_started: anyio.Event,
    ) -> None:
        self._state = services.state
        self._lock = services.lock
        self._secrets = services.secrets
        self._bindings = services.bindings
        self._control = control
        self._configuration = DaprConfiguration(services.configuration, app_id, drain_started)
        self._bulk = DaprBulkPublisher(services.pubsub, app_id)
        self._topic_streams = DaprTopicEventStreams(services.pubsub, drain_started)
        self._stream_handlers: Mapping[str, Callable[..., object]] = {
            # Streams, and the unary calls that read request headers.
            SUBSCRIBE_CONFIGURATION: self._configuration.subscribe,
            SUBSCRIBE_CONFIGURATION_ALPHA1: self._configuration.subscribe,
            SUBSCRIBE_TOPIC_EVENTS: self._topic_streams.handle,
            PUBLISH_EVENT: DaprPublishHandler(services.pubsub, app_id).handle,
            INVOKE_SERVICE: InvokeEdge(services.invoke, _invoke_request, _invoke_response).handle,
        }

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        mapping: dict[str, grpclib.const.Handler] = super().__mapping__()
        for path, func in self._stream_handlers.items():
            mapping[path] = mapping[path]._replace(func=func)
        return mapping

    # -- state -----------------------------------------------------------------------------

    async def get_state(self, message: pb.GetStateRequest) -> pb.GetStateResponse:
        with about(STATE, message.store_name):
            found = await self._state.get(
                message.store_name,
                message.key,
                consistency=state_msg.consistency(message.consistency, "consistency"),
                metadata=message.metadata,
            )
        return state_msg.get_response(found)

    async def get_bulk_state(self, message: pb.GetBulkStateRequest) -> pb.GetBulkStateResponse:
        with about(STATE, message.store_name):
            items = await self._state.bulk_get(
                message.store_name,
                message.keys,
                parallelism=message.parallelism,
                metadata=message.metadata,
            )
        return pb.GetBulkStateResponse(items=[state_msg.bulk_item(item) for item in items])

    async def save_state(self, message: pb.SaveStateRequest) -> Empty:
        with about(STATE, message.store_name):
            requests = [
                state_msg.set_request(item, f"states[{index}]")
                for index, item in enumerate(message.states)
            ]
            await self._state.save(message.store_name, requests)
        return Empty()

    async def delete_state(self, message: pb.DeleteStateRequest) -> Empty:
        with about(STATE, message.store_name):
            await self._state.delete(message.store_name, state_msg.delete_request(message))
        return Empty()

    async def delete_bulk_state(self, message: pb.DeleteBulkStateRequest) -> Empty:
        with about(STATE, message.store_name):
            requests = [
                state_msg.delete_item(item, f"states[{index}]")
                for index, item in enumerate(message.states)
            ]
            await self._state.bulk_delete(message.store_name, requests)
        return Empty()

    async def execute_state_transaction(self, message: pb.ExecuteStateTransactionRequest) -> Empty:
        with about(STATE, message.store_name):
            operations = state_msg.transaction(message.operations)
            await self._state.transact(message.store_name, operations, message.metadata)
        return Empty()

    async def query_state_alpha_1(self, message: pb.QueryStateRequest) -> pb.QueryStateResponse:
        with about(STATE, message.store_name):
            found = await self._state.query(message.store_name, message.query, message.metadata)
        return state_msg.query_response(found)

    # -- pub/sub (PublishEvent and the topic stream are stream handlers) -------------------

    async def bulk_publish_event(self, message: pb.BulkPublishRequest) -> pb.BulkPublishResponse:
        return await self._bulk.publish(message)

    async def bulk_publish_event_alpha_1(
        self, message: pb.BulkPublishRequest
    ) -> pb.BulkPublishResponse:
        return await self._bulk.publish(message)

    # -- configuration (Subscribe is a stream handler) -------------------------------------

    async def get_configuration(
        self, message: pb.GetConfigurationRequest
    ) -> pb.GetConfigurationResponse:
        return await self._configuration.get(message)

    async def get_configuration_alpha_1(
        self, message: pb.GetConfigurationRequest
    ) -> pb.GetConfigurationResponse:
        return await self._configuration.get(message)

    async def unsubscribe_configuration(
        self, message: pb.UnsubscribeConfigurationRequest
    ) -> pb.UnsubscribeConfigurationResponse:
        return self._configuration.unsubscribe(message)

    async def unsubscribe_configuration_alpha_1(
        self, message: pb.UnsubscribeConfigurationRequest
    ) -> pb.UnsubscribeConfigurationResponse:
        return self._configuration.unsubscribe(message)

    # -- lock ------------------------------------------------------------------------------

    async def try_lock_alpha_1(self, message: pb.TryLockRequest) -> pb.TryLockResponse:
        success = await self._lock.try_lock(
            message.store_name, message.resource_id, message.lock_owner, message.expiry_in_seconds
        )
        return pb.TryLockResponse(success=success)

    async def unlock_alpha_1(self, message: pb.UnlockRequest) -> pb.UnlockResponse:
        status = await self._lock.unlock(
            message.store_name, message.resource_id, message.lock_owner
        )
        return pb.UnlockResponse(status=_UNLOCK_STATUS[status])

    # -- secrets and bindings --------------------------------------------------------------

    async def get_secret(self, message: pb.GetSecretRequest) -> pb.GetSecretResponse:
        data = await self._secrets.get(message.store_name, message.key, message.metadata)
        return pb.GetSecretResponse(data=data)

    async def get_bulk_secret(self, message: pb.GetBulkSecretRequest) -> pb.GetBulkSecretResponse:
        found = await self._secrets.bulk_get(message.store_name, message.metadata)
        return pb.GetBulkSecretResponse(
            data={key: pb.SecretResponse(secrets=values) for key, values in found.items()}
        )

    async def invoke_binding(self, message: pb.InvokeBindingRequest) -> pb.InvokeBindingResponse:
        response = await self._bindings.invoke(
            message.name, message.operation, message.data, message.metadata
        )
        return pb.InvokeBindingResponse(data=response.data, metadata=dict(response.metadata))

    # -- metadata and lifecycle ------------------------------------------------------------

    async def get_metadata(self, message: pb.GetMetadataRequest) -> pb.GetMetadataResponse:
        return metadata_response(self._control.metadata(), self._topic_streams.subscriptions)

    async def set_metadata(self, message: pb.SetMetadataRequest) -> Empty:
        if not message.key:
            raise InvalidArgument("field 'key' must not be empty")
        self._control.set_metadata(message.key, message.value)
        return Empty()

    async def shutdown(self, message: pb.ShutdownRequest) -> Empty:
        # Starts the graceful shutdown and answers at once; this call is not waited for by
        # the drain it starts (it has finished by then).
        self._control.request_shutdown()
        return Empty()
