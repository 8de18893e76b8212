"""StateService: store lookup, key prefixes, bulk fan-out and error translation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import anyio
import pytest
from layotto.builtin.memory_state import InMemoryStateMetadata, InMemoryStateStore
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.errors import (
    BackendTimeout,
    ComponentError,
    ErrorCategory,
    InvalidArgument,
    LayottoError,
    NotConfigured,
    Unsupported,
)
from layotto.plugin import (
    TTL_EXPIRE_METADATA,
    TTL_METADATA,
    BulkGetItem,
    BulkStateError,
    ComponentSpec,
    Concurrency,
    DeleteRequest,
    ETagMismatch,
    Feature,
    GetRequest,
    GetResponse,
    Kind,
    QueryRequest,
    QueryResponse,
    SetRequest,
    StateStore,
    TransactionOperation,
)
from layotto.services.keys import SEPARATOR, KeyPrefix
from layotto.services.state import StateService

pytestmark = pytest.mark.anyio

SECRET = "redis://admin:hunter2@10.0.0.7:6379"
APP = "app1"


def built(name: str, store: StateStore, key_prefix: str | None = None) -> BuiltComponent:
    config = ComponentConfig(name=name, kind=Kind.STATE, type="fake", key_prefix=key_prefix)
    spec = ComponentSpec(Kind.STATE, "fake", InMemoryStateMetadata, lambda m, c: store)
    return BuiltComponent(config, spec, store)


def service(
    *stores: tuple[str, StateStore] | tuple[str, StateStore, str | None],
    app_id: str = APP,
    **options: object,
) -> StateService:
    registry = ComponentRegistry()
    for entry in stores:
        registry.add(built(*entry))
    return StateService(registry, app_id, **options)  # type: ignore[arg-type]


class DictStore(StateStore):
    """A minimal store without optional features."""

    def __init__(self) -> None:
        self.data: dict[str, bytes] = {}

    async def get(self, request: GetRequest) -> GetResponse | None:
        value = self.data.get(request.key)
        return None if value is None else GetResponse(value, "1")

    async def set(self, request: SetRequest) -> None:
        self.data[request.key] = request.value

    async def delete(self, request: DeleteRequest) -> None:
        self.data.pop(request.key, None)


class TxDictStore(DictStore):
    features = frozenset({Feature.TRANSACTIONAL})

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        for op in operations:
            await (self.set(op) if isinstance(op, SetRequest) else self.delete(op))


class LeakyStore(StateStore):
    """Raises what a backend client would raise, credentials included."""

    features = frozenset({Feature.TRANSACTIONAL})

    async def get(self, request: GetRequest) -> GetResponse | None:
        raise RuntimeError(f"cannot connect to {SECRET}")

    async def set(self, request: SetRequest) -> None:
        raise ConnectionError(f"cannot connect to {SECRET}")

    async def delete(self, request: DeleteRequest) -> None:
        raise OSError(f"cannot connect to {SECRET}")

    async def bulk_set(self, requests: Sequence[SetRequest]) -> None:
        raise RuntimeError(f"cannot connect to {SECRET}")

    async def bulk_delete(self, requests: Sequence[DeleteRequest]) -> None:
        raise RuntimeError(f"cannot connect to {SECRET}")

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        raise RuntimeError(f"cannot connect to {SECRET}")


class HangingStore(DictStore):
    features = frozenset({Feature.TRANSACTIONAL})

    async def get(self, request: GetRequest) -> GetResponse | None:
        await anyio.sleep_forever()
        raise AssertionError

    async def set(self, request: SetRequest) -> None:
        await anyio.sleep_forever()

    async def delete(self, request: DeleteRequest) -> None:
        await anyio.sleep_forever()

    async def multi(
        self, operations: Sequence[TransactionOperation], metadata: Mapping[str, str]
    ) -> None:
        await anyio.sleep_forever()


class CountingStore(DictStore):
    """Counts gets running at the same time; only single gets (the fan-out path)."""

    def __init__(self) -> None:
        super().__init__()
        self.running = 0
        self.peak = 0
        self.calls = 0

    async def get(self, request: GetRequest) -> GetResponse | None:
        self.calls += 1
        self.running += 1
        self.peak = max(self.peak, self.running)
        try:
            await anyio.sleep(0.005)
            return await super().get(request)
        finally:
            self.running -= 1


class NativeBulkStore(DictStore):
    """Has its own bulk get, which answers with the stored keys."""

    def __init__(self) -> None:
        super().__init__()
        self.bulk_requests: list[list[str]] = []

    async def bulk_get(self, requests: Sequence[GetRequest]) -> list[BulkGetItem]:
        self.bulk_requests.append([r.key for r in requests])
        return [BulkGetItem(r.key, self.data.get(r.key)) for r in requests]


class SmallTxStore(InMemoryStateStore):
    def max_operations_per_transaction(self) -> int | None:
        return 2


# -- lookup --------------------------------------------------------------------------------


async def test_no_store_configured() -> None:
    svc = service()
    with pytest.raises(NotConfigured) as info:
        await svc.get("statestore", "k")
    assert info.value.category is ErrorCategory.FAILED_PRECONDITION
    assert info.value.reason == "DAPR_STATE_NOT_CONFIGURED"
    assert "not configured" in info.value.message
    with pytest.raises(NotConfigured):
        await svc.save("statestore", [SetRequest("k", b"v")])


async def test_unknown_store_is_invalid_argument_naming_it() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    with pytest.raises(InvalidArgument) as info:
        await svc.get("no-such-store", "k")
    assert info.value.category is ErrorCategory.INVALID_ARGUMENT
    assert "no-such-store" in info.value.message
    with pytest.raises(InvalidArgument, match="no-such-store"):
        await svc.transact("no-such-store", [])


async def test_empty_store_name_is_invalid_argument() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    with pytest.raises(InvalidArgument, match="store_name"):
        await svc.get("", "k")


async def test_features_are_the_stores() -> None:
    svc = service(("mem", InMemoryStateStore()), ("plain", DictStore()))
    assert svc.features("mem") == {
        Feature.ETAG,
        Feature.TRANSACTIONAL,
        Feature.TTL,
        Feature.QUERY_API,
    }
    assert svc.features("plain") == frozenset()


async def test_a_non_state_component_is_rejected() -> None:
    registry = ComponentRegistry()
    bogus = built("statestore", InMemoryStateStore())
    registry.add(BuiltComponent(bogus.config, bogus.spec, object()))  # type: ignore[arg-type]
    with pytest.raises(TypeError, match="statestore"):
        StateService(registry, APP)


# -- basics through the service --------------------------------------------------------------


async def test_round_trip_empty_value_and_missing_key() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    await svc.save("statestore", [SetRequest("empty", b"")])
    found = await svc.get("statestore", "empty")
    assert found is not None
    assert found.data == b""
    assert await svc.get("statestore", "missing") is None
    await svc.delete("statestore", DeleteRequest("empty"))
    assert await svc.get("statestore", "empty") is None
    await svc.delete("statestore", DeleteRequest("missing"))


async def test_empty_requests_do_nothing() -> None:
    store = LeakyStore()  # any call would fail
    svc = service(("statestore", store))
    assert await svc.bulk_get("statestore", []) == []
    await svc.save("statestore", [])
    await svc.bulk_delete("statestore", [])


async def test_ttl_passes_through() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    with pytest.raises(InvalidArgument, match=TTL_METADATA):
        await svc.save("statestore", [SetRequest("k", b"v", metadata={TTL_METADATA: "foo"})])
    await svc.save("statestore", [SetRequest("k", b"v", metadata={TTL_METADATA: "3600"})])
    found = await svc.get("statestore", "k")
    assert found is not None
    assert TTL_EXPIRE_METADATA in found.metadata


# -- key prefixes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("strategy", "app_id", "default", "stored"),
    [
        (None, APP, "none", "k"),
        ("none", APP, "appid", "k"),
        ("NONE", APP, "none", "k"),
        ("appid", APP, "none", f"{APP}||k"),
        ("AppId", APP, "none", f"{APP}||k"),
        (None, APP, "appid", f"{APP}||k"),  # the Dapr API's default
        ("appid", "", "none", "k"),  # no app id: no prefix
        ("name", APP, "none", "mystore||k"),
        ("Name", APP, "appid", "mystore||k"),
        ("tenant-a", APP, "none", "tenant-a||k"),
    ],
)
async def test_key_prefix_strategies(
    strategy: str | None, app_id: str, default: str, stored: str
) -> None:
    store = TxDictStore()
    svc = service(("mystore", store, strategy), app_id=app_id, default_key_prefix=default)
    await svc.save("mystore", [SetRequest("k", b"v")])
    assert store.data == {stored: b"v"}
    found = await svc.get("mystore", "k")
    assert found is not None
    assert found.data == b"v"
    items = await svc.bulk_get("mystore", ["k", "missing"])
    assert [(i.key, i.data) for i in items] == [("k", b"v"), ("missing", None)]
    await svc.transact("mystore", [SetRequest("t", b"1"), DeleteRequest("k")])
    assert store.data == {stored[:-1] + "t": b"1"}
    await svc.bulk_delete("mystore", [DeleteRequest("t")])
    assert store.data == {}


async def test_bulk_results_come_back_unprefixed_from_a_native_bulk_get() -> None:
    store = NativeBulkStore()
    svc = service(("statestore", store, "appid"))
    await svc.save("statestore", [SetRequest("a", b"1"), SetRequest("b", b"2")])
    assert set(store.data) == {f"{APP}||a", f"{APP}||b"}
    items = await svc.bulk_get("statestore", ["a", "b", "c"])
    assert store.bulk_requests == [[f"{APP}||a", f"{APP}||b", f"{APP}||c"]]
    assert [(i.key, i.data) for i in items] == [("a", b"1"), ("b", b"2"), ("c", None)]


async def test_keys_with_the_separator_are_rejected() -> None:
    store = TxDictStore()
    svc = service(("statestore", store, "appid"))
    bad = "a||b"
    calls = [
        lambda: svc.get("statestore", bad),
        lambda: svc.bulk_get("statestore", ["ok", bad]),
        lambda: svc.save("statestore", [SetRequest(bad, b"v")]),
        lambda: svc.save("statestore", [SetRequest("ok", b"v"), SetRequest(bad, b"v")]),
        lambda: svc.delete("statestore", DeleteRequest(bad)),
        lambda: svc.bulk_delete("statestore", [DeleteRequest(bad)]),
        lambda: svc.transact("statestore", [SetRequest("ok", b"v"), SetRequest(bad, b"v")]),
    ]
    for call in calls:
        with pytest.raises(InvalidArgument) as info:
            await call()
        assert info.value.reason == "DAPR_STATE_ILLEGAL_KEY"
        assert bad in info.value.message
    assert store.data == {}  # nothing was written, not even the good keys


async def test_empty_key_is_rejected() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    with pytest.raises(InvalidArgument, match="key"):
        await svc.get("statestore", "")


async def test_a_literal_prefix_with_the_separator_is_rejected() -> None:
    with pytest.raises(InvalidArgument, match=r"\|\|"):
        service(("statestore", InMemoryStateStore(), "a||b"))


def test_key_prefix_apply_and_strip() -> None:
    keys = KeyPrefix.resolve("appid", default="none", app_id="app", store_name="s")
    assert keys.apply("k") == f"app{SEPARATOR}k"
    assert keys.strip(keys.apply("k")) == "k"
    assert keys.strip("other||k") == "other||k"  # noqa: B005 - KeyPrefix.strip, not str.strip
    none = KeyPrefix.resolve(" none ", default="appid", app_id="app", store_name="s")
    assert none.apply("k") == "k"
    assert none.strip("k") == "k"


# -- transactions ----------------------------------------------------------------------------


async def test_transaction_on_a_store_without_transactions_is_unsupported() -> None:
    store = DictStore()
    svc = service(("plain", store))
    with pytest.raises(Unsupported) as info:
        await svc.transact("plain", [SetRequest("k", b"v")])
    assert info.value.category is ErrorCategory.UNIMPLEMENTED
    assert "plain" in info.value.message
    assert store.data == {}


async def test_too_many_operations_in_a_transaction() -> None:
    store = SmallTxStore()
    svc = service(("small", store))
    await svc.transact("small", [SetRequest("a", b"1"), SetRequest("b", b"2")])
    with pytest.raises(InvalidArgument, match="at most 2"):
        await svc.transact("small", [SetRequest(k, b"v") for k in "cde"])
    assert await svc.get("small", "c") is None


async def test_transaction_order_and_atomicity() -> None:
    store = InMemoryStateStore()
    svc = service(("statestore", store, "name"))
    await svc.save("statestore", [SetRequest("k1", b"value1")])
    await svc.transact(
        "statestore",
        [DeleteRequest("k1"), SetRequest("k2", b"2"), DeleteRequest("k2"), SetRequest("k3", b"3")],
        {"partitionKey": "p"},
    )
    assert [await svc.get("statestore", k) is None for k in ("k1", "k2")] == [True, True]
    with pytest.raises(ETagMismatch):
        await svc.transact(
            "statestore", [DeleteRequest("k3"), SetRequest("k4", b"4", etag="999999")]
        )
    k3 = await svc.get("statestore", "k3")
    assert k3 is not None
    assert k3.data == b"3"
    assert await svc.get("statestore", "k4") is None


# -- ETags and first-write ---------------------------------------------------------------------


async def test_partial_bulk_failure_lists_exactly_the_failing_key() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    await svc.save("statestore", [SetRequest("good", b"g1"), SetRequest("bad", b"b1")])
    good = await svc.get("statestore", "good")
    assert good is not None
    with pytest.raises(BulkStateError) as info:
        await svc.save(
            "statestore",
            [SetRequest("good", b"g2", etag=good.etag), SetRequest("bad", b"b2", etag="999999")],
        )
    assert list(info.value.errors) == ["bad"]
    assert info.value.category is ErrorCategory.ABORTED
    now = await svc.bulk_get("statestore", ["good", "bad"])
    assert [i.data for i in now] == [b"g2", b"b1"]

    with pytest.raises(BulkStateError) as deleting:
        await svc.bulk_delete(
            "statestore", [DeleteRequest("good"), DeleteRequest("bad", etag="999999")]
        )
    assert list(deleting.value.errors) == ["bad"]
    assert [i.data for i in await svc.bulk_get("statestore", ["good", "bad"])] == [None, b"b1"]


async def test_partial_bulk_failure_names_the_callers_key_under_a_prefix() -> None:
    svc = service(("statestore", InMemoryStateStore(), "appid"))
    await svc.save("statestore", [SetRequest("good", b"g1"), SetRequest("bad", b"b1")])
    with pytest.raises(BulkStateError) as info:
        await svc.save(
            "statestore", [SetRequest("good", b"g2"), SetRequest("bad", b"b2", etag="999999")]
        )
    assert list(info.value.errors) == ["bad"]
    assert SEPARATOR not in info.value.message


async def test_first_write_without_etag() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    first = SetRequest("k", b"v1", concurrency=Concurrency.FIRST_WRITE)
    await svc.save("statestore", [first])
    with pytest.raises(ETagMismatch):
        await svc.save("statestore", [first])


async def test_first_write_with_an_empty_etag() -> None:
    svc = service(("statestore", InMemoryStateStore()))
    first = SetRequest("k", b"v1", etag="", concurrency=Concurrency.FIRST_WRITE)
    await svc.save("statestore", [first])
    with pytest.raises(ETagMismatch):
        await svc.save("statestore", [first])


# -- foreign errors and timeouts ---------------------------------------------------------------


async def test_foreign_errors_become_component_errors_without_their_message() -> None:
    svc = service(("leaky", LeakyStore()))
    calls = [
        lambda: svc.get("leaky", "k"),
        lambda: svc.save("leaky", [SetRequest("k", b"v")]),
        lambda: svc.save("leaky", [SetRequest("a", b"v"), SetRequest("b", b"v")]),
        lambda: svc.delete("leaky", DeleteRequest("k")),
        lambda: svc.bulk_delete("leaky", [DeleteRequest("k")]),
        lambda: svc.transact("leaky", [SetRequest("k", b"v")]),
    ]
    for call in calls:
        with pytest.raises(ComponentError) as info:
            await call()
        assert info.value.category is ErrorCategory.INTERNAL
        assert "leaky" in info.value.message  # names the store
        for secret in ("hunter2", "10.0.0.7", "redis://", "cannot connect"):
            assert secret not in info.value.message
            assert secret not in str(info.value)


async def test_foreign_errors_in_a_bulk_get_are_per_item_and_clean() -> None:
    svc = service(("leaky", LeakyStore()))
    items = await svc.bulk_get("leaky", ["a", "b"])
    assert [i.key for i in items] == ["a", "b"]
    for item in items:
        assert item.data is None
        assert item.error
        assert "hunter2" not in item.error
        assert "10.0.0.7" not in item.error


async def test_a_hanging_store_times_out() -> None:
    svc = service(("slow", HangingStore()), call_timeout=0.05)
    with anyio.fail_after(5):
        for call in [
            lambda: svc.get("slow", "k"),
            lambda: svc.save("slow", [SetRequest("k", b"v")]),
            lambda: svc.delete("slow", DeleteRequest("k")),
            lambda: svc.transact("slow", [SetRequest("k", b"v")]),
        ]:
            with pytest.raises(BackendTimeout) as info:
                await call()
            assert info.value.category is ErrorCategory.DEADLINE_EXCEEDED
            assert "slow" in info.value.message


async def test_a_hanging_store_in_a_bulk_get_times_out_per_item() -> None:
    svc = service(("slow", HangingStore()), call_timeout=0.05)
    with anyio.fail_after(5):
        items = await svc.bulk_get("slow", ["a", "b", "c"])
    assert [i.key for i in items] == ["a", "b", "c"]
    assert all(i.error and i.data is None for i in items)


# -- bulk get fan-out ------------------------------------------------------------------------


@pytest.mark.parametrize("parallelism", [1, 3, 7])
async def test_bulk_get_parallelism_is_honoured(parallelism: int) -> None:
    store = CountingStore()
    svc = service(("statestore", store, "appid"))
    keys = [f"k{i}" for i in range(20)]
    await svc.save("statestore", [SetRequest(k, k.encode()) for k in keys[::2]])
    with anyio.fail_after(5):
        items = await svc.bulk_get("statestore", keys, parallelism=parallelism)
    assert store.calls == len(keys)
    assert store.peak == parallelism  # used, and never exceeded
    assert [i.key for i in items] == keys  # in request order, unprefixed
    assert [i.data for i in items] == [
        k.encode() if n % 2 == 0 else None for n, k in enumerate(keys)
    ]


async def test_bulk_get_default_parallelism_runs_concurrently() -> None:
    store = CountingStore()
    svc = service(("statestore", store))
    with anyio.fail_after(5):
        await svc.bulk_get("statestore", [f"k{i}" for i in range(10)])
    assert store.peak == 10


async def test_bulk_get_negative_parallelism_is_invalid() -> None:
    svc = service(("statestore", CountingStore()))
    with pytest.raises(InvalidArgument, match="parallelism"):
        await svc.bulk_get("statestore", ["k"], parallelism=-1)


# -- query -----------------------------------------------------------------------------------


async def test_query_sees_only_the_callers_prefix_and_answers_bare_keys() -> None:
    store = InMemoryStateStore()
    svc = service(("s", store, "appid"))
    other = service(("s", store, "appid"), app_id="app2")
    await svc.save("s", [SetRequest("k1", b'{"n": 1}'), SetRequest("k2", b'{"n": 2}')])
    await other.save("s", [SetRequest("k1", b'{"n": 1}')])
    await store.set(SetRequest("bare", b'{"n": 1}'))
    found = await svc.query("s", '{"sort": [{"key": "n", "order": "DESC"}]}')
    assert [(item.key, item.data) for item in found.results] == [
        ("k2", b'{"n": 2}'),
        ("k1", b'{"n": 1}'),
    ]
    assert all(item.etag for item in found.results)
    assert [item.key for item in (await other.query("s", "{}")).results] == ["k1"]


async def test_query_on_a_store_without_the_feature_is_internal_with_daprs_reason() -> None:
    with pytest.raises(LayottoError) as info:
        await service(("s", DictStore())).query("s", "{}")
    assert info.value.category is ErrorCategory.INTERNAL
    assert info.value.reason == "DAPR_STATE_QUERYING_NOT_SUPPORTED"


async def test_a_malformed_query_is_invalid_argument() -> None:
    with pytest.raises(InvalidArgument) as info:
        await service(("s", InMemoryStateStore())).query("s", '{"filter": {"LIKE": {"a": 1}}}')
    assert info.value.reason == "ERR_MALFORMED_REQUEST"
    assert "filter has unknown operator 'LIKE'" in info.value.message


async def test_a_failing_query_reports_query_failed() -> None:
    class Broken(InMemoryStateStore):
        async def query(self, request: QueryRequest) -> QueryResponse:
            raise ComponentError("backend exploded")

    with pytest.raises(LayottoError) as info:
        await service(("s", Broken())).query("s", "{}")
    assert info.value.category is ErrorCategory.INTERNAL
    assert info.value.reason == "DAPR_STATE_QUERY_FAILED"
