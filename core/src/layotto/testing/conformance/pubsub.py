"""Pub/sub conformance (conformance.md §2), run against a harness.

The scenarios talk to a `PubSubHarness`: publish bytes to a topic, subscribe a handler for as
long as a block lasts. The same scenarios run against a component through the sidecar's own
delivery engine (`ComponentHarness`, the default) and, through harnesses of the sidecar's test
suite, against the running sidecar (app callbacks and streaming subscriptions).

A plugin provides its initialised component as the fixture `pubsub` (closed on teardown, a
fresh one per test); the `layotto` pytest plugin's default `pubsub_harness` wraps it in a
`ComponentHarness`::

    import pytest
    from layotto.plugin import ComponentContext
    from layotto.testing.conformance import PubSubConformance

    class TestRedisPubSub(PubSubConformance):
        @pytest.fixture
        async def pubsub(self, redis_url):
            component = RedisPubSub.create(RedisPubSubMetadata(...), ComponentContext("p", "app"))
            await component.init()
            yield component
            await component.close()

Override `pubsub_harness` instead (in the class, the module or a conftest.py) to run the
scenarios through something else, or to tune the harness: e.g.
`ComponentHarness(pubsub, ordered=False)` for a component that delivers keyless messages
concurrently (`Message.ordering_key = None`).

Knobs (class attributes): `message_count` (20: messages of the main scenario), `deadline`
(30 s: how long a delivery may take), `quiet_period` (0.5 s: how long the kit waits to be sure
that something does NOT arrive, after a sentinel published behind it has arrived),
`failing_handler_sleep` (0.2 s: the failing handler sleeps first, so messages pile up),
`carries_metadata` (True: publish metadata comes back in `TopicEvent.metadata`).

Bulk publish (conformance.md §2, *feature bulkpublish*): the bulk scenarios need a harness that
is also a `BulkPublishHarness` (`ComponentHarness` is: it publishes through the sidecar's own
`PubSubService.publish_bulk`; so are the sidecar harnesses, through Dapr's BulkPublishEvent) and
a component that declares `PubSubFeature.BULK_PUBSUB`; they skip with the reason otherwise.

Topics are unique per test (`conformance_prefix`) and every message is published with the
metadata `partitionKey=<prefix>key`, so a component that orders by key keeps them in order.
Topics are not deleted afterwards (the SPI cannot); a plugin fixture may sweep them.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from dataclasses import dataclass, field, replace
from typing import ClassVar, Protocol, runtime_checkable

import anyio
import pytest

from layotto.plugin import (
    RAW_PAYLOAD_METADATA,
    BulkPublishEntry,
    Health,
    HealthStatus,
    Kind,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
)
from layotto.services.cloudevents import (
    CLOUDEVENTS_JSON,
    LAYOTTO_STYLE,
    EnvelopeStyle,
    EventStatus,
    TopicEvent,
    envelope,
)
from layotto.services.pubsub import BulkEntry, PubSubService
from layotto.services.pubsub_delivery import DeliveryLoop, DeliveryPolicy
from layotto.testing.conformance._services import registry_with
from layotto.testing.conformance._support import ConformanceBase, Names

Handler = Callable[[TopicEvent], Awaitable[EventStatus]]
"""The app's side of one delivery. Raising counts as RETRY."""

# How often the scenarios look at what arrived (a local list: cheap).
DELIVERY_POLL = 0.02


@runtime_checkable
class PubSubHarness(Protocol):
    """What the scenarios drive: a publisher plus subscriptions with handlers."""

    # Events published with the same `partitionKey` arrive in publish order.
    ordered: bool
    # An event whose handler never answered comes back after its subscription is closed and a
    # new one of the same topic (and consumer group) is opened.
    reopen_redelivers: bool

    async def check_health(self) -> Health:
        """The health of what is under test: the component's own check, or the readiness of
        the sidecar serving it."""

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        """Publish one event; return once the broker has it."""

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str | None = None,
        max_retries: int | None = None,
    ) -> AbstractAsyncContextManager[None]:
        """Entering returns once the subscription is established (an event published after
        that reaches `handler`); leaving closes it, and events left unanswered stay un-acked."""


