"""`pubsub.redis` (Redis Streams): metadata, the Dapr layout, at-least-once, redelivery, outage.

Integration tests run on the private redis-server (the session's, or their own where they stop
it). Every test uses its own topic.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio
import pytest
from layotto.plugin import (
    BackendUnavailable,
    BulkPublishEntry,
    BulkPublishRequest,
    ComponentContext,
    HealthStatus,
    InvalidArgument,
    Kind,
    Message,
    PublishRequest,
    PubSubFeature,
    SubscribeRequest,
    Subscription,
)
from layotto_redis import RedisPubSub, RedisPubSubMetadata
from layotto_redis.plugin import layotto_components
from layotto_redis.pubsub import RECEIVE_RETRY_WINDOW, decode_fields, encode_fields
from layotto_redis.settings import create_client
from layotto_redis_test_support import ComponentFactory, RedisServer, free_port
from pydantic import ValidationError
from redis.asyncio import Redis

pytestmark = pytest.mark.anyio

DETECT_WITHIN = 2.0  # the sidecar polls health every second: failures show within 2 s
CLOSE_BOUND = 2.0


def new_topic() -> str:
    return f"topic-{uuid.uuid4().hex[:12]}"


def fields_in(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


async def receive_within(subscription: Subscription, seconds: float) -> Message | None:
    with anyio.move_on_after(seconds):
        return await subscription.receive()
    return None


async def receive_n(subscription: Subscription, n: int, seconds: float = 3.0) -> list[Message]:
    got: list[Message] = []
    with anyio.fail_after(seconds):
        while len(got) < n:
            got.append(await subscription.receive())
    return got


async def timed(call: Callable[[], Awaitable[object]]) -> tuple[float, BaseException | None]:
    start = time.monotonic()
    try:
        await call()
    except Exception as err:
        return time.monotonic() - start, err
    return time.monotonic() - start, None


async def wait_until_up(pubsub: RedisPubSub) -> None:
    deadline = time.monotonic() + DETECT_WITHIN
    while (await pubsub.check_health()).status is not HealthStatus.UP:
        assert time.monotonic() < deadline, "health never became UP"
        await anyio.sleep(0.05)


def assert_clean(message: str, server: RedisServer) -> None:
    assert "127.0.0.1" not in message, message
    assert str(server.port) not in message, message


@pytest.fixture
async def raw(redis_server: RedisServer) -> AsyncIterator[Redis]:
    """A plain client on the session's server, for checks that bypass the component."""
    client = Redis(host="127.0.0.1", port=redis_server.port)
    yield client
    await client.aclose()


async def pending(raw: Redis, topic: str, group: str) -> dict[str, str]:
    """entry id -> consumer, for every pending entry of the group."""
    rows: Any = await raw.xpending_range(topic, group, min="-", max="+", count=1000)
    return {r["message_id"].decode(): r["consumer"].decode() for r in rows}


# -- metadata (no server) --------------------------------------------------------------------


def test_defaults() -> None:
    m = RedisPubSubMetadata.model_validate({"redisHost": "localhost:6379"})
    assert m.consumer_id == ""
    assert m.consumer_name == ""
    assert m.processing_timeout == 60.0
    assert m.redeliver_interval == 60.0
    assert m.max_len is None
    assert m.concurrency == 10
    assert m.queue_depth == 100
    assert m.redelivery is True


