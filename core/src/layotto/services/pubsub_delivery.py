"""Delivering one subscription's messages to the app, at least once (ARCHITECTURE.md, Pub/Sub).

The same engine serves the app-callback model (OnTopicEvent) and streaming subscriptions
(SubscribeTopicEvents): only the `Deliver` function differs.

- Order: messages with the same `ordering_key` go one after the other in receive order (a
  "lane"); a message being retried holds its lane. Keyless messages run concurrently. A bulk
  subscription gives lanes up (`batch_deliveries`).
- Bounds: at most `concurrency` deliveries in flight, and at most `mailbox` messages received
  but not finished; past that the engine stops receiving (backpressure to the broker).
- Outcomes: SUCCESS acks; DROP (or UNIMPLEMENTED from the app, or an expired event) goes to
  the dead-letter topic when one is set, then acks; RETRY, an unknown status or an error
  redelivers after a capped, jittered backoff; once `max_retries` redeliveries are used up the
  message goes to the dead-letter topic if one is set, else it keeps being retried. Nothing is
  acked that the app did not answer for.
- An app that cannot be reached (`AppUnavailable`) is waited for without using up retries, so
  an app restart is survived.
- A Dapr `Resiliency` inbound policy for the pubsub component (`DeliveryPolicy.inbound`) takes
  over from the native budget and backoff: each attempt runs under its timeout and circuit
  breaker (an open breaker, a RETRY or an error is a failed attempt), its retry policy paces
  redeliveries and decides when a message goes to the dead-letter topic; with no retry policy a
  failed message goes there at once (daprd). Without a dead-letter topic nothing is dropped:
  redelivery goes on at the policy's pace (daprd hands the message back to the broker).
- `stop()` drains: receiving stops, no new attempt starts, in-flight attempts may finish within
  the caller's grace period; whatever is left stays un-acked and the broker redelivers it.
"""

from __future__ import annotations

import logging
import math
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import anyio
from anyio.abc import TaskStatus

from layotto.backoff import backoff_delay
from layotto.errors import BackendUnavailable, InvalidArgument, LayottoError, Unsupported
from layotto.meter import INGRESS_DROP, INGRESS_RETRY, INGRESS_SUCCESS, NO_METER, Meter
from layotto.plugin import (
    DEAD_LETTER_TOPIC_METADATA,
    MAX_RETRIES_METADATA,
    RAW_PAYLOAD_METADATA,
    TTL_SECONDS_METADATA,
    Health,
    Message,
    PublishRequest,
    PubSub,
    SubscribeRequest,
    Subscription,
)
from layotto.plugin.flags import is_truthy
from layotto.resiliency import NO_POLICY, Policy
from layotto.services.cloudevents import CLOUDEVENTS_JSON, EventStatus, TopicEvent, parse
from layotto.tracing import (
    NO_TRACER,
    SpanKind,
    Tracer,
    activate,
    deactivate,
    parse_traceparent,
)

log = logging.getLogger(__name__)

SUBSCRIBE_TIMEOUT_SECONDS = 30.0
CLOSE_TIMEOUT_SECONDS = 5.0
PUBLISH_TIMEOUT_SECONDS = 10.0
ACK_TIMEOUT_SECONDS = 10.0


class _NotDelivered(Exception):
    """The app answered RETRY (or an unknown status): a failed attempt for the breaker."""

    def __init__(self, status: EventStatus | int) -> None:
        super().__init__(f"the app answered {status!r}")
        self.status = status


class AppUnavailable(Exception):
    """The app could not be reached at all (not started yet, restarting): wait, do not count a
    retry."""


