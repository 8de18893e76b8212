"""CloudEvents 1.0 JSON envelopes: built on publish, parsed on delivery (dapr-compat.md §3.2,
layotto-semantics.md §4.1, §4.3). Pure functions, no I/O."""

from __future__ import annotations

import base64
import binascii
import json
import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from enum import IntEnum
from typing import Any

from layotto.errors import InvalidArgument

CLOUDEVENTS_JSON = "application/cloudevents+json"
DEFAULT_CONTENT_TYPE = "text/plain"
SPEC_VERSION = "1.0"

# Publish metadata that overrides envelope attributes (Dapr's names).
OVERRIDE_PREFIX = "cloudevent."
_OVERRIDABLE = ("id", "source", "type", "traceparent", "tracestate", "subject")

# Envelope keys that are attributes of TopicEventRequest; every other key is an extension.
_ATTRIBUTES = frozenset({"id", "source", "type", "specversion", "datacontenttype"})
_DATA_KEYS = frozenset({"data", "data_base64"})

_BINARY_TYPES = frozenset(
    {
        "application/octet-stream",
        "application/x-protobuf",
        "application/protobuf",
        "application/grpc",
        "application/avro",
        "application/x-avro",
    }
)


class EventStatus(IntEnum):
    """The app's verdict on one event (TopicEventResponse.status, same numbers in both APIs)."""

    SUCCESS = 0
    RETRY = 1
    DROP = 2


@dataclass(frozen=True, slots=True)
class EnvelopeStyle:
    """Who the sidecar says sent the event: Layotto and Dapr name it differently."""

    source: str
    type: str


LAYOTTO_STYLE = EnvelopeStyle("runtime", "com.runtime.event.sent")


def dapr_style(app_id: str) -> EnvelopeStyle:
    return EnvelopeStyle(app_id, "com.dapr.event.sent")


@dataclass(frozen=True, slots=True)
class TopicEvent:
    """One event as the app sees it, transport-neutral (both TopicEventRequest shapes)."""

    id: str
    source: str
    type: str
    specversion: str
    datacontenttype: str
    data: bytes
    topic: str
    pubsubname: str
    # Every other envelope key (topic, pubsubname, traceparent, time, expiration, custom).
    extensions: Mapping[str, Any] = field(default_factory=dict)
    # The broker message's headers (what the publisher put in metadata).
    metadata: Mapping[str, str] = field(default_factory=dict)

    def expired(self, now: datetime | None = None) -> bool:
        expiration = self.extensions.get("expiration")
        if not isinstance(expiration, str):
            return False
        try:
            when = datetime.fromisoformat(expiration)
        except ValueError:
            return False
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        return when <= (now or datetime.now(UTC))


def is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json") or media == "text/json"