@runtime_checkable
class BulkPublishHarness(Protocol):
    """Optional, for the bulk scenarios: a harness that publishes many events at once, as
    Dapr's BulkPublishEvent does."""

    @property
    def features(self) -> frozenset[PubSubFeature]:
        """The features of the component under test."""

    async def publish_bulk(self, topic: str, entries: Sequence[BulkPublishEntry]) -> dict[str, str]:
        """Publish the entries (app payloads: each gets its envelope as a single publish
        would) in one bulk call; the entries that failed, entry id -> error message."""


FAST_POLICY = DeliveryPolicy(retry_initial_interval=0.05, retry_max_interval=0.5)


class ComponentHarness:
    """The sidecar's pub/sub path over a component, without the sidecar: publish through the
    CloudEvents envelope, subscribe with the delivery engine (`DeliveryLoop`: lanes per
    ordering key, retries with backoff, dead letters, ack only after SUCCESS or DROP)."""

    def __init__(
        self,
        pubsub: PubSub,
        pubsub_name: str = "pubsub",
        policy: DeliveryPolicy = FAST_POLICY,
        *,
        ordered: bool = True,
        reopen_redelivers: bool = True,
        style: EnvelopeStyle = LAYOTTO_STYLE,
        close_grace: float = 0.5,
    ) -> None:
        self.pubsub = pubsub
        self.pubsub_name = pubsub_name
        self.policy = policy
        self.ordered = ordered
        self.reopen_redelivers = reopen_redelivers
        self.style = style
        # Seconds in-flight deliveries may take to finish when a subscription block ends.
        self.close_grace = close_grace
        # Every loop this harness ran, newest last (their `stats` help tests).
        self.loops: list[DeliveryLoop] = []
        self._service: PubSubService | None = None  # for publish_bulk, made on first use

    async def check_health(self) -> Health:
        return await self.pubsub.check_health()

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        meta = dict(metadata or {})
        if meta.get(RAW_PAYLOAD_METADATA, "").strip().lower() in ("1", "true"):
            await self.pubsub.publish(PublishRequest(topic, data, meta, content_type))
            return
        event = envelope(
            data=data,
            content_type=content_type,
            topic=topic,
            pubsub_name=self.pubsub_name,
            metadata=meta,
            style=self.style,
            broker_expires=PubSubFeature.MESSAGE_TTL in self.pubsub.features,
        )
        await self.pubsub.publish(PublishRequest(topic, event.body, meta, CLOUDEVENTS_JSON))

    @property
    def features(self) -> frozenset[PubSubFeature]:
        return self.pubsub.features

    async def publish_bulk(self, topic: str, entries: Sequence[BulkPublishEntry]) -> dict[str, str]:
        """Through the sidecar's own bulk path (`PubSubService.publish_bulk`): the component's
        `publish_bulk` when it declares BULK_PUBSUB, one `publish` per entry otherwise."""
        if self._service is None:
            self._service = PubSubService(registry_with(Kind.PUBSUB, self.pubsub_name, self.pubsub))
        failures = await self._service.publish_bulk(
            self.pubsub_name,
            topic,
            [BulkEntry(e.entry_id, e.data, e.content_type, e.metadata) for e in entries],
            style=self.style,
        )
        return {f.entry_id: f.error for f in failures}

    @contextlib.asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str | None = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[None]:
        request = SubscribeRequest(topic, dict(metadata or {}))
        policy = self.policy.for_subscription(request.metadata)
        if dead_letter_topic is not None:
            policy = replace(policy, dead_letter_topic=dead_letter_topic)
        if max_retries is not None:
            policy = replace(policy, max_retries=max_retries)
        loop = DeliveryLoop(self.pubsub, self.pubsub_name, request, handler, policy=policy)
        self.loops.append(loop)
        subscription = await loop.open()
        finished = anyio.Event()

        async def consume() -> None:
            try:
                await loop.consume(subscription)
            finally:
                finished.set()

        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(consume)
                try:
                    yield
                finally:
                    # As the sidecar drains: stop intake, let in-flight deliveries finish
                    # within the grace period, then cancel what is left (it stays un-acked).
                    loop.stop()
                    with anyio.move_on_after(self.close_grace):
                        await finished.wait()
                    tg.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True), anyio.move_on_after(5):
                await subscription.close()  # idempotent; consume closed it unless it never ran


