"""`PubSubService.publish_bulk`: the component's native bulk publish (`BULK_PUBSUB`) against the
one-by-one path, on the in-memory component (with and without `bulkPublish`) spied on."""

from __future__ import annotations

import json

import anyio
import pytest
from layotto.builtin.memory_pubsub import InMemoryPubSub
from layotto.errors import InvalidArgument, Unsupported
from layotto.plugin import (
    BackendUnavailable,
    BulkPublishFailure,
    BulkPublishRequest,
    Kind,
    Message,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)
from layotto.services.cloudevents import CLOUDEVENTS_JSON
from layotto.services.pubsub import BulkEntry, BulkFailure, PubSubService
from layotto.testing.conformance._services import registry_with

pytestmark = pytest.mark.anyio

TOPIC = "orders"


class SpyPubSub(InMemoryPubSub):
    """Records which path the service took; fails the entries named in `fail` (natively, as a
    listed failure) or the whole call (`raise_bulk`), or hangs (`hang`)."""

    def __init__(self, *, bulk: bool) -> None:
        super().__init__(app_id="app", bulk_publish=bulk)
        self.singles: list[PublishRequest] = []
        self.bulks: list[BulkPublishRequest] = []
        self.fail: set[str] = set()
        self.raise_bulk: Exception | None = None
        self.hang = False
        self.report_unknown = False

    async def publish(self, request: PublishRequest) -> None:
        self.singles.append(request)
        await super().publish(request)

    async def publish_bulk(self, request: BulkPublishRequest) -> list[BulkPublishFailure]:
        self.bulks.append(request)
        if self.hang:
            await anyio.sleep_forever()
        if self.raise_bulk is not None:
            raise self.raise_bulk
        keep = BulkPublishRequest(
            request.topic, [e for e in request.entries if e.entry_id not in self.fail]
        )
        failures = await super().publish_bulk(keep)
        failures += [
            BulkPublishFailure(e.entry_id, BackendUnavailable(f"{e.entry_id} refused"))
            for e in request.entries
            if e.entry_id in self.fail
        ]
        if self.report_unknown:
            failures.append(BulkPublishFailure("ghost", BackendUnavailable("who?")))
        return failures


def service(pubsub: SpyPubSub, *, timeout: float = 10.0) -> PubSubService:
    return PubSubService(registry_with(Kind.PUBSUB, "pubsub", pubsub), call_timeout=timeout)


def entries(*ids: str, **metadata: str) -> list[BulkEntry]:
    return [BulkEntry(i, f"data-{i}".encode(), "text/plain", dict(metadata)) for i in ids]


async def drain(subscription: Subscription, count: int) -> list[Message]:
    got: list[Message] = []
    with anyio.fail_after(5):
        for _ in range(count):
            message = await subscription.receive()
            await message.ack()
            got.append(message)
    return got


async def test_native_path_sends_every_entry_in_one_call() -> None:
    pubsub = SpyPubSub(bulk=True)
    assert PubSubFeature.BULK_PUBSUB in pubsub.features
    sub = await pubsub.subscribe(SubscribeRequest(TOPIC))
    failures = await service(pubsub).publish_bulk(
        "pubsub", TOPIC, entries("a", "b", "c"), metadata={"shared": "1"}
    )
    assert failures == []
    assert pubsub.singles == []
    (bulk,) = pubsub.bulks
    assert bulk.topic == TOPIC
    assert [e.entry_id for e in bulk.entries] == ["a", "b", "c"]
    messages = await drain(sub, 3)
    events = [json.loads(m.data) for m in messages]
    assert [e["data"] for e in events] == ["data-a", "data-b", "data-c"]
    assert len({e["id"] for e in events}) == 3
    assert all(m.metadata.get("shared") == "1" for m in messages)


