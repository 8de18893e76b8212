"""Load-generator processes: asyncio loops with C workers each, timed against a shared clock.

The parent keeps ``processes`` spawned children alive for the whole benchmark and drives them
over pipes, one run at a time:

1. parent -> child  ``RunSpec``: scenario, mode, sidecar port, this child's share of workers,
   the run's ``BenchContext`` (backend addresses, run id);
2. child builds the scenario's client (gRPC channels or the direct client), runs its ``setup_*``
   and answers ``("ready", None)``;
3. parent -> child  ``("go", t0_ns)``: warm-up runs from ``t0`` for ``warmup`` seconds, the
   measured window for ``duration`` seconds after that. ``t0`` is a ``time.perf_counter_ns()``
   value: on Linux that is ``CLOCK_MONOTONIC``, the same clock in every process, so the parent
   can sample the sidecar's CPU at the window's edges while the children measure inside it;
4. child -> parent  ``("result", LoadResult)``: per-call latencies (ns) of the calls that
   *started* inside the window, error count and the first error.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import math
import multiprocessing
import multiprocessing.connection
import time
import traceback
from array import array
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from bench.lifecycle import Managed
from bench.scenario import BenchContext, Scenario, get_scenario, set_worker_index

Conn = multiprocessing.connection.Connection

# Between "go" and the start of the warm-up, so every child is waiting when the clock starts.
START_DELAY_S = 0.1


@dataclass(frozen=True, slots=True)
class RunSpec:
    scenario: str
    mode: str  # "direct" | "sidecar"
    workers: int
    proc_index: int
    n_procs: int
    warmup_s: float
    duration_s: float
    grpc_host: str = "127.0.0.1"
    grpc_port: int = 0
    workers_per_channel: int = 16
    context: BenchContext = field(default_factory=BenchContext)


@dataclass(slots=True)
class LoadResult:
    proc_index: int
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: int = 0
    first_error: str | None = None
    window_ns: int = 0


class LoadGenError(RuntimeError):
    pass


# -- child side ----------------------------------------------------------------------------


def _new_event_loop(loop: str) -> asyncio.AbstractEventLoop:
    if loop == "uvloop":
        import uvloop

        new_loop: asyncio.AbstractEventLoop = uvloop.new_event_loop()
        return new_loop
    return asyncio.new_event_loop()


def child_main(conn: Conn, loop: str) -> None:
    """Entry point of a load-generator process: serve run requests until told to stop."""
    try:
        while True:
            message = conn.recv()
            if message is None:
                return
            assert isinstance(message, RunSpec)
            event_loop = _new_event_loop(loop)
            try:
                event_loop.run_until_complete(_run(message, conn))
            except Exception:
                conn.send(("error", traceback.format_exc()))
            finally:
                event_loop.close()
    except (KeyboardInterrupt, EOFError, BrokenPipeError):
        return


async def _run(spec: RunSpec, conn: Conn) -> None:
    scenario: Scenario[Any] = get_scenario(spec.scenario)(spec.context)
    async with contextlib.AsyncExitStack() as stack:
        calls: list[Callable[[int], Awaitable[None]]]
        if spec.mode == "direct":
            client = await scenario.make_direct_client()
            stack.push_async_callback(scenario.close_direct_client, client)
            await scenario.setup_direct(client)

            async def direct(i: int) -> None:
                await scenario.direct_call(client, i)

            calls = [direct] * spec.workers
        elif spec.mode == "sidecar":
            import grpclib.client
            from layotto._proto.spec.proto.runtime import v1 as pb

            n_channels = max(1, math.ceil(spec.workers / spec.workers_per_channel))
            stubs = []
            for _ in range(n_channels):
                channel = grpclib.client.Channel(spec.grpc_host, spec.grpc_port)
                stack.callback(channel.close)
                stubs.append(pb.RuntimeStub(channel))
            stack.push_async_callback(scenario.close_sidecar)
            await scenario.setup_sidecar(stubs[0])

            def bind(stub: pb.RuntimeStub) -> Callable[[int], Awaitable[None]]:
                async def via_sidecar(i: int) -> None:
                    await scenario.sidecar_call(stub, i)

                return via_sidecar

            calls = [bind(stubs[w // spec.workers_per_channel]) for w in range(spec.workers)]
        else:
            raise ValueError(f"unknown mode {spec.mode!r}")

        loop = asyncio.get_running_loop()
        conn.send(("ready", None))
        message = await loop.run_in_executor(None, conn.recv)
        if not (isinstance(message, tuple) and message[0] == "go"):
            raise LoadGenError(f"expected ('go', t0), got {message!r}")
        t0: int = message[1]
        result = await _drive(spec, calls, t0)
    conn.send(("result", result))


async def _drive(
    spec: RunSpec, calls: list[Callable[[int], Awaitable[None]]], t0: int
) -> LoadResult:
    start = t0 + int(spec.warmup_s * 1e9)
    end = start + int(spec.duration_s * 1e9)
    result = LoadResult(proc_index=spec.proc_index, window_ns=end - start)
    # Unique across workers and processes: this process takes every n_procs-th number.
    counter: Iterator[int] = itertools.count(spec.proc_index, spec.n_procs)
    latencies = result.latencies_ns
    clock = time.perf_counter_ns

    async def worker(index: int, call: Callable[[int], Awaitable[None]]) -> None:
        # Each worker is its own task (gather wraps it), so this is set for its calls only.
        set_worker_index(index)
        # No explicit yield between calls: a component that never suspends (the in-memory store)
        # keeps the loop, which is the honest capacity of one asyncio process for it.
        while True:
            began = clock()
            if began >= end:
                return
            try:
                await call(next(counter))
            except Exception as err:
                if began >= start:
                    result.errors += 1
                    if result.first_error is None:
                        result.first_error = f"{type(err).__name__}: {err}"
            else:
                if began >= start:
                    latencies.append(clock() - began)

    delay = (t0 - clock()) / 1e9
    if delay > 0:
        await asyncio.sleep(delay)
    # Worker indexes are unique across processes: this process takes every n_procs-th one.
    await asyncio.gather(
        *(worker(spec.proc_index + spec.n_procs * w, call) for w, call in enumerate(calls))
    )
    return result


# -- parent side ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Window:
    """Where the measured window sits on the perf_counter_ns clock."""

    start_ns: int
    end_ns: int


def split_workers(concurrency: int, processes: int) -> list[int]:
    """Spread ``concurrency`` workers over at most ``processes`` processes, evenly."""
    active = min(concurrency, processes)
    base, extra = divmod(concurrency, active)
    return [base + (1 if k < extra else 0) for k in range(active)]


class LoadGenPool(Managed):
    """``processes`` spawned load-generator processes, reused for every run."""

    def __init__(self, processes: int = 1, loop: str = "asyncio") -> None:
        if processes < 1:
            raise ValueError("processes must be >= 1")
        self.processes = processes
        self.loop = loop
        self._ctx = multiprocessing.get_context("spawn")
        self._children: list[tuple[multiprocessing.process.BaseProcess, Conn]] = []

    def start(self) -> None:
        for k in range(self.processes):
            parent_end, child_end = self._ctx.Pipe()
            proc = self._ctx.Process(
                target=child_main,
                args=(child_end, self.loop),
                name=f"bench-loadgen-{k}",
                daemon=True,
            )
            proc.start()
            child_end.close()
            self._children.append((proc, parent_end))

    def stop(self) -> None:
        for _, conn in self._children:
            with contextlib.suppress(OSError):
                conn.send(None)
        for proc, conn in self._children:
            proc.join(timeout=5)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)
            conn.close()
        self._children.clear()

    @property
    def pids(self) -> list[int]:
        return [proc.pid for proc, _ in self._children if proc.pid is not None]

    def run(
        self,
        *,
        scenario: str,
        mode: str,
        concurrency: int,
        warmup_s: float,
        duration_s: float,
        grpc_port: int = 0,
        workers_per_channel: int = 16,
        context: BenchContext | None = None,
        on_window: Callable[[Window], None] | None = None,
        setup_timeout_s: float = 60.0,
    ) -> list[LoadResult]:
        """One run; ``on_window`` is called in the parent right after ``go`` was sent and must
        return after the window ended (it samples the sidecar at the window's edges)."""
        shares = split_workers(concurrency, self.processes)
        active = self._children[: len(shares)]
        for k, ((_, conn), workers) in enumerate(zip(active, shares, strict=True)):
            conn.send(
                RunSpec(
                    scenario=scenario,
                    mode=mode,
                    workers=workers,
                    proc_index=k,
                    n_procs=len(shares),
                    warmup_s=warmup_s,
                    duration_s=duration_s,
                    grpc_port=grpc_port,
                    workers_per_channel=workers_per_channel,
                    context=context if context is not None else BenchContext(),
                )
            )
        for proc, conn in active:
            self._expect(proc, conn, "ready", setup_timeout_s)
        t0 = time.perf_counter_ns() + int(START_DELAY_S * 1e9)
        for _, conn in active:
            conn.send(("go", t0))
        start = t0 + int(warmup_s * 1e9)
        window = Window(start_ns=start, end_ns=start + int(duration_s * 1e9))
        if on_window is not None:
            on_window(window)
        results: list[LoadResult] = []
        for proc, conn in active:
            payload = self._expect(proc, conn, "result", warmup_s + duration_s + 60.0)
            assert isinstance(payload, LoadResult)
            results.append(payload)
        return results

    @staticmethod
    def _expect(
        proc: multiprocessing.process.BaseProcess, conn: Conn, kind: str, timeout: float
    ) -> Any:
        deadline = time.monotonic() + timeout
        while not conn.poll(0.1):
            if not proc.is_alive():
                raise LoadGenError(f"{proc.name} died (exit code {proc.exitcode})")
            if time.monotonic() > deadline:
                raise LoadGenError(f"{proc.name}: no {kind!r} within {timeout:.0f} s")
        message = conn.recv()
        if message[0] == "error":
            raise LoadGenError(f"{proc.name} failed:\n{message[1]}")
        if message[0] != kind:
            raise LoadGenError(f"{proc.name}: expected {kind!r}, got {message[0]!r}")
        return message[1]


def sleep_until_ns(target_ns: int) -> None:
    remaining = (target_ns - time.perf_counter_ns()) / 1e9
    if remaining > 0:
        time.sleep(remaining)