# -- what a handler saw ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Delivery:
    event: TopicEvent
    at: float  # time.monotonic()


@dataclass
class Recorder:
    """A handler that records every event and answers with `answer(event, nth)` (`nth`: how
    many times this event id was delivered so far, from 1); SUCCESS without one."""

    answer: Callable[[TopicEvent, int], Awaitable[EventStatus]] | None = None
    deliveries: list[Delivery] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)

    async def __call__(self, event: TopicEvent) -> EventStatus:
        self.deliveries.append(Delivery(event, time.monotonic()))
        self.counts[event.id] += 1
        if self.answer is None:
            return EventStatus.SUCCESS
        return await self.answer(event, self.counts[event.id])

    @property
    def events(self) -> list[TopicEvent]:
        return [d.event for d in self.deliveries]

    def datas(self) -> list[bytes]:
        return [d.event.data for d in self.deliveries]

    def with_data(self, data: bytes) -> list[TopicEvent]:
        return [e for e in self.events if e.data == data]

    async def wait(self, check: Callable[[], bool], *, deadline: float, what: str) -> None:
        await wait_for(check, deadline=deadline, what=what)


class PubSubNames(Names):
    """Topics and payloads of one test, under one prefix."""

    def __init__(self, prefix: str) -> None:
        super().__init__(prefix)
        self.partition_key = f"{prefix}key"

    def message(self, tag: str, seq: int) -> bytes:
        return f"{self.prefix}{tag}-{seq:04d}".encode()

    def seq_of(self, tag: str, data: bytes) -> int | None:
        head = f"{self.prefix}{tag}-".encode()
        if not data.startswith(head):
            return None
        try:
            return int(data[len(head) :])
        except ValueError:
            return None

    def metadata(self, **extra: str) -> dict[str, str]:
        return {"partitionKey": self.partition_key, **extra}