def test_dapr_names_as_strings() -> None:
    m = RedisPubSubMetadata.model_validate(
        {
            "redisHost": "redis:6380",
            "redisPassword": "pw",
            "redisDB": "2",
            "consumerID": " orders ",
            "processingTimeout": "1m30s",
            "redeliverInterval": "5000",  # a bare number is milliseconds, as Dapr documents
            "maxLenApprox": "1000",
            "concurrency": "1",
            "queueDepth": "5",
        }
    )
    assert (m.host, m.port, m.redis_db, m.password) == ("redis", 6380, 2, "pw")
    assert m.consumer_id == "orders"
    assert m.processing_timeout == 90.0
    assert m.redeliver_interval == 5.0
    assert m.max_len == 1000
    assert (m.concurrency, m.queue_depth) == (1, 5)
    assert RedisPubSubMetadata.model_validate(
        {"redisHost": "h:1", "processingTimeout": 250, "redeliverInterval": "200ms"}
    ).processing_timeout == pytest.approx(0.25)
    off = RedisPubSubMetadata.model_validate(
        {"redisHost": "h:1", "redeliverInterval": "0", "maxLenApprox": "0"}
    )
    assert off.redelivery is False
    assert off.max_len is None  # 0 = no trimming, as in Dapr
    assert (
        RedisPubSubMetadata.model_validate({"redisHost": "h:1", "maxLenApprox": ""}).max_len is None
    )


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"processingTimeout": "soon"}, "processingTimeout"),
        ({"processingTimeout": "-1s"}, "processingTimeout"),
        ({"redeliverInterval": "5 s"}, "redeliverInterval"),
        ({"concurrency": "0"}, "concurrency"),
        ({"concurrency": "1.5"}, "concurrency"),
        ({"queueDepth": "many"}, "queueDepth"),
        ({"queueDepth": "0"}, "queueDepth"),
        ({"maxLenApprox": "-5"}, "maxLenApprox"),
        ({"maxLenApprox": "lots"}, "maxLenApprox"),
        ({"redisHost": "no-port"}, "redisHost"),
    ],
)
def test_errors_name_the_field(metadata: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RedisPubSubMetadata.model_validate({"redisHost": "localhost:6379", **metadata})
    assert fields_in(info.value) == {field}


def test_consumer_defaults_to_the_app_id() -> None:
    meta = RedisPubSubMetadata.model_validate({"redisHost": "h:1"})
    component = RedisPubSub(meta, ComponentContext("pubsub", "checkout"))
    assert (component.consumer_id, component.consumer_name) == ("checkout", "checkout")
    named = RedisPubSubMetadata.model_validate(
        {"redisHost": "h:1", "consumerID": "g", "consumerName": "pod-1"}
    )
    component = RedisPubSub(named, ComponentContext("pubsub", "checkout"))
    assert (component.consumer_id, component.consumer_name) == ("g", "pod-1")


async def test_no_app_id_and_no_consumer_id_fails_init() -> None:
    meta = RedisPubSubMetadata.model_validate({"redisHost": "127.0.0.1:1"})
    component = RedisPubSub(meta, ComponentContext("pubsub", ""))
    with pytest.raises(InvalidArgument, match="consumerID"):
        await component.init()


def test_registered() -> None:
    specs = {s.qualified_type: s for s in layotto_components()}
    spec = specs["pubsub.redis"]
    assert spec.kind is Kind.PUBSUB
    assert spec.metadata_model is RedisPubSubMetadata
    assert spec.create.__self__ is RedisPubSub  # type: ignore[attr-defined]


def test_fields_layout() -> None:
    fields = encode_fields(PublishRequest("t", b"\x00payload", {"k": "v", "traceid": "x"}))
    assert fields == {"data": b"\x00payload", "metadata": '{"k":"v","traceid":"x"}'}
    assert encode_fields(PublishRequest("t", b"p")) == {"data": b"p"}
    # Dapr's JSON metadata, plus any other field of an entry written by someone else.
    assert decode_fields(
        {b"data": b"d", b"metadata": b'{"a":"1","n":2}', b"extra": b"x", b"a": b"plain"}
    ) == (b"d", {"a": "1", "n": "2", "extra": "x"})
    assert decode_fields({b"metadata": b"not json"}) == (b"", {"metadata": "not json"})


# -- against the server ----------------------------------------------------------------------


@pytest.mark.integration
async def test_round_trip_with_metadata(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    assert pubsub.consumer_id == "app"  # the app id of the fixture's context
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    assert sub.concurrency == 10
    for i in range(3):
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode(), {"n": str(i), "k": "v"}))
    got = await receive_n(sub, 3)
    assert [m.data for m in got] == [b"m0", b"m1", b"m2"]
    assert [m.metadata for m in got] == [{"n": str(i), "k": "v"} for i in range(3)]
    assert all(m.topic == topic and m.ordering_key is None for m in got)
    # ref = the stream entry id, in order
    entries: Any = await raw.xrange(topic)
    assert [m.ref for m in got] == [e[0].decode() for e in entries]
    assert set(await pending(raw, topic, "app")) == {m.ref for m in got}
    for m in got:
        await m.ack()
    assert await pending(raw, topic, "app") == {}
    # Dapr's layout on the wire.
    _, fields = entries[0]
    assert fields == {b"data": b"m0", b"metadata": b'{"n":"0","k":"v"}'}