def is_binary(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media in _BINARY_TYPES or media.startswith(("image/", "audio/", "video/"))


def new_traceparent() -> str:
    return f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"


def _now() -> datetime:
    return datetime.now(UTC)


def _rfc3339(when: datetime) -> str:
    return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _put_data(envelope: dict[str, Any], data: bytes, content_type: str) -> None:
    if is_binary(content_type):
        envelope["data_base64"] = base64.b64encode(data).decode("ascii")
        return
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        envelope["data_base64"] = base64.b64encode(data).decode("ascii")
        return
    if is_json(content_type):
        try:
            envelope["data"] = json.loads(text)
        except ValueError:
            # Declared JSON but is not: base64 keeps the bytes exact (Dapr would store the text
            # as a JSON string, and a subscriber would get it back quoted).
            envelope["data_base64"] = base64.b64encode(data).decode("ascii")
        return
    envelope["data"] = text


def _ttl_seconds(metadata: Mapping[str, str]) -> int | None:
    raw = metadata.get("ttlInSeconds")
    if raw is None or raw == "":
        return None
    try:
        seconds = int(raw)
    except ValueError:
        raise InvalidArgument(
            f"field 'metadata.ttlInSeconds' must be an integer number of seconds, got {raw!r}"
        ) from None
    if seconds < 0:
        raise InvalidArgument(f"field 'metadata.ttlInSeconds' must not be negative, got {seconds}")
    return seconds


@dataclass(frozen=True, slots=True)
class Envelope:
    body: bytes
    id: str


def envelope(
    *,
    data: bytes,
    content_type: str,
    topic: str,
    pubsub_name: str,
    metadata: Mapping[str, str],
    style: EnvelopeStyle,
    broker_expires: bool,
    traceparent: str | None = None,
) -> Envelope:
    """The CloudEvent to publish for `data`. `broker_expires`: the component honours
    `ttlInSeconds` itself, so no `expiration` is written."""
    ttl = _ttl_seconds(metadata)
    overrides = {
        name: metadata[OVERRIDE_PREFIX + name]
        for name in _OVERRIDABLE
        if metadata.get(OVERRIDE_PREFIX + name)
    }
    now = _now()
    if content_type.split(";", 1)[0].strip().lower() == CLOUDEVENTS_JSON:
        event = _caller_event(data)
        event.setdefault("id", str(uuid.uuid4()))
        event.setdefault("source", style.source)
        event.setdefault("type", style.type)
        event.setdefault("specversion", SPEC_VERSION)
        event.setdefault("time", _rfc3339(now))
    else:
        event = {
            "id": str(uuid.uuid4()),
            "source": style.source,
            "type": style.type,
            "specversion": SPEC_VERSION,
            "datacontenttype": content_type or DEFAULT_CONTENT_TYPE,
            "time": _rfc3339(now),
        }
        _put_data(event, data, content_type or DEFAULT_CONTENT_TYPE)
    event.update({k: v for k, v in overrides.items() if k not in ("traceparent",)})
    trace = overrides.get("traceparent") or event.get("traceparent") or traceparent
    trace = trace or new_traceparent()
    event["traceparent"] = trace
    event.setdefault("traceid", trace)
    event["topic"] = topic
    event["pubsubname"] = pubsub_name
    if ttl is not None and not broker_expires:
        event["expiration"] = _rfc3339(now + timedelta(seconds=ttl))
    return Envelope(json.dumps(event, separators=(",", ":")).encode(), str(event["id"]))


def _caller_event(data: bytes) -> dict[str, Any]:
    try:
        event = json.loads(data)
    except ValueError as err:
        raise InvalidArgument(f"field 'data' is not a valid CloudEvent (JSON): {err}") from None
    if not isinstance(event, dict):
        raise InvalidArgument("field 'data' is not a valid CloudEvent: not a JSON object")
    for name in ("id", "source", "type", "specversion"):
        value = event.get(name)
        if value is not None and not isinstance(value, str):
            raise InvalidArgument(
                f"field 'data' is not a valid CloudEvent: {name!r} must be a string"
            )
    return event


def _event_data(event: Mapping[str, Any]) -> bytes:
    if "data_base64" in event:
        raw = event["data_base64"]
        if isinstance(raw, str):
            try:
                return base64.b64decode(raw, validate=True)
            except (binascii.Error, ValueError):
                return raw.encode()
    data = event.get("data")
    if data is None:
        return b""
    if isinstance(data, str) and not is_json(str(event.get("datacontenttype", ""))):
        return data.encode()
    # JSON data is re-marshalled, a JSON string keeping its quotes (as Dapr does).
    return json.dumps(data, separators=(",", ":")).encode()


def parse(
    body: bytes,
    *,
    topic: str,
    pubsub_name: str,
    metadata: Mapping[str, str],
    fallback_id: str,
    raw: bool = False,
) -> TopicEvent:
    """The event carried by a broker message. A payload that is not a CloudEvent (published with
    `rawPayload`, or by a producer outside the sidecar), or any payload when `raw` is set, is
    wrapped as Dapr wraps raw payloads: the data is delivered untouched, with an id taken from
    the publisher's `cloudevent.id` header or the broker's `fallback_id`."""
    event: Any = None
    if not raw:
        try:
            event = json.loads(body)
        except ValueError:
            event = None
    if not (
        isinstance(event, dict) and isinstance(event.get("id"), str) and "specversion" in event
    ):
        return TopicEvent(
            id=metadata.get(OVERRIDE_PREFIX + "id") or fallback_id or str(uuid.uuid4()),
            source=metadata.get(OVERRIDE_PREFIX + "source", ""),
            type=metadata.get(OVERRIDE_PREFIX + "type", "com.dapr.event.sent"),
            specversion=SPEC_VERSION,
            datacontenttype="application/octet-stream",
            data=body,
            topic=topic,
            pubsubname=pubsub_name,
            extensions={"topic": topic, "pubsubname": pubsub_name},
            metadata=dict(metadata),
        )
    extensions = {k: v for k, v in event.items() if k not in _ATTRIBUTES and k not in _DATA_KEYS}
    return TopicEvent(
        id=event["id"],
        source=str(event.get("source", "")),
        type=str(event.get("type", "")),
        specversion=str(event.get("specversion", SPEC_VERSION)),
        datacontenttype=str(event.get("datacontenttype", DEFAULT_CONTENT_TYPE)),
        data=_event_data(event),
        # Where it was received, which for a dead letter is not where it was first published
        # (that stays in the `topic` extension).
        topic=topic,
        pubsubname=pubsub_name,
        extensions=extensions,
        metadata=dict(metadata),
    )


def as_envelope(event: TopicEvent) -> dict[str, Any]:
    """The event as its CloudEvent envelope map (what Dapr routing rules see as `event`):
    the attributes, every extension, and `data` decoded as the content type says (JSON
    parsed, text as a string, anything else as bytes)."""
    envelope = _envelope_attributes(event)
    envelope["data"] = _decoded_data(event.data, event.datacontenttype)
    return envelope


def _envelope_attributes(event: TopicEvent) -> dict[str, Any]:
    """Every extension, then the CloudEvent attributes (which no extension replaces)."""
    envelope: dict[str, Any] = dict(event.extensions)
    envelope.update(
        id=event.id,
        source=event.source,
        type=event.type,
        specversion=event.specversion,
        datacontenttype=event.datacontenttype,
    )
    return envelope


def _decoded_data(data: bytes, content_type: str) -> Any:
    """JSON parsed, text as a string, anything else (or what does not decode) as bytes."""
    if is_binary(content_type):
        return data
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        return data
    if not is_json(content_type):
        return text
    try:
        return json.loads(text)
    except ValueError:
        return text


def envelope_json(event: TopicEvent) -> bytes:
    """The event's CloudEvent as the JSON body an HTTP app receives (daprd posts the envelope
    as published): the attributes, every extension, and the data as `data`, or as
    `data_base64` when it is binary (the same rule as publishing)."""
    body = _envelope_attributes(event)
    _put_data(body, event.data, event.datacontenttype)
    return json.dumps(body, separators=(",", ":")).encode()
