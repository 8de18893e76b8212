"""Graceful shutdown, in process: readiness DOWN, new calls refused, in-flight calls drained
within the grace period, then the servers stop and components close (ARCHITECTURE.md)."""

from __future__ import annotations

from typing import Any

import anyio
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.health import Probe
from layotto.plugin import HealthStatus

pytestmark = pytest.mark.anyio


async def test_in_flight_calls_finish_and_new_calls_are_refused(
    start_sidecar: Any, slow_kit: Any, readiness_reached: Any
) -> None:
    slow_kit.delay = 0.5
    async with start_sidecar(slow_kit.config(), slow_kit.catalog, grace_period=5) as sidecar:
        runtime = sidecar.runtime
        store = slow_kit.store(runtime)
        store.data.update({f"k{i}": f"v{i}".encode() for i in range(5)})
        channel = sidecar.channel()
        results: dict[str, bytes] = {}

        async def call(key: str) -> None:
            stub = pb.RuntimeStub(channel, timeout=10)
            reply = await stub.get_state(pb.GetStateRequest(store_name="slow", key=key))
            results[key] = reply.data

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    for i in range(5):
                        tg.start_soon(call, f"k{i}")
                    await store.wait_started(5)
                    runtime.shutdown.set()
                    await readiness_reached(runtime, HealthStatus.DOWN)
                    assert store.finished == 0

                    # A call started after shutdown began is turned away at once.
                    stub = pb.RuntimeStub(channel, timeout=5)
                    with pytest.raises(GRPCError) as info:
                        await stub.get_state(pb.GetStateRequest(store_name="slow", key="late"))
                    assert info.value.status is Status.UNAVAILABLE
                    assert "shutting down" in (info.value.message or "")
                    assert store.started == 5  # it never reached the store
                await sidecar.stopped.wait()
        finally:
            channel.close()
        assert results == {f"k{i}": f"v{i}".encode() for i in range(5)}
        assert store.finished == 5
        assert store.cancelled == 0
        assert store.closed


async def test_serve_returns_promptly_when_idle(start_sidecar: Any) -> None:
    async with start_sidecar(grace_period=5) as sidecar:
        with anyio.fail_after(3):
            await sidecar.stop()
        assert sidecar.runtime.health.status(Probe.READINESS) is HealthStatus.DOWN


async def test_call_outliving_the_grace_period_is_cancelled(
    start_sidecar: Any, slow_kit: Any
) -> None:
    grace = 0.2
    slow_kit.delay = 2.0
    async with start_sidecar(slow_kit.config(), slow_kit.catalog, grace_period=grace) as sidecar:
        runtime = sidecar.runtime
        store = slow_kit.store(runtime)
        channel = sidecar.channel()

        async def call() -> None:
            stub = pb.RuntimeStub(channel, timeout=10)
            with pytest.raises((GRPCError, StreamTerminatedError, ConnectionError)):
                await stub.get_state(pb.GetStateRequest(store_name="slow", key="k"))

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await store.wait_started(1)
                    began = anyio.current_time()
                    runtime.shutdown.set()
                    await sidecar.stopped.wait()
                    elapsed = anyio.current_time() - began
                    tg.cancel_scope.cancel()  # what the client sees: the next test
        finally:
            channel.close()

        assert grace <= elapsed < grace + 1.0, elapsed
        assert store.cancelled == 1
        assert store.finished == 0
        assert store.closed


async def test_call_outliving_the_grace_period_is_answered(
    start_sidecar: Any, slow_kit: Any
) -> None:
    grace = 0.2
    client_deadline = 3.0
    slow_kit.delay = 5.0
    async with start_sidecar(slow_kit.config(), slow_kit.catalog, grace_period=grace) as sidecar:
        runtime = sidecar.runtime
        store = slow_kit.store(runtime)
        channel = sidecar.channel()
        outcome: list[Any] = []

        async def call() -> None:
            stub = pb.RuntimeStub(channel, timeout=client_deadline)
            try:
                outcome.append(await stub.get_state(pb.GetStateRequest(store_name="slow", key="k")))
            except (GRPCError, StreamTerminatedError, ConnectionError, TimeoutError) as err:
                outcome.append(err)
            outcome.append(anyio.current_time())

        try:
            with anyio.fail_after(10):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(call)
                    await store.wait_started(1)
                    began = anyio.current_time()
                    runtime.shutdown.set()
        finally:
            channel.close()

        error, answered_at = outcome
        assert not isinstance(error, TimeoutError), "the client had to wait for its deadline"
        assert isinstance(error, GRPCError | StreamTerminatedError | ConnectionError), error
        assert answered_at - began < grace + 1.0


@pytest.mark.parametrize("anyio_backend", ["asyncio"])
async def test_a_stopped_api_server_serves_nothing_on_connections_left_open(
    anyio_backend: str,
) -> None:
    """grpclib's Server.close() keeps serving open connections: a call arriving after it
    became a task nobody waited for (destroyed pending at loop exit). The API server hangs up
    on them, so the same channel's next call fails instead of being answered (this also fails
    if a grpclib upgrade stops calling the overridden `_protocol_factory`)."""
    from grpclib.client import Channel
    from layotto._proto.grpc.health import v1 as health_pb
    from layotto.actors.api_server import ApiServer
    from layotto.api.grpc_health import HealthService

    health = HealthService([], anyio.Event())
    health.set_serving(True)
    api = ApiServer([health], "127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        await tg.start(api.run)
        assert api.bound_port
        channel = Channel("127.0.0.1", api.bound_port)
        try:
            stub = health_pb.HealthStub(channel, timeout=5)
            await stub.check(health_pb.HealthCheckRequest())  # the connection is open
            await api.stop()
            with pytest.raises((StreamTerminatedError, ConnectionError, GRPCError, OSError)):
                await stub.check(health_pb.HealthCheckRequest())
        finally:
            channel.close()
