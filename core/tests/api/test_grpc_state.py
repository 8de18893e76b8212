"""The State RPCs of `spec.proto.runtime.v1.Runtime` over a real socket (grpclib client).

Behaviour: layotto-semantics.md §2.1, §9; dapr-compat.md §3.1, §4."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import datetime
from typing import Any

import anyio
import grpc
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import AppConfig, ComponentConfig, RuntimeConfig
from layotto.plugin import GetRequest, Kind

pytestmark = pytest.mark.anyio

STORE = "statestore"
UPSERT, DELETE = "upsert", "delete"
FIRST_WRITE = pb.StateOptions(concurrency=pb.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE)


async def expect_error(call: Awaitable[Any], status: Status, *fragments: str) -> GRPCError:
    with anyio.fail_after(10), pytest.raises(GRPCError) as info:
        await call
    err = info.value
    assert err.status is status, f"{err.status.name}: {err.message}"
    for fragment in fragments:
        assert fragment in (err.message or ""), f"{fragment!r} not in {err.message!r}"
    return err


async def save(stub: pb.RuntimeStub, *items: pb.StateItem, store: str = STORE) -> None:
    await stub.save_state(pb.SaveStateRequest(store_name=store, states=list(items)))


async def get(stub: pb.RuntimeStub, key: str, store: str = STORE) -> pb.GetStateResponse:
    return await stub.get_state(pb.GetStateRequest(store_name=store, key=key))


def item(key: str, value: bytes = b"", **kwargs: Any) -> pb.StateItem:
    return pb.StateItem(key=key, value=value, **kwargs)


def upsert(key: str, value: bytes, **kwargs: Any) -> pb.TransactionalStateOperation:
    return pb.TransactionalStateOperation(operation_type=UPSERT, request=item(key, value, **kwargs))


def delete(key: str, **kwargs: Any) -> pb.TransactionalStateOperation:
    return pb.TransactionalStateOperation(operation_type=DELETE, request=item(key, **kwargs))


def transaction(*ops: pb.TransactionalStateOperation) -> pb.ExecuteStateTransactionRequest:
    return pb.ExecuteStateTransactionRequest(store_name=STORE, operations=list(ops))


# -- round trips ---------------------------------------------------------------------------


async def test_save_get_delete_round_trip(stub: pb.RuntimeStub) -> None:
    await save(stub, item("k1", b"v1"))
    got = await get(stub, "k1")
    assert got.data == b"v1"
    assert got.etag != ""

    await save(stub, item("k1", b"v2"))
    again = await get(stub, "k1")
    assert again.data == b"v2"
    assert again.etag not in ("", got.etag)

    await stub.delete_state(pb.DeleteStateRequest(store_name=STORE, key="k1"))
    assert await get(stub, "k1") == pb.GetStateResponse()


async def test_missing_key_gives_an_empty_response(stub: pb.RuntimeStub) -> None:
    got = await get(stub, "never-written")
    assert got.data == b""
    assert got.etag == ""
    assert dict(got.metadata) == {}


async def test_delete_of_a_missing_key_succeeds(stub: pb.RuntimeStub) -> None:
    await stub.delete_state(pb.DeleteStateRequest(store_name=STORE, key="absent"))


async def test_bulk_get_reports_missing_keys_without_error(stub: pb.RuntimeStub) -> None:
    await save(stub, item("a", b"1"), item("b", b"2"))
    for parallelism in (0, 1, 2, 10):
        response = await stub.get_bulk_state(
            pb.GetBulkStateRequest(
                store_name=STORE, keys=["a", "missing", "b"], parallelism=parallelism
            )
        )
        got = [(i.key, i.data, i.error, bool(i.etag)) for i in response.items]
        assert got == [("a", b"1", "", True), ("missing", b"", "", False), ("b", b"2", "", True)]


async def test_bulk_get_without_keys_is_empty(stub: pb.RuntimeStub) -> None:
    response = await stub.get_bulk_state(pb.GetBulkStateRequest(store_name=STORE, keys=[]))
    assert list(response.items) == []


async def test_bulk_get_negative_parallelism_is_invalid(stub: pb.RuntimeStub) -> None:
    await expect_error(
        stub.get_bulk_state(pb.GetBulkStateRequest(store_name=STORE, keys=["a"], parallelism=-1)),
        Status.INVALID_ARGUMENT,
        "parallelism",
    )


async def test_bulk_get_fans_out_at_most_parallelism_gets(
    start_sidecar: Any, slow_kit: Any
) -> None:
    slow_kit.delay = 0.05
    async with start_sidecar(slow_kit.config(), slow_kit.catalog) as sidecar:
        store = slow_kit.store(sidecar.runtime)
        channel = sidecar.channel()
        try:
            stub = pb.RuntimeStub(channel, timeout=10)
            keys = [f"k{i}" for i in range(6)]
            response = await stub.get_bulk_state(
                pb.GetBulkStateRequest(store_name="slow", keys=keys, parallelism=2)
            )
            assert [i.key for i in response.items] == keys
            assert store.max_active == 2

            store.max_active = 0
            await stub.get_bulk_state(pb.GetBulkStateRequest(store_name="slow", keys=keys))
            assert store.max_active == len(keys)  # default parallelism (100) > 6 keys
        finally:
            channel.close()


async def test_bulk_save_and_bulk_delete(stub: pb.RuntimeStub) -> None:
    await save(stub, item("x", b"1"), item("y", b"2"), item("z", b"3"))
    for key, value in (("x", b"1"), ("y", b"2"), ("z", b"3")):
        assert (await get(stub, key)).data == value

    await stub.delete_bulk_state(
        pb.DeleteBulkStateRequest(store_name=STORE, states=[item("x"), item("y")])
    )
    assert (await get(stub, "x")).data == b""
    assert (await get(stub, "y")).data == b""
    assert (await get(stub, "z")).data == b"3"


async def test_bulk_save_is_not_transactional(stub: pb.RuntimeStub) -> None:
    """dapr-compat §3.1: several items run per item; a failure is reported, the rest applied."""
    await save(stub, item("held", b"old"))
    await expect_error(
        save(stub, item("free", b"new"), item("held", b"new", etag=pb.Etag(value="999999"))),
        Status.ABORTED,
        "held",
    )
    assert (await get(stub, "free")).data == b"new"
    assert (await get(stub, "held")).data == b"old"


# -- transactions --------------------------------------------------------------------------


async def test_transaction_applies_operations_in_order(stub: pb.RuntimeStub) -> None:
    await save(stub, item("recreated", b"old"))
    await stub.execute_state_transaction(
        transaction(
            upsert("twice", b"first"),
            upsert("twice", b"second"),
            upsert("short-lived", b"x"),
            delete("short-lived"),
            delete("recreated"),
            upsert("recreated", b"new"),
        )
    )
    assert (await get(stub, "twice")).data == b"second"
    assert (await get(stub, "short-lived")).data == b""
    assert (await get(stub, "recreated")).data == b"new"


async def test_transaction_is_atomic_on_etag_mismatch(stub: pb.RuntimeStub) -> None:
    await save(stub, item("a", b"old"), item("c", b"old"))
    await expect_error(
        stub.execute_state_transaction(
            transaction(
                upsert("a", b"new"),
                delete("c"),
                upsert("b", b"new", etag=pb.Etag(value="424242")),
            )
        ),
        Status.ABORTED,
    )
    assert (await get(stub, "a")).data == b"old"
    assert (await get(stub, "b")).data == b""
    assert (await get(stub, "c")).data == b"old"


async def test_transaction_unknown_operation_type_is_unimplemented(stub: pb.RuntimeStub) -> None:
    await expect_error(
        stub.execute_state_transaction(
            transaction(
                upsert("before-bad-op", b"x"),
                pb.TransactionalStateOperation(operation_type="merge", request=item("k", b"v")),
            )
        ),
        Status.UNIMPLEMENTED,
        "operationType",
        "operations[1]",
        "merge",
    )
    assert (await get(stub, "before-bad-op")).data == b""


async def test_transaction_skips_operations_without_request(stub: pb.RuntimeStub) -> None:
    await stub.execute_state_transaction(
        transaction(
            pb.TransactionalStateOperation(operation_type=UPSERT),
            upsert("after-empty-op", b"v"),
            pb.TransactionalStateOperation(operation_type=DELETE),
        )
    )
    assert (await get(stub, "after-empty-op")).data == b"v"


async def test_transaction_with_empty_key_is_invalid(stub: pb.RuntimeStub) -> None:
    await expect_error(
        stub.execute_state_transaction(transaction(upsert("ok", b"v"), upsert("", b"v"))),
        Status.INVALID_ARGUMENT,
        "operations[1].request.key",
    )
    assert (await get(stub, "ok")).data == b""


# -- concurrency ---------------------------------------------------------------------------


async def test_etag_mismatch_is_aborted(stub: pb.RuntimeStub) -> None:
    await save(stub, item("e", b"1"))
    first = (await get(stub, "e")).etag
    await save(stub, item("e", b"2", etag=pb.Etag(value=first)))
    second = await get(stub, "e")
    assert second.data == b"2"

    await expect_error(save(stub, item("e", b"3", etag=pb.Etag(value=first))), Status.ABORTED)
    await expect_error(
        stub.delete_state(
            pb.DeleteStateRequest(store_name=STORE, key="e", etag=pb.Etag(value=first))
        ),
        Status.ABORTED,
    )
    assert (await get(stub, "e")).data == b"2"

    await stub.delete_state(
        pb.DeleteStateRequest(store_name=STORE, key="e", etag=pb.Etag(value=second.etag))
    )
    assert (await get(stub, "e")).data == b""


async def test_etag_on_a_missing_key_is_aborted(stub: pb.RuntimeStub) -> None:
    await expect_error(save(stub, item("nokey", b"v", etag=pb.Etag(value="1"))), Status.ABORTED)


async def test_non_numeric_etag_is_invalid_on_the_in_memory_store(stub: pb.RuntimeStub) -> None:
    await save(stub, item("n", b"1"))
    await expect_error(
        save(stub, item("n", b"2", etag=pb.Etag(value="not-a-number"))),
        Status.INVALID_ARGUMENT,
        "not-a-number",
    )
    assert (await get(stub, "n")).data == b"1"


@pytest.mark.parametrize("etag", [None, pb.Etag(value="")], ids=["no-etag", "empty-etag"])
async def test_first_write_without_etag_inserts_only_once(
    stub: pb.RuntimeStub, etag: pb.Etag | None
) -> None:
    await save(stub, item("fw", b"first", etag=etag, options=FIRST_WRITE))
    await expect_error(
        save(stub, item("fw", b"second", etag=etag, options=FIRST_WRITE)), Status.ABORTED
    )
    assert (await get(stub, "fw")).data == b"first"


async def test_last_write_with_empty_etag_overwrites(stub: pb.RuntimeStub) -> None:
    await save(stub, item("lw", b"first"))
    await save(stub, item("lw", b"second", etag=pb.Etag(value="")))
    assert (await get(stub, "lw")).data == b"second"


# -- TTL -----------------------------------------------------------------------------------


async def test_ttl_sets_expire_time_metadata(stub: pb.RuntimeStub) -> None:
    before = time.time()
    await save(stub, item("ttl", b"v", metadata={"ttlInSeconds": "100"}))
    got = await get(stub, "ttl")
    assert got.data == b"v"
    expires = datetime.fromisoformat(got.metadata["ttlExpireTime"]).timestamp()
    assert before + 99 <= expires <= time.time() + 101


async def test_expired_key_reads_as_missing(stub: pb.RuntimeStub) -> None:
    await save(stub, item("gone", b"v", metadata={"ttlInSeconds": "1"}))
    assert (await get(stub, "gone")).data == b"v"
    with anyio.fail_after(3):
        for _ in range(300):  # poll every 20 ms
            if await get(stub, "gone") == pb.GetStateResponse():
                break
            await anyio.sleep(0.02)
        else:
            pytest.fail("the key did not expire")


@pytest.mark.parametrize("again", [{"ttlInSeconds": "-1"}, {}], ids=["minus-one", "no-ttl"])
async def test_saving_again_without_a_ttl_removes_it(
    stub: pb.RuntimeStub, again: dict[str, str]
) -> None:
    await save(stub, item("keep", b"v1", metadata={"ttlInSeconds": "100"}))
    assert "ttlExpireTime" in (await get(stub, "keep")).metadata
    await save(stub, item("keep", b"v2", metadata=again))
    got = await get(stub, "keep")
    assert got.data == b"v2"
    assert "ttlExpireTime" not in got.metadata


async def test_non_integer_ttl_is_invalid(stub: pb.RuntimeStub) -> None:
    await expect_error(
        save(stub, item("ttl-bad", b"v", metadata={"ttlInSeconds": "foo"})),
        Status.INVALID_ARGUMENT,
        "ttlInSeconds",
    )
    assert (await get(stub, "ttl-bad")).data == b""


# -- validation ----------------------------------------------------------------------------

StateCall = Callable[[pb.RuntimeStub, str, str], Awaitable[Any]]

CALLS: dict[str, StateCall] = {
    "GetState": lambda s, store, key: s.get_state(pb.GetStateRequest(store_name=store, key=key)),
    "GetBulkState": lambda s, store, key: s.get_bulk_state(
        pb.GetBulkStateRequest(store_name=store, keys=[key])
    ),
    "SaveState": lambda s, store, key: s.save_state(
        pb.SaveStateRequest(store_name=store, states=[item(key, b"v")])
    ),
    "DeleteState": lambda s, store, key: s.delete_state(
        pb.DeleteStateRequest(store_name=store, key=key)
    ),
    "DeleteBulkState": lambda s, store, key: s.delete_bulk_state(
        pb.DeleteBulkStateRequest(store_name=store, states=[item(key)])
    ),
    "ExecuteStateTransaction": lambda s, store, key: s.execute_state_transaction(
        pb.ExecuteStateTransactionRequest(store_name=store, operations=[upsert(key, b"v")])
    ),
}


@pytest.mark.parametrize("rpc", CALLS)
async def test_unknown_store_is_invalid_argument(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(
        CALLS[rpc](stub, "no-such-store", "k"), Status.INVALID_ARGUMENT, "no-such-store"
    )


@pytest.mark.parametrize("rpc", CALLS)
async def test_empty_store_name_is_invalid_argument(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(CALLS[rpc](stub, "", "k"), Status.INVALID_ARGUMENT, "store_name")


@pytest.mark.parametrize(
    "rpc", ["GetState", "SaveState", "DeleteState", "GetBulkState", "DeleteBulkState"]
)
async def test_empty_key_is_invalid_argument(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(CALLS[rpc](stub, STORE, ""), Status.INVALID_ARGUMENT, "'key'")


@pytest.mark.parametrize("rpc", CALLS)
async def test_key_with_separator_is_invalid_argument(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(CALLS[rpc](stub, STORE, "a||b"), Status.INVALID_ARGUMENT, "||")


@pytest.mark.parametrize(
    "runtime_options", [{"config": RuntimeConfig(components=())}], indirect=True
)
@pytest.mark.parametrize("rpc", CALLS)
async def test_no_state_store_is_failed_precondition(stub: pb.RuntimeStub, rpc: str) -> None:
    await expect_error(
        CALLS[rpc](stub, STORE, "k"), Status.FAILED_PRECONDITION, "state store is not configured"
    )


# -- key prefixes --------------------------------------------------------------------------

PREFIXED = RuntimeConfig(
    app=AppConfig(id="myapp"),
    components=(
        ComponentConfig(name="plain", kind=Kind.STATE, type="in-memory"),
        ComponentConfig(name="by-app", kind=Kind.STATE, type="in-memory", key_prefix="appid"),
        ComponentConfig(name="by-name", kind=Kind.STATE, type="in-memory", key_prefix="name"),
        ComponentConfig(name="literal", kind=Kind.STATE, type="in-memory", key_prefix="tenant"),
    ),
)


@pytest.fixture
async def prefixed(start_sidecar: Any) -> AsyncIterator[Any]:
    async with start_sidecar(PREFIXED) as sidecar:
        yield sidecar


@pytest.mark.parametrize(
    ("store", "stored_key"),
    [
        ("plain", "k"),
        ("by-app", "myapp||k"),
        ("by-name", "by-name||k"),
        ("literal", "tenant||k"),
    ],
)
async def test_key_prefix_strategies(prefixed: Any, store: str, stored_key: str) -> None:
    channel = prefixed.channel()
    try:
        stub = pb.RuntimeStub(channel, timeout=10)
        await save(stub, item("k", b"v"), store=store)
        component = prefixed.runtime.components.of_kind(Kind.STATE)[store].component
        found = await component.get(GetRequest(stored_key))
        assert found is not None
        assert found.data == b"v"
        # The caller sees its own key, not the stored one.
        assert (await get(stub, "k", store=store)).data == b"v"
        bulk = await stub.get_bulk_state(pb.GetBulkStateRequest(store_name=store, keys=["k"]))
        assert [(i.key, i.data) for i in bulk.items] == [("k", b"v")]
        # Each store is its own namespace.
        other = "plain" if store != "plain" else "literal"
        assert (await get(stub, "k", store=other)).data == b""
    finally:
        channel.close()


# -- enum values this build does not know (e.g. from a newer client) -----------------------

# Hand-encoded requests: field 3 of GetStateRequest (consistency) = 7; SaveStateRequest with
# one StateItem{key="k", value="v", options{concurrency = 7}}.
UNKNOWN_ENUM_REQUESTS = {
    "GetState": (b"\x0a\x0astatestore\x12\x01k\x18\x07", "consistency"),
    "SaveState": (b"\x0a\x0astatestore\x12\x0c\x0a\x01k\x12\x01v\x2a\x02\x08\x07", "concurrency"),
}


@pytest.mark.parametrize("method", UNKNOWN_ENUM_REQUESTS)
async def test_unknown_enum_value_is_invalid_argument(sidecar: Any, method: str) -> None:
    raw, field_name = UNKNOWN_ENUM_REQUESTS[method]
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        call = chan.unary_unary(f"/spec.proto.runtime.v1.Runtime/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(raw, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert field_name in (info.value.details() or "")
