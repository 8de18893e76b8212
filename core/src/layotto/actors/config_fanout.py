"""The sending side of one configuration subscription: a bounded buffer that never makes the
watcher wait, and the rule for dropping a subscriber that stopped reading.

`offer` never blocks. While the subscriber's buffer (`buffer_size` batches) has room, a batch
goes straight in. When it is full, batches queue behind it (at most `buffer_size` more) and one
flush task, owned by the watcher's task group, waits for room. If no room appears within
`slow_timeout` seconds, or the queue overflows too, the subscriber is dropped: its stream ends
with `SubscriberTooSlow` (RESOURCE_EXHAUSTED on the wire) so the client resubscribes. The other
subscribers of the watcher are never slowed down by it.
"""

from __future__ import annotations

import logging
from collections import deque
from collections.abc import Callable, Coroutine
from typing import Any

import anyio

from layotto.errors import LayottoError, SubscriberTooSlow
from layotto.plugin import ConfigItem
from layotto.services.config_subscription import Subscription, SubscriptionScope

log = logging.getLogger(__name__)

Spawn = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class Subscriber:
    def __init__(
        self,
        subscription_id: str,
        scope: SubscriptionScope,
        *,
        buffer_size: int,
        slow_timeout: float,
        release: Callable[[], None],
    ) -> None:
        if buffer_size < 1:
            raise ValueError(f"buffer_size must be at least 1, got {buffer_size}")
        send, receive = anyio.create_memory_object_stream[list[ConfigItem]](buffer_size)
        self._send = send
        self._buffer_size = buffer_size
        self._slow_timeout = slow_timeout
        self._release = release
        self._pending: deque[list[ConfigItem]] = deque()
        self._ended = False
        self.subscription = Subscription(subscription_id, scope, receive, release)

    @property
    def id(self) -> str:
        return self.subscription.id

    @property
    def scope(self) -> SubscriptionScope:
        return self.subscription.scope

    @property
    def ended(self) -> bool:
        return self._ended

    def offer(self, batch: list[ConfigItem], spawn: Spawn) -> None:
        """Queue `batch` for the subscriber without waiting; `spawn` starts the flush task."""
        if self._ended:
            return
        if self._pending:
            if len(self._pending) >= self._buffer_size:
                self.drop(f"more than {2 * self._buffer_size} change batches were unread")
                return
            self._pending.append(batch)
            return
        try:
            self._send.send_nowait(batch)
        except anyio.WouldBlock:
            self._pending.append(batch)
            spawn(self._flush)
        except (anyio.ClosedResourceError, anyio.BrokenResourceError):
            pass  # the subscription was closed; its release removes this subscriber

    async def _flush(self) -> None:
        while self._pending and not self._ended:
            try:
                with anyio.fail_after(self._slow_timeout):
                    await self._send.send(self._pending[0])
            except TimeoutError:
                self.drop(f"it read nothing for {self._slow_timeout:g} s with a full buffer")
                return
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                return
            self._pending.popleft()

    def drop(self, reason: str) -> None:
        """End the subscription with `SubscriberTooSlow` and release it."""
        if self._ended:
            return
        scope = self.scope
        log.warning(
            "dropping configuration subscriber %s: %s",
            self.id,
            reason,
            extra={"store": scope.store_name, "app_id": scope.app_id},
        )
        self.subscription.fail(
            SubscriberTooSlow(
                f"configuration subscription to store {scope.store_name!r} was dropped because "
                f"{reason}; subscribe again"
            )
        )
        self._release()  # the watcher removes this subscriber, which ends it

    def end(self, error: LayottoError | None = None) -> None:
        """Stop sending: the subscription's reads end (with `error`, if given). Idempotent."""
        if error is not None:
            self.subscription.fail(error)
        self._ended = True
        self._pending.clear()
        self._send.close()
