"""Pub/sub conformance harnesses that go through a running sidecar over real gRPC: the same
scenarios as the component kit, proving the delivery models end to end.

- `StreamingHarness`: subscriptions are `SubscribeTopicEvents` streams on one sidecar.
- `CallbackHarness`: subscriptions are routes of an app callback server; since a sidecar asks
  the app for its subscriptions once, at startup, the harness restarts the sidecar (gracefully)
  whenever the set of routes changes. Un-acked messages then come back only from a durable
  broker: `reopen_redelivers` is False for the in-memory component.

Both are `BulkPublishHarness`es: `publish_bulk` is Dapr's BulkPublishEvent on the sidecar (the
component's native bulk publish when it declares BULK_PUBSUB, one publish per entry otherwise).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager, asynccontextmanager

import anyio
from grpclib.client import Channel

from layotto.health import Probe
from layotto.plugin import (
    DEAD_LETTER_TOPIC_METADATA,
    MAX_RETRIES_METADATA,
    BulkPublishEntry,
    Health,
    HealthStatus,
    Kind,
    PubSub,
    PubSubFeature,
)
from layotto.testing.pubsub import (
    CallbackApp,
    Handler,
    Route,
    publish,
    publish_bulk,
    serve_app,
    topic_stream,
)
from layotto.testing.runtime import Sidecar

READY_TIMEOUT = 60.0

SidecarStarter = Callable[[int], AbstractAsyncContextManager[Sidecar]]  # app port -> sidecar


def _subscription_metadata(
    metadata: Mapping[str, str] | None, dead_letter_topic: str | None, max_retries: int | None
) -> dict[str, str]:
    meta = dict(metadata or {})
    if dead_letter_topic:
        meta[DEAD_LETTER_TOPIC_METADATA] = dead_letter_topic
    if max_retries is not None:
        meta[MAX_RETRIES_METADATA] = str(max_retries)
    return meta


async def wait_until_ready(sidecar: Sidecar, within: float = READY_TIMEOUT) -> None:
    """Readiness UP: with an app port, that includes the app's subscriptions being made."""
    ready = anyio.Event()

    def listener(status: HealthStatus) -> None:
        if status is HealthStatus.UP:
            ready.set()

    sidecar.runtime.health.on_readiness_change(listener)  # also called with the current one
    with anyio.fail_after(within):
        await ready.wait()


def _readiness(sidecar: Sidecar | None) -> Health:
    if sidecar is None:
        return Health.down("the sidecar is restarting")
    health = sidecar.runtime.health
    status = health.status(Probe.READINESS)
    return Health(status, {"readiness": str(health.report(Probe.READINESS)["components"])})


def _features(sidecar: Sidecar, pubsub_name: str) -> frozenset[PubSubFeature]:
    """The features of the sidecar's component `pubsub_name`."""
    component = sidecar.runtime.components.of_kind(Kind.PUBSUB)[pubsub_name].component
    assert isinstance(component, PubSub)
    return component.features


class StreamingHarness:
    """Use as `with StreamingHarness(sidecar, "pubsub") as harness` (it owns a channel)."""

    def __init__(
        self,
        sidecar: Sidecar,
        pubsub_name: str,
        *,
        ordered: bool = True,
        reopen_redelivers: bool = True,
    ) -> None:
        self._sidecar = sidecar
        self._channel = sidecar.channel()
        self.pubsub_name = pubsub_name
        self.ordered = ordered
        self.reopen_redelivers = reopen_redelivers

    def __enter__(self) -> StreamingHarness:
        return self

    def __exit__(self, *exc: object) -> None:
        self._channel.close()

    async def check_health(self) -> Health:
        return _readiness(self._sidecar)

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        await publish(
            self._channel,
            self.pubsub_name,
            topic,
            data,
            metadata=metadata,
            content_type=content_type,
        )

    @property
    def features(self) -> frozenset[PubSubFeature]:
        return _features(self._sidecar, self.pubsub_name)

    async def publish_bulk(self, topic: str, entries: Sequence[BulkPublishEntry]) -> dict[str, str]:
        return await publish_bulk(self._channel, self.pubsub_name, topic, entries)

    def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str | None = None,
        max_retries: int | None = None,
    ) -> AbstractAsyncContextManager[None]:
        return topic_stream(
            self._channel,
            self.pubsub_name,
            topic,
            handler,
            metadata=_subscription_metadata(metadata, None, max_retries),
            dead_letter_topic=dead_letter_topic,
        )


