"""The Pub/Sub building block (layotto-semantics.md §4, dapr-compat.md §3.2).

- `publish` validates the request, wraps the payload in a CloudEvents envelope (unless
  `rawPayload`), hands it to the component and returns the event id, which the edges give
  back to the caller (Layotto's PublishEvent answers Empty, so the id travels in a header).
- `publish_bulk` lists the entries that failed instead of failing the call; a bad request as a
  whole (pubsub, topic, entry ids) fails it. Each entry is prepared as a single publish would be
  (its envelope, its metadata over the request's); an entry that cannot be prepared fails alone.
  A component that declares `BULK_PUBSUB` gets the prepared entries in one `publish_bulk` call,
  bounded by the call timeout as a single publish is (a failed or timed-out call fails every
  entry it was given); any other component gets one `publish` per entry, in order.
- Errors carry Dapr's reasons (`DAPR_PUBSUB_*`, dapr-compat.md section 4) on both surfaces.
- `open_delivery` prepares a `DeliveryLoop` for one (pubsub, topic) subscription; the app
  callback dispatcher and streaming subscriptions both deliver through it. At most one
  subscription per (pubsub, topic) is live at a time, as daprd documents.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass, field, replace

import anyio

from layotto.components import ComponentRegistry
from layotto.errors import ErrorCategory, InvalidArgument, LayottoError, NotConfigured
from layotto.meter import Meter
from layotto.plugin import (
    RAW_PAYLOAD_METADATA,
    Kind,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
)
from layotto.plugin.flags import is_truthy
from layotto.plugin.pubsub import BulkPublishEntry, BulkPublishRequest
from layotto.resiliency import Policy
from layotto.services.calls import DEFAULT_CALL_TIMEOUT, call_component
from layotto.services.cloudevents import (
    CLOUDEVENTS_JSON,
    LAYOTTO_STYLE,
    OVERRIDE_PREFIX,
    EnvelopeStyle,
    envelope,
)
from layotto.services.keys import KeyPrefix
from layotto.services.pubsub_delivery import Deliver, DeliveryLoop, DeliveryPolicy, HealthSink
from layotto.tracing import Tracer, current_traceparent

log = logging.getLogger(__name__)

COMPONENT = "the pub/sub component"
_NO_KEYS = KeyPrefix("")  # topics are not prefixed
CLAIM_WAIT_SECONDS = 2.0


@dataclass(frozen=True, slots=True)
class Published:
    id: str


@dataclass(frozen=True, slots=True)
class BulkEntry:
    """One event of a bulk publish: its own payload, content type and metadata (merged over the
    request's metadata)."""

    entry_id: str
    data: bytes
    content_type: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BulkFailure:
    entry_id: str
    error: str  # the message the single publish would have answered with


class PubSubService:
    def __init__(
        self,
        registry: ComponentRegistry,
        *,
        policy: DeliveryPolicy | None = None,
        call_timeout: float = DEFAULT_CALL_TIMEOUT,
    ) -> None:
        self._policy = policy or DeliveryPolicy()
        self._call_timeout = call_timeout
        self._pubsubs: dict[str, PubSub] = {}
        # Per component: its Dapr resiliency policies for publishing and for deliveries.
        self._outbound: dict[str, Policy] = {}
        self._inbound: dict[str, Policy] = {}
        self._live: dict[tuple[str, str], anyio.Event] = {}
        self._meter: Meter = registry.meter  # egress here, ingress in the delivery loops
        self._tracer: Tracer = registry.tracer  # a CONSUMER span per delivery attempt
        for name, built in registry.of_kind(Kind.PUBSUB).items():
            if not isinstance(built.component, PubSub):
                raise TypeError(f"pubsub component {name!r} is not a PubSub")
            self._pubsubs[name] = built.component
            self._outbound[name] = registry.outbound_policy(Kind.PUBSUB, name)
            self._inbound[name] = registry.inbound_policy(Kind.PUBSUB, name)

    @property
    def policy(self) -> DeliveryPolicy:
        return self._policy

    @property
    def names(self) -> list[str]:
        return sorted(self._pubsubs)

    def resolve(self, pubsub_name: str) -> PubSub:
        if not self._pubsubs:
            raise NotConfigured("pubsub is not configured", reason="DAPR_PUBSUB_NOT_CONFIGURED")
        if not pubsub_name:
            raise InvalidArgument("pubsub name is empty", reason="DAPR_PUBSUB_NAME_EMPTY")
        pubsub = self._pubsubs.get(pubsub_name)
        if pubsub is None:
            raise InvalidArgument(f"pubsub {pubsub_name} not found", reason="DAPR_PUBSUB_NOT_FOUND")
        return pubsub

    def _resolve_topic(self, pubsub_name: str, topic: str) -> PubSub:
        pubsub = self.resolve(pubsub_name)
        if not topic:
            raise InvalidArgument(
                f"topic is empty in pubsub {pubsub_name}", reason="DAPR_PUBSUB_TOPIC_NAME_EMPTY"
            )
        return pubsub

    def _prepare(
        self,
        pubsub: PubSub,
        pubsub_name: str,
        topic: str,
        data: bytes,
        content_type: str,
        metadata: Mapping[str, str] | None,
        style: EnvelopeStyle,
        traceparent: str | None,
    ) -> tuple[PublishRequest, str]:
        """The request to hand the component and the event id: the CloudEvents envelope
        (unless `rawPayload`). Raises InvalidArgument for what cannot be enveloped. With
        tracing on, the event's `traceparent` is the publishing call's span."""
        traceparent = current_traceparent() or traceparent
        meta = dict(metadata or {})
        if is_truthy(meta.get(RAW_PAYLOAD_METADATA)):
            # Sent as it is; the id travels as a header so a subscriber that wraps the raw
            # payload can give it the same id.
            event_id = meta.get(OVERRIDE_PREFIX + "id") or str(uuid.uuid4())
            meta[OVERRIDE_PREFIX + "id"] = event_id
            return PublishRequest(topic, data, meta, content_type), event_id
        built = envelope(
            data=data,
            content_type=content_type,
            topic=topic,
            pubsub_name=pubsub_name,
            metadata=meta,
            style=style,
            broker_expires=PubSubFeature.MESSAGE_TTL in pubsub.features,
            traceparent=traceparent,
        )
        return PublishRequest(topic, built.body, meta, CLOUDEVENTS_JSON), built.id

    @staticmethod
    def _publish_failed(err: LayottoError, pubsub_name: str, topic: str) -> LayottoError:
        """Dapr's reason for a publish the component failed (not for a refused request)."""
        if err.category is ErrorCategory.INTERNAL:
            err.reason = "DAPR_PUBSUB_PUBLISH_MESSAGE"
            err.metadata = {"pubsubName": pubsub_name, "topic": topic, **err.metadata}
        return err

    async def publish(
        self,
        pubsub_name: str,
        topic: str,
        data: bytes,
        *,
        content_type: str = "",
        metadata: Mapping[str, str] | None = None,
        style: EnvelopeStyle = LAYOTTO_STYLE,
        traceparent: str | None = None,
    ) -> Published:
        pubsub = self._resolve_topic(pubsub_name, topic)
        request, event_id = self._prepare(
            pubsub, pubsub_name, topic, data, content_type, metadata, style, traceparent
        )
        started = time.perf_counter() if self._meter.enabled else 0.0
        try:
            await call_component(
                f"publishing to topic {topic!r}",
                COMPONENT,
                _NO_KEYS,
                self._call_timeout,
                lambda: pubsub.publish(request),
                policy=self._outbound[pubsub_name],
            )
        except LayottoError as err:
            self._egress(pubsub_name, topic, False, started)
            self._publish_failed(err, pubsub_name, topic)
            raise
        self._egress(pubsub_name, topic, True, started)
        return Published(event_id)

    def _egress(self, pubsub_name: str, topic: str, success: bool, started: float) -> None:
        """Dapr's egress metrics: one message handed to the component (bulk: per entry)."""
        if self._meter.enabled:
            seconds = time.perf_counter() - started
            self._meter.pubsub_egress(pubsub_name, topic, success, seconds)

    async def publish_bulk(
        self,
        pubsub_name: str,
        topic: str,
        entries: Sequence[BulkEntry],
        *,
        metadata: Mapping[str, str] | None = None,
        style: EnvelopeStyle = LAYOTTO_STYLE,
        traceparent: str | None = None,
    ) -> list[BulkFailure]:
        """Publish every entry; the entries that failed, with why, in entry order. Entry ids
        must be present and unique: they are how the caller learns which entries failed."""
        pubsub = self._resolve_topic(pubsub_name, topic)
        seen: set[str] = set()
        for index, entry in enumerate(entries):
            if not entry.entry_id:
                raise InvalidArgument(f"field 'entries[{index}].entry_id' must not be empty")
            if entry.entry_id in seen:
                raise InvalidArgument(
                    f"field 'entries[{index}].entry_id' {entry.entry_id!r} is duplicated"
                )
            seen.add(entry.entry_id)
        shared = dict(metadata or {})
        if PubSubFeature.BULK_PUBSUB in pubsub.features:
            return await self._publish_native(
                pubsub, pubsub_name, topic, entries, shared, style, traceparent
            )
        failures: list[BulkFailure] = []
        for entry in entries:
            try:
                await self.publish(
                    pubsub_name,
                    topic,
                    entry.data,
                    content_type=entry.content_type,
                    metadata={**shared, **entry.metadata},
                    style=style,
                    traceparent=traceparent,
                )
            except LayottoError as err:
                failures.append(BulkFailure(entry.entry_id, err.message))
        return failures

    async def _publish_native(
        self,
        pubsub: PubSub,
        pubsub_name: str,
        topic: str,
        entries: Sequence[BulkEntry],
        shared: Mapping[str, str],
        style: EnvelopeStyle,
        traceparent: str | None,
    ) -> list[BulkFailure]:
        """One `publish_bulk` call for every entry that could be prepared."""
        errors: dict[str, str] = {}
        prepared: list[BulkPublishEntry] = []
        for entry in entries:
            try:
                request, _ = self._prepare(
                    pubsub,
                    pubsub_name,
                    topic,
                    entry.data,
                    entry.content_type,
                    {**shared, **entry.metadata},
                    style,
                    traceparent,
                )
            except LayottoError as err:
                errors[entry.entry_id] = err.message
                continue
            prepared.append(
                BulkPublishEntry(
                    entry.entry_id, request.data, request.metadata, request.content_type
                )
            )
        if prepared:
            bulk = BulkPublishRequest(topic, prepared)
            started = time.perf_counter() if self._meter.enabled else 0.0
            try:
                failed = await call_component(
                    f"publishing {len(prepared)} entries to topic {topic!r}",
                    COMPONENT,
                    _NO_KEYS,
                    self._call_timeout,
                    lambda: pubsub.publish_bulk(bulk),
                    policy=self._outbound[pubsub_name],
                )
            except LayottoError as err:
                errors.update((e.entry_id, err.message) for e in prepared)
            else:
                sent = {e.entry_id for e in prepared}
                for failure in failed:
                    if failure.entry_id in sent:
                        errors.setdefault(failure.entry_id, failure.error.message)
                    else:  # a component bug: say so, but do not invent a failed entry
                        log.warning(
                            "bulk publish to %s/%s: the component reported unknown entry %r",
                            pubsub_name,
                            topic,
                            failure.entry_id,
                        )
            for e in prepared:
                self._egress(pubsub_name, topic, e.entry_id not in errors, started)
        return [
            BulkFailure(e.entry_id, errors[e.entry_id]) for e in entries if e.entry_id in errors
        ]

    def delivery(
        self,
        pubsub_name: str,
        topic: str,
        deliver: Deliver,
        *,
        metadata: Mapping[str, str] | None = None,
        dead_letter_topic: str | None = None,
        on_health: HealthSink | None = None,
    ) -> DeliveryLoop:
        """A delivery loop for one subscription (not started). Raises InvalidArgument for an
        unknown pubsub, an empty topic or bad subscription metadata."""
        pubsub = self._resolve_topic(pubsub_name, topic)
        meta = dict(metadata or {})
        policy = replace(self._policy, inbound=self._inbound[pubsub_name])
        policy = policy.for_subscription(meta)
        if dead_letter_topic:
            policy = policy.for_subscription({"deadLetterTopic": dead_letter_topic})
        return DeliveryLoop(
            pubsub,
            pubsub_name,
            SubscribeRequest(topic, meta),
            deliver,
            policy,
            on_health,
            meter=self._meter,
            tracer=self._tracer,
        )

    @asynccontextmanager
    async def exclusive(
        self, pubsub_name: str, topic: str, *, wait: float = CLAIM_WAIT_SECONDS
    ) -> AsyncIterator[None]:
        """Claim (pubsub, topic) for one live subscription. A claim still held after `wait`
        seconds refuses the new one (the wait covers a subscriber that reconnects while its
        old stream is still being torn down)."""
        key = (pubsub_name, topic)
        with anyio.move_on_after(wait):
            while key in self._live:
                await self._live[key].wait()
        if key in self._live:
            raise InvalidArgument(
                f'already subscribed to pubsub "{pubsub_name}" topic "{topic}"',
                reason="ERR_PUBSUB_SUBSCRIBED",
            )
        released = self._live[key] = anyio.Event()
        try:
            yield
        finally:
            del self._live[key]
            released.set()
