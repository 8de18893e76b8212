"""`SubscribeConfiguration` (bidi): every request message adds a subscription to its stream,
and every change batch of any of them goes out as `{store_name, app_id, items}`.

The stream's subscriptions are its own: when the stream ends (the client cancels, an error,
draining), exactly they are closed, never another stream's (upstream tears down every
subscription of the store: layotto-semantics.md, "Known Layotto gaps" 4). A request that fails
(unknown store, bad field, store down) ends its stream with that error. A client that
half-closes its side keeps receiving changes. When the sidecar starts draining, the stream ends
with UNAVAILABLE at once, so shutdown is not held for the grace period; a subscriber that stops
reading ends with RESOURCE_EXHAUSTED. Either way the client subscribes again.
"""

from __future__ import annotations

import anyio
from anyio.abc import TaskGroup
from grpclib.server import Stream

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.api.config_messages import to_pb, wants_initial_values
from layotto.api.stream_errors import reraise_stream_failure
from layotto.errors import ShuttingDown
from layotto.services.config_subscription import Subscription
from layotto.services.configuration import ConfigurationService

SubscribeStream = Stream[pb.SubscribeConfigurationRequest, pb.SubscribeConfigurationResponse]


class ConfigSubscriptions:
    def __init__(self, service: ConfigurationService, drain_started: anyio.Event) -> None:
        self._service = service
        self._drain_started = drain_started

    async def handle(self, stream: SubscribeStream) -> None:
        # Headers first: the client sees the stream open at once, and a later error arrives as
        # trailers after them rather than as a trailers-only answer.
        await stream.send_initial_metadata()
        subscriptions: list[Subscription] = []
        send_lock = anyio.Lock()

        async def pump(subscription: Subscription) -> None:
            scope = subscription.scope
            async for batch in subscription:
                response = pb.SubscribeConfigurationResponse(
                    store_name=scope.store_name,
                    app_id=scope.app_id,
                    items=[to_pb(item) for item in batch],
                )
                async with send_lock:
                    await stream.send_message(response)

        async def receive(tg: TaskGroup) -> None:
            async for request in stream:
                subscription = await self._service.subscribe(
                    request.store_name,
                    request.app_id,
                    request.group,
                    request.label,
                    request.keys,
                    initial=wants_initial_values(request.metadata),
                )
                subscriptions.append(subscription)
                tg.start_soon(pump, subscription)
            # Half-closed by the client: no more subscriptions, but the changes keep coming.

        async def end_on_drain() -> None:
            await self._drain_started.wait()
            raise ShuttingDown("the sidecar is shutting down; subscribe again")

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(receive, tg)
                tg.start_soon(end_on_drain)
        except BaseExceptionGroup as group:
            reraise_stream_failure(group)
        finally:
            for subscription in subscriptions:
                subscription.close()
