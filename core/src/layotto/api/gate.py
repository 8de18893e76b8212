"""Admission for API calls: counts calls in flight and turns new ones away while draining."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

from layotto.errors import ShuttingDown


class CallGate:
    def __init__(self) -> None:
        self._in_flight = 0
        self._draining = False
        self._idle = anyio.Event()
        self._idle.set()
        # Long-lived streams watch this and end themselves when draining begins.
        self.drain_started = anyio.Event()

    @property
    def in_flight(self) -> int:
        return self._in_flight

    @property
    def draining(self) -> bool:
        return self._draining

    @asynccontextmanager
    async def call(self) -> AsyncIterator[None]:
        if self._draining:
            raise ShuttingDown("the sidecar is shutting down")
        if self._in_flight == 0:
            self._idle = anyio.Event()
        self._in_flight += 1
        try:
            yield
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def drain(self, grace_period: float) -> bool:
        """Refuse new calls, then wait up to `grace_period` for the ones in flight.
        True when every call finished in time."""
        self._draining = True
        self.drain_started.set()
        with anyio.move_on_after(grace_period):
            await self._idle.wait()
        return self._in_flight == 0
