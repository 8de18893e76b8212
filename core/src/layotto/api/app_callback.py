"""The sidecar as a client of the app's `spec.proto.runtime.v1.AppCallback` service.

Foreign errors are translated here, at the edge: an app that cannot be reached becomes
`AppUnavailable` (wait for it, no retry used up), UNIMPLEMENTED becomes `Unsupported` (the
dispatcher treats it as DROP), any other failure propagates (a retriable delivery error).
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field

import anyio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.backoff import backoff_delay
from layotto.errors import Unsupported
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

LIST_TIMEOUT_SECONDS = 5.0
# Answers that come from the connection, not from the app's own code (grpclib reports a
# reply without gRPC headers, e.g. from a closing server, as UNKNOWN).
# An app handler that raises also answers UNKNOWN: such answers are retried a few times only.
LIST_ATTEMPTS = 8
_TRANSPORT_STATUSES = frozenset({Status.UNAVAILABLE, Status.UNKNOWN, Status.DEADLINE_EXCEEDED})
CONNECT_POLL_SECONDS = 0.2


@dataclass(frozen=True, slots=True)
class AppSubscription:
    pubsub_name: str
    topic: str
    metadata: Mapping[str, str] = field(default_factory=dict)


def to_topic_event_request(event: TopicEvent) -> pb.TopicEventRequest:
    return pb.TopicEventRequest(
        id=event.id,
        source=event.source,
        type=event.type,
        spec_version=event.specversion,
        data_content_type=event.datacontenttype,
        data=event.data,
        topic=event.topic,
        pubsub_name=event.pubsubname,
        metadata=dict(event.metadata),
    )


def to_status(response: pb.TopicEventResponse) -> EventStatus | int:
    """The app's status; an unknown number stays an int (the dispatcher redelivers it)."""
    value = int(response.status)
    try:
        return EventStatus(value)
    except ValueError:
        return value


class AppCallbackClient:
    """One HTTP/2 connection to the app, shared by every delivery (grpclib multiplexes)."""

    def __init__(self, host: str, port: int, *, delivery_timeout: float = 60.0) -> None:
        self.host = host
        self.port = port
        self._delivery_timeout = delivery_timeout
        self._channel = Channel(host, port)
        self._stub = pb.AppCallbackStub(self._channel)

    def close(self) -> None:
        self._channel.close()

    async def wait_until_listening(self) -> None:
        """Poll the app's port until it accepts connections (the app may start after us)."""
        logged = False
        while True:
            try:
                with anyio.fail_after(1.0):
                    stream = await anyio.connect_tcp(self.host, self.port)
                await stream.aclose()
                return
            except (OSError, TimeoutError, socket.gaierror):
                if not logged:
                    log.info("waiting for the app's callback port %s:%d", self.host, self.port)
                    logged = True
                await anyio.sleep(CONNECT_POLL_SECONDS)

    async def list_subscriptions(self) -> list[AppSubscription]:
        """The app's subscriptions. UNIMPLEMENTED means none; so does any error the app itself
        answers (as upstream). A transport failure (the app restarting, not listening yet) is
        retried with backoff: a sidecar must not start with no subscriptions because the app
        blinked."""
        attempt = 0
        while True:
            try:
                response = await self._stub.list_topic_subscriptions(timeout=LIST_TIMEOUT_SECONDS)
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED:
                    return []
                if err.status not in _TRANSPORT_STATUSES or attempt >= LIST_ATTEMPTS:
                    log.warning(
                        "ListTopicSubscriptions failed (%s: %s): no subscriptions",
                        err.status.name,
                        err.message,
                    )
                    return []
                reason = f"{err.status.name}: {err.message}"
            except (OSError, StreamTerminatedError, TimeoutError, anyio.BrokenResourceError) as err:
                reason = type(err).__name__
            else:
                return [
                    AppSubscription(s.pubsub_name, s.topic, dict(s.metadata))
                    for s in response.subscriptions
                ]
            log.info("ListTopicSubscriptions failed (%s); asking the app again", reason)
            await anyio.sleep(backoff_delay(attempt, base=0.1, cap=2.0))
            attempt += 1
            await self.wait_until_listening()

    async def deliver(self, event: TopicEvent) -> EventStatus | int:
        try:
            response = await self._stub.on_topic_event(
                to_topic_event_request(event), timeout=self._delivery_timeout
            )
        except GRPCError as err:
            if err.status is Status.UNIMPLEMENTED:
                raise Unsupported("the app does not implement OnTopicEvent") from None
            if err.status is Status.UNAVAILABLE:
                raise AppUnavailable(err.message or "UNAVAILABLE") from None
            raise
        except (ConnectionError, OSError, StreamTerminatedError) as err:
            raise AppUnavailable(f"{type(err).__name__}: {err}") from None
        return to_status(response)