class CallbackHarness:
    """Use as `async with CallbackHarness(...).running() as harness`."""

    def __init__(
        self,
        start_sidecar: SidecarStarter,
        pubsub_name: str,
        *,
        ordered: bool = True,
        reopen_redelivers: bool = True,
    ) -> None:
        self._start_sidecar = start_sidecar
        self.pubsub_name = pubsub_name
        self.ordered = ordered
        self.reopen_redelivers = reopen_redelivers
        self._app = CallbackApp()
        self._app_port = 0
        self._sidecar: Sidecar | None = None
        self._channel: Channel | None = None
        self._generation = 0  # bumped for each wanted (re)start
        self._served = -1  # the generation the running sidecar serves
        self._changed = anyio.Event()
        self._features: frozenset[PubSubFeature] = frozenset()  # known once a sidecar runs

    @asynccontextmanager
    async def running(self) -> AsyncIterator[CallbackHarness]:
        async with serve_app(self._app) as port, anyio.create_task_group() as tg:
            self._app_port = port
            tg.start_soon(self._keep_sidecar)
            try:
                await self._wait_for(self._generation)
                yield self
            finally:
                tg.cancel_scope.cancel()

    async def _keep_sidecar(self) -> None:
        """Owns the sidecar: (re)starts it whenever the routes changed."""
        while True:
            generation = self._generation
            async with self._start_sidecar(self._app_port) as sidecar:
                await wait_until_ready(sidecar)
                self._sidecar = sidecar
                self._channel = sidecar.channel()
                self._features = _features(sidecar, self.pubsub_name)
                self._served = generation
                self._signal()
                try:
                    while self._generation == generation:
                        await self._changed.wait()
                finally:
                    self._channel.close()
                    self._channel = None
                    self._sidecar = None

    def _signal(self) -> None:
        changed, self._changed = self._changed, anyio.Event()
        changed.set()

    async def _wait_for(self, generation: int) -> None:
        with anyio.fail_after(READY_TIMEOUT):
            while self._served < generation:
                await self._changed.wait()

    async def _restart(self) -> None:
        self._generation += 1
        self._signal()
        await self._wait_for(self._generation)

    async def check_health(self) -> Health:
        await self._wait_for(self._generation)
        return _readiness(self._sidecar)

    async def publish(
        self,
        topic: str,
        data: bytes,
        *,
        metadata: Mapping[str, str] | None = None,
        content_type: str = "application/json",
    ) -> None:
        await self._wait_for(self._generation)
        assert self._channel is not None
        await publish(
            self._channel,
            self.pubsub_name,
            topic,
            data,
            metadata=metadata,
            content_type=content_type,
        )

    @property
    def features(self) -> frozenset[PubSubFeature]:
        return self._features

    async def publish_bulk(self, topic: str, entries: Sequence[BulkPublishEntry]) -> dict[str, str]:
        await self._wait_for(self._generation)
        assert self._channel is not None
        return await publish_bulk(self._channel, self.pubsub_name, topic, entries)

    @asynccontextmanager
    async def subscribe(
        self,
        topic: str,
        handler: Handler,
        *,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str | None = None,
        max_retries: int | None = None,
    ) -> AsyncIterator[None]:
        route = Route(
            self.pubsub_name,
            topic,
            handler,
            _subscription_metadata(metadata, dead_letter_topic, max_retries),
        )
        self._app.routes.append(route)
        await self._restart()
        try:
            yield
        finally:
            self._app.routes.remove(route)
            with anyio.CancelScope(shield=True):
                await self._restart()