class PubSubConformance(ConformanceBase):
    """conformance.md §2 against the `pubsub_harness` fixture. See the module docstring."""

    message_count: ClassVar[int] = 20
    deadline: ClassVar[float] = 30.0
    quiet_period: ClassVar[float] = 0.5
    failing_handler_sleep: ClassVar[float] = 0.2
    carries_metadata: ClassVar[bool] = True

    @pytest.fixture
    def pubsub_names(self, conformance_prefix: str) -> PubSubNames:
        return PubSubNames(conformance_prefix)

    # -- helpers -------------------------------------------------------------------------------

    async def publish_text(
        self,
        harness: PubSubHarness,
        names: PubSubNames,
        topic: str,
        data: bytes,
        **extra: str,
    ) -> None:
        await harness.publish(
            topic, data, metadata=names.metadata(**extra), content_type="text/plain"
        )

    async def sentinel(
        self, harness: PubSubHarness, names: PubSubNames, topic: str, seen: Recorder, tag: str
    ) -> None:
        """Publish a marker behind what came before and wait for it, then `quiet_period` more:
        whatever was going to be (re)delivered before it has been, in an ordered harness."""
        marker = names.message(f"sentinel-{tag}", 0)
        await self.publish_text(harness, names, topic, marker)
        await seen.wait(
            lambda: bool(seen.with_data(marker)),
            deadline=self.deadline,
            what=f"the sentinel {tag!r} on {topic}",
        )
        await anyio.sleep(self.quiet_period)

    # -- Dapr's scenarios ------------------------------------------------------------------------

    async def test_init_and_ping(self, pubsub_harness: PubSubHarness) -> None:
        assert isinstance(pubsub_harness, PubSubHarness)
        with anyio.fail_after(1):
            health = await pubsub_harness.check_health()
        assert health.status is HealthStatus.UP, health.details

    async def test_subscribe_publish_and_verify(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        """Dapr's main flow: N messages, the handler fails the first 2 and every 5th the first
        time it sees them (raising or answering RETRY); every message arrives; in an ordered
        harness the never-failed ones arrive in publish order."""
        harness, names, count = pubsub_harness, pubsub_names, self.message_count
        topic = names("main")
        failing = {i for i in range(count) if i < 2 or (i + 1) % 5 == 0}
        seen: Counter[int] = Counter()
        succeeded: set[int] = set()
        first_arrivals: list[int] = []
        foreign: list[bytes] = []

        async def handler(event: TopicEvent) -> EventStatus:
            seq = names.seq_of("main", event.data)
            if seq is None:
                foreign.append(event.data)
                return EventStatus.SUCCESS
            seen[seq] += 1
            if seen[seq] == 1:
                first_arrivals.append(seq)
                if seq in failing:
                    await anyio.sleep(self.failing_handler_sleep)  # let messages pile up
                    if seq % 2:
                        raise RuntimeError(f"the handler fails message {seq}")
                    return EventStatus.RETRY
            succeeded.add(seq)
            return EventStatus.SUCCESS

        async with harness.subscribe(topic, handler):
            for i in range(count):
                await self.publish_text(harness, names, topic, names.message("main", i), seq=str(i))
            await wait_for(
                lambda: len(succeeded) == count,
                deadline=self.deadline,
                what=f"all {count} messages handled successfully",
            )
        assert not foreign, f"foreign messages on a fresh topic: {foreign[:3]}"
        assert succeeded == set(range(count))
        missing_retries = [i for i in failing if seen[i] < 2]
        assert not missing_retries, f"failed messages never redelivered: {missing_retries}"
        duplicates = sum(seen.values()) - count - len(failing)
        print(f"\n{count} messages, {len(failing)} failed once, {duplicates} extra duplicates")
        if harness.ordered:
            never_failed = [i for i in first_arrivals if i not in failing]
            assert never_failed == sorted(never_failed), (
                f"never-failed messages out of publish order: {never_failed}"
            )

    async def test_multiple_handlers(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        topics = (names("multi-1"), names("multi-2"))
        recorders = (Recorder(), Recorder())
        per_topic = max(self.message_count // 4, 3)
        expected = [{names.message(f"multi-{t + 1}", i) for i in range(per_topic)} for t in (0, 1)]
        async with (
            harness.subscribe(topics[0], recorders[0]),
            harness.subscribe(topics[1], recorders[1]),
        ):
            for i in range(per_topic):
                for t in (0, 1):
                    await self.publish_text(
                        harness, names, topics[t], names.message(f"multi-{t + 1}", i)
                    )
            for t in (0, 1):
                rec, want = recorders[t], expected[t]
                await rec.wait(
                    _has_all(rec, want),
                    deadline=self.deadline,
                    what=f"handler {t + 1} received its {per_topic} messages",
                )
            await anyio.sleep(self.quiet_period)
        for t in (0, 1):
            assert set(recorders[t].datas()) == expected[t], f"handler {t + 1} got others' messages"
            assert {e.topic for e in recorders[t].events} == {topics[t]}

    async def test_stop_one_subscriber(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        stopped_topic, live_topic = names("stopped"), names("live")
        stopped, live = Recorder(), Recorder()
        async with harness.subscribe(live_topic, live):
            async with harness.subscribe(stopped_topic, stopped):
                for topic, rec in ((stopped_topic, stopped), (live_topic, live)):
                    first = names.message("before", 0)
                    await self.publish_text(harness, names, topic, first)
                    await rec.wait(
                        _has_all(rec, {first}),
                        deadline=self.deadline,
                        what=f"the first message on {topic}",
                    )
            calls = len(stopped.deliveries)
            after = [names.message("after", i) for i in range(3)]
            for data in after:
                await self.publish_text(harness, names, stopped_topic, data)
                await self.publish_text(harness, names, live_topic, data)
            await live.wait(
                _has_all(live, set(after)),
                deadline=self.deadline,
                what="the live subscriber kept receiving",
            )
            await anyio.sleep(self.quiet_period)
        assert len(stopped.deliveries) == calls, (
            f"the closed subscription's handler was called again: {stopped.datas()[calls:]}"
        )

    # -- at-least-once (ARCHITECTURE.md) -------------------------------------------------------

    async def test_no_ack_before_success(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        if not harness.reopen_redelivers:
            pytest.skip("the harness does not redeliver after a subscription is reopened")
        topic = names("no-ack")
        data = names.message("no-ack", 1)
        entered = anyio.Event()
        release = anyio.Event()

        async def never_answers(event: TopicEvent, nth: int) -> EventStatus:
            entered.set()
            await release.wait()  # the subscription closes while this waits
            return EventStatus.RETRY

        first = Recorder(never_answers)
        try:
            async with harness.subscribe(topic, first):
                await self.publish_text(harness, names, topic, data)
                with anyio.fail_after(self.deadline):
                    await entered.wait()
        finally:
            release.set()
        again = Recorder()
        async with harness.subscribe(topic, again):
            await again.wait(
                lambda: bool(again.with_data(data)),
                deadline=self.deadline,
                what="the unanswered message redelivered after reopening",
            )
        assert again.with_data(data)[0].id == first.events[0].id, "the event id changed"

    async def test_drop_acks(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        topic = names("drop")
        data = names.message("drop", 1)

        async def drop_it(event: TopicEvent, nth: int) -> EventStatus:
            return EventStatus.DROP if event.data == data else EventStatus.SUCCESS

        rec = Recorder(drop_it)
        async with harness.subscribe(topic, rec):
            await self.publish_text(harness, names, topic, data)
            await self.sentinel(harness, names, topic, rec, "after-drop")
        assert len(rec.with_data(data)) == 1, "a dropped message was delivered again"
        if harness.reopen_redelivers:
            again = Recorder()
            async with harness.subscribe(topic, again):
                await self.sentinel(harness, names, topic, again, "reopened")
            assert not again.with_data(data), "a dropped message came back after reopening"

    async def test_retry_redelivers(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        topic = names("retry")
        data = names.message("retry", 1)
        retries = 3

        async def retry_then_succeed(event: TopicEvent, nth: int) -> EventStatus:
            if event.data == data and nth <= retries:
                return EventStatus.RETRY
            return EventStatus.SUCCESS

        rec = Recorder(retry_then_succeed)
        async with harness.subscribe(topic, rec):
            await self.publish_text(harness, names, topic, data)
            await rec.wait(
                lambda: len(rec.with_data(data)) >= retries + 1,
                deadline=self.deadline,
                what=f"{retries} redeliveries after RETRY",
            )
            await self.sentinel(harness, names, topic, rec, "after-success")
        events = rec.with_data(data)
        assert len(events) == retries + 1, f"delivered {len(events)} times"
        assert len({e.id for e in events}) == 1, "the event id changed across redeliveries"
        if harness.reopen_redelivers:
            again = Recorder()
            async with harness.subscribe(topic, again):
                await self.sentinel(harness, names, topic, again, "reopened")
            assert not again.with_data(data), "an event acked after SUCCESS came back"

    async def test_metadata_round_trip(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        """Publish metadata comes back as `TopicEvent.metadata`; data and content type arrive
        intact (JSON compared as JSON: it is re-marshalled on the way); the id stays the same
        across a RETRY."""
        harness, names = pubsub_harness, pubsub_names
        topic = names("metadata")
        document = {"order": 1, "note": "caf\u00e9", "run": names.prefix}
        payloads = [
            (json.dumps(document).encode(), "application/json"),
            (bytes(range(256)), "application/octet-stream"),
            (names.message("metadata-text", 1), "text/plain"),
        ]

        def arrived(index: int, event: TopicEvent) -> bool:
            data, content_type = payloads[index]
            if content_type == "application/json":
                with contextlib.suppress(ValueError):
                    return bool(json.loads(event.data) == document)
                return False
            return event.data == data

        async def retry_once(event: TopicEvent, nth: int) -> EventStatus:
            return EventStatus.RETRY if nth == 1 else EventStatus.SUCCESS

        rec = Recorder(retry_once)
        async with harness.subscribe(topic, rec):
            for index, (data, content_type) in enumerate(payloads):
                await harness.publish(
                    topic,
                    data,
                    metadata=names.metadata(**{"x-trace": f"abc-{index}"}),
                    content_type=content_type,
                )
            await rec.wait(
                lambda: (
                    len(rec.counts) >= len(payloads) and all(n >= 2 for n in rec.counts.values())
                ),
                deadline=self.deadline,
                what="every payload delivered twice (RETRY once)",
            )
        for index, (_, content_type) in enumerate(payloads):
            events = [e for e in rec.events if arrived(index, e)]
            assert len(events) >= 2, f"payload {index} ({content_type}) did not arrive intact"
            assert len({e.id for e in events}) == 1, "the event id changed across a RETRY"
            for event in events:
                assert event.datacontenttype == content_type
                assert event.topic == topic
                if self.carries_metadata:
                    assert event.metadata.get("x-trace") == f"abc-{index}", event.metadata
        assert len(rec.counts) == len(payloads), f"unexpected events: {rec.datas()}"

    async def test_dead_letter_after_retries(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        topic, dead = names("dl-source"), names("dl-dead")
        data = names.message("dl", 1)
        max_retries = 1

        async def always_retry(event: TopicEvent, nth: int) -> EventStatus:
            return EventStatus.RETRY

        source, dead_letters = Recorder(always_retry), Recorder()
        async with (
            harness.subscribe(dead, dead_letters),
            harness.subscribe(topic, source, dead_letter_topic=dead, max_retries=max_retries),
        ):
            await self.publish_text(harness, names, topic, data, **{"x-trace": "dl"})
            await dead_letters.wait(
                lambda: bool(dead_letters.with_data(data)),
                deadline=self.deadline,
                what="the event on the dead-letter topic",
            )
            await anyio.sleep(self.quiet_period)
        attempts = source.with_data(data)
        assert len(attempts) == max_retries + 1, f"{len(attempts)} attempts before dead-lettering"
        landed = dead_letters.with_data(data)
        assert len(landed) == 1
        assert landed[0].id == attempts[0].id, "the dead letter is not the original event"
        assert landed[0].topic == dead, "a dead letter is an event of the dead-letter topic"
        if self.carries_metadata:
            assert landed[0].metadata.get("x-trace") == "dl"

    async def test_dead_letter_on_drop(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        harness, names = pubsub_harness, pubsub_names
        topic, dead = names("drop-source"), names("drop-dead")
        data = names.message("drop-dl", 1)

        async def drop(event: TopicEvent, nth: int) -> EventStatus:
            return EventStatus.DROP

        source, dead_letters = Recorder(drop), Recorder()
        async with (
            harness.subscribe(dead, dead_letters),
            harness.subscribe(topic, source, dead_letter_topic=dead),
        ):
            await self.publish_text(harness, names, topic, data)
            await dead_letters.wait(
                lambda: bool(dead_letters.with_data(data)),
                deadline=self.deadline,
                what="the dropped event on the dead-letter topic",
            )
            await anyio.sleep(self.quiet_period)
        assert len(source.with_data(data)) == 1, "a dropped event was delivered again"
        landed = dead_letters.with_data(data)
        assert len(landed) == 1
        assert landed[0].id == source.events[0].id
        assert landed[0].topic == dead

    # -- bulk publish (feature bulkpublish) --------------------------------------------------

    def bulk_harness(self, harness: PubSubHarness) -> BulkPublishHarness:
        """The harness as a `BulkPublishHarness`; skips unless it is one and the component
        declares BULK_PUBSUB."""
        if not isinstance(harness, BulkPublishHarness):
            pytest.skip(f"{type(harness).__name__} cannot bulk publish (no BulkPublishHarness)")
        if PubSubFeature.BULK_PUBSUB not in harness.features:
            pytest.skip("the component does not declare PubSubFeature.BULK_PUBSUB")
        return harness

    def bulk_entries(self, names: PubSubNames, tag: str, count: int) -> list[BulkPublishEntry]:
        return [
            BulkPublishEntry(
                f"{tag}-{i}",
                names.message(tag, i),
                names.metadata(**{"x-entry": str(i)}),
                "text/plain",
            )
            for i in range(count)
        ]

    async def test_bulk_publish(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        """N entries in one bulk call, no failed entry; each is delivered exactly once, with
        its payload, content type and metadata, as its own event (its own id); in an ordered
        harness in entry order (they share a partition key). An empty bulk publishes nothing."""
        harness, names, count = pubsub_harness, pubsub_names, self.message_count
        bulk = self.bulk_harness(harness)
        topic = names("bulk")
        entries = self.bulk_entries(names, "bulk", count)
        expected = {e.data for e in entries}
        rec = Recorder()
        async with harness.subscribe(topic, rec):
            assert await bulk.publish_bulk(topic, []) == {}, "an empty bulk failed"
            assert await bulk.publish_bulk(topic, entries) == {}, "entries failed"
            await rec.wait(
                _has_all(rec, expected),
                deadline=self.deadline,
                what=f"all {count} bulk-published entries delivered",
            )
            await self.sentinel(harness, names, topic, rec, "after-bulk")
        bulk_events = [e for e in rec.events if e.data in expected]
        assert len(bulk_events) == count, (
            f"{len(bulk_events)} deliveries for {count} entries: "
            f"{sorted(Counter(e.data for e in bulk_events).items())[:5]}"
        )
        assert len({e.id for e in bulk_events}) == count, "entries share an event id"
        by_data = {e.data: e for e in bulk_events}
        for index, entry in enumerate(entries):
            event = by_data[entry.data]
            assert event.topic == topic
            assert event.datacontenttype == "text/plain"
            if self.carries_metadata:
                assert event.metadata.get("x-entry") == str(index), event.metadata
        foreign = [d for d in rec.datas() if d not in expected and b"sentinel" not in d]
        assert not foreign, f"unexpected events (the empty bulk?): {foreign[:3]}"
        if harness.ordered:
            order = [names.seq_of("bulk", e.data) or 0 for e in bulk_events]
            assert order == sorted(order), f"bulk entries out of entry order: {order}"

    async def test_bulk_publish_lists_only_the_failed_entry(
        self, pubsub_harness: PubSubHarness, pubsub_names: PubSubNames
    ) -> None:
        """An entry that cannot be published (declared a CloudEvent, not JSON) is listed by
        its id, alone; every other entry of the bulk is delivered."""
        harness, names = pubsub_harness, pubsub_names
        bulk = self.bulk_harness(harness)
        topic = names("bulk-partial")
        entries = self.bulk_entries(names, "partial", 5)
        bad = BulkPublishEntry("partial-bad", b"not json", {}, CLOUDEVENTS_JSON)
        entries.insert(2, bad)
        good = {e.data for e in entries if e is not bad}
        rec = Recorder()
        async with harness.subscribe(topic, rec):
            failed = await bulk.publish_bulk(topic, entries)
            assert list(failed) == [bad.entry_id], failed
            await rec.wait(
                _has_all(rec, good),
                deadline=self.deadline,
                what="the entries that did not fail delivered",
            )
            await anyio.sleep(self.quiet_period)
        assert sorted(rec.datas()) == sorted(good)


def _has_all(rec: Recorder, wanted: set[bytes]) -> Callable[[], bool]:
    return lambda: wanted <= set(rec.datas())


async def wait_for(check: Callable[[], bool], *, deadline: float, what: str) -> None:
    """Poll `check` every `DELIVERY_POLL` s; fail with an AssertionError after `deadline` s.
    (Not `pytest.fail`: its BaseException would tear through the harness's task groups.)"""
    start = time.monotonic()
    while not check():
        if time.monotonic() - start >= deadline:
            raise AssertionError(f"{what}: not within {deadline:g} s")
        await anyio.sleep(DELIVERY_POLL)