@pytest.mark.integration
async def test_reads_entries_written_by_others(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    topic = new_topic()
    await raw.xadd(topic, {"data": b"before", "source": "cli"})  # the new group starts at 0
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    await raw.xadd(topic, {"data": b"after", "metadata": '{"a":"b"}'})
    first, second = await receive_n(sub, 2)
    assert (first.data, first.metadata) == (b"before", {"source": "cli"})
    assert (second.data, second.metadata) == (b"after", {"a": "b"})


@pytest.mark.integration
async def test_max_len_approx_trims(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server, maxLenApprox="10")
    topic = new_topic()
    for i in range(600):
        await pubsub.publish(PublishRequest(topic, str(i).encode()))
    length = await raw.xlen(topic)
    # `~` trims whole radix-tree nodes (100 entries each by default): never below 10.
    assert 10 <= length < 300, length
    untrimmed: RedisPubSub = await make_component("pubsub", redis_server)
    other = new_topic()
    for i in range(150):
        await untrimmed.publish(PublishRequest(other, str(i).encode()))
    assert await raw.xlen(other) == 150


@pytest.mark.integration
async def test_unacked_come_back_to_the_next_subscription(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    # No reclaim at all: what comes back comes from the re-read of the consumer's own PEL.
    pubsub: RedisPubSub = await make_component("pubsub", redis_server, redeliverInterval="0")
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    for i in range(5):
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode()))
    got = await receive_n(sub, 5)
    await got[0].ack()
    await got[2].ack()
    await sub.close()
    await sub.close()  # idempotent

    again = await pubsub.subscribe(SubscribeRequest(topic))
    start = time.monotonic()
    back = await receive_n(again, 3)
    assert time.monotonic() - start < 0.5  # at once, not after a BLOCK or a reclaim
    assert [m.data for m in back] == [b"m1", b"m3", b"m4"]
    assert [m.ref for m in back] == [got[1].ref, got[3].ref, got[4].ref]
    assert await receive_within(again, 0.3) is None  # the acked ones do not come back
    await pubsub.publish(PublishRequest(topic, b"new"))
    (new,) = await receive_n(again, 1)
    assert new.data == b"new"
    for m in [*back, new]:
        await m.ack()
    assert await pending(raw, topic, "app") == {}


@pytest.mark.integration
async def test_an_ack_after_close_still_counts(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"x"))
    (message,) = await receive_n(sub, 1)
    await sub.close()
    with pytest.raises(BackendUnavailable, match="closed"):
        await sub.receive()
    await message.ack()
    assert await pending(raw, topic, "app") == {}


