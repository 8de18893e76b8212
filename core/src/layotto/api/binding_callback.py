"""The sidecar as a client of the app's Dapr `dapr.proto.runtime.v1.AppCallback` for input
bindings: `ListInputBindings` once at startup, `OnBindingEvent` per event (dapr-compat.md 1.4,
2.7), over the shared app connection (`app_connection`: the app token on every call).

Foreign errors are translated here, at the edge: an app that cannot be reached becomes
`AppUnavailable`; UNIMPLEMENTED becomes `Unsupported`; any other error answer, or no answer
within the event timeout, becomes `BindingNotProcessed`. All three mean "not processed": the
input binding redelivers the event where its backend can.

With tracing on, OnBindingEvent carries the event's span (the current one) as `traceparent`
(+ `tracestate`) metadata: daprd sends it as `grpc-trace-bin`, a name grpclib cannot send,
and `traceparent` as well when the event came with one.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

from grpclib import GRPCError

from layotto._proto.dapr.proto.runtime import v1 as pb
from layotto.api.app_channel import delivery_errors
from layotto.api.app_connection import AppConnection
from layotto.api.dapr_state_grpc import set_request
from layotto.errors import InvalidArgument, LayottoError
from layotto.plugin import BindingEvent, SetRequest
from layotto.tracing import current_span

log = logging.getLogger(__name__)

LIST_PATH = "/dapr.proto.runtime.v1.AppCallback/ListInputBindings"
ON_EVENT_PATH = "/dapr.proto.runtime.v1.AppCallback/OnBindingEvent"


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


def to_reply(response: pb.BindingEventResponse) -> BindingReply:
    """The app's reply; its state items as Dapr's SaveState reads them (an empty ETag means
    no ETag check). States the sidecar cannot read are logged and not saved: the app did
    process the event, and a redelivery would not fix its reply."""
    try:
        states = [set_request(item, f"states[{i}]") for i, item in enumerate(response.states)]
    except InvalidArgument as err:
        log.error("the app's OnBindingEvent reply: its states are not saved (%s)", err.message)
        states = []
    return BindingReply(
        store_name=response.store_name,
        states=states,
        to=[name for name in response.to if name],
        data=response.data,
        parallel=response.concurrency is pb.BindingEventResponseBindingEventConcurrency.PARALLEL,
    )


class BindingApp(Protocol):
    """The app as the binding dispatcher sees it, over gRPC (`BindingCallbackClient`) or HTTP
    (`http_binding_callback`)."""

    async def list_input_bindings(self) -> list[str]: ...

    async def on_binding_event(self, name: str, event: BindingEvent) -> BindingReply: ...


class BindingCallbackClient:
    """Input binding events to the app, over the connection the runtime owns (and closes)."""

    def __init__(self, connection: AppConnection, *, event_timeout: float = 60.0) -> None:
        self._connection = connection
        self._event_timeout = event_timeout

    async def list_input_bindings(self) -> list[str]:
        """The input bindings the app wants events from. Any error the app answers means none
        (as upstream; UNIMPLEMENTED is the usual one: an app without bindings, or a Layotto
        app); a transport failure is asked again with backoff, a few times."""
        response = await self._connection.ask(
            LIST_PATH, pb.ListInputBindingsResponse, "ListInputBindings"
        )
        if response is None:
            return []
        return list(dict.fromkeys(name for name in response.bindings if name))

    async def on_binding_event(self, name: str, event: BindingEvent) -> BindingReply:
        """Deliver one event; return what the app asked for in its reply. Raises when the app
        did not process it (see the module docstring)."""
        request = pb.BindingEventRequest(name=name, data=event.data, metadata=dict(event.metadata))
        span = current_span()
        # The token last: no trace header may replace it. None: the token alone.
        metadata = None if span is None else {**span.headers(), **self._connection.metadata}
        try:
            with delivery_errors("OnBindingEvent"):
                response = await self._connection.call(
                    ON_EVENT_PATH,
                    request,
                    pb.BindingEventResponse,
                    within=self._event_timeout,
                    metadata=metadata,
                )
        except GRPCError as err:
            raise BindingNotProcessed(
                f"the app answered OnBindingEvent with {err.status.name}: {err.message or ''}"
            ) from None
        except TimeoutError:
            raise BindingNotProcessed(
                f"the app did not answer OnBindingEvent within {self._event_timeout:g} s"
            ) from None
        return to_reply(response)