async def test_without_the_feature_entries_go_one_by_one() -> None:
    pubsub = SpyPubSub(bulk=False)
    assert PubSubFeature.BULK_PUBSUB not in pubsub.features
    sub = await pubsub.subscribe(SubscribeRequest(TOPIC))
    assert await service(pubsub).publish_bulk("pubsub", TOPIC, entries("a", "b")) == []
    assert pubsub.bulks == []
    assert [json.loads(r.data)["data"] for r in pubsub.singles] == ["data-a", "data-b"]
    assert len(await drain(sub, 2)) == 2


@pytest.mark.parametrize("bulk", [True, False], ids=["native", "one-by-one"])
async def test_both_paths_prepare_entries_alike(bulk: bool) -> None:
    """Each entry gets the envelope and metadata of a single publish, entry metadata over the
    request's; a raw payload goes as it is."""
    pubsub = SpyPubSub(bulk=bulk)
    sub = await pubsub.subscribe(SubscribeRequest(TOPIC))
    batch = [
        BulkEntry("j", b'{"n":1}', "application/json", {"who": "entry"}),
        BulkEntry("r", b"raw bytes", "application/octet-stream", {"rawPayload": "true"}),
        BulkEntry("c", b"x", "text/plain", {"cloudevent.id": "fixed-id"}),
    ]
    failures = await service(pubsub).publish_bulk(
        "pubsub", TOPIC, batch, metadata={"who": "request", "shared": "yes"}
    )
    assert failures == []
    by_data = {m.data: m for m in await drain(sub, 3)}
    raw = by_data.pop(b"raw bytes")
    assert raw.metadata["rawPayload"] == "true"
    assert raw.metadata["cloudevent.id"]  # the id of a raw payload travels as a header
    enveloped = {json.loads(d)["id"]: m for d, m in by_data.items()}
    assert "fixed-id" in enveloped
    for message in enveloped.values():
        event = json.loads(message.data)
        assert event["topic"] == TOPIC
        assert event["pubsubname"] == "pubsub"
        assert message.metadata["shared"] == "yes"
    (json_message,) = [m for m in enveloped.values() if json.loads(m.data)["data"] == {"n": 1}]
    assert json_message.metadata["who"] == "entry"
    sent = pubsub.bulks[0].entries if bulk else pubsub.singles
    assert [e.content_type for e in sent] == [
        CLOUDEVENTS_JSON,
        "application/octet-stream",
        CLOUDEVENTS_JSON,
    ]


async def test_partial_failure_names_exactly_the_failed_entries_in_entry_order() -> None:
    pubsub = SpyPubSub(bulk=True)
    pubsub.fail = {"d", "b"}
    sub = await pubsub.subscribe(SubscribeRequest(TOPIC))
    batch = entries("a", "b")
    # Declared a CloudEvent but not JSON: fails while being prepared, never sent.
    batch.append(BulkEntry("bad", b"not json", CLOUDEVENTS_JSON))
    batch += entries("c", "d")
    failures = await service(pubsub).publish_bulk("pubsub", TOPIC, batch)
    assert [f.entry_id for f in failures] == ["b", "bad", "d"]
    assert failures[0] == BulkFailure("b", "b refused")
    assert "CloudEvent" in failures[1].error
    assert [e.entry_id for e in pubsub.bulks[0].entries] == ["a", "b", "c", "d"]
    delivered = [json.loads(m.data)["data"] for m in await drain(sub, 2)]
    assert delivered == ["data-a", "data-c"]


async def test_a_component_that_raises_fails_every_entry_it_was_given() -> None:
    pubsub = SpyPubSub(bulk=True)
    pubsub.raise_bulk = BackendUnavailable("the broker is gone")
    batch = [*entries("a"), BulkEntry("bad", b"{", CLOUDEVENTS_JSON), *entries("b")]
    failures = await service(pubsub).publish_bulk("pubsub", TOPIC, batch)
    assert [f.entry_id for f in failures] == ["a", "bad", "b"]
    assert failures[0].error == failures[2].error == "the broker is gone"
    assert "CloudEvent" in failures[1].error


