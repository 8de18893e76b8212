"""The bindings SPI: output bindings the app invokes, input bindings that call the app.

One component may be both (Kafka: produce and consume). Which side the sidecar uses follows
from the classes it implements and, as in Dapr, the optional `direction` metadata
(`input`, `output`, or `input, output`).

Input bindings are at-least-once where the backend allows it: `read` calls `handler` for each
event and only treats the event as processed (commits an offset, deletes a message) after the
handler returned; a handler that raises means "not processed" (redeliver if the backend can, else
log and go on).
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field

from layotto.plugin.component import Component

# Common invocation metadata (Dapr's name).
BINDING_TTL_SECONDS_METADATA = "ttlInSeconds"
DIRECTION_METADATA = "direction"


@dataclass(frozen=True, slots=True)
class BindingRequest:
    operation: str  # already checked against `operations()`
    data: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingResponse:
    data: bytes = b""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class BindingEvent:
    """What an input binding received: the payload and its headers/attributes."""

    data: bytes
    metadata: Mapping[str, str] = field(default_factory=dict)


class OutputBinding(Component):
    @abstractmethod
    def operations(self) -> Sequence[str]:
        """The operations `invoke` accepts (`create`, `get`, `post`, ...)."""

    @abstractmethod
    async def invoke(self, request: BindingRequest) -> BindingResponse:
        """Run one operation. Raise a LayottoError on failure."""


BindingHandler = Callable[[BindingEvent], Awaitable[bytes | None]]


class InputBinding(Component):
    @abstractmethod
    async def read(self, handler: BindingHandler) -> None:
        """Receive events and hand each to `handler` until cancelled. Raise a LayottoError
        (e.g. BackendUnavailable) when the backend is lost: the sidecar reads again with
        backoff. Events in flight when cancelled must not be marked processed."""
