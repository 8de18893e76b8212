"""PubSubDispatcher: the app-callback delivery model (layotto-semantics.md §4.2-4.3,
dapr-compat.md §2.7).

At startup it waits for the app's callback port, waits for the app's first successful health
check when the app offers one (`AppHealth`), asks `ListTopicSubscriptions` once (through
whichever callback API the app serves: the `AppChannel` decides), and runs one `DeliveryLoop`
per (pubsub, topic), each delivering with `OnTopicEvent`, or in batches with
`OnBulkTopicEvent` for a bulk subscription (`Batcher`). While the app fails its health checks,
deliveries pause. Readiness waits for the subscriptions (`app_subscriptions` is INIT until
every one was attempted); each subscription has its own indicator
(`subscription:<pubsub>:<topic>`), DOWN while its broker connection is lost.

Shutdown: `begin_drain()` (at the start of the sidecar's grace period) stops receiving; `stop()`
lets in-flight deliveries finish until the grace deadline, then cancels the rest, which stay
un-acked at the broker.
"""

from __future__ import annotations

import logging
import math
from typing import Any

import anyio
from anyio.abc import TaskStatus

from layotto.actors.app_health import AppHealth
from layotto.api.app_channel import AppChannel, AppSubscription
from layotto.errors import LayottoError
from layotto.health import HealthRegistry, Probe
from layotto.plugin import Health, HealthStatus
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub import PubSubService
from layotto.services.pubsub_bulk import Batcher
from layotto.services.pubsub_delivery import Deliver, DeliveryLoop

log = logging.getLogger(__name__)

APP_INDICATOR = "app_subscriptions"
READINESS = frozenset({Probe.READINESS})


def subscription_indicator(pubsub_name: str, topic: str) -> str:
    return f"subscription:{pubsub_name}:{topic}"


