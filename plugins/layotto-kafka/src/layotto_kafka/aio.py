"""Small asyncio helpers for stopping aiokafka clients, shared by the producer and consumers."""

from __future__ import annotations

import asyncio
import logging
from typing import Any, cast

log = logging.getLogger("layotto_kafka")


def cancelling() -> bool:
    """Whether the current task is being cancelled (as opposed to an inner wait that was)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() > 0


async def quietly(awaitable: Any, within: float) -> None:
    """Await a stop/close call, bounded, swallowing its errors (never cancellation)."""
    try:
        await asyncio.wait_for(cast("Any", awaitable), within)
    except Exception as err:
        log.debug("ignored during shutdown: %r", err)
