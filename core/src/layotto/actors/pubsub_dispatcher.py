"""PubSubDispatcher: the app-callback delivery model (layotto-semantics.md §4.2-4.3,
dapr-compat.md §2.7).

Once the app passed its first health check (or offers none: the runtime's `AppHealth`), it asks
`ListTopicSubscriptions` once (through whichever callback API the app serves: the
`AppChannel` decides), merges the answer with the declarative subscriptions
(`merge_subscriptions`), and runs one `DeliveryLoop` per (pubsub, topic), each delivering with
`OnTopicEvent`, or in batches with `OnBulkTopicEvent` for a bulk subscription (`Batcher`).
While the app fails its health checks, deliveries pause. Readiness waits for the subscriptions
(`app_subscriptions` is INIT until every one was attempted); each subscription has its own
indicator (`subscription:<pubsub>:<topic>`), DOWN while its broker connection is lost.

Shutdown (`AppDispatcher`): in-flight deliveries finish until the grace deadline, the rest are
cancelled and stay un-acked at the broker.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from anyio.abc import TaskGroup, TaskStatus

from layotto.actors.app_dispatcher import READINESS, AppDispatcher
from layotto.actors.app_health import AppHealth
from layotto.api.app_channel import AppChannel, AppSubscription
from layotto.errors import LayottoError
from layotto.health import HealthRegistry
from layotto.plugin import Health, HealthStatus
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub import PubSubService
from layotto.services.pubsub_bulk import Batcher
from layotto.services.pubsub_delivery import Deliver, DeliveryLoop

log = logging.getLogger(__name__)

APP_INDICATOR = "app_subscriptions"


def subscription_indicator(pubsub_name: str, topic: str) -> str:
    return f"subscription:{pubsub_name}:{topic}"


def merge_subscriptions(
    declared: Iterable[AppSubscription], listed: Iterable[AppSubscription]
) -> list[AppSubscription]:
    """What to deliver: the declared subscriptions, then the ones the app lists. daprd's rule
    (`ComponentStore.ListSubscriptionsAppByPubSub`): for one (pubsub, topic) the app's
    subscription replaces the declared one, in the declared one's place. A topic the app lists
    twice is the app's mistake: the first is kept."""
    merged: list[AppSubscription] = []
    at: dict[tuple[str, str], int] = {}
    for sub in declared:
        if (sub.pubsub_name, sub.topic) not in at:
            at[(sub.pubsub_name, sub.topic)] = len(merged)
            merged.append(sub)
    app_listed: set[tuple[str, str]] = set()
    for sub in listed:
        key = (sub.pubsub_name, sub.topic)
        if key in app_listed:
            log.error("the app lists %s/%s twice", sub.pubsub_name, sub.topic)
            continue
        app_listed.add(key)
        if key in at:
            log.info("the app's subscription to %s/%s replaces the declarative one", *key)
            merged[at[key]] = sub
        else:
            at[key] = len(merged)
            merged.append(sub)
    return merged


class PubSubDispatcher(AppDispatcher):
    name = "pubsub_dispatcher"
    indicator = APP_INDICATOR

    def __init__(
        self,
        service: PubSubService,
        app: AppChannel,
        health: HealthRegistry,
        app_health: AppHealth,
        *,
        grace_period: float,
        declared: Sequence[AppSubscription] = (),
    ) -> None:
        super().__init__(health, app_health, grace_period=grace_period)
        self._service = service
        self._app = app
        self._declared = tuple(declared)
        self._loops: list[DeliveryLoop] = []
        self._subscriptions: list[AppSubscription] = []  # beside `_loops`, same order

    def info(self) -> list[dict[str, Any]]:
        """Per subscription: the loop's info, plus Dapr's `rules` (flat) and `type`."""
        entries = []
        for loop, sub in zip(self._loops, self._subscriptions, strict=True):
            entry = loop.info()
            entry["rules"] = sub.rules_info()
            entry["type"] = sub.origin
            if sub.bulk is not None:
                entry["bulkSubscribe"] = {
                    "enabled": True,
                    "maxMessagesCount": sub.bulk.max_messages,
                    "maxAwaitDurationMs": round(sub.bulk.max_await_seconds * 1000),
                }
            entries.append(entry)
        return entries

    async def _start(self, tg: TaskGroup) -> Mapping[str, Any]:
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
        for sub in merge_subscriptions(self._declared, subscriptions):
            indicator = subscription_indicator(sub.pubsub_name, sub.topic)
            try:
                loop = self._service.delivery(
                    sub.pubsub_name,
                    sub.topic,
                    self._deliver_function(sub),
                    metadata=sub.metadata,
                    dead_letter_topic=sub.dead_letter_topic or None,
                    on_health=self._reporter(indicator),
                )
            except LayottoError as err:
                # A subscription the sidecar cannot serve is the app's (or the operator's)
                # mistake: say so loudly and keep serving the others.
                log.error("cannot subscribe %s/%s: %s", sub.pubsub_name, sub.topic, err.message)
                continue
            if sub.bulk is not None:
                loop.batch_deliveries(sub.bulk.max_messages)
            self._health.set(indicator, Health(HealthStatus.INIT), READINESS)
            self._loops.append(loop)
            self._subscriptions.append(sub)
            await tg.start(self._run_loop, loop)
        return {"protocol": self._app.surface}

    async def _drain(self) -> None:
        for loop in self._loops:
            loop.stop()
        for loop in self._loops:
            await loop.finished.wait()

    def _forget(self) -> None:
        for loop in self._loops:
            self._health.remove(subscription_indicator(loop.pubsub_name, loop.request.topic))

    def _deliver_function(self, sub: AppSubscription) -> Deliver:
        """How one subscription's events reach the app: one call each, or gathered into bulk
        calls; either way held back while the app is unhealthy."""
        app, app_health = self._app, self._app_health
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

    def _reporter(self, indicator: str) -> Callable[[Health], None]:
        def report(health: Health) -> None:
            self._health.set(indicator, health, READINESS)

        return report

    async def _run_loop(self, loop: DeliveryLoop, *, task_status: TaskStatus[None]) -> None:
        async with self._service.exclusive(loop.pubsub_name, loop.request.topic):
            await loop.run(task_status=task_status)
