"""Input binding events to an app over Dapr's HTTP app channel (`app.protocol: http`), as
daprd sends them: at startup `OPTIONS /<binding-name>` for every configured input binding (a
2xx or 405 answer means the app handles it, anything else that it does not), then per event
`POST /<binding-name>` with the event data as the body and its metadata as headers.

A 2xx answer is processed (its body is the reply's `data`: daprd's HTTP apps cannot ask for
state saves or output bindings); any other answer, or none within the event timeout, is
`BindingNotProcessed`; an app that cannot be reached is `AppUnavailable`. All three mean "not
processed": the input binding redelivers the event where its backend can.

With tracing on, the event's span (the current one) is the request's `traceparent` (+
`tracestate`), over any the event's metadata carried, as daprd's HTTP app channel sets it.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

from layotto.api.binding_callback import BindingNotProcessed, BindingReply
from layotto.api.http_app_connection import HttpAppConnection, delivery_errors
from layotto.plugin import BindingEvent
from layotto.tracing import TRACESTATE, current_span

log = logging.getLogger(__name__)

DEFAULT_CONTENT_TYPE = "application/json"  # daprd's, unless the event's metadata names one
# An HTTP field name (RFC 9110 token) and a value httpx sends as is.
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+")
_HEADER_VALUE = re.compile(r"[\t !-~]*")
_NOT_FORWARDED = frozenset({"content-length", "host", "transfer-encoding", "connection"})


def binding_headers(metadata: Iterable[tuple[str, str]]) -> dict[str, str]:
    """The event's metadata as request headers (names HTTP cannot carry are left out)."""
    headers = {"content-type": DEFAULT_CONTENT_TYPE}
    for name, value in metadata:
        key = name.lower()
        if key in _NOT_FORWARDED or not _HEADER_NAME.fullmatch(key):
            continue
        if isinstance(value, str) and _HEADER_VALUE.fullmatch(value):
            headers[key] = value
    return headers


class HttpBindingCallbackClient:
    """The `BindingApp` over HTTP; `candidates` are the configured input bindings (the app
    has no list to answer: it is asked about each)."""

    def __init__(
        self,
        connection: HttpAppConnection,
        candidates: Iterable[str],
        *,
        event_timeout: float = 60.0,
    ) -> None:
        self._connection = connection
        self._candidates = list(dict.fromkeys(candidates))
        self._event_timeout = event_timeout

    async def list_input_bindings(self) -> list[str]:
        handled = []
        for name in self._candidates:
            answer = await self._connection.ask("OPTIONS", f"/{name}", f"OPTIONS /{name}")
            if answer is not None and (answer.ok or answer.status == 405):
                handled.append(name)
        return handled

    async def on_binding_event(self, name: str, event: BindingEvent) -> BindingReply:
        """Deliver one event; raises when the app did not process it (module docstring)."""
        headers = binding_headers(event.metadata.items())
        span = current_span()
        if span is not None:
            headers.pop(TRACESTATE, None)
            headers.update(span.headers())
        try:
            with delivery_errors():
                answer = await self._connection.request(
                    "POST",
                    f"/{name}",
                    within=self._event_timeout,
                    content=event.data,
                    headers=headers,
                )
        except TimeoutError:
            raise BindingNotProcessed(
                f"the app did not answer POST /{name} within {self._event_timeout:g} s"
            ) from None
        if not answer.ok:
            raise BindingNotProcessed(f"the app answered POST /{name} with HTTP {answer.status}")
        return BindingReply(data=answer.body)
