"""What a streaming handler raises when its task group fails: the first real error."""

from __future__ import annotations

import asyncio
from typing import Any, NoReturn

import anyio


def _cancelled(err: BaseException) -> bool:
    return isinstance(err, anyio.get_cancelled_exc_class())


def first_error(group: BaseExceptionGroup[Any]) -> BaseException | None:
    """The first leaf of `group` that is not a cancellation."""
    for err in group.exceptions:
        found = first_error(err) if isinstance(err, BaseExceptionGroup) else err
        if found is not None and not _cancelled(found):
            return found
    return None


def reraise_stream_failure(group: BaseExceptionGroup[Any]) -> NoReturn:
    """Re-raise a stream handler's task-group failure the way grpclib expects: when the handler
    is being torn down from outside (the client left, the server stops) the cancellation wins;
    otherwise the first real error, unwrapped, so the call guard can map it to a status."""
    task = asyncio.current_task()
    if task is not None and task.cancelling():
        raise asyncio.CancelledError from None
    error = first_error(group)
    if error is None:
        raise group
    raise error from None
