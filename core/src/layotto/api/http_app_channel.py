"""Dapr's HTTP app channel as an `AppChannel` (`app.protocol: http`): programmatic
subscriptions from `GET /dapr/subscribe`, each event `POST`ed to its route as the CloudEvent
JSON, bulk subscriptions as one `POST` of Dapr's bulk JSON per route.

The app's answer, as daprd reads it:

- 2xx with an empty body, a body that is not a JSON object, or `{"status": "SUCCESS"}` (or no
  status) is SUCCESS; `{"status": "RETRY"}` RETRY, `{"status": "DROP"}` DROP; any other status
  is an error daprd retries: RETRY;
- 404 is daprd's "non-retriable error": DROP;
- any other status is RETRY.
"""

from __future__ import annotations

import base64
import json
import logging
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from layotto.api.app_channel import (
    AppSubscription,
    BulkSubscribe,
    compile_rule,
    deliver_by_route,
    route_or_log,
)
from layotto.api.dapr_app_callback import BULK_EVENT_TYPE, event_headers
from layotto.api.http_app_connection import HttpAnswer, HttpAppConnection, delivery_errors
from layotto.services.cloudevents import EventStatus, TopicEvent, envelope_json

log = logging.getLogger(__name__)

SUBSCRIBE_PATH = "/dapr/subscribe"
CLOUDEVENTS_CONTENT_TYPE = "application/cloudevents+json"
_STATUSES = {"": EventStatus.SUCCESS, **{s.name: s for s in EventStatus}}


# -- subscriptions -------------------------------------------------------------------------


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, Mapping):
        return {}
    return {str(k): str(v) for k, v in value.items() if v is not None}


def _int(value: Any) -> int:
    """A JSON integer as is; anything else 0 (the default, to `BulkSubscribe.of`)."""
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def to_subscription(entry: Mapping[str, Any]) -> AppSubscription | None:
    """One entry of the app's `/dapr/subscribe` list, or None when it names no pubsub/topic.
    daprd's rule: `routes.rules` in order, then `routes.default`, else `route`."""
    pubsub = entry.get("pubsubname") or entry.get("pubsubName")
    topic = entry.get("topic")
    if not isinstance(pubsub, str) or not pubsub or not isinstance(topic, str) or not topic:
        log.error("the app's /dapr/subscribe lists an entry without pubsubname/topic: %r", entry)
        return None
    where = f"subscription {pubsub}/{topic}"
    routes_value = entry.get("routes")
    routes: Mapping[str, Any] = routes_value if isinstance(routes_value, Mapping) else {}
    rules = []
    for rule in routes.get("rules") or []:
        if isinstance(rule, Mapping) and isinstance(rule.get("path"), str):
            rules.append(compile_rule(str(rule.get("match") or ""), rule["path"], where))
    default = routes.get("default") or entry.get("route") or ""
    bulk = None
    bulk_entry = entry.get("bulkSubscribe")
    if isinstance(bulk_entry, Mapping) and bulk_entry.get("enabled") is True:
        bulk = BulkSubscribe.of(
            _int(bulk_entry.get("maxMessagesCount")), _int(bulk_entry.get("maxAwaitDurationMs"))
        )
    dead_letter = entry.get("deadLetterTopic")
    return AppSubscription(
        pubsub,
        topic,
        _strings(entry.get("metadata")),
        rules=tuple(rules),
        default_path=default if isinstance(default, str) else "",
        dead_letter_topic=dead_letter.strip() if isinstance(dead_letter, str) else "",
        bulk=bulk,
    )


def parse_subscriptions(body: bytes) -> list[AppSubscription]:
    """The app's `/dapr/subscribe` answer; an answer that is not a JSON list means none."""
    try:
        listed = json.loads(body) if body.strip() else []
    except ValueError:
        log.error("the app's /dapr/subscribe answer is not JSON: no subscriptions")
        return []
    if not isinstance(listed, list):
        log.error("the app's /dapr/subscribe answer is not a JSON list: no subscriptions")
        return []
    subscriptions = (to_subscription(e) for e in listed if isinstance(e, Mapping))
    return [s for s in subscriptions if s is not None]


# -- the answers ---------------------------------------------------------------------------


def _status_word(value: Any) -> EventStatus | int:
    if value is None:
        value = ""  # JSON null reads as Go's empty string: SUCCESS
    word = value.strip().upper() if isinstance(value, str) else None
    if word is None or word not in _STATUSES:
        log.warning("the app answered an unknown status %r: the event is retried", value)
        return EventStatus.RETRY
    return _STATUSES[word]