async def test_a_foreign_exception_is_answered_generically() -> None:
    pubsub = SpyPubSub(bulk=True)
    pubsub.raise_bulk = RuntimeError("secret-host:9092 exploded")
    failures = await service(pubsub).publish_bulk("pubsub", TOPIC, entries("a"))
    assert [f.entry_id for f in failures] == ["a"]
    assert "secret-host" not in failures[0].error
    assert "RuntimeError" in failures[0].error


async def test_the_bulk_call_is_bounded_by_the_call_timeout() -> None:
    pubsub = SpyPubSub(bulk=True)
    pubsub.hang = True
    with anyio.fail_after(5):
        failures = await service(pubsub, timeout=0.2).publish_bulk(
            "pubsub", TOPIC, entries("a", "b")
        )
    assert [f.entry_id for f in failures] == ["a", "b"]
    assert all("did not answer in time" in f.error for f in failures)


async def test_an_unknown_entry_id_from_the_component_is_ignored() -> None:
    pubsub = SpyPubSub(bulk=True)
    pubsub.report_unknown = True
    assert await service(pubsub).publish_bulk("pubsub", TOPIC, entries("a")) == []


@pytest.mark.parametrize("bulk", [True, False], ids=["native", "one-by-one"])
async def test_queue_full_fails_only_the_entries_past_the_limit(bulk: bool) -> None:
    pubsub = SpyPubSub(bulk=bulk)
    pubsub._max = 2
    await pubsub.subscribe(SubscribeRequest(TOPIC))
    failures = await service(pubsub).publish_bulk("pubsub", TOPIC, entries("a", "b", "c", "d"))
    assert [f.entry_id for f in failures] == ["c", "d"]
    assert all("maxQueueLength" in f.error for f in failures)


@pytest.mark.parametrize("bulk", [True, False], ids=["native", "one-by-one"])
async def test_an_empty_bulk_is_a_no_op(bulk: bool) -> None:
    pubsub = SpyPubSub(bulk=bulk)
    assert await service(pubsub).publish_bulk("pubsub", TOPIC, []) == []
    assert pubsub.bulks == []
    assert pubsub.singles == []


@pytest.mark.parametrize(
    ("batch", "field"),
    [
        (entries("a", ""), "entries[1].entry_id"),
        (entries("a", "b", "a"), "entries[2].entry_id"),
    ],
)
async def test_bad_entry_ids_fail_the_whole_call(batch: list[BulkEntry], field: str) -> None:
    pubsub = SpyPubSub(bulk=True)
    with pytest.raises(InvalidArgument, match=field.replace("[", r"\[").replace("]", r"\]")):
        await service(pubsub).publish_bulk("pubsub", TOPIC, batch)
    assert pubsub.bulks == []


@pytest.mark.parametrize(
    ("name", "topic", "reason"),
    [("nope", TOPIC, "DAPR_PUBSUB_NOT_FOUND"), ("pubsub", "", "DAPR_PUBSUB_TOPIC_NAME_EMPTY")],
)
async def test_bad_pubsub_or_topic_fails_the_whole_call(name: str, topic: str, reason: str) -> None:
    with pytest.raises(InvalidArgument) as caught:
        await service(SpyPubSub(bulk=True)).publish_bulk(name, topic, entries("a"))
    assert caught.value.reason == reason


class Plain(PubSub):
    async def publish(self, request: PublishRequest) -> None:
        return None

    async def subscribe(self, request: SubscribeRequest) -> Subscription:
        raise NotImplementedError


async def test_the_spi_default_is_unsupported() -> None:
    assert PubSubFeature.BULK_PUBSUB not in Plain.features
    with pytest.raises(Unsupported):
        await Plain().publish_bulk(BulkPublishRequest(TOPIC, []))
