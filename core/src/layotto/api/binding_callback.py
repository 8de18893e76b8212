"""The sidecar as a client of the app's Dapr `dapr.proto.runtime.v1.AppCallback` for input
bindings: `ListInputBindings` once at startup, `OnBindingEvent` per event (dapr-compat.md 1.4,
2.7).

Foreign errors are translated here, at the edge: an app that cannot be reached becomes
`AppUnavailable`; UNIMPLEMENTED becomes `Unsupported`; any other error answer becomes
`BindingNotProcessed`. All three mean "not processed": the input binding redelivers the event
where its backend can.
"""

from __future__ import annotations

import logging
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import anyio
from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from layotto._proto.dapr.proto.common import v1 as common_pb
from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto.backoff import backoff_delay
from layotto.errors import InvalidArgument, LayottoError, Unsupported
from layotto.plugin import BindingEvent, Concurrency, Consistency, SetRequest
from layotto.services.pubsub_delivery import AppUnavailable

log = logging.getLogger(__name__)

LIST_TIMEOUT_SECONDS = 5.0
# Transport failures (the app restarting, not listening yet) are asked again this many times;
# any answer from the app's own code (an error included) is final, as upstream.
LIST_ATTEMPTS = 8
_TRANSPORT_STATUSES = frozenset({Status.UNAVAILABLE, Status.UNKNOWN, Status.DEADLINE_EXCEEDED})
_TRANSPORT_ERRORS = (OSError, StreamTerminatedError, TimeoutError, anyio.BrokenResourceError)
CONNECT_POLL_SECONDS = 0.2

_CONCURRENCY = {
    common_pb.StateOptionsStateConcurrency.CONCURRENCY_UNSPECIFIED: Concurrency.LAST_WRITE,
    common_pb.StateOptionsStateConcurrency.CONCURRENCY_LAST_WRITE: Concurrency.LAST_WRITE,
    common_pb.StateOptionsStateConcurrency.CONCURRENCY_FIRST_WRITE: Concurrency.FIRST_WRITE,
}
_CONSISTENCY = {
    common_pb.StateOptionsStateConsistency.CONSISTENCY_UNSPECIFIED: Consistency.EVENTUAL,
    common_pb.StateOptionsStateConsistency.CONSISTENCY_EVENTUAL: Consistency.EVENTUAL,
    common_pb.StateOptionsStateConsistency.CONSISTENCY_STRONG: Consistency.STRONG,
}


class BindingNotProcessed(LayottoError):
    """The app answered OnBindingEvent with an error: the event was not processed."""

    default_reason = "ERR_BINDING_NOT_PROCESSED"


@dataclass(frozen=True, slots=True)
class BindingReply:
    """What the app asked the sidecar to do after an event: save `states` into `store_name`,
    send `data` to the output bindings in `to` (all at once when `parallel`)."""

    store_name: str = ""
    states: Sequence[SetRequest] = ()
    to: Sequence[str] = ()
    data: bytes = b""
    parallel: bool = False


def to_set_request(item: common_pb.StateItem) -> SetRequest:
    """A Dapr `StateItem` as the state SPI's request (an empty ETag means no ETag check)."""
    options = item.options
    concurrency, consistency = Concurrency.LAST_WRITE, Consistency.EVENTUAL
    if options is not None:
        try:
            concurrency = _CONCURRENCY[options.concurrency]
            consistency = _CONSISTENCY[options.consistency]
        except KeyError:
            raise InvalidArgument(f"state {item.key!r}: unknown state options") from None
    etag = item.etag.value if item.etag is not None and item.etag.value else None
    return SetRequest(item.key, item.value, etag, dict(item.metadata), concurrency, consistency)


def to_reply(response: pb.BindingEventResponse) -> BindingReply:
    return BindingReply(
        store_name=response.store_name,
        states=[to_set_request(item) for item in response.states],
        to=[name for name in response.to if name],
        data=response.data,
        parallel=response.concurrency is pb.BindingEventResponseBindingEventConcurrency.PARALLEL,
    )


class BindingCallbackClient:
    """One HTTP/2 connection to the app (grpclib multiplexes every event over it). `metadata`
    goes with every call (the app token as `dapr-api-token`, when one is configured)."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        metadata: Mapping[str, str] | None = None,
        event_timeout: float = 60.0,
    ) -> None:
        self.host = host
        self.port = port
        self._metadata = dict(metadata or {})
        self._event_timeout = event_timeout
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

    async def list_input_bindings(self) -> list[str]:
        """The input bindings the app wants events from. Any error the app answers means none
        (as upstream; UNIMPLEMENTED is the usual one: an app without bindings, or a Layotto
        app); a transport failure is asked again with backoff, a few times."""
        attempt = 0
        while True:
            try:
                response = await self._stub.list_input_bindings(
                    timeout=LIST_TIMEOUT_SECONDS, metadata=self._metadata
                )
            except GRPCError as err:
                if err.status is Status.UNIMPLEMENTED:
                    return []
                if err.status not in _TRANSPORT_STATUSES or attempt >= LIST_ATTEMPTS:
                    log.warning(
                        "ListInputBindings failed (%s: %s): no input bindings",
                        err.status.name,
                        err.message,
                    )
                    return []
                reason = f"{err.status.name}: {err.message}"
            except _TRANSPORT_ERRORS as err:
                if attempt >= LIST_ATTEMPTS:
                    log.warning("ListInputBindings failed (%s): no input bindings", err)
                    return []
                reason = type(err).__name__
            else:
                return list(dict.fromkeys(name for name in response.bindings if name))
            log.info("ListInputBindings failed (%s); asking the app again", reason)
            await anyio.sleep(backoff_delay(attempt, base=0.1, cap=2.0))
            attempt += 1
            await self.wait_until_listening()

    async def on_binding_event(self, name: str, event: BindingEvent) -> BindingReply:
        """Deliver one event; return what the app asked for in its reply. Raises when the app
        did not process it (see the module docstring)."""
        request = pb.BindingEventRequest(name=name, data=event.data, metadata=dict(event.metadata))
        try:
            response = await self._stub.on_binding_event(
                request, timeout=self._event_timeout, metadata=self._metadata
            )
        except GRPCError as err:
            if err.status is Status.UNIMPLEMENTED:
                raise Unsupported("the app does not implement OnBindingEvent") from None
            if err.status is Status.UNAVAILABLE:
                raise AppUnavailable(err.message or "UNAVAILABLE") from None
            raise BindingNotProcessed(
                f"the app answered OnBindingEvent with {err.status.name}: {err.message or ''}"
            ) from None
        except TimeoutError:
            raise BindingNotProcessed(
                f"the app did not answer OnBindingEvent within {self._event_timeout:g} s"
            ) from None
        except (ConnectionError, OSError, StreamTerminatedError) as err:
            raise AppUnavailable(f"{type(err).__name__}: {err}") from None
        return to_reply(response)