def event_status(answer: HttpAnswer, what: str) -> EventStatus | int:
    """The app's verdict on one delivery (see the module docstring)."""
    if answer.status == 404:
        log.warning("%s: the app answered 404, a non-retriable error: dropped", what)
        return EventStatus.DROP
    if not answer.ok:
        log.info("%s: the app answered HTTP %d: retried", what, answer.status)
        return EventStatus.RETRY
    try:
        body = json.loads(answer.body) if answer.body.strip() else {}
    except ValueError:
        # daprd skips the status check when the body does not parse.
        return EventStatus.SUCCESS
    if not isinstance(body, Mapping):
        return EventStatus.SUCCESS
    return _status_word(body.get("status", ""))


class HttpAppChannel:
    surface = "http"

    def __init__(self, connection: HttpAppConnection, *, delivery_timeout: float) -> None:
        self._connection = connection
        self._timeout = delivery_timeout

    async def list_subscriptions(self) -> list[AppSubscription]:
        """`GET /dapr/subscribe`: 404 (or no answer) means none, as daprd."""
        answer = await self._connection.ask("GET", SUBSCRIBE_PATH, "GET /dapr/subscribe")
        if answer is None or answer.status == 404:
            return []
        if not answer.ok:
            log.warning("GET /dapr/subscribe answered HTTP %d: no subscriptions", answer.status)
            return []
        return parse_subscriptions(answer.body)

    async def deliver(self, event: TopicEvent, subscription: AppSubscription) -> EventStatus | int:
        path = route_or_log(event, subscription)
        if path is None:
            return EventStatus.DROP
        if subscription.raw_payload:
            body = event.data
            content_type = event.datacontenttype or "application/octet-stream"
        else:
            body, content_type = envelope_json(event), CLOUDEVENTS_CONTENT_TYPE
        headers = {**event_headers(event), "content-type": content_type}
        with delivery_errors():
            answer = await self._connection.request(
                "POST", path, within=self._timeout, content=body, headers=headers
            )
        return event_status(answer, f"event {event.id} to POST /{path.lstrip('/')}")

    async def deliver_bulk(
        self, events: Sequence[TopicEvent], subscription: AppSubscription
    ) -> list[EventStatus | int]:
        """One bulk POST per matched route (see `deliver_by_route`)."""
        return await deliver_by_route(events, subscription, self._bulk)

    async def _bulk(
        self,
        events: Sequence[TopicEvent],
        entry_ids: Sequence[str],
        subscription: AppSubscription,
        path: str,
    ) -> dict[str, EventStatus | int]:
        raw = subscription.raw_payload
        body = {
            "id": str(uuid.uuid4()),
            "entries": [_bulk_entry(e, i, raw) for e, i in zip(events, entry_ids, strict=True)],
            "metadata": dict(subscription.metadata),
            "pubsubname": subscription.pubsub_name,
            "topic": subscription.topic,
            "type": BULK_EVENT_TYPE,
        }
        with delivery_errors():
            answer = await self._connection.request(
                "POST",
                path,
                within=self._timeout,
                content=json.dumps(body, separators=(",", ":")).encode(),
                headers={"content-type": "application/json"},
            )
        what = f"{len(events)} event(s) to POST /{path.lstrip('/')}"
        if not answer.ok:
            return dict.fromkeys(entry_ids, event_status(answer, what))
        return _bulk_statuses(answer.body)


def _bulk_entry(event: TopicEvent, entry_id: str, raw: bool) -> dict[str, Any]:
    if raw:
        # Raw bytes travel as base64 in JSON, as Go's encoding/json writes a []byte.
        return {
            "entryId": entry_id,
            "event": base64.b64encode(event.data).decode("ascii"),
            "contentType": event.datacontenttype,
            "metadata": dict(event.metadata),
        }
    return {
        "entryId": entry_id,
        "event": json.loads(envelope_json(event)),
        "contentType": CLOUDEVENTS_CONTENT_TYPE,
        "metadata": dict(event.metadata),
    }


def _bulk_statuses(body: bytes) -> dict[str, EventStatus | int]:
    """The app's status per entry id; none when the answer cannot be read (daprd fails the
    whole batch then: every entry is RETRY)."""
    try:
        parsed = json.loads(body) if body.strip() else {}
    except ValueError:
        parsed = None
    if not isinstance(parsed, Mapping) or not isinstance(parsed.get("statuses"), list):
        log.warning("the app's bulk answer has no statuses: every entry is retried")
        return {}
    answered: dict[str, EventStatus | int] = {}
    for item in parsed["statuses"]:
        if isinstance(item, Mapping) and isinstance(item.get("entryId"), str):
            answered[item["entryId"]] = _status_word(item.get("status", ""))
    return answered
