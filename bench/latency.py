"""Write -> subscriber latency of the configuration stores: ``python -m bench --latency config``.

For every store (``memory``, ``redis``, ``etcd``, ``apollo``): the backend the harness provides
(as for the ``config_get_<store>`` scenarios), a sidecar with that store's component, and in the
harness process one asyncio loop that

1. writes an initial value of :data:`~bench.scenarios.config.LATENCY_KEY` straight to the
   backend, opens a ``SubscribeConfiguration`` stream on the sidecar (grpclib, bidi; the request
   asks for ``sendInitialValues`` so the first response proves the subscription is in place) and
   waits for that first response;
2. makes a few warm-up writes (each waited for, not recorded);
3. makes N writes **directly to the backend** (redis-py ``SET``, aetcd ``put``, Apollo Open API
   item PUT + release; the in-memory store has no backend, so SaveConfiguration through the
   sidecar), one at a time: each is timed from just before the write to the arrival of the
   stream message carrying its content (``time.perf_counter``). A write whose message does not
   arrive within ``timeout`` counts as missed.

The Apollo test server, etcd and Redis run in processes of their own, so the subscriber's loop
measures only the sidecar and the stream. ``gc.freeze()`` keeps collections of the harness's
heap out of the measured writes.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import gc
import json
import math
import time
import uuid
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import grpclib.client
from layotto._proto.spec.proto.runtime import v1 as pb

from bench.harness import BenchOptions, _meta, _provide_backends, _stderr
from bench.scenario import BenchContext
from bench.scenarios.config import CONFIG_SCENARIOS, LATENCY_KEY, ConfigWriter
from bench.sidecar import Sidecar

STORES: tuple[str, ...] = ("memory", "redis", "etcd", "apollo")
DEFAULT_WRITES: Mapping[str, int] = {"memory": 100, "redis": 100, "etcd": 100, "apollo": 30}
#: The issue's targets for p99 (seconds): Apollo within 1 s of the publish, etcd and Redis
#: within 100 ms. The in-memory store has none.
TARGETS_S: Mapping[str, float] = {"redis": 0.1, "etcd": 0.1, "apollo": 1.0}
SUBSCRIBE_TIMEOUT_S = 20.0


@dataclass(slots=True)
class LatencyOptions:
    stores: list[str] = field(default_factory=lambda: list(STORES))
    #: Measured writes per store; None = :data:`DEFAULT_WRITES`.
    writes: int | None = None
    warmup_writes: int = 3
    #: Seconds a write's message may take before the write counts as missed.
    timeout_s: float = 5.0
    #: Pause between writes (seconds), so one write's message never overlaps the next.
    gap_s: float = 0.01
    redis_address: str | None = None

    def validate(self) -> None:
        unknown = [s for s in self.stores if s not in STORES]
        if not self.stores or unknown:
            raise ValueError(f"stores must be among {', '.join(STORES)} (got {self.stores})")
        if self.writes is not None and self.writes < 1:
            raise ValueError("writes must be >= 1")
        if self.warmup_writes < 0 or self.timeout_s <= 0 or self.gap_s < 0:
            raise ValueError("warm-up writes >= 0, timeout > 0 and gap >= 0 required")

    def writes_for(self, store: str) -> int:
        return self.writes if self.writes is not None else DEFAULT_WRITES[store]


def _nearest_rank(ordered: list[float], q: float) -> float:
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def summarize_ms(latencies_s: list[float]) -> dict[str, float] | None:
    if not latencies_s:
        return None
    ordered = sorted(latencies_s)
    out = {f"p{round(q * 100)}": _nearest_rank(ordered, q) for q in (0.5, 0.9, 0.99)}
    out |= {"min": ordered[0], "max": ordered[-1], "mean": sum(ordered) / len(ordered)}
    return {k: round(v * 1000, 3) for k, v in out.items()}


def fmt_ms(value: float | None) -> str:
    """A table cell: milliseconds to two decimals, or a dash."""
    return "—" if value is None else f"{value:.2f}"


async def cancel_task(task: asyncio.Task[Any]) -> None:
    """Cancel ``task`` and wait for it to end, ignoring how it ends."""
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await task


class _Subscriber:
    """One SubscribeConfiguration stream; the arrival time of every content of the key."""

    def __init__(self, stub: pb.RuntimeStub, request: pb.SubscribeConfigurationRequest) -> None:
        self.stub = stub
        self.request = request
        self.first = asyncio.get_running_loop().create_future()
        self.waiting: dict[str, asyncio.Future[float]] = {}
        self.stop = asyncio.Event()
        self.error: BaseException | None = None

    async def _requests(self) -> AsyncIterator[pb.SubscribeConfigurationRequest]:
        yield self.request
        await self.stop.wait()  # keep our side open, as an app would

    async def run(self) -> None:
        try:
            async for response in self.stub.subscribe_configuration(self._requests()):
                now = time.perf_counter()
                if not self.first.done():
                    self.first.set_result(now)
                for item in response.items:
                    if item.key != LATENCY_KEY:
                        continue
                    waiter = self.waiting.pop(item.content, None)
                    if waiter is not None and not waiter.done():
                        waiter.set_result(now)
        except Exception as err:
            self.error = err
            for future in (self.first, *self.waiting.values()):
                if not future.done():
                    future.set_exception(err)

    def expect(self, content: str) -> asyncio.Future[float]:
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self.waiting[content] = future
        return future


async def _measure(
    store: str, scenario: Any, grpc_port: int, options: LatencyOptions, run_id: str
) -> dict[str, Any]:
    writes = options.writes_for(store)
    channel = grpclib.client.Channel("127.0.0.1", grpc_port)
    write_channel = grpclib.client.Channel("127.0.0.1", grpc_port)
    writer: ConfigWriter = await scenario.make_writer(pb.RuntimeStub(write_channel))
    latencies: list[float] = []
    write_call: list[float] = []
    missed: list[int] = []
    try:
        await writer.prepare()
        await writer.write(f"{run_id}-initial", 1)
        subscriber = _Subscriber(pb.RuntimeStub(channel), scenario.subscribe_request())
        task = asyncio.create_task(subscriber.run())
        try:
            await asyncio.wait_for(asyncio.shield(subscriber.first), SUBSCRIBE_TIMEOUT_S)

            async def one(n: int, content: str) -> tuple[float, float] | None:
                arrival = subscriber.expect(content)
                started = time.perf_counter()
                await writer.write(content, n)
                written = time.perf_counter()
                try:
                    arrived = await asyncio.wait_for(arrival, options.timeout_s)
                except TimeoutError:
                    subscriber.waiting.pop(content, None)
                    return None
                return arrived - started, written - started

            n = 1
            for w in range(options.warmup_writes):
                n += 1
                await one(n, f"{run_id}-warm-{w}")
            gc.collect()
            gc.freeze()
            try:
                for k in range(writes):
                    n += 1
                    result = await one(n, f"{run_id}-{k}")
                    if result is None:
                        missed.append(k)
                    else:
                        latencies.append(result[0])
                        write_call.append(result[1])
                    if options.gap_s:
                        await asyncio.sleep(options.gap_s)
            finally:
                gc.unfreeze()
        finally:
            subscriber.stop.set()
            await cancel_task(task)
        error = subscriber.error
    finally:
        await writer.close()
        channel.close()
        write_channel.close()
    summary = summarize_ms(latencies)
    target = TARGETS_S.get(store)
    return {
        "store": store,
        "component": scenario.component_type,
        "write": writer.how,
        "writes": writes,
        "received": len(latencies),
        "missed": len(missed),
        "timeout_s": options.timeout_s,
        "latency_ms": summary,
        "write_call_ms": summarize_ms(write_call),
        "target_p99_ms": None if target is None else target * 1000,
        "target_met": None
        if target is None
        else bool(summary is not None and not missed and summary["p99"] <= target * 1000),
        "stream_error": None if error is None else f"{type(error).__name__}: {error}",
    }


def run_latency(
    options: LatencyOptions, progress: Callable[[str], None] | None = _stderr
) -> dict[str, Any]:
    """Measure every selected store; return the result document."""
    options.validate()
    say = progress or (lambda _message: None)
    started = datetime.datetime.now(datetime.UTC)
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    bench_options = BenchOptions(redis_address=options.redis_address)
    meta = _meta(bench_options, started)
    meta["options"] = asdict(options)
    meta["run_id"] = run_id
    document: dict[str, Any] = {
        "kind": "config-latency",
        "meta": meta,
        "backends": [],
        "skipped": [],
        "stores": [],
        "sidecars": [],
    }
    for store in options.stores:
        cls = CONFIG_SCENARIOS[store]
        with contextlib.ExitStack() as stack:
            backends = _provide_backends(set(cls.requires), bench_options, stack, say)
            document["backends"] += backends.info
            context = BenchContext(backends=dict(backends.addresses), run_id=run_id)
            missing = sorted(cls.requires & set(backends.missing))
            scenario = None if missing else cls(context)
            reason = "; ".join(backends.missing[b] for b in missing) or (
                scenario.skip_reason() if scenario is not None else None
            )
            if reason or scenario is None:
                say(f"skip {store}: {reason}")
                document["skipped"].append({"store": store, "reason": reason})
                continue
            sidecar = Sidecar(config=scenario.sidecar_config(), check_exit=False)
            with sidecar:
                say(f"{store}: sidecar pid {sidecar.pid} ready in {sidecar.startup_s:.2f} s")
                cpu_before = sidecar.cpu_seconds()
                row = asyncio.run(_measure(store, scenario, sidecar.grpc_port, options, run_id))
                row["sidecar_cpu_s"] = round(sidecar.cpu_seconds() - cpu_before, 4)
            summary = sidecar.summary()
            summary["store"] = store
            document["sidecars"].append(summary)
            document["stores"].append(row)
            say(_progress_line(row))
            for address in backends.external:
                from bench.harness import _delete_run_keys

                with contextlib.suppress(Exception):
                    _delete_run_keys(address, run_id)
    finished = datetime.datetime.now(datetime.UTC)
    document["meta"]["elapsed_s"] = round((finished - started).total_seconds(), 2)
    return document


def _progress_line(row: Mapping[str, Any]) -> str:
    lat = row["latency_ms"] or {}
    return (
        f"{row['store']:<7} {row['received']}/{row['writes']} received  "
        f"p50 {lat.get('p50', float('nan')):.2f} ms  p99 {lat.get('p99', float('nan')):.2f} ms  "
        f"max {lat.get('max', float('nan')):.2f} ms"
    )


def problems(document: Mapping[str, Any]) -> list[str]:
    out: list[str] = []
    for row in document["stores"]:
        if row["missed"]:
            out.append(f"{row['store']}: {row['missed']} of {row['writes']} writes never arrived")
        if row["stream_error"]:
            out.append(f"{row['store']}: the stream failed: {row['stream_error']}")
    for sidecar in document["sidecars"]:
        if sidecar["exit_code"] != 0:
            out.append(f"{sidecar['store']} sidecar exited {sidecar['exit_code']} on SIGTERM")
    return out


def render_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    lines = [
        "# Configuration: backend write -> subscriber latency",
        "",
        f"{meta['started_at']} · Python {meta['python']} · {meta['cpu_count']} CPUs · "
        f"git {meta['git']} · run {meta['run_id']}",
        "",
        "Each write is timed from just before it is made to the arrival of the "
        "SubscribeConfiguration message carrying its content (ms).",
        "",
        "| store | write | writes | received | p50 | p90 | p99 | max | mean | write call p50 "
        "| target p99 | met |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]

    for row in document["stores"]:
        lat = row["latency_ms"] or {}
        call = row["write_call_ms"] or {}
        target = row["target_p99_ms"]
        met = {None: "—", True: "yes", False: "**no**"}[row["target_met"]]
        write = row["write"].replace("|", "\\|")  # `||` must not end the table's cell
        lines.append(
            f"| {row['component']} | {write} | {row['writes']} | {row['received']} | "
            f"{fmt_ms(lat.get('p50'))} | {fmt_ms(lat.get('p90'))} | {fmt_ms(lat.get('p99'))} | "
            f"{fmt_ms(lat.get('max'))} | {fmt_ms(lat.get('mean'))} | {fmt_ms(call.get('p50'))} | "
            f"{'—' if target is None else f'{target:g}'} | {met} |"
        )
    for skipped in document["skipped"]:
        lines.append("")
        lines.append(f"skipped {skipped['store']}: {skipped['reason']}")
    return "\n".join(lines) + "\n"


def write_results(
    document: Mapping[str, Any],
    directory: Path,
    *,
    name: str = "latency",
    render: Callable[[Mapping[str, Any]], str] | None = None,
) -> Path:
    """``<name>-<UTC timestamp>.json`` + ``.md``, copied to ``<name>-latest.*``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%SZ")
    path = directory / f"{name}-{stamp}.json"
    text = json.dumps(document, indent=2, sort_keys=True) + "\n"
    markdown = (render or render_markdown)(document)
    path.write_text(text, encoding="utf-8")
    path.with_suffix(".md").write_text(markdown, encoding="utf-8")
    (directory / f"{name}-latest.json").write_text(text, encoding="utf-8")
    (directory / f"{name}-latest.md").write_text(markdown, encoding="utf-8")
    return path


def write_latency_results(document: Mapping[str, Any], directory: Path) -> Path:
    """``latency-<UTC timestamp>.json`` + ``.md``, copied to ``latency-latest.*``."""
    return write_results(document, directory)
