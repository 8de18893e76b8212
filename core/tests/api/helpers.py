"""Helpers shared by the API edge tests (publish to a running sidecar, poll, check gRPC errors).

Loaded by `core/tests/conftest.py` as `layotto_api_test_helpers` (the workspace runs pytest with
--import-mode=importlib, so test folders are not on sys.path).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import anyio
import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from layotto.testing.pubsub import publish
from layotto.testing.runtime import Sidecar

PUBSUB = "pubsub"


async def send(sidecar: Sidecar, topic: str, data: Any, **metadata: str) -> str:
    """Publish `data` as JSON to `topic` of the `pubsub` component through the Layotto API."""
    channel = sidecar.channel()
    try:
        return await publish(
            channel, PUBSUB, topic, json.dumps(data).encode(), metadata=metadata or None
        )
    finally:
        channel.close()


async def until(check: Callable[[], bool], within: float = 5.0) -> None:
    """Poll `check` (state with no event to wait on: counters, what a fake app recorded) until
    it holds."""
    for _ in range(int(within / 0.02)):
        if check():
            return
        await anyio.sleep(0.02)
    raise AssertionError("the condition never held")


async def expect(call: Any, code: grpc.StatusCode, *fragments: str) -> grpc.aio.AioRpcError:
    """Await a grpc.aio call that must fail with `code`, its details holding every fragment."""
    with anyio.fail_after(10), pytest.raises(grpc.aio.AioRpcError) as info:
        await call
    err = info.value
    assert err.code() is code, f"{err.code()}: {err.details()}"
    for fragment in fragments:
        assert fragment in (err.details() or ""), f"{fragment!r} not in {err.details()!r}"
    return err


def reason(err: grpc.aio.AioRpcError) -> str:
    """The reason of the ErrorInfo in the error's `grpc-status-details-bin`."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            detail.Unpack(info)
            return str(info.reason)
    raise AssertionError("no ErrorInfo")
