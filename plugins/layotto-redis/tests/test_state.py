"""state.redis against a private redis-server: layout, ETags, TTL, bulk, transactions."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime

import pytest
from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    BulkStateError,
    ComponentError,
    Concurrency,
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    GetRequest,
    InvalidArgument,
    SetRequest,
)
from layotto_redis import RedisStateStore
from layotto_redis_test_support import ComponentFactory, RedisServer

pytestmark = [pytest.mark.anyio, pytest.mark.integration]


async def raw(store: RedisStateStore, key: str) -> dict[bytes, bytes]:
    fields: dict[bytes, bytes] = await store.client.hgetall(key)
    return fields


async def test_features(state: RedisStateStore) -> None:
    assert state.features == {Feature.ETAG, Feature.TRANSACTIONAL, Feature.TTL}
    assert state.max_operations_per_transaction() is None


async def test_round_trip_and_layout(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "k"
    await state.set(SetRequest(key, b"\x00\x01binary\xff"))
    got = await state.get(GetRequest(key))
    assert got is not None
    assert got.data == b"\x00\x01binary\xff"
    assert got.etag == "1"
    assert got.metadata == {}
    # Dapr's layout: a hash with `data` and `version`.
    assert await state.client.type(key) == b"hash"
    assert await raw(state, key) == {b"data": b"\x00\x01binary\xff", b"version": b"1"}
    await state.set(SetRequest(key, b"two"))
    assert await raw(state, key) == {b"data": b"two", b"version": b"2"}


async def test_empty_value_is_not_missing(state: RedisStateStore, prefix: str) -> None:
    await state.set(SetRequest(prefix + "e", b""))
    got = await state.get(GetRequest(prefix + "e"))
    assert got is not None
    assert got.data == b""


async def test_missing_key(state: RedisStateStore, prefix: str) -> None:
    assert await state.get(GetRequest(prefix + "nothing")) is None
    await state.delete(DeleteRequest(prefix + "nothing"))  # no ETag: succeeds


async def test_reads_what_dapr_wrote(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "from-dapr"
    # What Dapr's state.redis leaves behind (HSET data, HINCRBY version; first-write marker).
    await state.client.hset(key, mapping={"data": '"v"', "version": 1, "first-write": 0})
    got = await state.get(GetRequest(key))
    assert got is not None
    assert (got.data, got.etag) == (b'"v"', "1")
    # ...and writes back in a form Dapr reads: the ETag it knows keeps working.
    await state.set(SetRequest(key, b'"w"', etag="1"))
    fields = await raw(state, key)
    assert fields[b"data"] == b'"w"'
    assert fields[b"version"] == b"2"


async def test_etags(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "etag"
    await state.set(SetRequest(key, b"1"))
    got = await state.get(GetRequest(key))
    assert got is not None
    assert got.etag == "1"
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"x", etag="7"))
    await state.set(SetRequest(key, b"2", etag="1"))
    got = await state.get(GetRequest(key))
    assert got is not None
    assert (got.data, got.etag) == (b"2", "2")
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"x", etag="1"))  # stale
    with pytest.raises(ETagMismatch):
        await state.delete(DeleteRequest(key, etag="1"))
    await state.delete(DeleteRequest(key, etag="2"))
    assert await state.get(GetRequest(key)) is None
    # An ETag on a missing key never matches.
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"x", etag="1"))
    with pytest.raises(ETagMismatch):
        await state.delete(DeleteRequest(key, etag="1"))


@pytest.mark.parametrize("etag", ["abc", "1.5", "0x10", " 1", "1a"])
async def test_malformed_etag(state: RedisStateStore, prefix: str, etag: str) -> None:
    await state.set(SetRequest(prefix + "m", b"v"))
    with pytest.raises(ETagInvalid):
        await state.set(SetRequest(prefix + "m", b"x", etag=etag))
    with pytest.raises(ETagInvalid):
        await state.delete(DeleteRequest(prefix + "m", etag=etag))
    got = await state.get(GetRequest(prefix + "m"))
    assert got is not None
    assert got.data == b"v"


async def test_first_write(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "fw"
    fw = Concurrency.FIRST_WRITE
    await state.set(SetRequest(key, b"1", concurrency=fw))
    with pytest.raises(ETagMismatch, match="already exists"):
        await state.set(SetRequest(key, b"2", concurrency=fw))
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"2", etag="", concurrency=fw))
    await state.set(SetRequest(key, b"2", etag="1", concurrency=fw))
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"3", etag="1", concurrency=fw))
    await state.set(SetRequest(key, b"last-write wins"))  # the default: no check
    got = await state.get(GetRequest(key))
    assert got is not None
    assert (got.data, got.etag) == (b"last-write wins", "3")


async def test_concurrent_first_writes_one_wins(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "race"

    async def attempt(i: int) -> bool:
        try:
            await state.set(SetRequest(key, str(i).encode(), concurrency=Concurrency.FIRST_WRITE))
        except ETagMismatch:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(20)))
    assert results.count(True) == 1


async def test_concurrent_etag_updates_lose_nothing(state: RedisStateStore, prefix: str) -> None:
    """Compare-and-set increments from many tasks: the ETag check is atomic on the server."""
    key = prefix + "counter"
    await state.set(SetRequest(key, b"0"))

    async def increment() -> None:
        while True:
            got = await state.get(GetRequest(key))
            assert got is not None
            try:
                await state.set(SetRequest(key, str(int(got.data) + 1).encode(), etag=got.etag))
                return
            except ETagMismatch:
                continue

    await asyncio.gather(*(increment() for _ in range(25)))
    got = await state.get(GetRequest(key))
    assert got is not None
    assert got.data == b"25"


async def test_ttl(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "ttl"
    await state.set(SetRequest(key, b"v", metadata={"ttlInSeconds": "3600"}))
    got = await state.get(GetRequest(key))
    assert got is not None
    expires = datetime.strptime(got.metadata[TTL_EXPIRE_METADATA], "%Y-%m-%dT%H:%M:%SZ")
    ahead = expires.replace(tzinfo=UTC).timestamp() - time.time()
    assert 3500 < ahead <= 3601
    assert 3500_000 < await state.client.pttl(key) <= 3600_000
    # -1 persists
    await state.set(SetRequest(key, b"v", metadata={"ttlInSeconds": "-1"}))
    assert await state.client.ttl(key) == -1
    got = await state.get(GetRequest(key))
    assert got is not None
    assert TTL_EXPIRE_METADATA not in got.metadata
    # absent on a re-set persists too
    await state.set(SetRequest(key, b"v", metadata={"ttlInSeconds": "100"}))
    assert await state.client.ttl(key) > 0
    await state.set(SetRequest(key, b"v"))
    assert await state.client.ttl(key) == -1


async def test_ttl_expiry(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "short"
    await state.set(SetRequest(key, b"v", metadata={"ttlInSeconds": "1"}))
    assert await state.get(GetRequest(key)) is not None
    deadline = time.monotonic() + 3
    while await state.get(GetRequest(key)) is not None:
        assert time.monotonic() < deadline, "the key did not expire"
        await asyncio.sleep(0.1)


@pytest.mark.parametrize("ttl", ["foo", "1.5", "-2"])
async def test_bad_ttl(state: RedisStateStore, prefix: str, ttl: str) -> None:
    with pytest.raises(InvalidArgument, match="ttlInSeconds"):
        await state.set(SetRequest(prefix + "t", b"v", metadata={"ttlInSeconds": ttl}))
    assert await state.get(GetRequest(prefix + "t")) is None


async def test_component_default_ttl(
    make_component: ComponentFactory, redis_server: RedisServer, prefix: str
) -> None:
    store = await make_component("state", redis_server, ttlInSeconds="120")
    await store.set(SetRequest(prefix + "d", b"v"))
    assert 100 < await store.client.ttl(prefix + "d") <= 120
    await store.set(SetRequest(prefix + "d", b"v", metadata={"ttlInSeconds": "-1"}))
    assert await store.client.ttl(prefix + "d") == -1


async def test_bulk(state: RedisStateStore, prefix: str) -> None:
    keys = [prefix + f"b{i}" for i in range(4)]
    await state.bulk_set(
        [SetRequest(k, k.encode(), metadata={"ttlInSeconds": "600"}) for k in keys[:3]]
    )
    items = await state.bulk_get([GetRequest(k) for k in keys])
    assert [i.key for i in items] == keys
    assert [i.data for i in items] == [k.encode() for k in keys[:3]] + [None]
    assert [i.etag for i in items] == ["1", "1", "1", None]
    assert all(TTL_EXPIRE_METADATA in i.metadata for i in items[:3])
    assert all(not i.error for i in items)
    assert await state.bulk_get([]) == []
    await state.bulk_delete([DeleteRequest(k) for k in keys])
    assert all(i.data is None for i in await state.bulk_get([GetRequest(k) for k in keys]))


async def test_bulk_get_reports_a_bad_key_per_item(state: RedisStateStore, prefix: str) -> None:
    await state.client.set(prefix + "string", "not a hash")
    await state.set(SetRequest(prefix + "ok", b"v"))
    items = await state.bulk_get([GetRequest(prefix + "string"), GetRequest(prefix + "ok")])
    assert "WRONGTYPE" in items[0].error
    assert items[0].data is None
    assert items[1].data == b"v"
    with pytest.raises(ComponentError, match="WRONGTYPE"):
        await state.get(GetRequest(prefix + "string"))


async def test_bulk_writes_are_not_transactional(state: RedisStateStore, prefix: str) -> None:
    a, b, c = prefix + "a", prefix + "b", prefix + "c"
    await state.bulk_set([SetRequest(a, b"a1"), SetRequest(b, b"b1")])
    with pytest.raises(BulkStateError) as info:
        await state.bulk_set(
            [
                SetRequest(a, b"a2", etag="1"),
                SetRequest(b, b"b2", etag="9"),
                SetRequest(c, b"c", etag="nope"),
            ]
        )
    assert set(info.value.errors) == {b, c}
    assert isinstance(info.value.errors[b], ETagMismatch)
    assert isinstance(info.value.errors[c], ETagInvalid)
    items = await state.bulk_get([GetRequest(a), GetRequest(b), GetRequest(c)])
    assert [(i.data, i.etag) for i in items] == [(b"a2", "2"), (b"b1", "1"), (None, None)]

    with pytest.raises(BulkStateError) as info:
        await state.bulk_delete([DeleteRequest(a, etag="2"), DeleteRequest(b, etag="5")])
    assert set(info.value.errors) == {b}
    assert await state.get(GetRequest(a)) is None
    assert await state.get(GetRequest(b)) is not None


async def test_multi_applies_in_order(state: RedisStateStore, prefix: str) -> None:
    k1, k2, k3 = prefix + "k1", prefix + "k2", prefix + "k3"
    await state.set(SetRequest(k1, b"x"))
    await state.multi(
        [DeleteRequest(k1), SetRequest(k2, b"v2"), DeleteRequest(k2), SetRequest(k3, b"value3")],
        {"partitionKey": "p"},
    )
    assert await state.get(GetRequest(k1)) is None
    assert await state.get(GetRequest(k2)) is None
    got = await state.get(GetRequest(k3))
    assert got is not None
    assert got.data == b"value3"
    await state.multi([DeleteRequest(prefix + "never-set")], {})
    await state.multi([], {})


async def test_multi_later_ops_see_earlier_ones(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "seq"
    await state.set(SetRequest(key, b"0"))  # version 1
    # set with ETag 1 -> version 2; the next op's ETag 2 must match that simulated version.
    await state.multi(
        [
            SetRequest(key, b"a", etag="1"),
            SetRequest(key, b"b", etag="2"),
            SetRequest(prefix + "new", b"n", concurrency=Concurrency.FIRST_WRITE),
        ],
        {},
    )
    got = await state.get(GetRequest(key))
    assert got is not None
    assert (got.data, got.etag) == (b"b", "3")
    # After a delete in the same transaction, first-write may create the key again.
    await state.multi(
        [DeleteRequest(key), SetRequest(key, b"c", concurrency=Concurrency.FIRST_WRITE)], {}
    )
    got = await state.get(GetRequest(key))
    assert got is not None
    assert (got.data, got.etag) == (b"c", "1")


async def test_multi_is_all_or_nothing(state: RedisStateStore, prefix: str) -> None:
    a, b = prefix + "a", prefix + "b"
    await state.set(SetRequest(a, b"a1"))
    with pytest.raises(ETagMismatch, match="nothing was applied") as info:
        await state.multi(
            [
                SetRequest(a, b"a2", metadata={"ttlInSeconds": "100"}),
                DeleteRequest(prefix + "other"),
                SetRequest(b, b"b1"),
                SetRequest(a, b"a3", etag="1"),  # a is at version 2 by then
            ],
            {},
        )
    assert "operation 4" in info.value.message
    got = await state.get(GetRequest(a))
    assert got is not None
    assert (got.data, got.etag, got.metadata) == (b"a1", "1", {})
    assert await state.get(GetRequest(b)) is None
    # Validation errors stop the transaction before it reaches Redis.
    with pytest.raises(ETagInvalid):
        await state.multi([SetRequest(b, b"b"), SetRequest(a, b"x", etag="bad")], {})
    with pytest.raises(InvalidArgument):
        await state.multi([SetRequest(b, b"b", metadata={"ttlInSeconds": "x"})], {})
    assert await state.get(GetRequest(b)) is None


async def test_multi_ttl(state: RedisStateStore, prefix: str) -> None:
    await state.multi(
        [
            SetRequest(prefix + "t1", b"v", metadata={"ttlInSeconds": "500"}),
            SetRequest(prefix + "t2", b"v"),
        ],
        {},
    )
    assert 400 < await state.client.ttl(prefix + "t1") <= 500
    assert await state.client.ttl(prefix + "t2") == -1


async def test_set_replaces_a_non_hash_key(state: RedisStateStore, prefix: str) -> None:
    key = prefix + "legacy"
    await state.client.set(key, "plain string")
    with pytest.raises(ETagMismatch):
        await state.set(SetRequest(key, b"v", concurrency=Concurrency.FIRST_WRITE))
    await state.set(SetRequest(key, b"v"))
    assert await raw(state, key) == {b"data": b"v", b"version": b"1"}


async def test_scripts_survive_a_script_flush(state: RedisStateStore, prefix: str) -> None:
    await state.client.script_flush()
    await state.set(SetRequest(prefix + "f", b"v"))
    await state.client.script_flush()
    await state.bulk_set([SetRequest(prefix + "g", b"v"), SetRequest(prefix + "h", b"v")])
    await state.client.script_flush()
    await state.multi([DeleteRequest(prefix + "f")], {})
    assert await state.get(GetRequest(prefix + "f")) is None