@pytest.mark.integration
async def test_reclaims_what_another_consumer_left_pending(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    topic = new_topic()
    group = f"g-{uuid.uuid4().hex[:8]}"
    await raw.xgroup_create(topic, group, id="0", mkstream=True)
    await raw.xadd(topic, {"data": b"orphan"})
    await raw.xadd(topic, {"data": b"deleted"})
    # Another consumer of the group read both and died without acking.
    read: Any = await raw.xreadgroup(group, "dead-replica", {topic: ">"}, count=10)
    read_at = time.monotonic()
    orphan_id, deleted_id = (e[0].decode() for e in read[0][1])
    await raw.xdel(topic, deleted_id)
    assert set(await pending(raw, topic, group)) == {orphan_id, deleted_id}

    pubsub: RedisPubSub = await make_component(
        "pubsub",
        redis_server,
        consumerID=group,
        processingTimeout="200ms",
        redeliverInterval="100ms",
    )
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    start = time.monotonic()
    (message,) = await receive_n(sub, 1)
    assert (message.data, message.ref) == (b"orphan", orphan_id)
    # Once it was idle for processingTimeout, within a redeliverInterval or so.
    assert time.monotonic() - read_at > 0.15
    assert time.monotonic() - start < 1.5
    # Now ours; the deleted entry was acked away.
    assert await pending(raw, topic, group) == {orphan_id: group}

    # In flight (received, not acked) for several reclaim rounds: never delivered twice.
    assert await receive_within(sub, 0.8) is None
    await message.ack()
    assert await pending(raw, topic, group) == {}


@pytest.mark.integration
async def test_a_failed_ack_is_reclaimed(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    """The sidecar is done with a message once it acked (even if the ack failed): the entry
    is no longer in flight, so the reclaim delivers it again."""
    pubsub: RedisPubSub = await make_component(
        "pubsub", redis_server, processingTimeout="200ms", redeliverInterval="100ms"
    )
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    await pubsub.publish(PublishRequest(topic, b"x"))
    (message,) = await receive_n(sub, 1)
    working = pubsub._client
    # Nothing listens there: the XACK fails at once.
    nowhere = create_client(
        RedisPubSubMetadata.model_validate({"redisHost": f"127.0.0.1:{free_port()}"}),
        max_retries=0,
    )
    pubsub._client = nowhere
    try:
        with pytest.raises(BackendUnavailable):
            await message.ack()
    finally:
        pubsub._client = working
        await nowhere.aclose()
    # No longer in flight: once idle for processingTimeout, the reclaim delivers it again.
    (again,) = await receive_n(sub, 1)
    assert again.ref == message.ref
    await again.ack()
    assert await pending(raw, topic, "app") == {}


@pytest.mark.integration
async def test_a_lost_group_is_created_again(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    await raw.delete(topic)  # stream and group gone, as after a restart without persistence
    await pubsub.publish(PublishRequest(topic, b"after"))
    (message,) = await receive_n(sub, 1)
    assert message.data == b"after"


@pytest.mark.integration
@pytest.mark.parametrize(("concurrency", "key"), [("1", ""), ("4", None)])
async def test_concurrency_and_ordering_key(
    make_component: ComponentFactory,
    redis_server: RedisServer,
    concurrency: str,
    key: str | None,
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server, concurrency=concurrency)
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    assert sub.concurrency == int(concurrency)
    for i in range(3):
        await pubsub.publish(PublishRequest(topic, str(i).encode()))
    got = await receive_n(sub, 3)
    assert [m.ordering_key for m in got] == [key] * 3
    assert [m.data for m in got] == [b"0", b"1", b"2"]


@pytest.mark.integration
async def test_subscription_metadata_overrides_the_group(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server, queueDepth="2")
    topic = new_topic()
    one = await pubsub.subscribe(SubscribeRequest(topic))
    two = await pubsub.subscribe(SubscribeRequest(topic, {"consumerID": "audit"}))
    groups = {g["name"].decode() for g in await raw.xinfo_groups(topic)}
    assert groups == {"app", "audit"}
    for i in range(5):  # more than one read's worth (queueDepth 2)
        await pubsub.publish(PublishRequest(topic, str(i).encode()))
    # Two groups: each gets every message.
    assert [m.data for m in await receive_n(one, 5)] == [str(i).encode() for i in range(5)]
    assert [m.data for m in await receive_n(two, 5)] == [str(i).encode() for i in range(5)]
    # Two consumers of one group (consumerName): each entry goes to one of them.
    a = await pubsub.subscribe(SubscribeRequest(topic, {"consumerID": "work", "consumerName": "a"}))
    b = await pubsub.subscribe(SubscribeRequest(topic, {"consumerID": "work", "consumerName": "b"}))
    got_a = await receive_n(a, 2)
    got_b = await receive_n(b, 3)
    assert sorted(m.data for m in [*got_a, *got_b]) == [str(i).encode() for i in range(5)]
    owners = await pending(raw, topic, "work")
    assert sorted(owners.values()) == ["a", "a", "b", "b", "b"]


@pytest.mark.integration
async def test_closing_the_component_closes_its_subscriptions(
    make_component: ComponentFactory, redis_server: RedisServer
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    sub = await pubsub.subscribe(SubscribeRequest(new_topic()))
    result: list[BaseException] = []

    async def waiting() -> None:
        try:
            await sub.receive()
        except BackendUnavailable as err:
            result.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(waiting)
        await anyio.sleep(0.1)  # blocked in XREADGROUP
        with anyio.fail_after(CLOSE_BOUND):
            await pubsub.close()
    assert len(result) == 1
    with pytest.raises(BackendUnavailable):
        await pubsub.publish(PublishRequest("t", b"x"))
    with pytest.raises(BackendUnavailable):
        await pubsub.subscribe(SubscribeRequest("t"))


@pytest.mark.integration
async def test_outage_and_recovery(
    make_component: ComponentFactory, own_redis_server: RedisServer
) -> None:
    server = own_redis_server
    pubsub: RedisPubSub = await make_component("pubsub", server, redeliverInterval="0")
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    for i in range(5):
        await pubsub.publish(PublishRequest(topic, f"m{i}".encode(), {"i": str(i)}))
    got = await receive_n(sub, 5)
    await got[0].ack()
    await got[1].ack()
    assert server.command("SAVE").startswith(b"+OK")  # the restart loads this snapshot

    async def kill_soon() -> None:
        await anyio.sleep(0.2)
        server.stop()

    # A receive waiting in XREADGROUP when Redis dies gives up within the retry window.
    start = time.monotonic()
    async with anyio.create_task_group() as tg:
        tg.start_soon(kill_soon)
        with anyio.fail_after(6), pytest.raises(BackendUnavailable) as info:
            await sub.receive()
    took = time.monotonic() - start
    assert took < 0.2 + RECEIVE_RETRY_WINDOW + 1.0, took
    assert_clean(info.value.message, server)
    assert "unavailable" in info.value.message

    took, err = await timed(lambda: pubsub.publish(PublishRequest(topic, b"lost")))
    assert isinstance(err, BackendUnavailable), err
    assert took < DETECT_WITHIN, took
    assert_clean(err.message, server)
    health = await pubsub.check_health()
    assert health.status is HealthStatus.DOWN
    assert_clean(health.details["reason"], server)
    # An ack that fails leaves the entry pending: it comes back below.
    took, err = await timed(got[2].ack)
    assert isinstance(err, BackendUnavailable), err
    assert took < DETECT_WITHIN, took
    with anyio.fail_after(CLOSE_BOUND):
        await sub.close()
    took, err = await timed(lambda: pubsub.subscribe(SubscribeRequest(topic)))
    assert isinstance(err, BackendUnavailable), err
    assert took < DETECT_WITHIN, took

    server.start()
    await wait_until_up(pubsub)
    again = await pubsub.subscribe(SubscribeRequest(topic))
    back = await receive_n(again, 3)
    assert [m.ref for m in back] == [m.ref for m in got[2:]]
    assert [m.metadata for m in back] == [{"i": str(i)} for i in (2, 3, 4)]
    assert await receive_within(again, 0.3) is None  # the acked ones stay acked
    for m in back:
        await m.ack()
    await pubsub.publish(PublishRequest(topic, b"after"))
    (after,) = await receive_n(again, 1)
    assert after.data == b"after"


@pytest.mark.integration
async def test_hung_server_ends_the_subscription(
    make_component: ComponentFactory, own_redis_server: RedisServer
) -> None:
    server = own_redis_server
    pubsub: RedisPubSub = await make_component("pubsub", server, readTimeout="200ms")
    sub = await pubsub.subscribe(SubscribeRequest(new_topic()))
    server.pause()
    try:
        start = time.monotonic()
        with anyio.fail_after(8), pytest.raises(BackendUnavailable) as info:
            await sub.receive()
        took = time.monotonic() - start
        # Each read waits BLOCK (1 s) + readTimeout before it counts as lost; the last one
        # starts before the retry window ends.
        assert took < RECEIVE_RETRY_WINDOW + 2 * 1.2 + 0.6, took
        assert "did not answer" in info.value.message
        start = time.monotonic()
        assert (await pubsub.check_health()).status is HealthStatus.DOWN
        assert time.monotonic() - start < 1.0
        with anyio.fail_after(CLOSE_BOUND):
            await sub.close()
    finally:
        server.resume()


# -- bulk publish ----------------------------------------------------------------------------


def bulk(topic: str, count: int) -> BulkPublishRequest:
    return BulkPublishRequest(
        topic,
        [BulkPublishEntry(f"e{i}", f"m{i}".encode(), {"n": str(i)}) for i in range(count)],
    )


@pytest.mark.integration
async def test_bulk_publish_keeps_order_and_dapr_layout(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    assert PubSubFeature.BULK_PUBSUB in pubsub.features
    topic = new_topic()
    sub = await pubsub.subscribe(SubscribeRequest(topic))
    assert await pubsub.publish_bulk(bulk(topic, 50)) == []
    got = await receive_n(sub, 50)
    assert [m.data for m in got] == [f"m{i}".encode() for i in range(50)]
    assert [m.metadata for m in got] == [{"n": str(i)} for i in range(50)]
    entries: Any = await raw.xrange(topic, count=1)
    assert entries[0][1] == {b"data": b"m0", b"metadata": b'{"n":"0"}'}


@pytest.mark.integration
async def test_bulk_publish_lists_each_entry_the_server_refused(
    make_component: ComponentFactory, redis_server: RedisServer, raw: Redis
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", redis_server)
    topic = new_topic()
    await raw.set(topic, "not a stream")  # every XADD of the pipeline answers WRONGTYPE
    failures = await pubsub.publish_bulk(bulk(topic, 3))
    assert [f.entry_id for f in failures] == ["e0", "e1", "e2"]
    assert all("WRONGTYPE" in f.error.message for f in failures), failures[0].error
    assert_clean(failures[0].error.message, redis_server)


@pytest.mark.integration
async def test_bulk_publish_when_redis_is_down_fails_the_call(
    make_component: ComponentFactory, own_redis_server: RedisServer
) -> None:
    pubsub: RedisPubSub = await make_component("pubsub", own_redis_server)
    own_redis_server.stop()
    took, err = await timed(lambda: pubsub.publish_bulk(bulk(new_topic(), 3)))
    assert isinstance(err, BackendUnavailable), err
    assert took < DETECT_WITHIN, took
    assert_clean(err.message, own_redis_server)
