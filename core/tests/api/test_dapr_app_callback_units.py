"""The parts of the Dapr app channel that need no app: the bulk `Batcher` (how concurrent
deliveries become batches, how each entry settles), `AppHealth` (startup gate, threshold,
pause and resume, refused calls, Dapr's metadata) and subscription routing."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import anyio
import pytest
from layotto._proto.dapr.proto.runtime import v1 as dapr
from layotto.actors.app_health import INDICATOR, AppHealth, go_duration
from layotto.api.app_channel import delivery_errors
from layotto.api.app_connection import AppHealthProbe
from layotto.api.dapr_app_callback import event_headers, to_subscription
from layotto.errors import Unsupported
from layotto.health import HealthRegistry
from layotto.plugin import HealthStatus
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_bulk import Batcher
from layotto.services.pubsub_delivery import AppUnavailable

pytestmark = pytest.mark.anyio


def event(n: int, **extensions: object) -> TopicEvent:
    return TopicEvent(
        id=f"e{n}",
        source="s",
        type=str(extensions.pop("type", "t")),
        specversion="1.0",
        datacontenttype="application/json",
        data=b'{"n": %d}' % n,
        topic="topic",
        pubsubname="pubsub",
        extensions=extensions,
    )


class Sender:
    def __init__(self, answer: object = None) -> None:
        self.batches: list[list[str]] = []
        self.answer = answer

    async def __call__(self, events: Sequence[TopicEvent]) -> list[EventStatus | int]:
        self.batches.append([e.id for e in events])
        if isinstance(self.answer, Exception):
            raise self.answer
        if isinstance(self.answer, list):
            return list(self.answer)
        return [EventStatus.SUCCESS] * len(events)


async def deliver_all(batcher: Batcher, count: int) -> dict[str, EventStatus | int | str]:
    """Deliver `count` events at once; each one's status, or its exception's type name."""
    results: dict[str, EventStatus | int | str] = {}

    async def one(n: int) -> None:
        try:
            results[f"e{n}"] = await batcher.deliver(event(n))
        except Exception as err:
            results[f"e{n}"] = type(err).__name__

    async with anyio.create_task_group() as tg:
        for n in range(count):
            tg.start_soon(one, n)
    return results


async def test_a_full_batch_goes_at_once_and_the_next_one_starts() -> None:
    sender = Sender()
    batcher = Batcher(sender, max_messages=2, max_await=30)
    with anyio.fail_after(5):  # full batches never wait for max_await
        results = await deliver_all(batcher, 4)
    assert sender.batches == [["e0", "e1"], ["e2", "e3"]]
    assert set(results.values()) == {EventStatus.SUCCESS}


async def test_a_partial_batch_goes_after_max_await() -> None:
    sender = Sender()
    batcher = Batcher(sender, max_messages=10, max_await=0.2)
    started = anyio.current_time()
    results = await deliver_all(batcher, 3)
    assert anyio.current_time() - started >= 0.19
    assert sender.batches == [["e0", "e1", "e2"]]
    assert results == dict.fromkeys(("e0", "e1", "e2"), EventStatus.SUCCESS)


async def test_each_entry_gets_its_own_status_and_a_missing_one_is_retry() -> None:
    sender = Sender([EventStatus.DROP, 7])  # the third entry is not answered
    batcher = Batcher(sender, max_messages=3, max_await=5)
    results = await deliver_all(batcher, 3)
    assert results == {"e0": EventStatus.DROP, "e1": 7, "e2": EventStatus.RETRY}


@pytest.mark.parametrize(
    ("error", "raised"),
    [
        (AppUnavailable("down"), "AppUnavailable"),
        (Unsupported("no bulk"), "Unsupported"),
        (RuntimeError("boom"), "BulkDeliveryFailed"),
    ],
)
async def test_a_failed_bulk_call_fails_every_entry_alike(error: Exception, raised: str) -> None:
    batcher = Batcher(Sender(error), max_messages=2, max_await=5)
    assert await deliver_all(batcher, 2) == {"e0": raised, "e1": raised}


async def test_a_cancelled_leader_releases_its_followers_without_a_verdict() -> None:
    sent = anyio.Event()

    async def hang(events: Sequence[TopicEvent]) -> list[EventStatus | int]:
        sent.set()
        await anyio.sleep_forever()
        raise AssertionError

    batcher = Batcher(hang, max_messages=2, max_await=5)
    outcome: list[BaseException] = []
    leader_scope = anyio.CancelScope()

    async def leader() -> None:
        with leader_scope:
            await batcher.deliver(event(0))

    async def follower() -> None:
        try:
            await batcher.deliver(event(1))
        except AppUnavailable as err:
            outcome.append(err)

    async with anyio.create_task_group() as tg:
        tg.start_soon(leader)
        await anyio.sleep(0.01)  # the leader opened the batch
        tg.start_soon(follower)  # fills it: sent at once
        with anyio.fail_after(5):
            await sent.wait()
        leader_scope.cancel()
    assert len(outcome) == 1  # AppUnavailable: no retry is used up, nothing acked


# -- AppHealth -----------------------------------------------------------------------------


class Probes:
    """The app, answering its health checks with `answers` in order (the last one for ever)."""

    def __init__(self, *answers: AppHealthProbe) -> None:
        self.answers = list(answers)
        self.asked = 0
        self.listening = anyio.Event()
        self.listening.set()

    async def wait_until_listening(self) -> None:
        await self.listening.wait()

    async def check_health(self, within: float) -> AppHealthProbe:
        self.asked += 1
        return self.answers.pop(0) if len(self.answers) > 1 else self.answers[0]


def quick(probes: Probes, registry: HealthRegistry) -> AppHealth:
    return AppHealth(probes, registry, interval=0.01, startup_interval=0.01, threshold=3)


async def test_an_app_without_health_check_is_not_watched() -> None:
    registry = HealthRegistry()
    monitor = quick(Probes(AppHealthProbe.NOT_OFFERED), registry)
    assert await monitor.wait_first_success() is False
    assert registry.get(INDICATOR) is None
    await monitor.wait_deliverable()  # never held back


async def test_an_app_that_answers_late_without_health_check_is_not_held() -> None:
    """Failures first (the app's gRPC server not up yet), then UNIMPLEMENTED: no indicator
    is left behind to hold readiness."""
    registry = HealthRegistry()
    probes = Probes(AppHealthProbe.UNHEALTHY, AppHealthProbe.NOT_OFFERED)
    monitor = quick(probes, registry)
    assert await monitor.wait_first_success() is False
    assert registry.get(INDICATOR) is None


async def test_startup_waits_for_the_first_success() -> None:
    registry = HealthRegistry()
    probes = Probes(AppHealthProbe.UNHEALTHY, AppHealthProbe.UNHEALTHY, AppHealthProbe.HEALTHY)
    monitor = quick(probes, registry)
    assert await monitor.wait_first_success() is True
    assert probes.asked == 3
    indicator = registry.get(INDICATOR)
    assert indicator is not None
    assert indicator.status is HealthStatus.UP


async def test_threshold_failures_pause_deliveries_and_one_success_resumes() -> None:
    registry = HealthRegistry()
    probes = Probes(AppHealthProbe.HEALTHY)
    monitor = quick(probes, registry)
    assert await monitor.wait_first_success()
    async with anyio.create_task_group() as tg:
        tg.start_soon(monitor.watch)
        # Two failures in a row are below the threshold; then a success resets the count.
        probes.answers = [AppHealthProbe.UNHEALTHY, AppHealthProbe.UNHEALTHY]
        probes.answers.append(AppHealthProbe.HEALTHY)
        await anyio.sleep(0.1)
        assert monitor.healthy
        probes.answers = [AppHealthProbe.UNHEALTHY]
        for _ in range(500):
            if not monitor.healthy:
                break
            await anyio.sleep(0.01)
        assert not monitor.healthy
        indicator = registry.get(INDICATOR)
        assert indicator is not None
        assert indicator.status is HealthStatus.DOWN
        resumed = anyio.Event()

        async def paused_delivery() -> None:
            await monitor.wait_deliverable()
            resumed.set()

        tg.start_soon(paused_delivery)
        await anyio.sleep(0.05)
        assert not resumed.is_set()
        probes.answers = [AppHealthProbe.HEALTHY]
        with anyio.fail_after(5):
            await resumed.wait()
        indicator = registry.get(INDICATOR)
        assert indicator is not None
        assert indicator.status is HealthStatus.UP
        tg.cancel_scope.cancel()


async def test_release_lets_paused_deliveries_give_up() -> None:
    registry = HealthRegistry()
    monitor = quick(Probes(AppHealthProbe.HEALTHY), registry)
    monitor.healthy = False
    outcome: list[str] = []

    async def paused() -> None:
        try:
            await monitor.wait_deliverable()
        except AppUnavailable:
            outcome.append("gave up")

    async with anyio.create_task_group() as tg:
        tg.start_soon(paused)
        await anyio.sleep(0.02)
        monitor.release()
    assert outcome == ["gave up"]


async def until(check: Callable[[], bool]) -> None:
    for _ in range(500):  # polls a plain attribute: there is no event to wait on
        if check():
            return
        await anyio.sleep(0.01)
    raise AssertionError("the condition never held")


async def test_run_settles_and_calls_are_refused_only_while_unhealthy() -> None:
    registry = HealthRegistry()
    probes = Probes(AppHealthProbe.UNHEALTHY)
    probes.listening = anyio.Event()
    monitor = quick(probes, registry)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        await anyio.sleep(0.05)
        assert probes.asked == 0  # not listening yet: not probed, nothing refused
        assert not monitor.refuses_calls
        assert monitor.metadata() is None
        probes.listening.set()
        await until(lambda: monitor.refuses_calls)  # the app answers, unhealthy: not started
        probes.answers = [AppHealthProbe.HEALTHY]
        with anyio.fail_after(5):
            await monitor.wait_settled()
        assert not monitor.refuses_calls
        assert monitor.metadata() == {
            "healthProbeInterval": "10ms",
            "healthProbeTimeout": "500ms",
            "healthThreshold": 3,
        }
        probes.answers = [AppHealthProbe.UNHEALTHY]
        await until(lambda: monitor.refuses_calls)
        with anyio.fail_after(5):
            await monitor.stop()
    assert registry.get(INDICATOR) is None


async def test_an_app_without_health_check_settles_and_is_never_refused() -> None:
    registry = HealthRegistry()
    monitor = quick(Probes(AppHealthProbe.UNHEALTHY, AppHealthProbe.NOT_OFFERED), registry)
    async with anyio.create_task_group() as tg:
        await tg.start(monitor.run)
        with anyio.fail_after(5):
            await monitor.wait_settled()
        assert not monitor.refuses_calls
        assert monitor.metadata() is None
        await monitor.wait_deliverable()
        await monitor.stop()


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(5, "5s"), (0.5, "500ms"), (1.5, "1.5s"), (60, "1m0s"), (90.25, "1m30.25s"), (3600, "1h0m0s")],
)
def test_go_duration(seconds: float, text: str) -> None:
    assert go_duration(seconds) == text


def test_a_slow_app_is_a_failed_delivery_not_an_unreachable_one() -> None:
    """grpclib's deadline raises TimeoutError, an OSError: it must use up a retry (so
    maxRetries and dead letters apply), not be waited out as an app that cannot be reached."""
    with pytest.raises(TimeoutError), delivery_errors("OnTopicEvent"):
        raise TimeoutError
    with pytest.raises(AppUnavailable), delivery_errors("OnTopicEvent"):
        raise ConnectionRefusedError


# -- subscriptions and routing -------------------------------------------------------------


def test_a_dapr_subscription_becomes_routes_dead_letter_and_bulk() -> None:
    sub = to_subscription(
        dapr.TopicSubscription(
            pubsub_name="p",
            topic="t",
            metadata={"k": "v"},
            routes=dapr.TopicRoutes(
                rules=[
                    dapr.TopicRule(match='event.type == "a"', path="pa"),
                    dapr.TopicRule(match="event.type > 1", path="never"),
                ],
                default="pd",
            ),
            dead_letter_topic=" dlq ",
            bulk_subscribe=dapr.BulkSubscribeConfig(enabled=True),
        )
    )
    assert sub.dead_letter_topic == "dlq"
    assert sub.metadata == {"k": "v"}
    assert sub.bulk is not None
    assert (sub.bulk.max_messages, sub.bulk.max_await_seconds) == (100, 1.0)  # Dapr's defaults
    assert sub.route(event(1, type="a")) == "pa"
    assert sub.route(event(1, type="b")) == "pd"
    assert sub.rules[1].compiled is None  # refused


def test_routes_without_rules_and_without_routes() -> None:
    bare = to_subscription(dapr.TopicSubscription(pubsub_name="p", topic="t"))
    assert bare.route(event(1)) == ""
    assert bare.bulk is None
    only_default = to_subscription(
        dapr.TopicSubscription(pubsub_name="p", topic="t", routes=dapr.TopicRoutes(default="d"))
    )
    assert only_default.route(event(1)) == "d"
    rules_only = to_subscription(
        dapr.TopicSubscription(
            pubsub_name="p",
            topic="t",
            routes=dapr.TopicRoutes(rules=[dapr.TopicRule(match='event.type == "a"', path="a")]),
            bulk_subscribe=dapr.BulkSubscribeConfig(enabled=False, max_messages_count=5),
        )
    )
    assert rules_only.route(event(1, type="a")) == "a"
    assert rules_only.route(event(1, type="b")) is None  # not delivered
    assert rules_only.bulk is None
    # A rule that errors for this event (no such attribute) is skipped, not fatal.
    missing = to_subscription(
        dapr.TopicSubscription(
            pubsub_name="p",
            topic="t",
            routes=dapr.TopicRoutes(
                rules=[dapr.TopicRule(match='event.nope == "x"', path="x")], default="d"
            ),
        )
    )
    assert missing.route(event(1)) == "d"


def test_event_headers_keep_what_grpc_can_carry() -> None:
    headers = event_headers(
        TopicEvent(
            id="1",
            source="s",
            type="t",
            specversion="1.0",
            datacontenttype="text/plain",
            data=b"",
            topic="t",
            pubsubname="p",
            extensions={"traceparent": "00-abc-def-01"},
            metadata={
                "X-Order": "7",
                "dapr-api-token": "forged",
                "content-type": "x",
                "bad key": "v",
                "bin-bin": "v",
                "grpc-timeout": "1",
                "nonascii": "é",
            },
        )
    )
    assert headers == {"x-order": "7", "traceparent": "00-abc-def-01"}
