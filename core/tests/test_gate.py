"""CallGate: admission of API calls and the drain at shutdown."""

from __future__ import annotations

import anyio
import pytest
from layotto.api.gate import CallGate
from layotto.errors import ErrorCategory, ShuttingDown

pytestmark = pytest.mark.anyio


async def _hold(gate: CallGate, release: anyio.Event, entered: anyio.Event) -> None:
    async with gate.call():
        entered.set()
        await release.wait()


async def test_calls_are_counted() -> None:
    gate = CallGate()
    assert gate.in_flight == 0
    async with gate.call():
        assert gate.in_flight == 1
        async with gate.call():
            assert gate.in_flight == 2
        assert gate.in_flight == 1
    assert gate.in_flight == 0
    assert not gate.draining


async def test_a_failing_call_is_still_uncounted() -> None:
    gate = CallGate()
    with pytest.raises(ValueError, match="boom"):
        async with gate.call():
            raise ValueError("boom")
    assert gate.in_flight == 0
    assert await gate.drain(0.01) is True


async def test_drain_without_calls_returns_true_at_once() -> None:
    gate = CallGate()
    with anyio.fail_after(1):
        assert await gate.drain(30) is True
    assert gate.draining


async def test_drain_waits_for_in_flight_calls() -> None:
    gate = CallGate()
    release, entered = anyio.Event(), anyio.Event()
    drained: list[bool] = []

    async def drain() -> None:
        drained.append(await gate.drain(10))

    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_hold, gate, release, entered)
            await entered.wait()
            tg.start_soon(drain)
            # Once every task is blocked, drain() is waiting: it must not finish yet.
            await anyio.wait_all_tasks_blocked()
            assert gate.draining
            assert drained == []
            assert gate.in_flight == 1
            release.set()
    assert drained == [True]
    assert gate.in_flight == 0


async def test_drain_gives_up_after_the_grace_period() -> None:
    gate = CallGate()
    release, entered = anyio.Event(), anyio.Event()
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_hold, gate, release, entered)
            await entered.wait()
            start = anyio.current_time()
            assert await gate.drain(0.05) is False
            assert anyio.current_time() - start >= 0.04
            assert gate.in_flight == 1
            release.set()
    assert gate.in_flight == 0


async def test_new_calls_during_and_after_drain_are_refused() -> None:
    gate = CallGate()
    release, entered = anyio.Event(), anyio.Event()
    refused: list[ShuttingDown] = []

    async def drain_and_report(results: list[bool]) -> None:
        results.append(await gate.drain(10))

    results: list[bool] = []
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(_hold, gate, release, entered)
            await entered.wait()
            tg.start_soon(drain_and_report, results)
            await anyio.wait_all_tasks_blocked()
            assert gate.draining
            try:
                async with gate.call():
                    pytest.fail("a call was admitted while draining")
            except ShuttingDown as err:
                refused.append(err)
            assert gate.in_flight == 1  # the refused call was never counted
            release.set()
    assert results == [True]
    assert len(refused) == 1
    assert refused[0].category is ErrorCategory.UNAVAILABLE
    with pytest.raises(ShuttingDown):
        async with gate.call():
            pass
