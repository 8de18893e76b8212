"""The in-memory state store against the state conformance checklist (conformance.md §1)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import anyio
import pytest
from layotto.builtin import memory_state
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore, parse_ttl
from layotto.errors import ErrorCategory
from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    BulkStateError,
    ComponentContext,
    Concurrency,
    Consistency,
    DeleteRequest,
    ETagInvalid,
    ETagMismatch,
    Feature,
    GetRequest,
    GetResponse,
    HealthStatus,
    InvalidArgument,
    SetRequest,
    StateStore,
)

pytestmark = pytest.mark.anyio


@pytest.fixture
async def store() -> InMemoryStateStore:
    component = InMemoryStateStore.create(InMemoryStateMetadata(), ComponentContext("s", "app"))
    assert isinstance(component, InMemoryStateStore)
    await component.init()
    return component


@pytest.fixture
def key() -> Callable[[str], str]:
    run = uuid.uuid4().hex[:8]
    return lambda name: f"{run}-{name}"


async def get(store: StateStore, key: str) -> GetResponse | None:
    return await store.get(GetRequest(key))


async def etag_of(store: StateStore, key: str) -> str:
    found = await get(store, key)
    assert found is not None
    assert found.etag
    return found.etag


async def poll_until_missing(store: StateStore, key: str, deadline: float = 3.0) -> float:
    """Poll every 100 ms until the key reads as missing; the seconds it took."""
    start = time.monotonic()
    with anyio.fail_after(deadline):
        while await get(store, key) is not None:  # noqa: ASYNC110 - polling, as the suite asks
            await anyio.sleep(0.1)
    return time.monotonic() - start


class FakeClock:
    """Replaces the wall clock the in-memory store reads, so TTLs can pass instantly."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.now = time.time()
        monkeypatch.setattr(memory_state, "time", self)

    def time(self) -> float:
        return self.now


def expire_time(found: GetResponse | None) -> datetime:
    assert found is not None
    assert TTL_EXPIRE_METADATA in found.metadata
    return datetime.fromisoformat(found.metadata[TTL_EXPIRE_METADATA])


# -- basics --------------------------------------------------------------------------------


async def test_lifecycle_and_health(store: InMemoryStateStore) -> None:
    assert (await store.check_health()).status is HealthStatus.UP
    await store.close()
    await store.close()  # idempotent


@pytest.mark.parametrize(
    "value",
    [b"42", b"true", b"\x01", b'{"a": [1, 2]}', b"plain string", bytes(range(256))],
    ids=["int", "bool", "byte", "json", "text", "binary"],
)
async def test_set_get_round_trip(
    store: InMemoryStateStore, key: Callable[[str], str], value: bytes
) -> None:
    await store.set(SetRequest(key("k"), value))
    found = await get(store, key("k"))
    assert found is not None
    assert found.data == value
    assert found.etag