class PubSubDispatcher:
    name = "pubsub_dispatcher"

    def __init__(
        self,
        service: PubSubService,
        app: AppChannel,
        health: HealthRegistry,
        *,
        grace_period: float,
    ) -> None:
        self._service = service
        self._app = app
        self._health = health
        self._grace = grace_period
        self._loops: list[DeliveryLoop] = []
        self._subscriptions: list[AppSubscription] = []  # beside `_loops`, same order
        self._app_health: AppHealth | None = None
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._deadline = math.inf

    def info(self) -> list[dict[str, Any]]:
        """Per subscription: the loop's info, plus Dapr's `rules` (flat) and `type`."""
        entries = []
        for loop, sub in zip(self._loops, self._subscriptions, strict=True):
            entry = loop.info()
            entry["rules"] = sub.rules_info()
            entry["type"] = "PROGRAMMATIC"
            if sub.bulk is not None:
                entry["bulkSubscribe"] = {
                    "enabled": True,
                    "maxMessagesCount": sub.bulk.max_messages,
                    "maxAwaitDurationMs": round(sub.bulk.max_await_seconds * 1000),
                }
            entries.append(entry)
        return entries

    async def run(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        self._stop = anyio.Event()
        self._done = anyio.Event()
        self._health.set(
            APP_INDICATOR, Health(HealthStatus.INIT, {"reason": "waiting for the app"}), READINESS
        )
        task_status.started()
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_stop, tg.cancel_scope)
                await self._app.wait_until_listening()
                app_health = self._app_health = AppHealth(self._app.check_health, self._health)
                if await app_health.wait_first_success():
                    tg.start_soon(app_health.watch)
                subscriptions = await self._app.list_subscriptions()
                log.info(
                    "the app subscribes to %d topic(s)",
                    len(subscriptions),
                    extra={
                        "subscriptions": [f"{s.pubsub_name}/{s.topic}" for s in subscriptions],
                        "app_protocol": self._app.surface,
                    },
                )
                self._loops = []
                self._subscriptions = []
                seen: set[tuple[str, str]] = set()
                for sub in subscriptions:
                    if (sub.pubsub_name, sub.topic) in seen:
                        log.error("the app lists %s/%s twice", sub.pubsub_name, sub.topic)
                        continue
                    seen.add((sub.pubsub_name, sub.topic))
                    indicator = subscription_indicator(sub.pubsub_name, sub.topic)
                    try:
                        loop = self._service.delivery(
                            sub.pubsub_name,
                            sub.topic,
                            self._deliver_function(sub, app_health),
                            metadata=sub.metadata,
                            dead_letter_topic=sub.dead_letter_topic or None,
                            on_health=self._reporter(indicator),
                        )
                    except LayottoError as err:
                        # A subscription the sidecar cannot serve is the app's mistake: say so
                        # loudly and keep serving the others.
                        log.error(
                            "cannot subscribe %s/%s: %s", sub.pubsub_name, sub.topic, err.message
                        )
                        continue
                    if sub.bulk is not None:
                        loop.batch_deliveries(sub.bulk.max_messages)
                    self._health.set(indicator, Health(HealthStatus.INIT), READINESS)
                    self._loops.append(loop)
                    self._subscriptions.append(sub)
                    await tg.start(self._run_loop, loop)
                self._health.set(
                    APP_INDICATOR,
                    Health(HealthStatus.UP, {"protocol": self._app.surface}),
                    READINESS,
                )
                await self._stop.wait()
                # Drain: no new receives or attempts; in-flight ones until the deadline, and
                # deliveries paused for an unhealthy app give up at once.
                app_health.release()
                for loop in self._loops:
                    loop.stop()
                with anyio.move_on_after(max(0.0, self._deadline - anyio.current_time())):
                    await self._all_loops_done()
                tg.cancel_scope.cancel()
        finally:
            for loop in self._loops:
                self._health.remove(subscription_indicator(loop.pubsub_name, loop.request.topic))
            self._health.remove(APP_INDICATOR)
            if self._app_health is not None:
                self._app_health.remove()
            self._done.set()

    def _deliver_function(self, sub: AppSubscription, app_health: AppHealth) -> Deliver:
        """How one subscription's events reach the app: one call each, or gathered into bulk
        calls; either way held back while the app is unhealthy."""
        app = self._app
        send: Deliver
        if sub.bulk is not None:
            batcher = Batcher(
                lambda events: app.deliver_bulk(events, sub),
                max_messages=sub.bulk.max_messages,
                max_await=sub.bulk.max_await_seconds,
            )
            send = batcher.deliver
        else:

            async def send(event: TopicEvent) -> EventStatus | int:
                return await app.deliver(event, sub)

        async def deliver(event: TopicEvent) -> EventStatus | int:
            await app_health.wait_deliverable()
            return await send(event)

        return deliver

    def _reporter(self, indicator: str) -> Any:
        def report(health: Health) -> None:
            self._health.set(indicator, health, READINESS)

        return report

    async def _run_loop(self, loop: DeliveryLoop, *, task_status: TaskStatus[None]) -> None:
        async with self._service.exclusive(loop.pubsub_name, loop.request.topic):
            await loop.run(task_status=task_status)

    async def _all_loops_done(self) -> None:
        for loop in self._loops:
            await loop.finished.wait()

    async def _watch_stop(self, scope: anyio.CancelScope) -> None:
        # Stopping before the subscriptions exist (the app never came up): just cancel.
        await self._stop.wait()
        if not self._loops:
            scope.cancel()

    def begin_drain(self, grace: float | None = None) -> None:
        """Stop receiving now; in-flight deliveries get until `grace` seconds from now."""
        self._deadline = anyio.current_time() + (self._grace if grace is None else grace)
        self._stop.set()

    async def stop(self) -> None:
        if not self._stop.is_set():
            self.begin_drain()
        with anyio.CancelScope(shield=True):
            await self._done.wait()
