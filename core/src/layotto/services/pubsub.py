"""The Pub/Sub building block (layotto-semantics.md §4, dapr-compat.md §3.2).

- `publish` validates the request, wraps the payload in a CloudEvents envelope (unless
  `rawPayload`), hands it to the component and returns the event id, which the edges give
  back to the caller (Layotto's PublishEvent answers Empty, so the id travels in a header).
- `open_delivery` prepares a `DeliveryLoop` for one (pubsub, topic) subscription; the app
  callback dispatcher and streaming subscriptions both deliver through it. At most one
  subscription per (pubsub, topic) is live at a time, as daprd documents.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass

import anyio

from layotto.components import ComponentRegistry
from layotto.errors import InvalidArgument, NotConfigured
from layotto.plugin import (
    RAW_PAYLOAD_METADATA,
    Kind,
    PublishRequest,
    PubSub,
    PubSubFeature,
    SubscribeRequest,
)
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

COMPONENT = "the pub/sub component"
_NO_KEYS = KeyPrefix("")  # topics are not prefixed
CLAIM_WAIT_SECONDS = 2.0


def _truthy(value: str | None) -> bool:
    return (value or "").strip().lower() in ("1", "true", "yes", "on")


@dataclass(frozen=True, slots=True)
class Published:
    id: str


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
        self._live: dict[tuple[str, str], anyio.Event] = {}
        for name, built in registry.of_kind(Kind.PUBSUB).items():
            if not isinstance(built.component, PubSub):
                raise TypeError(f"pubsub component {name!r} is not a PubSub")
            self._pubsubs[name] = built.component

    @property
    def policy(self) -> DeliveryPolicy:
        return self._policy

    @property
    def names(self) -> list[str]:
        return sorted(self._pubsubs)

    def resolve(self, pubsub_name: str) -> PubSub:
        if not self._pubsubs:
            raise NotConfigured("pubsub is not configured", reason="ERR_PUBSUB_NOT_CONFIGURED")
        if not pubsub_name:
            raise InvalidArgument("pubsub name is empty", reason="ERR_PUBSUB_EMPTY")
        pubsub = self._pubsubs.get(pubsub_name)
        if pubsub is None:
            raise InvalidArgument(f"pubsub {pubsub_name} not found", reason="ERR_PUBSUB_NOT_FOUND")
        return pubsub

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
        pubsub = self.resolve(pubsub_name)
        if not topic:
            raise InvalidArgument(
                f"topic is empty in pubsub {pubsub_name}", reason="ERR_TOPIC_EMPTY"
            )
        meta = dict(metadata or {})
        if _truthy(meta.get(RAW_PAYLOAD_METADATA)):
            # Sent as it is; the id travels as a header so a subscriber that wraps the raw
            # payload can give it the same id.
            event_id = meta.get(OVERRIDE_PREFIX + "id") or str(uuid.uuid4())
            meta[OVERRIDE_PREFIX + "id"] = event_id
            request = PublishRequest(topic, data, meta, content_type)
        else:
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
            event_id = built.id
            request = PublishRequest(topic, built.body, meta, CLOUDEVENTS_JSON)
        await call_component(
            f"publishing to topic {topic!r}",
            COMPONENT,
            _NO_KEYS,
            self._call_timeout,
            lambda: pubsub.publish(request),
        )
        return Published(event_id)

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
        pubsub = self.resolve(pubsub_name)
        if not topic:
            raise InvalidArgument(
                f"topic is empty in pubsub {pubsub_name}", reason="ERR_TOPIC_EMPTY"
            )
        meta = dict(metadata or {})
        policy = self._policy.for_subscription(meta)
        if dead_letter_topic:
            policy = policy.for_subscription({"deadLetterTopic": dead_letter_topic})
        return DeliveryLoop(
            pubsub, pubsub_name, SubscribeRequest(topic, meta), deliver, policy, on_health
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