async def test_json_content_type_round_trips(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    doc = b'{"product": {"value": 3}}'
    await store.set(SetRequest(key("k"), doc, metadata={"contentType": "application/json"}))
    found = await store.get(GetRequest(key("k"), {"contentType": "application/json"}))
    assert found is not None
    assert found.data == doc


async def test_empty_value_is_not_missing(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    await store.set(SetRequest(key("empty"), b""))
    found = await get(store, key("empty"))
    assert found is not None
    assert found.data == b""
    assert await get(store, key("never-set")) is None


async def test_get_with_strong_consistency(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    await store.set(SetRequest(key("k"), b"v", consistency=Consistency.STRONG))
    found = await store.get(GetRequest(key("k"), consistency=Consistency.STRONG))
    assert found is not None
    assert found.data == b"v"


async def test_delete(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    await store.set(SetRequest(key("k"), b"v"))
    await store.delete(DeleteRequest(key("k")))
    assert await get(store, key("k")) is None
    await store.delete(DeleteRequest(key("never-set")))  # deleting a missing key succeeds


async def test_last_write_wins_without_etag(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    for value in (b"1", b"2", b"3"):
        await store.set(SetRequest(key("k"), value))
    found = await get(store, key("k"))
    assert found is not None
    assert found.data == b"3"


# -- bulk ----------------------------------------------------------------------------------


async def test_bulk_set_get_delete(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    keys = [key(f"b{i}") for i in range(4)]
    await store.bulk_set([SetRequest(k, k.encode()) for k in keys])
    items = await store.bulk_get([GetRequest(k) for k in [*keys, key("missing")]])
    assert [i.key for i in items] == [*keys, key("missing")]
    for item in items[:4]:
        assert item.data == item.key.encode()
        assert item.etag  # non-empty ETags after a bulk set
        assert item.error == ""
    missing = items[4]
    assert (missing.data, missing.etag, missing.error) == (None, None, "")

    await store.bulk_delete([DeleteRequest(k) for k in keys])
    assert all(i.data is None for i in await store.bulk_get([GetRequest(k) for k in keys]))


# -- transactions --------------------------------------------------------------------------


async def test_transactions_are_advertised(store: InMemoryStateStore) -> None:
    assert Feature.TRANSACTIONAL in store.features
    assert store.max_operations_per_transaction() is None


async def test_grouped_multi(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    keys = [key(f"t{i}") for i in range(3)]
    await store.multi([SetRequest(k, b"x") for k in keys], {"partitionKey": "p"})
    assert all([await get(store, k) is not None for k in keys])
    await store.multi([DeleteRequest(k) for k in keys], {"partitionKey": "p"})
    assert all([await get(store, k) is None for k in keys])


async def test_multi_deleting_a_missing_key_succeeds(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    await store.multi([DeleteRequest(key("never-set"))], {})
    assert await get(store, key("never-set")) is None


async def test_multi_applies_in_request_order(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k1, k2, k3 = key("k1"), key("k2"), key("k3")
    await store.set(SetRequest(k1, b"value1"))
    await store.multi(
        [
            DeleteRequest(k1),
            SetRequest(k2, b"value2"),
            DeleteRequest(k2),
            SetRequest(k3, b"value3"),
        ],
        {},
    )
    assert await get(store, k1) is None
    assert await get(store, k2) is None
    found = await get(store, k3)
    assert found is not None
    assert found.data == b"value3"


@pytest.mark.parametrize(
    "bad",
    [
        lambda k: SetRequest(k, b"bad", etag="999999"),
        lambda k: DeleteRequest(k, etag="999999"),
        lambda k: SetRequest(k, b"bad", metadata={TTL_METADATA: "foo"}),
    ],
    ids=["set-etag-mismatch", "delete-etag-mismatch", "bad-ttl"],
)
async def test_multi_is_all_or_nothing(
    store: InMemoryStateStore,
    key: Callable[[str], str],
    bad: Callable[[str], SetRequest | DeleteRequest],
) -> None:
    kept, added, target = key("kept"), key("added"), key("target")
    await store.set(SetRequest(kept, b"original"))
    await store.set(SetRequest(target, b"target"))
    etag_before = await etag_of(store, kept)
    with pytest.raises((ETagMismatch, InvalidArgument)):
        await store.multi(
            [SetRequest(added, b"new"), DeleteRequest(kept), SetRequest(kept, b"x"), bad(target)],
            {},
        )
    assert await get(store, added) is None
    found = await get(store, kept)
    assert found is not None
    assert (found.data, found.etag) == (b"original", etag_before)
    target_found = await get(store, target)
    assert target_found is not None
    assert target_found.data == b"target"


# -- ETags ---------------------------------------------------------------------------------


async def test_etags(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    assert Feature.ETAG in store.features
    k = key("k")
    await store.set(SetRequest(k, b"v1"))
    first = await etag_of(store, k)

    with pytest.raises(ETagMismatch) as mismatch:
        await store.set(SetRequest(k, b"v2", etag=str(int(first) + 1000)))
    assert mismatch.value.category is ErrorCategory.ABORTED

    await store.set(SetRequest(k, b"v2", etag=first))
    second = await etag_of(store, k)
    assert second != first

    with pytest.raises(ETagMismatch):
        await store.set(SetRequest(k, b"v3", etag=first))  # stale
    found = await get(store, k)
    assert found is not None
    assert found.data == b"v2"


async def test_an_etag_on_a_missing_key_mismatches(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest(key("absent"), b"v", etag="1"))
    with pytest.raises(ETagMismatch):
        await store.delete(DeleteRequest(key("absent"), etag="1"))


async def test_malformed_etag_is_invalid(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    await store.set(SetRequest(key("k"), b"v"))
    with pytest.raises(ETagInvalid) as invalid:
        await store.set(SetRequest(key("k"), b"v2", etag="not-an-etag"))
    assert invalid.value.category is ErrorCategory.INVALID_ARGUMENT
    with pytest.raises(ETagInvalid):
        await store.delete(DeleteRequest(key("k"), etag="not-an-etag"))


async def test_delete_with_etags(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    k = key("k")
    await store.set(SetRequest(k, b"v"))
    etag = await etag_of(store, k)
    with pytest.raises(ETagMismatch):
        await store.delete(DeleteRequest(k, etag=str(int(etag) + 1000)))
    assert await get(store, k) is not None
    await store.delete(DeleteRequest(k, etag=etag))
    assert await get(store, k) is None


async def test_bulk_set_with_one_bad_etag_partially_succeeds(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    good, bad = key("good"), key("bad")
    await store.bulk_set([SetRequest(good, b"g1"), SetRequest(bad, b"b1")])
    good_etag, bad_etag = await etag_of(store, good), await etag_of(store, bad)

    with pytest.raises(BulkStateError) as info:
        await store.bulk_set(
            [SetRequest(good, b"g2", etag=good_etag), SetRequest(bad, b"b2", etag="999999")]
        )
    assert list(info.value.errors) == [bad]
    assert isinstance(info.value.errors[bad], ETagMismatch)
    assert info.value.category is ErrorCategory.ABORTED
    assert bad in info.value.message
    assert good not in info.value.message

    bad_now = await get(store, bad)
    assert bad_now is not None
    assert (bad_now.data, bad_now.etag) == (b"b1", bad_etag)  # unchanged
    good_now = await get(store, good)
    assert good_now is not None
    assert good_now.data == b"g2"  # updated, not rolled back
    assert good_now.etag != good_etag

    # All valid: succeeds.
    await store.bulk_set(
        [
            SetRequest(good, b"g3", etag=good_now.etag),
            SetRequest(bad, b"b3", etag=bad_now.etag),
        ]
    )
    assert [i.data for i in await store.bulk_get([GetRequest(good), GetRequest(bad)])] == [
        b"g3",
        b"b3",
    ]


async def test_bulk_delete_with_one_bad_etag_partially_succeeds(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    gone, kept = key("gone"), key("kept")
    await store.bulk_set([SetRequest(gone, b"1"), SetRequest(kept, b"2")])
    gone_etag, kept_etag = await etag_of(store, gone), await etag_of(store, kept)

    with pytest.raises(BulkStateError) as info:
        await store.bulk_delete(
            [DeleteRequest(gone, etag=gone_etag), DeleteRequest(kept, etag="999999")]
        )
    assert list(info.value.errors) == [kept]
    assert await get(store, gone) is None
    kept_now = await get(store, kept)
    assert kept_now is not None
    assert (kept_now.data, kept_now.etag) == (b"2", kept_etag)

    await store.bulk_set([SetRequest(gone, b"1")])
    await store.bulk_delete(
        [
            DeleteRequest(gone, etag=await etag_of(store, gone)),
            DeleteRequest(kept, etag=kept_etag),
        ]
    )
    assert await get(store, gone) is None
    assert await get(store, kept) is None


# -- first-write ---------------------------------------------------------------------------


async def test_first_write_without_etag_inserts_only_if_absent(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("fw")
    await store.set(SetRequest(k, b"old"))
    await store.delete(DeleteRequest(k))
    first = SetRequest(
        k, b"v1", concurrency=Concurrency.FIRST_WRITE, consistency=Consistency.STRONG
    )
    await store.set(first)
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest(k, b"v2", concurrency=Concurrency.FIRST_WRITE))
    found = await get(store, k)
    assert found is not None
    assert found.data == b"v1"


async def test_first_write_with_empty_etag_inserts_only_if_absent(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("fw-empty")
    await store.set(SetRequest(k, b"v1", etag="", concurrency=Concurrency.FIRST_WRITE))
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest(k, b"v2", etag="", concurrency=Concurrency.FIRST_WRITE))


async def test_empty_etag_means_no_etag_check(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("empty-etag")
    await store.set(SetRequest(k, b"v1"))
    await store.set(SetRequest(k, b"v2", etag=""))
    found = await get(store, k)
    assert found is not None
    assert found.data == b"v2"
    await store.delete(DeleteRequest(k, etag=""))
    assert await get(store, k) is None


async def test_first_write_with_an_etag(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("fw-etag")
    await store.set(SetRequest(k, b"v1"))
    etag = await etag_of(store, k)
    await store.set(SetRequest(k, b"v2", etag=etag, concurrency=Concurrency.FIRST_WRITE))
    new_etag = await etag_of(store, k)
    assert new_etag != etag
    with pytest.raises(ETagMismatch):
        await store.set(SetRequest(k, b"v3", etag=etag, concurrency=Concurrency.FIRST_WRITE))


# -- TTL -----------------------------------------------------------------------------------


def test_parse_ttl() -> None:
    assert parse_ttl({}) is None
    assert parse_ttl({TTL_METADATA: ""}) is None
    assert parse_ttl({TTL_METADATA: "-1"}) is None
    assert parse_ttl({TTL_METADATA: "0"}) is None  # no expiry, as in Dapr
    assert parse_ttl({TTL_METADATA: "3600"}) == 3600
    for bad in ("foo", "1.5", "-2"):
        with pytest.raises(InvalidArgument, match=TTL_METADATA):
            parse_ttl({TTL_METADATA: bad})


async def test_ttl_not_an_integer_fails(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    assert Feature.TTL in store.features
    with pytest.raises(InvalidArgument) as info:
        await store.set(SetRequest(key("k"), b"v", metadata={TTL_METADATA: "foo"}))
    assert info.value.category is ErrorCategory.INVALID_ARGUMENT
    assert TTL_METADATA in info.value.message
    assert await get(store, key("k")) is None


async def test_ttl_expires(store: InMemoryStateStore, key: Callable[[str], str]) -> None:
    k, forever = key("short"), key("forever")
    await store.set(SetRequest(k, b"v", metadata={TTL_METADATA: "1"}))
    await store.set(SetRequest(forever, b"v"))
    assert await get(store, k) is not None  # readable at once
    took = await poll_until_missing(store, k)
    assert took >= 0.5
    assert (await store.bulk_get([GetRequest(k)]))[0].data is None
    assert await get(store, forever) is not None
    # An expired key is absent for first-write too.
    await store.set(SetRequest(k, b"again", concurrency=Concurrency.FIRST_WRITE))


async def test_ttl_expire_time_is_reported(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("hour")
    await store.set(SetRequest(k, b"v", metadata={TTL_METADATA: "3600"}))
    found = await get(store, k)
    raw = found.metadata[TTL_EXPIRE_METADATA] if found else ""
    assert raw.endswith("Z")  # RFC3339, UTC
    expected = datetime.now(UTC) + timedelta(hours=1)
    assert abs(expire_time(found) - expected) < timedelta(minutes=10)
    item = (await store.bulk_get([GetRequest(k)]))[0]
    assert item.metadata[TTL_EXPIRE_METADATA] == raw


async def test_ttl_minus_one_removes_the_ttl(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    k = key("persist")
    await store.set(SetRequest(k, b"v", metadata={TTL_METADATA: "3600"}))
    expire_time(await get(store, k))
    await store.set(SetRequest(k, b"v2", metadata={TTL_METADATA: "-1"}))
    found = await get(store, k)
    assert found is not None
    assert found.data == b"v2"
    assert TTL_EXPIRE_METADATA not in found.metadata


async def test_set_without_ttl_removes_an_earlier_ttl(
    store: InMemoryStateStore, key: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(monkeypatch)
    k, other = key("reset"), key("other")
    await store.set(SetRequest(k, b"v", metadata={TTL_METADATA: "10"}))
    await store.set(SetRequest(other, b"v", metadata={TTL_METADATA: "10"}))
    await store.set(SetRequest(k, b"v2"))
    found = await get(store, k)
    assert found is not None
    assert TTL_EXPIRE_METADATA not in found.metadata
    clock.now += 11
    assert await get(store, other) is None  # the clock really moved past the first TTL
    assert await get(store, k) is not None


async def test_ttl_is_measured_from_the_last_set(
    store: InMemoryStateStore, key: Callable[[str], str], monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = FakeClock(monkeypatch)
    k = key("renew")
    await store.set(SetRequest(k, b"v", metadata={TTL_METADATA: "10"}))
    clock.now += 8
    await store.set(SetRequest(k, b"v2", metadata={TTL_METADATA: "10"}))
    clock.now += 8
    assert await get(store, k) is not None
    clock.now += 2
    assert await get(store, k) is None


async def test_a_key_without_ttl_has_no_expire_time(
    store: InMemoryStateStore, key: Callable[[str], str]
) -> None:
    await store.set(SetRequest(key("k"), b"v"))
    found = await get(store, key("k"))
    assert found is not None
    assert dict(found.metadata) == {}
