"""Bulk subscribe on top of the per-message delivery engine (dapr-compat.md §3.2, Bulk).

`Batcher.deliver` is a `Deliver` function: the `DeliveryLoop` calls it once per message, as
for any subscription, with up to `concurrency` calls in flight. The batcher gathers the calls
that arrive together into one batch and sends it with one bulk call when it holds
`max_messages` events or `max_await` seconds after its first event arrived. Each call then
returns its own entry's status, so every message settles through the engine's usual
retry, dead-letter and ack logic: nothing is acked unless its entry said SUCCESS or DROP.

The first call of a batch (its leader) waits for the batch and makes the bulk call; the others
wait for their answer. Whatever ends the leader (an error, a cancel at shutdown) answers every
entry still waiting, so no caller waits for ever.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field

import anyio

from layotto.errors import Unsupported
from layotto.services.cloudevents import EventStatus, TopicEvent
from layotto.services.pubsub_delivery import AppUnavailable

# Statuses in the order of the events; the length must match.
BulkDeliver = Callable[[Sequence[TopicEvent]], Awaitable[list[EventStatus | int]]]


class BulkDeliveryFailed(Exception):
    """The bulk call failed as a whole: each of its entries is redelivered."""


@dataclass(eq=False)
class _Entry:
    event: TopicEvent
    done: anyio.Event = field(default_factory=anyio.Event)
    status: EventStatus | int = EventStatus.RETRY
    error: Exception | None = None


@dataclass(eq=False)
class _Batch:
    entries: list[_Entry] = field(default_factory=list)
    full: anyio.Event = field(default_factory=anyio.Event)


def _per_entry(err: Exception) -> Exception:
    """A fresh exception per waiting caller (one instance raised in many tasks would collect
    every task's traceback), keeping the kind the engine acts on."""
    if isinstance(err, AppUnavailable):
        return AppUnavailable(str(err))
    if isinstance(err, Unsupported):
        return Unsupported(err.message)
    return BulkDeliveryFailed(f"{type(err).__name__}: {err}")


class Batcher:
    def __init__(self, send: BulkDeliver, *, max_messages: int, max_await: float) -> None:
        self._send = send
        self._max = max(1, max_messages)
        self._max_await = max(0.0, max_await)
        self._open: _Batch | None = None

    async def deliver(self, event: TopicEvent) -> EventStatus | int:
        entry = _Entry(event)
        batch = self._open
        leader = batch is None
        if batch is None:
            batch = self._open = _Batch()
        batch.entries.append(entry)
        if len(batch.entries) >= self._max:
            self._close(batch)
        if leader:
            await self._lead(batch)
        else:
            await entry.done.wait()
        if entry.error is not None:
            raise entry.error
        return entry.status

    def _close(self, batch: _Batch) -> None:
        """No more entries join `batch`: the next call starts a new one."""
        if self._open is batch:
            self._open = None
        batch.full.set()

    async def _lead(self, batch: _Batch) -> None:
        answered = False
        try:
            with anyio.move_on_after(self._max_await):
                await batch.full.wait()
            self._close(batch)
            entries = list(batch.entries)
            try:
                statuses = await self._send([e.event for e in entries])
            except Exception as err:
                for entry in entries:
                    entry.error = _per_entry(err)
            else:
                # A status missing (a short answer) leaves the entry's RETRY.
                for entry, status in zip(entries, statuses, strict=False):
                    entry.status = status
            answered = True
        finally:
            self._close(batch)
            for entry in batch.entries:
                if not answered:
                    # Cancelled before the app answered (shutdown): not the app's verdict,
                    # so no retry is used up; the message stays un-acked.
                    entry.error = AppUnavailable("the batch was not delivered")
                entry.done.set()