# An unknown int status (a newer app) is redelivered, like RETRY.
Deliver = Callable[[TopicEvent], Awaitable[EventStatus | int]]
HealthSink = Callable[[Health], None]


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    concurrency: int = 16
    mailbox: int = 256
    retry_initial_interval: float = 0.1
    retry_max_interval: float = 10.0
    # Redeliveries before a message goes to the dead-letter topic (with none set: unlimited).
    max_retries: int = 5
    dead_letter_topic: str | None = None
    # How long the app may take to answer one delivery before it counts as failed.
    app_timeout: float = 60.0
    resubscribe_initial_interval: float = 0.2
    resubscribe_max_interval: float = 10.0
    # The pubsub component's Dapr Resiliency inbound policy (replaces the native retry budget
    # and backoff when set; subscription `maxRetries` then no longer applies).
    inbound: Policy = NO_POLICY

    def may_retry(self, retries_done: int) -> bool:
        """Whether a failed message gets another delivery before it is dead-lettered."""
        if self.inbound:
            retry = self.inbound.retry
            return retry is not None and retry.allows(retries_done)
        return retries_done < self.max_retries

    def retry_delay(self, retries_done: int) -> float:
        retry = self.inbound.retry
        if retry is not None:
            return retry.delay(retries_done)
        return backoff_delay(
            retries_done, base=self.retry_initial_interval, cap=self.retry_max_interval
        )

    def for_subscription(self, metadata: Mapping[str, str]) -> DeliveryPolicy:
        """Per-subscription overrides from the subscription metadata."""
        policy = self
        dead_letter = metadata.get(DEAD_LETTER_TOPIC_METADATA, "").strip()
        if dead_letter:
            policy = replace(policy, dead_letter_topic=dead_letter)
        raw_retries = metadata.get(MAX_RETRIES_METADATA)
        if raw_retries not in (None, ""):
            try:
                retries = int(raw_retries)
            except ValueError:
                retries = -1
            if retries < 0:
                raise InvalidArgument(
                    f"subscription metadata {MAX_RETRIES_METADATA!r} must be a non-negative "
                    f"integer, got {raw_retries!r}"
                )
            policy = replace(policy, max_retries=retries)
        return policy


@dataclass(slots=True)
class DeliveryStats:
    received: int = 0
    delivered: int = 0  # answered SUCCESS
    retried: int = 0
    dropped: int = 0
    dead_lettered: int = 0
    in_flight: int = 0

    def as_dict(self) -> dict[str, int]:
        return {
            "received": self.received,
            "delivered": self.delivered,
            "retried": self.retried,
            "dropped": self.dropped,
            "deadLettered": self.dead_lettered,
            "inFlight": self.in_flight,
        }


def _as_failure(err: Exception) -> LayottoError:
    if isinstance(err, LayottoError):
        return err
    log.error("a subscription failed unexpectedly", exc_info=err)
    return BackendUnavailable(f"the subscription failed ({type(err).__name__})")


