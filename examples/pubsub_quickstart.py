"""Publish three events to the sidecar's `pubsub` and receive them on a streaming subscription
(SubscribeTopicEvents: no callback server needed), acknowledging each one.

Start the sidecar first (`uv run layotto run`), then: `uv run python examples/pubsub_quickstart.py`.
"""

import asyncio
import os

from grpclib.client import Channel
from grpclib.const import Cardinality
from layotto._proto.google.protobuf import Empty
from layotto._proto.spec.proto.runtime import v1 as pb

PUBSUB, TOPIC = "pubsub", "orders"
SUCCESS = pb.TopicEventResponse(status=pb.TopicEventResponseTopicEventResponseStatus.SUCCESS)


async def publish(channel: Channel, data: bytes) -> str:
    """PublishEvent; the event id comes back in the `message-id` response header."""
    async with channel.request(
        "/spec.proto.runtime.v1.Runtime/PublishEvent",
        Cardinality.UNARY_UNARY,
        pb.PublishEventRequest,
        Empty,
    ) as call:
        await call.send_message(
            pb.PublishEventRequest(
                pubsub_name=PUBSUB, topic=TOPIC, data=data, data_content_type="application/json"
            ),
            end=True,
        )
        await call.recv_initial_metadata()
        await call.recv_message()
        return str((call.initial_metadata or {}).get("message-id", ""))


async def main() -> None:
    port = int(os.environ.get("LAYOTTO_GRPC_PORT", "34904"))
    async with (
        Channel("127.0.0.1", port) as channel,
        channel.request(
            "/spec.proto.runtime.v1.Runtime/SubscribeTopicEvents",
            Cardinality.STREAM_STREAM,
            pb.SubscribeTopicEventsRequest,
            pb.SubscribeTopicEventsResponse,
        ) as stream,
    ):
        initial = pb.SubscribeTopicEventsRequestInitial(pubsub_name=PUBSUB, topic=TOPIC)
        await stream.send_message(pb.SubscribeTopicEventsRequest(initial_request=initial))
        await stream.recv_message()  # initial_response: the subscription is in place

        for n in range(3):
            print("published", await publish(channel, b'{"order": %d}' % n))

        for _ in range(3):
            response = await stream.recv_message()
            if response is None or response.event_message is None:
                raise RuntimeError(f"expected an event, got {response!r}")
            event = response.event_message
            print("received ", event.id, event.data.decode())
            processed = pb.SubscribeTopicEventsRequestProcessed(id=event.id, status=SUCCESS)
            await stream.send_message(pb.SubscribeTopicEventsRequest(event_processed=processed))
        await stream.cancel()  # unsubscribe


if __name__ == "__main__":
    asyncio.run(main())
