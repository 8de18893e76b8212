"""Dapr's configuration RPCs: Get, Subscribe (server stream) and Unsubscribe, stable and Alpha1.

Dapr has no app id, group or label in its requests: the sidecar's app id and the store's
default group and label are used, so items saved through the Layotto API under this app id
are the ones a Dapr client sees.

Subscribe (dapr-compat.md 2.6, 3.4): the first message carries only the subscription `id` (the
SDK waits up to 5 s for it), then one `{id, items}` message per change batch. The stream ends
when `UnsubscribeConfiguration(id)` closes the subscription (the SDK never cancels its own
stream), when the client goes away, or with UNAVAILABLE when the sidecar starts draining.
"""

from __future__ import annotations

import anyio
from grpclib.server import Stream

from layotto._proto.dapr.proto.common import v1 as common
from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto.api.config_messages import wants_initial_values
from layotto.api.stream_errors import reraise_stream_failure
from layotto.errors import ShuttingDown
from layotto.plugin import ConfigItem
from layotto.services.configuration import ConfigurationService

# Item metadata that carries the item's version, for stores that report one.
VERSION_METADATA = "version"

SubscribeStream = Stream[pb.SubscribeConfigurationRequest, pb.SubscribeConfigurationResponse]


def to_items(items: list[ConfigItem]) -> dict[str, common.ConfigurationItem]:
    return {
        item.key: common.ConfigurationItem(
            value=item.content,
            version=item.metadata.get(VERSION_METADATA, ""),
            metadata=dict(item.metadata),
        )
        for item in items
    }


class DaprConfiguration:
    def __init__(
        self, service: ConfigurationService, app_id: str, drain_started: anyio.Event
    ) -> None:
        self._service = service
        self._app_id = app_id
        self._drain_started = drain_started

    async def get(self, request: pb.GetConfigurationRequest) -> pb.GetConfigurationResponse:
        items = await self._service.get(
            request.store_name, self._app_id, "", "", request.keys, request.metadata
        )
        return pb.GetConfigurationResponse(items=to_items(items))

    def unsubscribe(
        self, request: pb.UnsubscribeConfigurationRequest
    ) -> pb.UnsubscribeConfigurationResponse:
        if self._service.unsubscribe(request.id):
            return pb.UnsubscribeConfigurationResponse(ok=True)
        return pb.UnsubscribeConfigurationResponse(
            ok=False, message=f"configuration subscription {request.id!r} is not found"
        )

    async def subscribe(self, stream: SubscribeStream) -> None:
        request = await stream.recv_message()
        assert request is not None  # grpclib ends a call without a message itself
        subscription = await self._service.subscribe(
            request.store_name,
            self._app_id,
            "",
            "",
            request.keys,
            initial=wants_initial_values(request.metadata),
        )

        async def end_on_drain() -> None:
            await self._drain_started.wait()
            raise ShuttingDown("the sidecar is shutting down; subscribe again")

        try:
            await stream.send_message(pb.SubscribeConfigurationResponse(id=subscription.id))
            async with anyio.create_task_group() as tg:
                tg.start_soon(end_on_drain)
                async for batch in subscription:
                    await stream.send_message(
                        pb.SubscribeConfigurationResponse(id=subscription.id, items=to_items(batch))
                    )
                # Unsubscribed (or closed): the stream ends OK.
                tg.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            reraise_stream_failure(group)
        finally:
            subscription.close()
