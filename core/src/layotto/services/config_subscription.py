"""What a configuration subscriber holds: the scope it asked for and a `Subscription` that yields
its change batches until it is closed, unsubscribed by id, or dropped.

The sending side (the store's watcher) owns the other end of the subscription's bounded stream.
A subscriber the watcher had to drop (it stopped reading) gets the reason raised from its next
read; a subscription that is closed or unsubscribed simply ends.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream

from layotto.errors import LayottoError
from layotto.plugin import ConfigItem


@dataclass(frozen=True, slots=True)
class SubscriptionScope:
    """Which items a subscription receives: `keys` empty means every key of (group, label).
    `group` and `label` are already defaulted; `keys` is sorted and unique."""

    store_name: str
    app_id: str
    group: str
    label: str
    keys: tuple[str, ...] = ()

    @classmethod
    def of(
        cls, store_name: str, app_id: str, group: str, label: str, keys: tuple[str, ...] | list[str]
    ) -> SubscriptionScope:
        return cls(store_name, app_id, group, label, tuple(sorted(set(keys))))

    def matches(self, item: ConfigItem) -> bool:
        if item.group != self.group or item.label != self.label:
            return False
        return not self.keys or item.key in self.keys

    def describe(self) -> dict[str, Any]:
        return {
            "store": self.store_name,
            "app_id": self.app_id,
            "group": self.group,
            "label": self.label,
            "keys": list(self.keys),
        }


class Subscription:
    """An async iterator of change batches (each a non-empty `list[ConfigItem]`; a deleted key
    is an item with empty `content`). Also an async context manager that closes it on exit."""

    def __init__(
        self,
        subscription_id: str,
        scope: SubscriptionScope,
        receive: MemoryObjectReceiveStream[list[ConfigItem]],
        release: Callable[[], None],
    ) -> None:
        self.id = subscription_id
        self.scope = scope
        self._receive = receive
        self._release = release
        self._failure: LayottoError | None = None
        self._closed = False

    @property
    def closed(self) -> bool:
        return self._closed

    @property
    def failure(self) -> LayottoError | None:
        return self._failure

    def fail(self, error: LayottoError) -> None:
        """Called by the sending side when it drops this subscriber: the next read raises."""
        if self._failure is None and not self._closed:
            self._failure = error

    def close(self) -> None:
        """Stop receiving; idempotent. A read in progress (or the next one) ends the iteration."""
        if self._closed:
            return
        self._closed = True
        try:
            self._release()  # the sender closes its end, waking a read in progress
        finally:
            self._receive.close()

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> list[ConfigItem]:
        if self._failure is not None:
            raise self._failure
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            if self._failure is not None:
                raise self._failure from None
            raise StopAsyncIteration from None

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()
