"""State-store conformance (conformance.md §1, component level).

Subclass `StateStoreConformance` in a test module (the name must start with `Test`) and provide a
`state_store` fixture that yields an initialised store and closes it on teardown::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import StateStoreConformance

    class TestRedisState(StateStoreConformance):
        @pytest.fixture
        async def state_store(self, redis_url):
            store = RedisStateStore.create(
                RedisStateMetadata(redisHost=...), ComponentContext("s", "app")
            )
            await store.init()
            yield store
            await store.close()

Scenarios marked *(feature X)* in conformance.md are gated on `state_store.features` and skip with
the reason when X is absent; *(without X)* scenarios run only then, and check that X is really
absent. Knobs (class attributes):

- `malformed_etag`: an ETag this store can never produce, which must raise `ETagInvalid`. Set it
  to None when the store accepts any string as an ETag: that scenario is then skipped.
- `first_write`: whether the store implements first-write concurrency. None (the default) means
  "when it declares `Feature.ETAG`" (the SPI has no separate feature for it).

Optional fixture `state_store_bad_metadata`: an async callable that creates and initialises the
store from invalid metadata; the kit expects it to raise. The default (from the `layotto` pytest
plugin) is None, which skips that scenario.

Every test uses keys under a fresh uuid4 prefix (fixture `conformance_prefix`) and deletes them
afterwards. Values are bytes at the SPI: the kit JSON-serialises non-bytes values itself.
"""

from __future__ import annotations

import contextlib
import json
import re
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from datetime import UTC, datetime, timedelta
from typing import ClassVar

import anyio
import pytest

from layotto.errors import ConfigError, ErrorCategory
from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    BulkStateError,
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
    LayottoError,
    QueryRequest,
    QueryResponse,
    SetRequest,
    StateStore,
    TransactionOperation,
    Unsupported,
    parse_query,
)
from layotto.testing.conformance._support import (
    ConformanceBase,
    Names,
    poll_until,
    sleep_until,
)

JSON_METADATA: Mapping[str, str] = {"contentType": "application/json"}
_RFC3339 = re.compile(r"^\d{4}-\d{2}-\d{2}[Tt]\d{2}:\d{2}:\d{2}(\.\d+)?([Zz]|[+-]\d{2}:\d{2})$")

# conformance.md §1 TTL: ttlInSeconds=2 reads as missing within 3 s.
_SHORT_TTL = 2
_SHORT_TTL_DEADLINE = 3.0


def to_bytes(value: object) -> bytes:
    """Bytes pass through raw; anything else is JSON-serialised, as Dapr does on set."""
    return value if isinstance(value, bytes) else json.dumps(value).encode()


def parse_rfc3339(text: str) -> datetime:
    assert _RFC3339.match(text), f"{TTL_EXPIRE_METADATA} {text!r} is not an RFC3339 time"
    fraction = re.search(r"\.(\d+)", text)
    if fraction and len(fraction.group(1)) > 6:  # Go writes nanoseconds; Python takes micros
        text = text.replace(fraction.group(0), "." + fraction.group(1)[:6])
    return datetime.fromisoformat(text.replace("z", "Z").replace("t", "T"))


