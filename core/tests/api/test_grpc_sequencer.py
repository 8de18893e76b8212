"""GetNextId of `spec.proto.runtime.v1.Runtime` over a real socket (grpclib client).

Behaviour: layotto-semantics.md §2.3, §8; conformance.md §5."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable
from typing import Any

import anyio
import grpc
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.builtin import layotto_components as builtin_components
from layotto.builtin.memory_sequencer import InMemorySequencer
from layotto.config import AppConfig, ComponentConfig, RuntimeConfig
from layotto.errors import ConfigError
from layotto.plugin import Kind
from layotto.plugins import Catalog, PluginInfo
from layotto.runtime import Runtime

pytestmark = pytest.mark.anyio

STORE = "sequencer"
WEAK = pb.SequencerOptions(increment=pb.SequencerOptionsAutoIncrement.WEAK)
STRONG = pb.SequencerOptions(increment=pb.SequencerOptionsAutoIncrement.STRONG)


async def expect_error(call: Awaitable[Any], status: Status, *fragments: str) -> GRPCError:
    with anyio.fail_after(10), pytest.raises(GRPCError) as info:
        await call
    err = info.value
    assert err.status is status, f"{err.status.name}: {err.message}"
    for fragment in fragments:
        assert fragment in (err.message or ""), f"{fragment!r} not in {err.message!r}"
    return err


async def next_id(
    stub: pb.RuntimeStub,
    key: str,
    options: pb.SequencerOptions | None = None,
    store: str = STORE,
) -> int:
    reply = await stub.get_next_id(pb.GetNextIdRequest(store_name=store, key=key, options=options))
    return reply.next_id


def component(sidecar: Any, name: str = STORE) -> InMemorySequencer:
    found = sidecar.runtime.components.of_kind(Kind.SEQUENCER)[name].component
    assert isinstance(found, InMemorySequencer)
    return found


async def backend_next(sidecar: Any, stored_key: str, name: str = STORE) -> int:
    """The next id the component itself would give: shows how much the sidecar reserved."""
    return await component(sidecar, name).next_id(stored_key)


# -- WEAK and STRONG -----------------------------------------------------------------------


@pytest.mark.parametrize("options", [None, WEAK], ids=["no-options", "weak"])
async def test_weak_is_the_default_and_served_from_a_segment(
    sidecar: Any, stub: pb.RuntimeStub, options: pb.SequencerOptions | None
) -> None:
    assert [await next_id(stub, "k", options) for _ in range(5)] == [1, 2, 3, 4, 5]
    # One segment of 10 000 was reserved (the embedded default has no app id: no prefix).
    assert await backend_next(sidecar, "sequencer|||k") == 10_001


async def test_strong_is_strictly_increasing_and_goes_to_the_component(
    sidecar: Any, stub: pb.RuntimeStub
) -> None:
    ids = [await next_id(stub, "k", STRONG) for _ in range(20)]
    assert ids == list(range(1, 21))
    assert await backend_next(sidecar, "sequencer|||k") == 21


async def test_strong_and_weak_never_collide(stub: pb.RuntimeStub) -> None:
    weak = [await next_id(stub, "k") for _ in range(3)]
    strong = [await next_id(stub, "k", STRONG) for _ in range(3)]
    assert weak == [1, 2, 3]
    assert strong == [10_001, 10_002, 10_003]


async def test_keys_are_independent(stub: pb.RuntimeStub) -> None:
    assert [await next_id(stub, "k1", STRONG) for _ in range(3)] == [1, 2, 3]
    assert await next_id(stub, "k2", STRONG) == 1


@pytest.mark.parametrize("options", [WEAK, STRONG], ids=["weak", "strong"])
async def test_unique_under_concurrency(stub: pb.RuntimeStub, options: pb.SequencerOptions) -> None:
    results: list[list[int]] = []

    async def caller() -> None:
        results.append([await next_id(stub, "k", options) for _ in range(40)])

    with anyio.fail_after(30):
        async with anyio.create_task_group() as tg:
            for _ in range(25):
                tg.start_soon(caller)
    everything = [i for ids in results for i in ids]
    assert len(set(everything)) == len(everything) == 1000
    for ids in results:
        assert ids == sorted(ids)


# -- validation ----------------------------------------------------------------------------


async def test_empty_key_is_invalid_argument(stub: pb.RuntimeStub) -> None:
    await expect_error(next_id(stub, ""), Status.INVALID_ARGUMENT, "'key'")
    await expect_error(next_id(stub, "", STRONG), Status.INVALID_ARGUMENT, "'key'")


async def test_key_with_separator_is_invalid_argument(stub: pb.RuntimeStub) -> None:
    await expect_error(next_id(stub, "a||b"), Status.INVALID_ARGUMENT, "'key'", "||")


async def test_unknown_store_is_invalid_argument(stub: pb.RuntimeStub) -> None:
    await expect_error(
        next_id(stub, "k", store="no-such-store"), Status.INVALID_ARGUMENT, "no-such-store"
    )


@pytest.mark.parametrize(
    "runtime_options", [{"config": RuntimeConfig(components=())}], indirect=True
)
async def test_no_sequencer_is_failed_precondition(stub: pb.RuntimeStub) -> None:
    await expect_error(
        next_id(stub, "k"), Status.FAILED_PRECONDITION, "sequencer store is not configured"
    )


# GetNextIdRequest{store_name="sequencer", key="k", options{increment = 7}}, hand-encoded: a
# value this build does not know (e.g. from a newer client).
UNKNOWN_INCREMENT = b"\x0a\x09sequencer\x12\x01k\x1a\x02\x08\x07"


async def test_unknown_increment_is_invalid_argument(sidecar: Any) -> None:
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        call = chan.unary_unary("/spec.proto.runtime.v1.Runtime/GetNextId")
        with pytest.raises(grpc.aio.AioRpcError) as info:
            await call(UNKNOWN_INCREMENT, timeout=5)
    assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT, info.value.details()
    assert "options.increment" in (info.value.details() or "")


def test_the_hand_encoded_request_says_what_it_should() -> None:
    parsed = pb.GetNextIdRequest.parse(UNKNOWN_INCREMENT)
    assert (parsed.store_name, parsed.key) == (STORE, "k")
    assert parsed.options is not None
    assert int(parsed.options.increment) == 7


# -- key prefixes, stores and biggerThan ---------------------------------------------------

CONFIGURED = RuntimeConfig(
    app=AppConfig(id="myapp"),
    components=(
        ComponentConfig(
            name="a", kind=Kind.SEQUENCER, type="in-memory", bigger_than={"order": 1000}
        ),
        ComponentConfig(name="b", kind=Kind.SEQUENCER, type="in-memory", key_prefix="name"),
    ),
)


@pytest.fixture
async def configured(start_sidecar: Any) -> AsyncIterator[Any]:
    async with start_sidecar(CONFIGURED) as sidecar:
        yield sidecar


@pytest.fixture
async def configured_stub(configured: Any) -> AsyncIterator[pb.RuntimeStub]:
    channel = configured.channel()
    try:
        yield pb.RuntimeStub(channel, timeout=10)
    finally:
        channel.close()


@pytest.mark.parametrize("options", [WEAK, STRONG], ids=["weak", "strong"])
async def test_bigger_than_applies_to_the_prefixed_key(
    configured: Any, configured_stub: pb.RuntimeStub, options: pb.SequencerOptions
) -> None:
    assert await next_id(configured_stub, "order", options, store="a") == 1001
    assert await next_id(configured_stub, "other", options, store="a") == 1
    # Store b has no biggerThan.
    assert await next_id(configured_stub, "order", options, store="b") == 1


async def test_stores_are_independent(configured: Any, configured_stub: pb.RuntimeStub) -> None:
    assert await next_id(configured_stub, "k", store="a") == 1
    assert await next_id(configured_stub, "k", store="b") == 1
    assert await next_id(configured_stub, "k", store="a") == 2


async def test_stored_keys_carry_the_prefix(
    configured: Any, configured_stub: pb.RuntimeStub
) -> None:
    await next_id(configured_stub, "k", STRONG, store="a")
    await next_id(configured_stub, "k", STRONG, store="b")
    assert await backend_next(configured, "sequencer|||myapp||k", "a") == 2
    assert await backend_next(configured, "sequencer|||b||k", "b") == 2


async def test_a_bigger_than_that_cannot_be_applied_stops_startup() -> None:
    catalog = Catalog()
    catalog.add(PluginInfo("builtin", "layotto", "0", tuple(builtin_components())))
    config = RuntimeConfig(
        components=(
            ComponentConfig(
                name="bad", kind=Kind.SEQUENCER, type="in-memory", bigger_than={"a||b": 1}
            ),
        )
    ).with_overrides(grpc_port=0, http_port=0)
    runtime = Runtime(config, catalog)
    with anyio.fail_after(10), pytest.raises(ConfigError, match=r"'bad'.*biggerThan\['a\|\|b'\]"):
        await runtime.serve()
    assert list(runtime.components) == []  # closed again
