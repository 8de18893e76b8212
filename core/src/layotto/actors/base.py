from __future__ import annotations

from typing import Protocol

from anyio.abc import TaskStatus


class Actor(Protocol):
    """`run` calls `task_status.started()` once it serves, then runs until `stop()`; it may be
    called again after a crash. `stop` is idempotent and returns when the actor has stopped."""

    name: str

    async def run(self, *, task_status: TaskStatus[None]) -> None: ...

    async def stop(self) -> None: ...