@dataclass
class DeliveryLoop:
    """Runs one subscription: subscribe, receive, deliver, ack; resubscribe after a failure."""

    pubsub: PubSub
    pubsub_name: str
    request: SubscribeRequest
    deliver: Deliver
    policy: DeliveryPolicy = field(default_factory=DeliveryPolicy)
    on_health: HealthSink | None = None
    stats: DeliveryStats = field(default_factory=DeliveryStats)
    meter: Meter = NO_METER  # Dapr's ingress metrics, one count per attempt
    # A CONSUMER span per attempt (`pubsub/{topic}`, as daprd names it), child of the event's
    # `traceparent` and current while the app is called, so the app gets it as its parent.
    tracer: Tracer = NO_TRACER

    def __post_init__(self) -> None:
        self._raw = is_truthy(self.request.metadata.get(RAW_PAYLOAD_METADATA))
        self._stopping = anyio.Event()
        self.finished = anyio.Event()  # set when `run` returns
        self._receive_scope: anyio.CancelScope | None = None
        self._concurrency = anyio.CapacityLimiter(self.policy.concurrency)
        self._lanes = True  # per-key lanes (see `batch_deliveries`)

    # -- lifecycle -------------------------------------------------------------------------

    def stop(self) -> None:
        """Stop receiving and starting attempts; in-flight attempts may still finish."""
        self._stopping.set()
        if self._receive_scope is not None:
            self._receive_scope.cancel()

    def batch_deliveries(self, size: int) -> None:
        """Prepare for a `deliver` that gathers concurrent calls into batches (bulk
        subscribe); call before `run`. At least `size` deliveries may run, and be received, at
        once, and messages no longer wait in per-key lanes: a lane holds one message at a
        time, so no batch could ever fill. Per-key order is therefore not kept, as with
        Dapr's bulk subscribe, where a retried entry is redelivered after later ones."""
        self.policy = replace(
            self.policy,
            concurrency=max(self.policy.concurrency, size),
            mailbox=max(self.policy.mailbox, size),
        )
        self._concurrency.total_tokens = self.policy.concurrency
        self._lanes = False

    @property
    def stopping(self) -> bool:
        return self._stopping.is_set()

    async def open(self) -> Subscription:
        """Subscribe once, bounded; errors propagate (a streaming caller reports them)."""
        with anyio.fail_after(SUBSCRIBE_TIMEOUT_SECONDS):
            return await self.pubsub.subscribe(self.request)

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        """Subscribe (retrying with backoff) and deliver until stopped. Reports started after
        the first subscribe attempt, successful or not, so a broker that is down at startup
        delays nothing but this subscription (its health says DOWN until it recovers)."""
        try:
            await self._run(task_status)
        finally:
            self.finished.set()

    async def _run(self, task_status: TaskStatus[None]) -> None:
        attempt = 0
        started = False
        while not self.stopping:
            try:
                subscription = await self.open()
            except Exception as err:
                reason = err.message if isinstance(err, LayottoError) else type(err).__name__
                if isinstance(err, TimeoutError):
                    reason = "subscribe timed out"
                log.warning(
                    "subscribing %s/%s failed: %s", self.pubsub_name, self.request.topic, reason
                )
                self._health(Health.down(reason))
                if not started:
                    started = True
                    task_status.started()
                await self._sleep(
                    backoff_delay(
                        attempt,
                        base=self.policy.resubscribe_initial_interval,
                        cap=self.policy.resubscribe_max_interval,
                    )
                )
                attempt += 1
                continue
            self._health(Health.up())
            if not started:
                started = True
                task_status.started()
            received = self.stats.received
            try:
                await self.consume(subscription)
            except LayottoError as err:
                log.warning(
                    "subscription %s/%s failed, subscribing again: %s",
                    self.pubsub_name,
                    self.request.topic,
                    err.message,
                )
                self._health(Health.down(err.message))
                # One that failed before receiving anything backs off further each time.
                attempt = 0 if self.stats.received > received else attempt + 1
                await self._sleep(
                    backoff_delay(
                        attempt,
                        base=self.policy.resubscribe_initial_interval,
                        cap=self.policy.resubscribe_max_interval,
                    )
                )

    async def consume(self, subscription: Subscription) -> None:
        """Deliver from an open subscription until `stop()` (returns) or the subscription fails
        (raises). Closes the subscription either way (shielded, bounded)."""
        concurrency = subscription.concurrency or self.policy.concurrency
        if not self._lanes:
            # Batched: the component's concurrency bounds app calls, and a batch is one call
            # however many messages it holds.
            concurrency = self.policy.concurrency
        self._concurrency.total_tokens = max(1, concurrency)
        mailbox = anyio.Semaphore(max(self.policy.mailbox, 1))
        lanes: dict[str, deque[Message]] = {}
        failure: LayottoError | None = None
        try:
            async with anyio.create_task_group() as tg:
                with anyio.CancelScope() as self._receive_scope:
                    if self.stopping:
                        self._receive_scope.cancel()
                    while True:
                        await mailbox.acquire()
                        try:
                            message = await subscription.receive()
                        except Exception as err:
                            mailbox.release()
                            failure = _as_failure(err)
                            tg.cancel_scope.cancel()  # in-flight deliveries stay un-acked
                            break
                        except BaseException:
                            mailbox.release()
                            raise
                        self.stats.received += 1
                        key = message.ordering_key if self._lanes else None
                        if key is None:
                            tg.start_soon(self._process, message, mailbox)
                        elif key in lanes:
                            lanes[key].append(message)
                        else:
                            lanes[key] = deque([message])
                            tg.start_soon(self._run_lane, lanes, key, mailbox)
                # Stopped: lanes and attempts notice `stopping` and wind down on their own.
        finally:
            self._receive_scope = None
            with anyio.CancelScope(shield=True), anyio.move_on_after(CLOSE_TIMEOUT_SECONDS):
                try:
                    await subscription.close()
                except Exception:
                    log.exception(
                        "closing subscription %s/%s", self.pubsub_name, self.request.topic
                    )
        if failure is not None:
            raise failure

    # -- one message -----------------------------------------------------------------------

    async def _run_lane(
        self, lanes: dict[str, deque[Message]], key: str, mailbox: anyio.Semaphore
    ) -> None:
        queue = lanes[key]
        try:
            while queue and not self.stopping:
                await self._settle(queue[0])
                queue.popleft()
                mailbox.release()
        finally:
            if lanes.get(key) is queue:
                # Left un-acked (stopping, or cancelled mid-delivery): their slots go back too.
                for _ in range(len(queue)):
                    mailbox.release()
                del lanes[key]

    async def _process(self, message: Message, mailbox: anyio.Semaphore) -> None:
        """Deliver until the message is settled (acked) or the loop stops (left un-acked)."""
        try:
            await self._settle(message)
        finally:
            mailbox.release()

    async def _settle(self, message: Message) -> None:
        event = parse(
            message.data,
            topic=message.topic,
            pubsub_name=self.pubsub_name,
            metadata=message.metadata,
            fallback_id=message.ref,
            raw=self._raw,
        )
        if event.expired():
            log.warning("event %s on %s expired before delivery", event.id, message.topic)
            await self._drop(message, event, "expired")
            return
        retries = 0
        waits = 0
        while not self.stopping:
            async with self._concurrency:
                if self.stopping:
                    return
                self.stats.in_flight += 1
                started = time.perf_counter() if self.meter.enabled else 0.0
                try:
                    status: EventStatus | int = await self._attempt(event)
                    failure = ""
                except AppUnavailable as err:
                    status, failure = -1, f"app unavailable: {err}"
                except Unsupported:
                    status, failure = EventStatus.DROP, ""
                except Exception as err:
                    status, failure = EventStatus.RETRY, f"{type(err).__name__}: {err}"
                finally:
                    self.stats.in_flight -= 1
            if self.meter.enabled:
                self._measure(message.topic, status, started)
            if status == EventStatus.SUCCESS:
                self.stats.delivered += 1
                await self._ack(message, event)
                return
            if status == EventStatus.DROP:
                log.warning("the app dropped event %s on %s", event.id, message.topic)
                await self._drop(message, event, "dropped by the app")
                return
            if status == -1:
                log.info("event %s waits for the app (%s)", event.id, failure)
                await self._sleep(
                    backoff_delay(
                        waits,
                        base=self.policy.retry_initial_interval,
                        cap=self.policy.retry_max_interval,
                    )
                )
                waits += 1
                continue
            # RETRY, an unknown status, or an error: redeliver, or dead-letter when out of budget.
            if failure:
                log.warning(
                    "delivering event %s on %s failed: %s", event.id, message.topic, failure
                )
            if self.policy.dead_letter_topic and not self.policy.may_retry(retries):
                await self._dead_letter(message, event, "retries exhausted")
                return
            self.stats.retried += 1
            await self._sleep(self.policy.retry_delay(retries))
            retries += 1

    def _measure(self, topic: str, status: EventStatus | int, started: float) -> None:
        """One attempt's outcome as Dapr's `process_status`: anything but SUCCESS and DROP
        (RETRY, an error, an app that cannot be reached) is redelivered, so `retry`."""
        if status == EventStatus.SUCCESS:
            outcome = INGRESS_SUCCESS
        elif status == EventStatus.DROP:
            outcome = INGRESS_DROP
        else:
            outcome = INGRESS_RETRY
        seconds = time.perf_counter() - started
        self.meter.pubsub_ingress(self.pubsub_name, topic, outcome, seconds)

    async def _attempt(self, event: TopicEvent) -> EventStatus | int:
        if not self.tracer.enabled:
            return await self._attempt_once(event)
        traceparent = event.extensions.get("traceparent")
        parent = parse_traceparent(traceparent if isinstance(traceparent, str) else None)
        span = self.tracer.start(f"pubsub/{event.topic}", SpanKind.CONSUMER, parent)
        if span is None:
            return await self._attempt_once(event)
        if span.sampled:
            span.set("messaging.system", "pubsub")
            span.set("messaging.destination.name", event.topic)
            span.set("dapr.pubsub", self.pubsub_name)
        token = activate(span)
        try:
            status = await self._attempt_once(event)
            if status not in (EventStatus.SUCCESS, EventStatus.DROP):
                name = status.name if isinstance(status, EventStatus) else str(status)
                span.fail(f"the app answered {name}")
            return status
        except Exception as err:
            span.fail(type(err).__name__)
            raise
        finally:
            deactivate(token)
            self.tracer.end(span)

    async def _attempt_once(self, event: TopicEvent) -> EventStatus | int:
        """One delivery, under the inbound resiliency policy's timeout and breaker when there
        is one (a RETRY or unknown status counts as a failure for the breaker)."""
        inbound = self.policy.inbound
        if not inbound:
            return await self.deliver(event)

        async def once() -> EventStatus | int:
            status = await self.deliver(event)
            if status not in (EventStatus.SUCCESS, EventStatus.DROP):
                raise _NotDelivered(status)
            return status

        try:
            return await inbound.attempt(once)
        except _NotDelivered as answered:
            return answered.status

    async def _drop(self, message: Message, event: TopicEvent, why: str) -> None:
        if self.policy.dead_letter_topic:
            await self._dead_letter(message, event, why)
            return
        self.stats.dropped += 1
        await self._ack(message, event)

    async def _dead_letter(self, message: Message, event: TopicEvent, why: str) -> None:
        """Publish the original message to the dead-letter topic, then ack it. A failed publish
        is retried (the message is never acked unless it was dead-lettered)."""
        topic = self.policy.dead_letter_topic
        assert topic is not None
        # The original bytes and headers; not its TTL, which would start again on the new topic.
        metadata = {k: v for k, v in message.metadata.items() if k != TTL_SECONDS_METADATA}
        request = PublishRequest(
            topic,
            message.data,
            metadata=metadata,
            content_type="" if self._raw else CLOUDEVENTS_JSON,
        )
        attempt = 0
        while not self.stopping:
            try:
                with anyio.fail_after(PUBLISH_TIMEOUT_SECONDS):
                    await self.pubsub.publish(request)
            except Exception as err:
                log.warning("dead-lettering event %s to %s failed: %s", event.id, topic, err)
                await self._sleep(
                    backoff_delay(
                        attempt,
                        base=self.policy.retry_initial_interval,
                        cap=self.policy.retry_max_interval,
                    )
                )
                attempt += 1
                continue
            log.warning(
                "event %s on %s sent to dead-letter topic %s (%s)",
                event.id,
                message.topic,
                topic,
                why,
            )
            self.stats.dead_lettered += 1
            await self._ack(message, event)
            return

    async def _ack(self, message: Message, event: TopicEvent) -> None:
        try:
            with anyio.fail_after(ACK_TIMEOUT_SECONDS):
                await message.ack()
        except Exception as err:
            # Not fatal: the broker redelivers an un-acked message (at-least-once).
            log.warning("acking event %s (%s) failed: %s", event.id, message.ref, err)

    # -- helpers ---------------------------------------------------------------------------

    async def _sleep(self, seconds: float) -> None:
        """Sleep, but wake at once when stopping."""
        with anyio.move_on_after(seconds if math.isfinite(seconds) else 0):
            await self._stopping.wait()

    def _health(self, health: Health) -> None:
        if self.on_health is not None:
            self.on_health(health)

    def info(self) -> dict[str, Any]:
        return {
            "pubsubName": self.pubsub_name,
            "topic": self.request.topic,
            "deadLetterTopic": self.policy.dead_letter_topic or "",
            "stats": self.stats.as_dict(),
        }
