"""A double buffer of id segments for one (store, key): WEAK ids without a backend round trip
per call (layotto-semantics.md 8; upstream `pkg/runtime/sequencer/cache.go`).

Ids come from the active segment. Once `low_water` ids or fewer are left in it, a background
task loads the next segment, retrying with capped backoff until it succeeds. When the active
segment runs out, the caller swaps to the loaded one, waiting at most `swap_timeout` for it:
a backend that is down fails calls quickly instead of hanging them, and the retrying loader
makes later calls succeed once the backend is back.

Handing out an id and swapping segments never await, so they are atomic with respect to the
event loop: no id is handed out twice, however many tasks call at once.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import anyio

from layotto.backoff import backoff_delay
from layotto.errors import BackendTimeout, BackendUnavailable, ComponentError, LayottoError
from layotto.plugin import Segment

log = logging.getLogger(__name__)

# Upstream retries five times quickly, then every 2 s without limit; this backoff is close:
# ~0.05, 0.1, 0.2, 0.4, 0.8, 1.6 s (jittered), then 2 s.
RETRY_BASE_SECONDS = 0.05
RETRY_CAP_SECONDS = 2.0

Loader = Callable[[], Awaitable[Segment]]
# Starts a background task in a task group someone else owns (no fire-and-forget).
Spawner = Callable[[Callable[[], Coroutine[Any, Any, None]]], None]


class SegmentCache:
    def __init__(
        self,
        load: Loader,
        spawn: Spawner,
        *,
        low_water: int,
        swap_timeout: float,
        what: str,
    ) -> None:
        self._load = load  # bounded in time and error-translated by the caller
        self._spawn = spawn
        self._low_water = low_water
        self._swap_timeout = swap_timeout
        self._what = what  # names the store and key in messages
        self._active: Segment | None = None
        self._next = 0  # the next id of the active segment to hand out
        self._ready: Segment | None = None  # the loaded next segment
        self._loading = False
        self._last_error: LayottoError | None = None
        self._changed = anyio.Event()  # set (and replaced) whenever a load attempt ends
        # Only one caller at a time waits for and performs the swap; the others queue here and
        # find fresh ids once it is done. The deadline covers the queueing too.
        self._swap_lock = anyio.Lock()

    @property
    def remaining(self) -> int:
        """Ids left in the active segment."""
        return 0 if self._active is None else self._active.last - self._next + 1

    @property
    def loading(self) -> bool:
        return self._loading

    async def next_id(self) -> int:
        if self.remaining:
            return self._take()
        with anyio.move_on_after(self._swap_timeout):
            async with self._swap_lock:
                while not self.remaining:
                    if self._ready is not None:
                        self._swap()
                        continue
                    self._prefetch()
                    await self._changed.wait()
                return self._take()
        raise self._not_ready()

    def _take(self) -> int:
        assert self._active is not None
        value = self._next
        self._next += 1
        if self._active.last - value <= self._low_water:
            self._prefetch()
        return value

    def _swap(self) -> None:
        assert self._ready is not None
        self._active, self._ready = self._ready, None
        self._next = self._active.first

    def _prefetch(self) -> None:
        if self._ready is None and not self._loading:
            self._spawn(self._load_ahead)
            self._loading = True

    def _notify(self) -> None:
        self._changed.set()
        self._changed = anyio.Event()

    async def _load_ahead(self) -> None:
        attempt = 0
        try:
            while True:
                try:
                    segment = await self._load()
                except Exception as err:
                    # Never let a failure escape: it would take down the owner's task group.
                    self._last_error = (
                        err
                        if isinstance(err, LayottoError)
                        else ComponentError(f"{self._what}: {type(err).__name__}")
                    )
                    delay = backoff_delay(attempt, base=RETRY_BASE_SECONDS, cap=RETRY_CAP_SECONDS)
                    attempt += 1
                    log.warning(
                        "%s: loading the next segment failed (attempt %d): %s; retrying in %.2f s",
                        self._what,
                        attempt,
                        self._last_error.message,
                        delay,
                    )
                    await anyio.sleep(delay)
                    continue
                self._ready = segment
                self._last_error = None
                return
        finally:
            self._loading = False
            self._notify()

    def _not_ready(self) -> LayottoError:
        if self._last_error is not None:
            return BackendUnavailable(
                f"{self._what}: no ids available; loading the next segment failed: "
                f"{self._last_error.message}"
            )
        return BackendTimeout(
            f"{self._what}: no ids available; the next segment was not loaded within "
            f"{self._swap_timeout:g} s"
        )
