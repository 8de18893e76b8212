"""The Configuration RPCs of `spec.proto.runtime.v1.Runtime` over a real socket (grpclib client):
Get/Save/Delete, the bidi SubscribeConfiguration (accumulating subscriptions, independent
streams, the `sendInitialValues` extension, drain), validation codes, info and readiness.

Behaviour: layotto-semantics.md §3.1, §3.2 and "Known Layotto gaps" 4, 13, 19."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Any

import anyio
import grpc
import httpx
import pytest
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.client import Stream as ClientStream
from grpclib.const import Cardinality, Status
from grpclib.exceptions import StreamTerminatedError
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.actors.config_watcher import watch_indicator
from layotto.builtin import layotto_components as builtin_components
from layotto.config import AppConfig, ComponentConfig, RuntimeConfig
from layotto.health import Probe
from layotto.plugin import (
    ComponentContext,
    ComponentMetadata,
    ComponentSpec,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    HealthStatus,
    Kind,
)
from layotto.plugins import Catalog, PluginInfo
from layotto.runtime import Runtime

pytestmark = pytest.mark.anyio

STORE = "configstore"
APP = "app1"
SUBSCRIBE = "/spec.proto.runtime.v1.Runtime/SubscribeConfiguration"

SubStream = ClientStream[pb.SubscribeConfigurationRequest, pb.SubscribeConfigurationResponse]


async def expect_error(call: Any, status: Status, *fragments: str) -> GRPCError:
    with anyio.fail_after(10), pytest.raises(GRPCError) as info:
        await call
    err = info.value
    assert err.status is status, f"{err.status.name}: {err.message}"
    for fragment in fragments:
        assert fragment in (err.message or ""), f"{fragment!r} not in {err.message!r}"
    return err


def item(
    key: str, content: str, group: str = "", label: str = "", **tags: str
) -> pb.ConfigurationItem:
    return pb.ConfigurationItem(key=key, content=content, group=group, label=label, tags=tags)


async def save(stub: pb.RuntimeStub, *items: pb.ConfigurationItem, app_id: str = APP) -> None:
    await stub.save_configuration(
        pb.SaveConfigurationRequest(store_name=STORE, app_id=app_id, items=list(items))
    )


async def get(
    stub: pb.RuntimeStub, keys: Sequence[str] = (), group: str = "", label: str = ""
) -> list[pb.ConfigurationItem]:
    reply = await stub.get_configuration(
        pb.GetConfigurationRequest(
            store_name=STORE, app_id=APP, group=group, label=label, keys=list(keys)
        )
    )
    return reply.items


def request(
    keys: Sequence[str] = (),
    *,
    store: str = STORE,
    group: str = "",
    label: str = "",
    metadata: Mapping[str, str] | None = None,
) -> pb.SubscribeConfigurationRequest:
    return pb.SubscribeConfigurationRequest(
        store_name=store,
        app_id=APP,
        group=group,
        label=label,
        keys=list(keys),
        metadata=dict(metadata or {}),
    )


def subscribe_stream(channel: Channel) -> AbstractAsyncContextManager[SubStream]:
    return channel.request(
        SUBSCRIBE,
        Cardinality.STREAM_STREAM,
        pb.SubscribeConfigurationRequest,
        pb.SubscribeConfigurationResponse,
        timeout=30,
    )


async def recv(stream: SubStream, within: float = 5.0) -> pb.SubscribeConfigurationResponse:
    with anyio.fail_after(within):
        reply = await stream.recv_message()
    assert reply is not None, "the stream ended"
    return reply


async def read_to_end(stream: SubStream, within: float = 5.0) -> None:
    """Reads until the server ends the stream; its error status then comes out of the stream's
    `async with` block. (Tests half-close first: grpclib's client wants its side ended before
    it reads the trailers, and the server keeps a half-closed stream going.)"""
    with anyio.fail_after(within):
        try:
            while await stream.recv_message() is not None:
                pass
        except StreamTerminatedError:
            pass


def pairs(reply: pb.SubscribeConfigurationResponse) -> list[tuple[str, str]]:
    return [(i.key, i.content) for i in reply.items]


async def eventually(check: Callable[[], bool], within: float = 5.0) -> None:
    with anyio.fail_after(within):
        while True:
            if check():
                return
            await anyio.sleep(0.01)


def subscriber_count(runtime: Runtime) -> int:
    watchers = runtime.config_watchers
    return 0 if watchers is None else sum(s["subscribers"] for s in watchers.info())


async def wait_for_subscribers(runtime: Runtime, count: int, within: float = 5.0) -> None:
    """Until `count` subscriptions are registered (a request has been processed)."""
    await eventually(lambda: subscriber_count(runtime) == count, within)


@dataclass
class Outcome:
    error: GRPCError | None = None

    @property
    def status(self) -> Status | None:
        return None if self.error is None else self.error.status

    @property
    def message(self) -> str:
        return "" if self.error is None else (self.error.message or "")


@asynccontextmanager
async def failing_stream(channel: Channel) -> AsyncIterator[tuple[SubStream, Outcome]]:
    """A subscription stream expected to end with an error status: the status is recorded in
    the outcome when the block exits (grpclib's client reports it there)."""
    outcome = Outcome()
    try:
        async with subscribe_stream(channel) as stream:
            yield stream, outcome
    except GRPCError as err:
        outcome.error = err


# -- Get / Save / Delete -------------------------------------------------------------------


async def test_save_get_delete_round_trip(stub: pb.RuntimeStub) -> None:
    await save(stub, item("a", "1", tier="gold"), item("b", "2"))
    items = await get(stub, ["a", "b", "missing"])
    assert [(i.key, i.content, i.group, i.label) for i in items] == [
        ("a", "1", "default", "default"),
        ("b", "2", "default", "default"),
    ]
    assert items[0].tags == {"tier": "gold"}
    assert items[0].metadata["version"]
    # Blank group and label are the store's defaults, whitespace included.
    assert [i.key for i in await get(stub, [], group=" ", label="default")] == ["a", "b"]
    await stub.delete_configuration(
        pb.DeleteConfigurationRequest(store_name=STORE, app_id=APP, keys=["a", "missing"])
    )
    assert [i.key for i in await get(stub)] == ["b"]


async def test_missing_keys_read_as_empty(stub: pb.RuntimeStub) -> None:
    assert await get(stub, ["nope"]) == []


async def test_groups_labels_and_app_ids_are_separate(stub: pb.RuntimeStub) -> None:
    await save(stub, item("k", "g1", group="g1"), item("k", "l1", label="l1"))
    await save(stub, item("k", "other-app"), app_id="app2")
    assert [i.content for i in await get(stub, ["k"], group="g1")] == ["g1"]
    assert [i.content for i in await get(stub, ["k"], label="l1")] == ["l1"]
    assert await get(stub, ["k"]) == []


async def test_validation_codes(stub: pb.RuntimeStub) -> None:
    await expect_error(
        stub.get_configuration(pb.GetConfigurationRequest(keys=["k"])),
        Status.INVALID_ARGUMENT,
        "store_name",
    )
    await expect_error(
        stub.get_configuration(pb.GetConfigurationRequest(store_name="nope")),
        Status.INVALID_ARGUMENT,
        "'nope'",
    )
    await expect_error(
        stub.save_configuration(
            pb.SaveConfigurationRequest(store_name=STORE, items=[item("", "v")])
        ),
        Status.INVALID_ARGUMENT,
        "items[0].key",
    )
    await expect_error(
        stub.delete_configuration(pb.DeleteConfigurationRequest(store_name=STORE)),
        Status.INVALID_ARGUMENT,
        "keys",
    )


# -- components: none configured, read-only -------------------------------------------------


class ReadOnlyMetadata(ComponentMetadata):
    pass


class ReadOnlyStore(ConfigStore):
    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        return [ConfigItem("fixed", "value", query.group, query.label)]

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        yield []
        await anyio.sleep_forever()

    @classmethod
    def create(cls, metadata: ReadOnlyMetadata, context: ComponentContext) -> ReadOnlyStore:
        return cls()


@pytest.fixture
def catalog() -> Catalog:
    catalog = Catalog()
    catalog.add(PluginInfo("builtin", "layotto", "0", tuple(builtin_components())))
    spec = ComponentSpec(Kind.CONFIGURATION, "read-only", ReadOnlyMetadata, ReadOnlyStore.create)
    catalog.add(PluginInfo("tests", "layotto-tests", "0", (spec,)))
    return catalog


async def test_no_configuration_store_is_failed_precondition(
    start_sidecar: Any, catalog: Catalog
) -> None:
    config = RuntimeConfig(
        app=AppConfig(id=APP),
        components=(ComponentConfig(name="statestore", kind=Kind.STATE, type="in-memory"),),
    )
    async with start_sidecar(config, catalog) as sidecar:
        channel = sidecar.channel()
        try:
            stub = pb.RuntimeStub(channel, timeout=10)
            await expect_error(
                stub.get_configuration(pb.GetConfigurationRequest(store_name=STORE)),
                Status.FAILED_PRECONDITION,
                "not configured",
            )
            async with failing_stream(channel) as (stream, outcome):
                await stream.send_message(request(["k"]), end=True)
                await read_to_end(stream)
            assert outcome.status is Status.FAILED_PRECONDITION
        finally:
            channel.close()


async def test_read_only_store_answers_unimplemented(start_sidecar: Any, catalog: Catalog) -> None:
    config = RuntimeConfig(
        components=(ComponentConfig(name="ro", kind=Kind.CONFIGURATION, type="read-only"),)
    )
    async with start_sidecar(config, catalog) as sidecar:
        channel = sidecar.channel()
        try:
            stub = pb.RuntimeStub(channel, timeout=10)
            await expect_error(
                stub.save_configuration(
                    pb.SaveConfigurationRequest(store_name="ro", items=[item("k", "v")])
                ),
                Status.UNIMPLEMENTED,
                "read-only",
            )
            await expect_error(
                stub.delete_configuration(
                    pb.DeleteConfigurationRequest(store_name="ro", keys=["k"])
                ),
                Status.UNIMPLEMENTED,
            )
            reply = await stub.get_configuration(pb.GetConfigurationRequest(store_name="ro"))
            assert [(i.key, i.group, i.label) for i in reply.items] == [
                ("fixed", "default", "default")
            ]
        finally:
            channel.close()


# -- SubscribeConfiguration ------------------------------------------------------------------


async def test_subscriptions_accumulate_on_one_stream(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    async with subscribe_stream(channel) as stream:
        await stream.send_message(request(["a"]))
        await stream.send_message(request(["b"], group="g2"))
        await wait_for_subscribers(runtime, 2)
        await save(stub, item("a", "1"), item("x", "ignored"))
        reply = await recv(stream)
        assert (reply.store_name, reply.app_id) == (STORE, APP)
        assert [(i.key, i.content, i.group, i.label) for i in reply.items] == [
            ("a", "1", "default", "default")
        ]
        await save(stub, item("b", "2", group="g2"))
        assert pairs(await recv(stream)) == [("b", "2")]
        # A delete is an item with empty content.
        await stub.delete_configuration(
            pb.DeleteConfigurationRequest(store_name=STORE, app_id=APP, keys=["a"])
        )
        deleted = await recv(stream)
        assert pairs(deleted) == [("a", "")]
        assert deleted.items[0].metadata["deleted"] == "true"
        await stream.cancel()


async def test_current_values_are_not_sent_unless_asked(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    await save(stub, item("a", "old"), item("b", "old"))
    async with subscribe_stream(channel) as plain, subscribe_stream(channel) as initial:
        await plain.send_message(request(["a", "b"]))
        await initial.send_message(request(["a", "b"], metadata={"sendInitialValues": "true"}))
        first = await recv(initial)
        assert sorted(pairs(first)) == [("a", "old"), ("b", "old")]
        await wait_for_subscribers(runtime, 2)
        await save(stub, item("a", "new"))
        assert pairs(await recv(plain)) == [("a", "new")]  # changes only, as upstream
        assert pairs(await recv(initial)) == [("a", "new")]
        await plain.cancel()
        await initial.cancel()


async def test_a_half_closed_stream_keeps_receiving(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    async with subscribe_stream(channel) as stream:
        await stream.send_message(request(["a"]), end=True)
        await wait_for_subscribers(runtime, 1)
        await save(stub, item("a", "1"))
        assert pairs(await recv(stream)) == [("a", "1")]
        await stream.cancel()


async def test_the_generated_stub_works(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    got: list[pb.SubscribeConfigurationResponse] = []

    async def consume() -> None:
        async for reply in stub.subscribe_configuration([request(["s"])]):
            got.append(reply)
            return

    async with anyio.create_task_group() as tg:
        tg.start_soon(consume)
        await wait_for_subscribers(runtime, 1)
        await save(stub, item("s", "1"))
        await eventually(lambda: bool(got))
    assert pairs(got[0]) == [("s", "1")]
    await wait_for_subscribers(runtime, 0)  # leaving the iteration cancelled the stream


async def test_streams_are_independent(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    async with subscribe_stream(channel) as two:
        await two.send_message(request(["k"]))
        async with failing_stream(channel) as (one, outcome):
            await one.send_message(request(["k"]))
            await wait_for_subscribers(runtime, 2)
            await save(stub, item("k", "1"))
            assert pairs(await recv(one)) == [("k", "1")]
            assert pairs(await recv(two)) == [("k", "1")]
            # An unknown store on a later message ends that stream only.
            await one.send_message(request(["k"], store="nope"), end=True)
            await read_to_end(one)
        assert outcome.status is Status.INVALID_ARGUMENT
        assert "'nope'" in outcome.message
        await wait_for_subscribers(runtime, 1)  # the failed stream's subscriptions are gone
        await save(stub, item("k", "2"))
        assert pairs(await recv(two)) == [("k", "2")]
        await two.cancel()


async def test_an_unknown_store_with_the_grpcio_client(
    sidecar: Any, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    """The reference client sees the change, then the error status of its stream."""
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        call = chan.stream_stream(
            SUBSCRIBE,
            request_serializer=bytes,
            response_deserializer=pb.SubscribeConfigurationResponse.parse,
        )(timeout=10)
        await call.write(request(["k"]))
        await wait_for_subscribers(runtime, 1)
        await save(stub, item("k", "1"))
        reply = await call.read()
        assert pairs(reply) == [("k", "1")]
        await call.write(request(["k"], store="nope"))  # without half-closing

        async def read_all() -> None:
            while await call.read() is not grpc.aio.EOF:
                pass

        with anyio.fail_after(5), pytest.raises(grpc.aio.AioRpcError) as info:
            await read_all()
        assert info.value.code() is grpc.StatusCode.INVALID_ARGUMENT
        assert "'nope'" in (info.value.details() or "")


async def test_a_cancelled_stream_stops_only_its_own_subscriptions(
    sidecar: Any, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    other_channel = sidecar.channel()
    try:
        async with subscribe_stream(sidecar.channel()) as doomed:
            await doomed.send_message(request(["k"]))
            async with subscribe_stream(other_channel) as kept:
                await kept.send_message(request(["k"]))
                await wait_for_subscribers(runtime, 2)
                await doomed.cancel()
                await wait_for_subscribers(runtime, 1)
                await save(stub, item("k", "1"))
                assert pairs(await recv(kept)) == [("k", "1")]
                await kept.cancel()
        await wait_for_subscribers(runtime, 0)
        assert runtime.config_watchers is not None
        assert runtime.config_watchers.watcher(STORE, APP) is None  # the last one left
    finally:
        other_channel.close()


async def test_a_lost_connection_ends_its_subscriptions_quietly(
    sidecar: Any, runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    channel = sidecar.channel()
    async with subscribe_stream(channel) as stream:
        await stream.send_message(request(["k"]))
        await wait_for_subscribers(runtime, 1)
        channel.close()  # the connection drops under the open stream
        await wait_for_subscribers(runtime, 0)
    # The cancellation was handled (grpclib logs it as an error otherwise).
    assert not [r for r in caplog.records if "Failed to handle cancellation" in r.getMessage()]
    assert not [r for r in caplog.records if r.levelname == "ERROR"]


async def test_a_dropped_subscriber_ends_its_stream_with_resource_exhausted(
    channel: Channel, stub: pb.RuntimeStub, runtime: Runtime
) -> None:
    async with subscribe_stream(channel) as kept:
        await kept.send_message(request(["k"]))
        await wait_for_subscribers(runtime, 1)
        async with failing_stream(channel) as (dropped, outcome):
            await dropped.send_message(request(["k"]), end=True)
            await wait_for_subscribers(runtime, 2)
            watchers = runtime.config_watchers
            assert watchers is not None
            watcher = watchers.watcher(STORE, APP)
            assert watcher is not None
            watcher.subscribers()[-1].drop("a test said so")  # the newest: `dropped`'s
            await read_to_end(dropped)
        assert outcome.status is Status.RESOURCE_EXHAUSTED
        assert "subscribe again" in outcome.message
        await save(stub, item("k", "1"))
        assert pairs(await recv(kept)) == [("k", "1")]
        await kept.cancel()


async def test_subscription_request_validation(channel: Channel) -> None:
    async with failing_stream(channel) as (stream, outcome):
        await stream.send_message(request(["ok", ""]), end=True)
        await read_to_end(stream)
    assert outcome.status is Status.INVALID_ARGUMENT
    assert "keys[1]" in outcome.message


# -- observability ---------------------------------------------------------------------------


async def test_info_and_readiness_show_the_subscriptions(
    channel: Channel, runtime: Runtime, http: httpx.AsyncClient
) -> None:
    body = (await http.get("/actuator/info")).json()
    assert body["subscriptions"]["configuration"] == []
    async with subscribe_stream(channel) as one, subscribe_stream(channel) as two:
        await one.send_message(request(["b", "a"]))
        await two.send_message(request(["a", "b"]))
        await two.send_message(request([], group="g"))
        await wait_for_subscribers(runtime, 3)
        body = (await http.get("/actuator/info")).json()
        base = {"store": STORE, "app_id": APP, "label": "default"}
        assert body["subscriptions"]["configuration"] == [
            {**base, "group": "default", "keys": ["a", "b"], "subscribers": 2},
            {**base, "group": "g", "keys": [], "subscribers": 1},
        ]
        indicator = watch_indicator(STORE, APP)
        await eventually(lambda: runtime.health.get(indicator) is not None)
        readiness = (await http.get("/actuator/health/readiness")).json()
        assert readiness["components"][indicator]["status"] == "UP"
        assert readiness["status"] == "UP"
        await one.cancel()
        await two.cancel()


# -- shutdown --------------------------------------------------------------------------------


async def test_draining_ends_subscription_streams_at_once(start_sidecar: Any) -> None:
    async with start_sidecar(grace_period=20) as sidecar:
        runtime: Runtime = sidecar.runtime
        channel = sidecar.channel()
        try:
            async with failing_stream(channel) as (stream, outcome):
                await stream.send_message(request(["k"]), end=True)
                await wait_for_subscribers(runtime, 1)
                started = time.monotonic()
                runtime.shutdown.set()
                await read_to_end(stream)
            assert outcome.status is Status.UNAVAILABLE
            assert "shutting down" in outcome.message
            with anyio.fail_after(5):
                await sidecar.stopped.wait()
            assert time.monotonic() - started < 3  # not held for the 20 s grace period
            assert runtime.health.status(Probe.READINESS) is HealthStatus.DOWN
        finally:
            channel.close()
