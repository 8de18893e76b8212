"""`bindings.kafka` against real Kafka-protocol brokers (librdkafka's mock cluster, and Tansu
for the round trip): output `create`, input `read` at least once, and the metadata rules."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any

import anyio
import pytest
from layotto.components import BuiltComponent, ComponentRegistry
from layotto.config import ComponentConfig
from layotto.plugin import (
    BindingEvent,
    BindingRequest,
    ComponentContext,
    InvalidArgument,
    Kind,
)
from layotto.plugins import load_catalog
from layotto.services.bindings import BindingService
from layotto_kafka import KafkaBinding, KafkaBindingMetadata
from layotto_kafka.binding import retry_delay
from layotto_kafka.testing import MockKafkaCluster
from layotto_kafka_test_support import FAST_GROUP, Names
from pydantic import ValidationError

pytestmark = [pytest.mark.anyio, pytest.mark.integration, pytest.mark.timeout(90)]

Handler = Callable[[BindingEvent], Awaitable[bytes | None]]


def binding_metadata(bootstrap: str, **metadata: str) -> KafkaBindingMetadata:
    return KafkaBindingMetadata.model_validate({"brokers": bootstrap, **FAST_GROUP, **metadata})


@pytest.fixture
async def make_binding() -> AsyncIterator[Callable[..., Awaitable[KafkaBinding]]]:
    made: list[KafkaBinding] = []

    async def make(bootstrap: str, **metadata: str) -> KafkaBinding:
        component = KafkaBinding.create(
            binding_metadata(bootstrap, **metadata), ComponentContext("events", "app")
        )
        await component.init()
        made.append(component)
        return component

    yield make
    for component in made:
        await component.close()


@asynccontextmanager
async def reading(binding: KafkaBinding, handler: Handler) -> AsyncIterator[None]:
    """`binding.read(handler)` in a task for the duration of the block, then cancelled."""
    async with anyio.create_task_group() as tg:
        tg.start_soon(binding.read, handler)
        try:
            yield
        finally:
            tg.cancel_scope.cancel()


async def wait_for(condition: Callable[[], bool], within: float, what: str) -> None:
    with anyio.move_on_after(within):
        for _ in iter(int, 1):  # poll until the deadline
            if condition():
                return
            await anyio.sleep(0.05)
    raise AssertionError(f"not within {within} s: {what}")


# -- metadata --------------------------------------------------------------------------------


def test_metadata() -> None:
    metadata = KafkaBindingMetadata.model_validate(
        {
            "brokers": "localhost:9092",
            "topics": "a, b,c",
            "publishTopic": "out",
            "consumerGroup": "g",
            "direction": "input, output",
            "consumeRetryInterval": "200ms",
            "authType": "none",
        }
    )
    assert metadata.topics == ["a", "b", "c"]
    assert metadata.publish_topic == "out"
    assert metadata.group_id("app") == "g"
    assert metadata.consume_retry_interval == 0.2
    assert not metadata.model_extra
    assert KafkaBindingMetadata.model_validate({"brokers": "h:1"}).group_id("app") == "app"


@pytest.mark.parametrize(
    ("metadata", "message"),
    [
        ({"direction": "input"}, "topics is required"),
        ({"direction": "output"}, "publishTopic is required"),
        ({"direction": "input,output", "topics": "a"}, "publishTopic is required"),
        ({"direction": "sideways"}, "direction"),
        ({"consumeRetryInterval": "0s"}, "consumeRetryInterval"),
    ],
)
def test_metadata_rejects(metadata: dict[str, str], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        KafkaBindingMetadata.model_validate({"brokers": "h:1", **metadata})


def test_retry_delay_is_capped_and_jittered() -> None:
    assert 0.05 <= retry_delay(0, 0.1) <= 0.1
    assert 0.2 <= retry_delay(2, 0.1) <= 0.4
    assert 5.0 <= retry_delay(100, 0.1) <= 10.0


# -- output and input ------------------------------------------------------------------------


async def test_create_then_read(make_binding: Any, bootstrap: str, names: Names) -> None:
    topic = names("events")
    binding: KafkaBinding = await make_binding(
        bootstrap,
        publishTopic=topic,
        topics=topic,
        consumerGroup=names("group"),
        initialOffset="oldest",
    )
    assert binding.operations() == ("create",)
    for i in range(6):
        response = await binding.invoke(
            BindingRequest(
                "create", f"e{i}".encode(), {"partitionKey": f"k{i % 2}", "x-trace": f"t{i}"}
            )
        )
        assert response.data == b""
    got: list[BindingEvent] = []

    async def handler(event: BindingEvent) -> None:
        got.append(event)

    async with reading(binding, handler):
        await wait_for(lambda: len(got) >= 6, 30, "six events")
    assert sorted(e.data for e in got) == [f"e{i}".encode() for i in range(6)]
    for event in got:
        i = int(event.data[1:])
        md = event.metadata
        assert md["x-trace"] == f"t{i}"  # request metadata travels as headers
        assert md["partitionKey"] == f"k{i % 2}"
        assert md["__key"] == f"k{i % 2}"  # ... and picks the record key
        assert md["__topic"] == topic
        assert int(md["__partition"]) >= 0
        assert int(md["__offset"]) >= 0
        assert int(md["__timestamp"]) > 1_600_000_000_000
    # One key -> one partition, in produce order.
    for key in ("k0", "k1"):
        mine = [e for e in got if e.metadata["__key"] == key]
        assert len({e.metadata["__partition"] for e in mine}) == 1
        assert [e.data for e in mine] == sorted(e.data for e in mine)


async def test_key_metadata_alternatives(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    topic = names("keys")
    binding: KafkaBinding = await make_binding(
        mock_cluster.bootstrap,
        publishTopic=topic,
        topics=topic,
        consumerGroup=names("group"),
        initialOffset="oldest",
    )
    await binding.invoke(BindingRequest("create", b"a", {"key": "plain"}))
    await binding.invoke(BindingRequest("create", b"b", {"__key": "dapr"}))
    await binding.invoke(BindingRequest("create", b"c", {"partitionKey": "p", "key": "ignored"}))
    await binding.invoke(BindingRequest("create", b"d"))
    got: dict[bytes, BindingEvent] = {}

    async def handler(event: BindingEvent) -> None:
        got[event.data] = event

    async with reading(binding, handler):
        await wait_for(lambda: len(got) >= 4, 30, "four events")
    assert got[b"a"].metadata["__key"] == "plain"
    assert got[b"b"].metadata["__key"] == "dapr"
    assert got[b"c"].metadata["__key"] == "p"
    assert "__key" not in got[b"d"].metadata


async def test_several_topics(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    one, two = names("one"), names("two")
    writer: KafkaBinding = await make_binding(mock_cluster.bootstrap, publishTopic=one)
    other: KafkaBinding = await make_binding(mock_cluster.bootstrap, publishTopic=two)
    await writer.invoke(BindingRequest("create", b"1"))
    await other.invoke(BindingRequest("create", b"2"))
    reader: KafkaBinding = await make_binding(
        mock_cluster.bootstrap,
        topics=f"{one},{two}",
        consumerGroup=names("group"),
        initialOffset="oldest",
    )
    got: list[BindingEvent] = []

    async def handler(event: BindingEvent) -> None:
        got.append(event)

    async with reading(reader, handler):
        await wait_for(lambda: len(got) >= 2, 30, "one event per topic")
    assert {(e.data, e.metadata["__topic"]) for e in got} == {(b"1", one), (b"2", two)}


async def test_failed_event_is_redelivered_and_holds_its_partition(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    """The handler raising = not processed: the same record comes again (with backoff) and the
    records behind it in the partition wait; nothing is committed past it."""
    topic = names("retry")
    group = names("group")
    options = {"topics": topic, "consumerGroup": group, "initialOffset": "oldest"}
    binding: KafkaBinding = await make_binding(
        mock_cluster.bootstrap, publishTopic=topic, consumeRetryInterval="50ms", **options
    )
    for data in (b"first", b"second"):
        await binding.invoke(BindingRequest("create", data, {"partitionKey": "same"}))
    calls: list[bytes] = []

    async def handler(event: BindingEvent) -> None:
        calls.append(event.data)
        if event.data == b"first" and calls.count(b"first") < 4:
            raise RuntimeError("not yet")

    async with reading(binding, handler):
        await wait_for(lambda: b"second" in calls, 30, "the second event")
        await anyio.sleep(1.0)  # the commit loop runs every 200 ms
    assert calls == [b"first"] * 4 + [b"second"]

    # Both were committed: a new reader of the group gets nothing.
    again: KafkaBinding = await make_binding(mock_cluster.bootstrap, **options)
    seen: list[bytes] = []

    async def record(event: BindingEvent) -> None:
        seen.append(event.data)

    async with reading(again, record):
        await anyio.sleep(6)  # join + a few polls
    assert seen == []


async def test_unprocessed_event_survives_a_restart(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    """A record the handler never finished is not committed when reading stops (cancelled, as
    at shutdown): the next reader of the group gets it again."""
    topic = names("restart")
    group = names("group")
    options = {"topics": topic, "consumerGroup": group, "initialOffset": "oldest"}
    binding: KafkaBinding = await make_binding(
        mock_cluster.bootstrap, publishTopic=topic, **options
    )
    await binding.invoke(BindingRequest("create", b"ok", {"partitionKey": "a"}))
    await binding.invoke(BindingRequest("create", b"stuck", {"partitionKey": "a"}))
    seen: list[bytes] = []
    started = anyio.Event()

    async def hang_on_stuck(event: BindingEvent) -> None:
        seen.append(event.data)
        if event.data == b"stuck":
            started.set()
            await anyio.sleep_forever()

    async with reading(binding, hang_on_stuck):
        with anyio.fail_after(30):
            await started.wait()
        await anyio.sleep(0.5)  # "ok" is committed meanwhile
    assert seen == [b"ok", b"stuck"]

    again: KafkaBinding = await make_binding(mock_cluster.bootstrap, **options)
    redelivered: list[bytes] = []

    async def record(event: BindingEvent) -> None:
        redelivered.append(event.data)

    async with reading(again, record):
        await wait_for(lambda: b"stuck" in redelivered, 30, "the redelivery")
        await anyio.sleep(0.5)
    assert redelivered == [b"stuck"]


async def test_read_without_topics_returns(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    binding: KafkaBinding = await make_binding(mock_cluster.bootstrap, publishTopic=names("t"))

    async def handler(event: BindingEvent) -> None:
        raise AssertionError("no events expected")

    with anyio.fail_after(5):
        await binding.read(handler)


async def test_create_needs_a_publish_topic(
    make_binding: Any, mock_cluster: MockKafkaCluster, names: Names
) -> None:
    binding: KafkaBinding = await make_binding(mock_cluster.bootstrap, topics=names("t"))
    with pytest.raises(InvalidArgument, match="publishTopic"):
        await binding.invoke(BindingRequest("create", b"x"))


async def test_registered_with_both_sides(mock_cluster: MockKafkaCluster, names: Names) -> None:
    """`bindings.kafka` through the catalog and BindingService; `direction` picks the sides."""
    catalog = load_catalog()
    spec = catalog.resolve(Kind.BINDINGS, "kafka", where="test")
    registry = ComponentRegistry()
    items = []
    for name, direction in (("both", ""), ("in", "input"), ("out", "output")):
        config = ComponentConfig(
            name=name,
            kind=Kind.BINDINGS,
            type="kafka",
            metadata={
                "brokers": mock_cluster.bootstrap,
                "topics": names("t"),
                "publishTopic": names("t"),
                **({"direction": direction} if direction else {}),
            },
        )
        metadata = spec.metadata_model.model_validate(config.metadata)
        assert not metadata.model_extra
        items.append(
            BuiltComponent(config, spec, spec.create(metadata, ComponentContext(name, "app")))
        )
    await registry.start(items)
    try:
        service = BindingService(registry)
        assert service.output_names() == ["both", "out"]
        assert sorted(service.inputs()) == ["both", "in"]
        await service.invoke("out", "create", b"x", {})
        with pytest.raises(InvalidArgument, match="does not support operation get"):
            await service.invoke("out", "get")
    finally:
        with anyio.CancelScope(shield=True):
            await asyncio.wait_for(registry.close(), 30)