class StateStoreConformance(ConformanceBase):
    """conformance.md §1 against the `state_store` fixture. See the module docstring."""

    malformed_etag: ClassVar[str | None] = "not-an-etag"
    first_write: ClassVar[bool | None] = None

    # -- fixtures and helpers ----------------------------------------------------------------

    @pytest.fixture
    async def conformance_keys(
        self, state_store: StateStore, conformance_prefix: str
    ) -> AsyncIterator[Names]:
        """`conformance_keys("name")` is a key unique to this test; all are deleted afterwards."""
        keys = Names(conformance_prefix)
        yield keys
        with anyio.move_on_after(10):
            for key in keys.used:
                with contextlib.suppress(LayottoError):
                    await state_store.delete(DeleteRequest(key))

    @staticmethod
    def require(store: StateStore, feature: Feature) -> None:
        if feature not in store.features:
            pytest.skip(f"{type(store).__name__} does not declare Feature.{feature.name}")

    @staticmethod
    def require_absent(store: StateStore, feature: Feature) -> None:
        if feature in store.features:
            pytest.skip(f"{type(store).__name__} declares Feature.{feature.name}")

    def require_first_write(self, store: StateStore) -> None:
        supported = Feature.ETAG in store.features if self.first_write is None else self.first_write
        if not supported:
            pytest.skip(
                f"{type(store).__name__} does not support first-write "
                "(first_write is None and Feature.ETAG is not declared, or first_write = False)"
            )

    @staticmethod
    async def get(store: StateStore, key: str, **metadata: str) -> GetResponse | None:
        return await store.get(GetRequest(key, metadata))

    async def must_get(self, store: StateStore, key: str) -> GetResponse:
        found = await self.get(store, key)
        assert found is not None, f"key {key!r} reads as missing"
        return found

    async def etag_of(self, store: StateStore, key: str) -> str:
        found = await self.must_get(store, key)
        assert found.etag, f"key {key!r} has no ETag"
        return found.etag

    async def stale_and_current_etag(self, store: StateStore, key: str) -> tuple[str, str]:
        """Write `key` twice: the first write's ETag is then a wrong (stale) but well-formed
        ETag for it. The value ends up b"current"."""
        await store.set(SetRequest(key, b"stale"))
        stale = await self.etag_of(store, key)
        await store.set(SetRequest(key, b"current"))
        current = await self.etag_of(store, key)
        assert current != stale, "an overwrite did not change the ETag"
        return stale, current

    # -- basics --------------------------------------------------------------------------------

    async def test_init_and_ping(self, state_store: StateStore) -> None:
        assert isinstance(state_store, StateStore)
        with anyio.fail_after(1):
            health = await state_store.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_init_with_bad_metadata_fails_clearly(
        self, state_store_bad_metadata: Callable[[], Awaitable[object]] | None
    ) -> None:
        if state_store_bad_metadata is None:
            pytest.skip(
                "override the `state_store_bad_metadata` fixture (an async callable that "
                "creates and initialises the store from invalid metadata) to run this"
            )
        with pytest.raises((LayottoError, ConfigError, ValueError)) as info:
            await state_store_bad_metadata()
        assert str(info.value).strip(), "the error has no message"

    async def test_close_is_idempotent(self, state_store: StateStore) -> None:
        with anyio.fail_after(5):
            await state_store.close()
            await state_store.close()  # the fixture's teardown closes it a third time

    @pytest.mark.parametrize(
        "value",
        [42, True, b"\x01", '{"a": [1, "b"]}', "plain string", ""],
        ids=["int", "bool", "byte", "json-looking-string", "string", "empty-string"],
    )
    async def test_set_get_round_trip(
        self, state_store: StateStore, conformance_keys: Names, value: object
    ) -> None:
        key = conformance_keys("value")
        await state_store.set(SetRequest(key, to_bytes(value)))
        found = await self.must_get(state_store, key)
        assert found.data == to_bytes(value)
        if not isinstance(value, bytes):
            assert json.loads(found.data) == value

    async def test_empty_value_is_not_missing(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        key = conformance_keys("empty")
        await state_store.set(SetRequest(key, b""))
        found = await self.get(state_store, key)
        assert found is not None, "an empty value reads as missing"
        assert found.data == b""

    async def test_json_content_type_round_trip(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        key = conformance_keys("json")
        doc = {"product": {"value": 3, "name": "ünïcode"}, "tags": ["a", 1, None, True]}
        await state_store.set(SetRequest(key, to_bytes(doc), metadata=JSON_METADATA))
        found = await self.get(state_store, key, **JSON_METADATA)
        assert found is not None
        assert json.loads(found.data) == doc

    async def test_binary_bytes_round_trip(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        # Dapr gates this on actorStateStore; at this SPI values are bytes, so every store must.
        key = conformance_keys("binary")
        value = bytes(range(256)) + b"\x00\xff\x00" + "☃".encode()
        await state_store.set(SetRequest(key, value))
        assert (await self.must_get(state_store, key)).data == value

    async def test_get_missing_key_returns_no_data(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        assert await self.get(state_store, conformance_keys("never-set")) is None

    async def test_delete(self, state_store: StateStore, conformance_keys: Names) -> None:
        key = conformance_keys("doomed")
        await state_store.set(SetRequest(key, b"v"))
        await state_store.delete(DeleteRequest(key))
        assert await self.get(state_store, key) is None
        await state_store.delete(DeleteRequest(conformance_keys("never-set")))

    async def test_last_write_wins_without_etag(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        key = conformance_keys("lww")
        for value in (b"1", b"2", b"3"):
            await state_store.set(SetRequest(key, value, concurrency=Concurrency.LAST_WRITE))
        assert (await self.must_get(state_store, key)).data == b"3"

    # -- bulk ----------------------------------------------------------------------------------

    async def test_bulk_set_then_every_key_reads_back(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        values = {conformance_keys(f"bulk{i}"): to_bytes({"i": i}) for i in range(5)}
        await state_store.bulk_set([SetRequest(k, v) for k, v in values.items()])
        for key, value in values.items():
            assert (await self.must_get(state_store, key)).data == value

    async def test_bulk_get_one_entry_per_key_and_missing_has_no_error(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        present = [conformance_keys(f"present{i}") for i in range(3)]
        missing = conformance_keys("missing")
        await state_store.bulk_set([SetRequest(k, k.encode()) for k in present])
        requested = [present[0], missing, present[1], present[2]]
        items = await state_store.bulk_get([GetRequest(k) for k in requested])
        assert sorted(item.key for item in items) == sorted(requested)
        by_key = {item.key: item for item in items}
        for key in present:
            assert by_key[key].error == ""
            assert by_key[key].data == key.encode()
        assert by_key[missing].data is None
        assert by_key[missing].error == "", "a missing key is not an error"

    async def test_bulk_delete(self, state_store: StateStore, conformance_keys: Names) -> None:
        keys = [conformance_keys(f"bd{i}") for i in range(3)]
        await state_store.bulk_set([SetRequest(k, b"v") for k in keys])
        await state_store.bulk_delete([DeleteRequest(k) for k in keys])
        for item in await state_store.bulk_get([GetRequest(k) for k in keys]):
            assert item.data is None, f"{item.key} survived bulk delete"
            assert item.error == ""

    # -- transactions --------------------------------------------------------------------------

    async def test_multi_grouped_sets_then_deletes(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TRANSACTIONAL)
        keys = [conformance_keys(f"tx{i}") for i in range(4)]
        metadata = {"partitionKey": "conftest"}
        await state_store.multi([SetRequest(k, to_bytes(k)) for k in keys], metadata)
        for key in keys:
            assert (await self.must_get(state_store, key)).data == to_bytes(key)
        await state_store.multi([DeleteRequest(k) for k in keys], metadata)
        for key in keys:
            assert await self.get(state_store, key) is None, f"{key} survived"

    async def test_multi_deleting_a_missing_key_succeeds(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TRANSACTIONAL)
        await state_store.multi([DeleteRequest(conformance_keys("never-set"))], {})

    async def test_multi_applies_operations_in_order(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TRANSACTIONAL)
        k1, k2, k3 = conformance_keys("k1"), conformance_keys("k2"), conformance_keys("k3")
        await state_store.set(SetRequest(k1, to_bytes("value1")))
        await state_store.multi(
            [
                DeleteRequest(k1),
                SetRequest(k2, to_bytes("value2")),
                DeleteRequest(k2),
                SetRequest(k3, to_bytes("value3")),
            ],
            {},
        )
        assert await self.get(state_store, k1) is None
        assert await self.get(state_store, k2) is None
        assert (await self.must_get(state_store, k3)).data == to_bytes("value3")

    @pytest.mark.parametrize("failing", ["set", "delete"])
    async def test_multi_is_all_or_nothing(
        self, state_store: StateStore, conformance_keys: Names, failing: str
    ) -> None:
        self.require(state_store, Feature.TRANSACTIONAL)
        added, kept, target = (
            conformance_keys("added"),
            conformance_keys("kept"),
            conformance_keys("target"),
        )
        await state_store.set(SetRequest(kept, b"original"))
        kept_etag = (await self.must_get(state_store, kept)).etag
        bad: TransactionOperation
        expected: type[LayottoError]
        if Feature.ETAG in state_store.features:
            stale, _ = await self.stale_and_current_etag(state_store, target)
            if failing == "set":
                bad = SetRequest(target, b"bad", etag=stale)
            else:
                bad = DeleteRequest(target, etag=stale)
            expected = ETagMismatch
        elif Feature.TTL in state_store.features and failing == "set":
            await state_store.set(SetRequest(target, b"current"))
            bad = SetRequest(target, b"bad", metadata={TTL_METADATA: "foo"})
            expected = InvalidArgument
        else:
            pytest.skip("no way to make a transaction operation fail: needs Feature.ETAG")
        with pytest.raises(expected):
            await state_store.multi(
                [
                    SetRequest(added, b"new"),
                    DeleteRequest(kept),
                    SetRequest(kept, b"overwritten"),
                    bad,
                ],
                {},
            )
        assert await self.get(state_store, added) is None, "a failed transaction applied a set"
        kept_now = await self.must_get(state_store, kept)
        assert (kept_now.data, kept_now.etag) == (b"original", kept_etag)
        assert (await self.must_get(state_store, target)).data == b"current"

    async def test_multi_json_serialization(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TRANSACTIONAL)
        self.require(state_store, Feature.QUERY_API)
        doc = {"product": {"value": 7}, "name": "json"}
        with_ct, without_ct = conformance_keys("with-ct"), conformance_keys("without-ct")
        await state_store.multi(
            [
                SetRequest(with_ct, to_bytes(doc), metadata=JSON_METADATA),
                SetRequest(without_ct, to_bytes(doc)),
            ],
            JSON_METADATA,
        )
        for key in (with_ct, without_ct):
            found = await self.get(state_store, key, **JSON_METADATA)
            assert found is not None
            assert json.loads(found.data) == doc

    async def test_without_transactions(self, state_store: StateStore) -> None:
        self.require_absent(state_store, Feature.TRANSACTIONAL)
        assert Feature.TRANSACTIONAL not in state_store.features
        with pytest.raises(Unsupported) as info:
            await state_store.multi([DeleteRequest("conftest-never-applied")], {})
        assert info.value.category is ErrorCategory.UNIMPLEMENTED

    # -- ETags ---------------------------------------------------------------------------------

    async def test_etags_after_bulk_set_are_non_empty(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        keys = [conformance_keys(f"e{i}") for i in range(4)]
        await state_store.bulk_set([SetRequest(k, b"v") for k in keys])
        for key in keys:
            assert await self.etag_of(state_store, key)
        for item in await state_store.bulk_get([GetRequest(k) for k in keys]):
            assert item.etag, f"bulk get returned no ETag for {item.key}"

    async def test_set_with_wrong_etag_mismatches(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        key = conformance_keys("k")
        stale, current = await self.stale_and_current_etag(state_store, key)
        with pytest.raises(ETagMismatch) as info:
            await state_store.set(SetRequest(key, b"rejected", etag=stale))
        assert info.value.category is ErrorCategory.ABORTED
        found = await self.must_get(state_store, key)
        assert (found.data, found.etag) == (b"current", current)

    async def test_set_with_correct_etag_succeeds_and_changes_it(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        key = conformance_keys("k")
        await state_store.set(SetRequest(key, b"v1"))
        first = await self.etag_of(state_store, key)
        await state_store.set(SetRequest(key, b"v2", etag=first))
        found = await self.must_get(state_store, key)
        assert found.data == b"v2"
        assert found.etag
        assert found.etag != first

    async def test_bulk_set_with_one_bad_etag_partially_succeeds(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        good, bad = conformance_keys("good"), conformance_keys("bad")
        await state_store.set(SetRequest(good, b"current"))
        good_etag = await self.etag_of(state_store, good)
        stale, bad_etag = await self.stale_and_current_etag(state_store, bad)
        with pytest.raises(BulkStateError) as info:
            await state_store.bulk_set(
                [SetRequest(good, b"updated", etag=good_etag), SetRequest(bad, b"x", etag=stale)]
            )
        assert list(info.value.errors) == [bad], "expected exactly one per-key error"
        assert isinstance(info.value.errors[bad], ETagMismatch)
        bad_now = await self.must_get(state_store, bad)
        assert (bad_now.data, bad_now.etag) == (b"current", bad_etag), "the bad key changed"
        good_now = await self.must_get(state_store, good)
        assert good_now.data == b"updated", "bulk set rolled back the good key"
        assert good_now.etag != good_etag

    async def test_bulk_set_with_valid_etags_succeeds(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        keys = [conformance_keys(f"v{i}") for i in range(3)]
        await state_store.bulk_set([SetRequest(k, b"1") for k in keys])
        etags = [await self.etag_of(state_store, k) for k in keys]
        await state_store.bulk_set(
            [SetRequest(k, b"2", etag=e) for k, e in zip(keys, etags, strict=True)]
        )
        for key in keys:
            assert (await self.must_get(state_store, key)).data == b"2"

    async def test_delete_with_etag(self, state_store: StateStore, conformance_keys: Names) -> None:
        self.require(state_store, Feature.ETAG)
        key = conformance_keys("k")
        stale, current = await self.stale_and_current_etag(state_store, key)
        with pytest.raises(ETagMismatch):
            await state_store.delete(DeleteRequest(key, etag=stale))
        assert (await self.must_get(state_store, key)).etag == current
        await state_store.delete(DeleteRequest(key, etag=current))
        assert await self.get(state_store, key) is None  # no data and no ETag

    async def test_bulk_delete_with_one_bad_etag_partially_succeeds(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        gone, kept = conformance_keys("gone"), conformance_keys("kept")
        await state_store.set(SetRequest(gone, b"g"))
        gone_etag = await self.etag_of(state_store, gone)
        stale, kept_etag = await self.stale_and_current_etag(state_store, kept)
        with pytest.raises(BulkStateError) as info:
            await state_store.bulk_delete(
                [DeleteRequest(gone, etag=gone_etag), DeleteRequest(kept, etag=stale)]
            )
        assert list(info.value.errors) == [kept], "expected exactly one per-key error"
        assert isinstance(info.value.errors[kept], ETagMismatch)
        assert await self.get(state_store, gone) is None, "bulk delete rolled back the good key"
        kept_now = await self.must_get(state_store, kept)
        assert (kept_now.data, kept_now.etag) == (b"current", kept_etag)

    async def test_bulk_delete_with_valid_etags(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        keys = [conformance_keys("a"), conformance_keys("b")]
        await state_store.bulk_set([SetRequest(k, b"v") for k in keys])
        etags = [await self.etag_of(state_store, k) for k in keys]
        await state_store.bulk_delete(
            [DeleteRequest(k, etag=e) for k, e in zip(keys, etags, strict=True)]
        )
        for key in keys:
            assert await self.get(state_store, key) is None

    async def test_malformed_etag_is_invalid(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.ETAG)
        if self.malformed_etag is None:
            pytest.skip("this store accepts any string as an ETag (malformed_etag = None)")
        key = conformance_keys("k")
        await state_store.set(SetRequest(key, b"v"))
        hint = " (if this store accepts any ETag format, set `malformed_etag = None`)"
        attempts: list[Callable[[], Awaitable[None]]] = [
            lambda: state_store.set(SetRequest(key, b"v2", etag=self.malformed_etag)),
            lambda: state_store.delete(DeleteRequest(key, etag=self.malformed_etag)),
        ]
        for attempt in attempts:
            try:
                await attempt()
            except LayottoError as err:
                error = err
            else:
                pytest.fail(f"ETag {self.malformed_etag!r} was accepted{hint}")
            if not isinstance(error, ETagInvalid):
                pytest.fail(f"expected ETagInvalid, got {type(error).__name__}: {error}{hint}")
            assert error.category is ErrorCategory.INVALID_ARGUMENT
        assert (await self.must_get(state_store, key)).data == b"v"

    async def test_without_etags(self, state_store: StateStore) -> None:
        self.require_absent(state_store, Feature.ETAG)
        assert Feature.ETAG not in state_store.features

    # -- first-write ---------------------------------------------------------------------------

    @pytest.mark.parametrize("etag", [None, ""], ids=["etag-absent", "etag-empty"])
    async def test_first_write_without_etag(
        self, state_store: StateStore, conformance_keys: Names, etag: str | None
    ) -> None:
        self.require_first_write(state_store)
        key = conformance_keys("fw")
        await state_store.set(SetRequest(key, b"old"))
        await state_store.delete(DeleteRequest(key))
        await state_store.set(
            SetRequest(
                key,
                b"first",
                etag=etag,
                concurrency=Concurrency.FIRST_WRITE,
                consistency=Consistency.STRONG,
            )
        )
        with pytest.raises(ETagMismatch):
            await state_store.set(
                SetRequest(key, b"second", etag=etag, concurrency=Concurrency.FIRST_WRITE)
            )
        assert (await self.must_get(state_store, key)).data == b"first"

    async def test_first_write_with_etag(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require_first_write(state_store)
        key = conformance_keys("fw")
        await state_store.set(SetRequest(key, b"v1"))
        first = await self.etag_of(state_store, key)
        await state_store.set(
            SetRequest(key, b"v2", etag=first, concurrency=Concurrency.FIRST_WRITE)
        )
        second = await self.etag_of(state_store, key)
        assert second != first
        with pytest.raises(ETagMismatch):
            await state_store.set(
                SetRequest(key, b"v3", etag=first, concurrency=Concurrency.FIRST_WRITE)
            )
        found = await self.must_get(state_store, key)
        assert (found.data, found.etag) == (b"v2", second)

    # -- TTL -----------------------------------------------------------------------------------

    async def test_ttl_that_is_not_an_integer_fails(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TTL)
        key = conformance_keys("bad-ttl")
        with pytest.raises(InvalidArgument):
            await state_store.set(SetRequest(key, b"v", metadata={TTL_METADATA: "foo"}))
        assert await self.get(state_store, key) is None, "the rejected set was stored"

    async def test_ttl_expires(self, state_store: StateStore, conformance_keys: Names) -> None:
        self.require(state_store, Feature.TTL)
        ttl = {TTL_METADATA: str(_SHORT_TTL)}
        key = conformance_keys("expiring")
        persisted, plain = conformance_keys("ttl-minus-one"), conformance_keys("ttl-reset")
        start = time.monotonic()
        await state_store.set(SetRequest(key, b"v", metadata=ttl))
        # Two keys that lose their TTL again: they must outlive it.
        await state_store.set(SetRequest(persisted, b"p", metadata=ttl))
        await state_store.set(SetRequest(persisted, b"p", metadata={TTL_METADATA: "-1"}))
        await state_store.set(SetRequest(plain, b"p", metadata=ttl))
        await state_store.set(SetRequest(plain, b"p"))
        assert (await self.must_get(state_store, key)).data == b"v", "not readable at once"

        async def gone() -> bool:
            return await self.get(state_store, key) is None

        await poll_until(
            gone,
            deadline=_SHORT_TTL_DEADLINE,
            since=start,
            interval=0.2,
            what=f"a key set with {TTL_METADATA}={_SHORT_TTL} reading as missing",
        )
        await sleep_until(start, _SHORT_TTL + 0.5)
        for survivor in (persisted, plain):
            found = await self.get(state_store, survivor)
            assert found is not None, f"{survivor} expired although its TTL was removed"

    async def test_ttl_expire_time_in_get_and_bulk_get(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.TTL)
        key = conformance_keys("hour")
        await state_store.set(SetRequest(key, b"v", metadata={TTL_METADATA: "3600"}))
        expected = datetime.now(UTC) + timedelta(hours=1)
        found = await self.must_get(state_store, key)
        [item] = await state_store.bulk_get([GetRequest(key)])
        for where, metadata in (("get", found.metadata), ("bulk get", item.metadata)):
            assert TTL_EXPIRE_METADATA in metadata, f"{where} has no {TTL_EXPIRE_METADATA}"
            expires = parse_rfc3339(metadata[TTL_EXPIRE_METADATA])
            assert abs(expires - expected) <= timedelta(minutes=10), (where, expires)

    @pytest.mark.parametrize("reset", ["ttl-minus-one", "no-ttl"])
    async def test_setting_again_removes_the_ttl(
        self, state_store: StateStore, conformance_keys: Names, reset: str
    ) -> None:
        self.require(state_store, Feature.TTL)
        key = conformance_keys("k")
        await state_store.set(SetRequest(key, b"v1", metadata={TTL_METADATA: "3600"}))
        assert TTL_EXPIRE_METADATA in (await self.must_get(state_store, key)).metadata
        metadata = {TTL_METADATA: "-1"} if reset == "ttl-minus-one" else {}
        await state_store.set(SetRequest(key, b"v2", metadata=metadata))
        found = await self.must_get(state_store, key)
        assert found.data == b"v2"
        assert TTL_EXPIRE_METADATA not in found.metadata, "the TTL was not removed"
        [item] = await state_store.bulk_get([GetRequest(key)])
        assert TTL_EXPIRE_METADATA not in item.metadata

    async def test_without_ttl(self, state_store: StateStore, conformance_keys: Names) -> None:
        self.require_absent(state_store, Feature.TTL)
        key = conformance_keys("k")
        await state_store.set(SetRequest(key, b"v"))
        assert TTL_EXPIRE_METADATA not in (await self.must_get(state_store, key)).metadata
        with contextlib.suppress(LayottoError):  # rejecting a TTL is fine; reporting one is not
            await state_store.set(SetRequest(key, b"v", metadata={TTL_METADATA: "3600"}))
        found = await self.get(state_store, key)
        assert found is None or TTL_EXPIRE_METADATA not in found.metadata

    # -- not in the SPI yet --------------------------------------------------------------------

    @pytest.mark.skip(reason="delete-with-prefix is not in the SPI yet (conformance.md §1)")
    async def test_delete_with_prefix(self) -> None:
        """Pending: `prefix||` deletes exactly its direct keys; `||` appended; empty fails."""

    @pytest.mark.skip(reason="keys-like is not in the SPI yet (conformance.md §1)")
    async def test_keys_like(self) -> None:
        """Pending: SQL-LIKE patterns, paging with continuation tokens, expired keys hidden."""

    # -- query -------------------------------------------------------------------------------

    async def _query(
        self, store: StateStore, prefix: str, query: Mapping[str, object]
    ) -> QueryResponse:
        # The kit's prefix plays the sidecar's `<appid>||`: only this test's keys are seen.
        request = QueryRequest(parse_query(json.dumps(query)), prefix, JSON_METADATA)
        with anyio.fail_after(10):
            return await store.query(request)

    async def test_query_capability_is_advertised(self, state_store: StateStore) -> None:
        self.require(state_store, Feature.QUERY_API)
        assert Feature.QUERY_API in state_store.features

    @pytest.mark.parametrize(
        ("filter_", "expected"),
        [
            ({"OR": [{"EQ": {"product.value": 1}}, {"IN": {"product.value": [3, 4]}}]}, "134"),
            (
                {
                    "AND": [
                        {"EQ": {"category": "tools"}},
                        {"GTE": {"product.value": 2}},
                        {"LT": {"product.value": 5}},
                        {"NEQ": {"product.value": 3}},
                    ]
                },
                "24",
            ),
            (
                {
                    "OR": [
                        {"AND": [{"EQ": {"category": "toys"}}, {"LTE": {"product.value": 1}}]},
                        {"AND": [{"EQ": {"category": "tools"}}, {"GT": {"product.value": 4}}]},
                    ]
                },
                "15",
            ),
        ],
    )
    async def test_query_filters_nested_fields_in_order(
        self,
        state_store: StateStore,
        conformance_keys: Names,
        filter_: Mapping[str, object],
        expected: str,
    ) -> None:
        """conformance.md §1 Query: filters on `product.value`, results sorted as asked."""
        self.require(state_store, Feature.QUERY_API)
        categories = {1: "toys", 2: "tools", 3: "tools", 4: "tools", 5: "tools"}
        for n, category in categories.items():
            doc = {"product": {"value": n}, "category": category, "name": f"item-{n}"}
            key = conformance_keys(f"q{n}")
            await state_store.set(SetRequest(key, to_bytes(doc), metadata=JSON_METADATA))
        query = {"filter": filter_, "sort": [{"key": "product.value", "order": "DESC"}]}
        found = await self._query(state_store, conformance_keys.prefix, query)
        assert [item.key for item in found.results] == [
            conformance_keys(f"q{n}") for n in reversed(expected)
        ]
        for item in found.results:
            assert json.loads(item.data)["name"] == f"item-{item.key[-1]}"
            if Feature.ETAG in state_store.features:
                assert item.etag, f"query result {item.key!r} has no ETag"
        assert found.token == ""

    async def test_query_pages_with_a_token(
        self, state_store: StateStore, conformance_keys: Names
    ) -> None:
        self.require(state_store, Feature.QUERY_API)
        for n in range(5):
            doc = {"product": {"value": n}}
            key = conformance_keys(f"p{n}")
            await state_store.set(SetRequest(key, to_bytes(doc), metadata=JSON_METADATA))
        seen: list[str] = []
        token = ""
        for _ in range(5):  # 3 pages expected; more means the token never ends
            page = {"limit": 2, "token": token} if token else {"limit": 2}
            query = {"sort": [{"key": "product.value"}], "page": page}
            found = await self._query(state_store, conformance_keys.prefix, query)
            assert len(found.results) <= 2
            seen += [item.key for item in found.results]
            token = found.token
            if not token:
                break
        assert seen == [conformance_keys(f"p{n}") for n in range(5)]

    async def test_without_query(self, state_store: StateStore) -> None:
        self.require_absent(state_store, Feature.QUERY_API)
        assert Feature.QUERY_API not in state_store.features
        with pytest.raises(Unsupported):
            await state_store.query(QueryRequest(parse_query("{}")))
