"""Dapr's pub/sub and configuration RPCs over a real socket, with the Dapr SDK's generated stubs
(grpcio aio): PublishEvent, BulkPublishEvent(Alpha1), SubscribeTopicEventsAlpha1,
Get/Subscribe/UnsubscribeConfiguration, and the API token on the configuration stream.

Behaviour: dapr-compat.md 0.4, 2.3, 2.5, 2.6, 3.2, 3.4."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import grpc
import pytest
from dapr.proto.runtime.v1 import (
    appcallback_pb2,
    configuration_pb2,
    dapr_pb2_grpc,
    metadata_pb2,
    pubsub_pb2,
)
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import RuntimeConfig, embedded_default_components
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import expect, reason

pytestmark = pytest.mark.anyio

APP = "shop"
PUBSUB = "pubsub"
CONFIGS = "configstore"
TOKEN = "s3cret"

SUCCESS = appcallback_pb2.TopicEventResponse.SUCCESS
RETRY = appcallback_pb2.TopicEventResponse.RETRY
DROP = appcallback_pb2.TopicEventResponse.DROP

# Quick redelivery, so retry scenarios take tenths of a second.
CONFIG = RuntimeConfig.model_validate(
    {
        "components": [c.model_dump() for c in embedded_default_components()],
        "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.1},
    }
).with_overrides(app_id=APP)


@asynccontextmanager
async def dapr_stub(**options: Any) -> AsyncIterator[tuple[Sidecar, dapr_pb2_grpc.DaprStub]]:
    async with (
        run_sidecar(options.pop("config", CONFIG), grace_period=1.0, **options) as sidecar,
        grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan,
    ):
        yield sidecar, dapr_pb2_grpc.DaprStub(chan)


@pytest.fixture
async def dapr() -> AsyncIterator[dapr_pb2_grpc.DaprStub]:
    async with dapr_stub() as (_, stub):
        yield stub


async def publish(
    dapr: dapr_pb2_grpc.DaprStub, topic: str, data: bytes, content_type: str = "application/json"
) -> None:
    await dapr.PublishEvent(
        pubsub_pb2.PublishEventRequest(
            pubsub_name=PUBSUB, topic=topic, data=data, data_content_type=content_type
        ),
        timeout=10,
    )


class TopicStream:
    """One SubscribeTopicEventsAlpha1 call, as the SDK drives it."""

    def __init__(self, call: Any) -> None:
        self.call = call

    async def next_event(self, within: float = 10.0) -> Any:
        with anyio.fail_after(within):
            response = await self.call.read()
        assert response is not grpc.aio.EOF
        assert response.HasField("event_message"), response
        return response.event_message

    async def nothing_within(self, seconds: float) -> None:
        with anyio.move_on_after(seconds):
            response = await self.call.read()
            raise AssertionError(f"unexpected message {response}")

    async def ack(self, event_id: str, status: int = SUCCESS) -> None:
        await self.call.write(
            pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(
                    id=event_id, status=appcallback_pb2.TopicEventResponse(status=status)
                )
            )
        )


@asynccontextmanager
async def topic_stream(
    dapr: dapr_pb2_grpc.DaprStub, topic: str, dead_letter_topic: str | None = None
) -> AsyncIterator[TopicStream]:
    call = dapr.SubscribeTopicEventsAlpha1()
    try:
        await call.write(
            pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                    pubsub_name=PUBSUB, topic=topic, dead_letter_topic=dead_letter_topic
                )
            )
        )
        with anyio.fail_after(10):
            first = await call.read()
        # The SDK reads one message and throws it away: it must be initial_response.
        assert first.HasField("initial_response"), first
        yield TopicStream(call)
    finally:
        call.cancel()


# -- publish and the topic stream ----------------------------------------------------------


async def test_stream_answers_initial_response_first_then_events_acked_by_id(
    dapr: dapr_pb2_grpc.DaprStub,
) -> None:
    async with topic_stream(dapr, "orders") as stream:
        await publish(dapr, "orders", b'{"qty": 3}')
        event = await stream.next_event()
        assert json.loads(event.data) == {"qty": 3}
        assert event.data_content_type == "application/json"
        # Dapr's envelope: the publishing app is the source.
        assert (event.source, event.type) == (APP, "com.dapr.event.sent")
        assert (event.topic, event.pubsub_name, event.spec_version) == ("orders", PUBSUB, "1.0")
        extensions = event.extensions.fields
        assert extensions["topic"].string_value == "orders"
        assert extensions["pubsubname"].string_value == PUBSUB
        assert extensions["traceparent"].string_value
        await stream.ack(event.id)
        await publish(dapr, "orders", b'"second"')
        second = await stream.next_event()
        # The acked one is not sent again: the next message is the next event.
        assert second.id != event.id
        assert second.data == b'"second"'
        await stream.ack(second.id)


async def test_retry_redelivers_and_success_settles(dapr: dapr_pb2_grpc.DaprStub) -> None:
    async with topic_stream(dapr, "retry") as stream:
        await publish(dapr, "retry", b"1")
        first = await stream.next_event()
        await stream.ack(first.id, RETRY)
        again = await stream.next_event()
        assert again.id == first.id
        await stream.ack(again.id, SUCCESS)
        await stream.nothing_within(0.3)


async def test_unacked_events_come_back_after_the_stream_closes(
    dapr: dapr_pb2_grpc.DaprStub,
) -> None:
    async with topic_stream(dapr, "held") as stream:
        await publish(dapr, "held", b'"once"')
        first = await stream.next_event()
    # Closed without an answer (the SDK can drop its last ack): the event is not lost.
    async with topic_stream(dapr, "held") as stream:
        again = await stream.next_event()
        await stream.ack(again.id)
    assert again.id == first.id


async def test_drop_goes_to_the_dead_letter_topic(dapr: dapr_pb2_grpc.DaprStub) -> None:
    async with (
        topic_stream(dapr, "risky", dead_letter_topic="risky-dlq") as stream,
        topic_stream(dapr, "risky-dlq") as dead_letters,
    ):
        await publish(dapr, "risky", b'{"bad": true}')
        event = await stream.next_event()
        await stream.ack(event.id, DROP)
        dead = await dead_letters.next_event()
        await dead_letters.ack(dead.id)
    assert json.loads(dead.data) == {"bad": True}


async def test_a_stream_is_listed_in_the_metadata_while_open(
    dapr: dapr_pb2_grpc.DaprStub,
) -> None:
    async with topic_stream(dapr, "listed", dead_letter_topic="listed-dlq"):
        got = await dapr.GetMetadata(metadata_pb2.GetMetadataRequest())
    (sub,) = [s for s in got.subscriptions if s.topic == "listed"]
    assert sub.type == metadata_pb2.PubsubSubscriptionType.STREAMING
    assert (sub.pubsub_name, sub.dead_letter_topic) == (PUBSUB, "listed-dlq")
    # Gone once the server has seen the cancel (it arrives asynchronously).
    with anyio.fail_after(5):
        while True:
            got = await dapr.GetMetadata(metadata_pb2.GetMetadataRequest())
            if not [s for s in got.subscriptions if s.topic == "listed"]:
                break
            await anyio.sleep(0.02)


async def test_stream_handshake_errors(dapr: dapr_pb2_grpc.DaprStub) -> None:
    call = dapr.SubscribeTopicEventsAlpha1()
    await call.write(
        pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
            event_processed=pubsub_pb2.SubscribeTopicEventsRequestProcessedAlpha1(id="x")
        )
    )
    await expect(call.read(), grpc.StatusCode.INVALID_ARGUMENT, "initial request is required")
    async with topic_stream(dapr, "solo"):
        second = dapr.SubscribeTopicEventsAlpha1()
        await second.write(
            pubsub_pb2.SubscribeTopicEventsRequestAlpha1(
                initial_request=pubsub_pb2.SubscribeTopicEventsRequestInitialAlpha1(
                    pubsub_name=PUBSUB, topic="solo"
                )
            )
        )
        await expect(second.read(), grpc.StatusCode.INVALID_ARGUMENT, "already subscribed")


async def test_publish_errors_carry_daprs_reasons(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = await expect(
        dapr.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name="nope", topic="t")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "pubsub nope not found",
    )
    assert reason(err) == "DAPR_PUBSUB_NOT_FOUND"
    err = await expect(
        dapr.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name=PUBSUB, topic="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "topic is empty",
    )
    assert reason(err) == "DAPR_PUBSUB_TOPIC_NAME_EMPTY"
    err = await expect(
        dapr.PublishEvent(pubsub_pb2.PublishEventRequest(pubsub_name="", topic="t")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "pubsub name is empty",
    )
    assert reason(err) == "DAPR_PUBSUB_NAME_EMPTY"


# -- bulk publish --------------------------------------------------------------------------


def entry(entry_id: str, event: bytes, content_type: str, **metadata: str) -> Any:
    return pubsub_pb2.BulkPublishRequestEntry(
        entry_id=entry_id, event=event, content_type=content_type, metadata=metadata
    )


async def test_bulk_publish_lists_the_one_bad_entry(dapr: dapr_pb2_grpc.DaprStub) -> None:
    async with topic_stream(dapr, "bulk") as stream:
        response = await dapr.BulkPublishEvent(
            pubsub_pb2.BulkPublishRequest(
                pubsub_name=PUBSUB,
                topic="bulk",
                entries=[
                    entry("e1", b'{"n": 1}', "application/json"),
                    # Declared a CloudEvent, but it is not JSON: this entry alone fails.
                    entry("e2", b"not json", "application/cloudevents+json"),
                    entry("e3", b"three", "text/plain", **{"cloudevent.id": "id-3"}),
                ],
                metadata={"cloudevent.source": "bulk-source"},
            ),
            timeout=10,
        )
        events = []
        for _ in range(2):
            events.append(await stream.next_event())
            await stream.ack(events[-1].id)  # the in-memory broker delivers one at a time
    assert [(f.entry_id, "CloudEvent" in f.error) for f in response.failedEntries] == [("e2", True)]
    by_data = {e.data: e for e in events}
    assert set(by_data) == {b'{"n":1}', b"three"}
    # Each entry has its own content type and metadata, over the request's metadata.
    assert by_data[b"three"].data_content_type == "text/plain"
    assert by_data[b"three"].id == "id-3"
    assert {e.source for e in events} == {"bulk-source"}
    assert {e.type for e in events} == {"com.dapr.event.sent.bulk"}


async def test_bulk_publish_alpha1_and_request_errors(dapr: dapr_pb2_grpc.DaprStub) -> None:
    ok = await dapr.BulkPublishEventAlpha1(
        pubsub_pb2.BulkPublishRequest(
            pubsub_name=PUBSUB, topic="alpha", entries=[entry("a", b"x", "text/plain")]
        )
    )
    assert not ok.failedEntries
    await expect(
        dapr.BulkPublishEvent(
            pubsub_pb2.BulkPublishRequest(
                pubsub_name=PUBSUB,
                topic="dup",
                entries=[entry("a", b"x", "text/plain"), entry("a", b"y", "text/plain")],
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "entries[1].entry_id",
    )
    err = await expect(
        dapr.BulkPublishEvent(
            pubsub_pb2.BulkPublishRequest(
                pubsub_name="nope", topic="t", entries=[entry("a", b"x", "text/plain")]
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert reason(err) == "DAPR_PUBSUB_NOT_FOUND"


# -- configuration -------------------------------------------------------------------------


async def save_config(sidecar: Sidecar, key: str, content: str) -> None:
    """Writes through the Layotto API, which has the app id and a writable store."""
    channel = sidecar.channel()
    try:
        await pb.RuntimeStub(channel, timeout=10).save_configuration(
            pb.SaveConfigurationRequest(
                store_name=CONFIGS,
                app_id=APP,
                items=[pb.ConfigurationItem(key=key, content=content)],
            )
        )
    finally:
        channel.close()


def subscribe_request(*keys: str) -> Any:
    return configuration_pb2.SubscribeConfigurationRequest(store_name=CONFIGS, keys=list(keys))


async def read(call: Any, within: float = 10.0) -> Any:
    with anyio.fail_after(within):
        return await call.read()


async def test_get_configuration_stable_and_alpha1() -> None:
    async with dapr_stub() as (sidecar, dapr):
        await save_config(sidecar, "feature-x", "on")
        for method in (dapr.GetConfiguration, dapr.GetConfigurationAlpha1):
            got = await method(
                configuration_pb2.GetConfigurationRequest(
                    store_name=CONFIGS, keys=["feature-x", "absent"]
                )
            )
            assert {k: v.value for k, v in got.items.items()} == {"feature-x": "on"}
        everything = await dapr.GetConfiguration(
            configuration_pb2.GetConfigurationRequest(store_name=CONFIGS)
        )
        assert "feature-x" in everything.items


async def test_config_stream_sends_its_id_first_and_unsubscribe_ends_it() -> None:
    async with dapr_stub() as (sidecar, dapr):
        call = dapr.SubscribeConfigurationAlpha1(subscribe_request("k"))
        first = await read(call)
        # The SDK waits for this message (its id), and it carries nothing else.
        assert first.id
        assert not first.items
        await save_config(sidecar, "k", "v1")
        await save_config(sidecar, "other", "ignored")
        await save_config(sidecar, "k", "v2")
        changes = [await read(call), await read(call)]
        assert [(c.id, c.items["k"].value) for c in changes] == [(first.id, "v1"), (first.id, "v2")]
        done = await dapr.UnsubscribeConfiguration(
            configuration_pb2.UnsubscribeConfigurationRequest(store_name=CONFIGS, id=first.id)
        )
        assert done.ok
        # The server ends the stream (the SDK never cancels it).
        assert await read(call) is grpc.aio.EOF
        assert await call.code() is grpc.StatusCode.OK
        again = await dapr.UnsubscribeConfigurationAlpha1(
            configuration_pb2.UnsubscribeConfigurationRequest(store_name=CONFIGS, id=first.id)
        )
        assert not again.ok
        assert first.id in again.message


async def test_stable_subscribe_configuration_too() -> None:
    async with dapr_stub() as (sidecar, dapr):
        call = dapr.SubscribeConfiguration(subscribe_request())
        first = await read(call)
        await save_config(sidecar, "any", "1")
        change = await read(call)
        assert change.id == first.id
        assert change.items["any"].value == "1"
        call.cancel()


async def test_config_stream_errors() -> None:
    async with dapr_stub() as (_, dapr):
        call = dapr.SubscribeConfigurationAlpha1(
            configuration_pb2.SubscribeConfigurationRequest(store_name="nope")
        )
        await expect(read(call), grpc.StatusCode.INVALID_ARGUMENT, "'nope' is not found")


# -- the API token on the configuration stream ---------------------------------------------


async def test_config_subscribe_needs_the_token_by_default() -> None:
    async with dapr_stub(api_token=TOKEN) as (_, dapr):
        # As the SDK sends it: no token on a server stream.
        call = dapr.SubscribeConfigurationAlpha1(subscribe_request("k"))
        await expect(read(call), grpc.StatusCode.UNAUTHENTICATED, "missing api token")
        with_token = dapr.SubscribeConfigurationAlpha1(
            subscribe_request("k"), metadata=(("dapr-api-token", TOKEN),)
        )
        assert (await read(with_token)).id
        with_token.cancel()


async def test_tokenless_config_subscribe_lets_only_those_streams_through() -> None:
    config = CONFIG.with_overrides(allow_tokenless_config_subscribe=True)
    async with dapr_stub(config=config, api_token=TOKEN) as (_, dapr):
        for method in (dapr.SubscribeConfigurationAlpha1, dapr.SubscribeConfiguration):
            call = method(subscribe_request("k"))
            assert (await read(call)).id
            call.cancel()
        # A wrong token is still refused, and every other call still needs one.
        wrong = dapr.SubscribeConfigurationAlpha1(
            subscribe_request("k"), metadata=(("dapr-api-token", "wrong"),)
        )
        await expect(read(wrong), grpc.StatusCode.UNAUTHENTICATED, "api token mismatch")
        await expect(
            dapr.GetConfiguration(configuration_pb2.GetConfigurationRequest(store_name=CONFIGS)),
            grpc.StatusCode.UNAUTHENTICATED,
        )


async def test_draining_ends_the_config_and_topic_streams_with_unavailable() -> None:
    async with dapr_stub() as (sidecar, dapr), topic_stream(dapr, "drained") as stream:
        call = dapr.SubscribeConfigurationAlpha1(subscribe_request("k"))
        assert (await read(call)).id
        sidecar.runtime.shutdown.set()
        # The client subscribes again (to this sidecar's successor).
        await expect(read(call), grpc.StatusCode.UNAVAILABLE, "shutting down")
        await expect(stream.call.read(), grpc.StatusCode.UNAVAILABLE, "shutting down")
