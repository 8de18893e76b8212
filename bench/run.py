"""Command line: `uv run python -m bench [options]` or `uv run python bench/run.py [options]`."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make `import bench` work
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.harness import (
    DEFAULT_CONCURRENCY,
    DEFAULT_SCENARIOS,
    BenchOptions,
    problems,
    run_benchmark,
)
from bench.loadgen import LoadGenError
from bench.redis_server import RedisServerError
from bench.report import RESULTS_DIR, render_markdown, write_results
from bench.scenario import MODES, load_scenarios
from bench.sidecar import SidecarError


def _csv(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


def _ints(value: str) -> list[int]:
    try:
        return [int(part) for part in _csv(value)]
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected integers like 1,16,64, got {value!r}") from None


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m bench",
        description="Benchmark the sidecar against the direct component call, in one run.",
    )
    p.add_argument(
        "--scenarios",
        type=_csv,
        default=list(DEFAULT_SCENARIOS),
        help=f"comma-separated scenario names [{','.join(DEFAULT_SCENARIOS)}]; see --list",
    )
    p.add_argument(
        "--concurrency",
        type=_ints,
        default=list(DEFAULT_CONCURRENCY),
        help=f"comma-separated concurrency levels [{','.join(map(str, DEFAULT_CONCURRENCY))}]",
    )
    p.add_argument("--duration", type=float, default=None, help="measured seconds per run [5]")
    p.add_argument("--warmup", type=float, default=None, help="warm-up seconds per run [1]")
    p.add_argument(
        "--quick", action="store_true", help="smoke run: 1 s measured after 0.5 s warm-up"
    )
    p.add_argument(
        "--processes", type=int, default=1, help="load-generator processes (workers split) [1]"
    )
    p.add_argument(
        "--modes", type=_csv, default=list(MODES), help=f"subset of {','.join(MODES)} [both]"
    )
    p.add_argument(
        "--loop",
        choices=["auto", "uvloop", "asyncio"],
        default="auto",
        help="load generators' event loop [auto: uvloop when installed]",
    )
    p.add_argument(
        "--sidecar-no-uvloop",
        action="store_true",
        help="run the sidecar on the plain asyncio loop (LAYOTTO_NO_UVLOOP=1)",
    )
    p.add_argument(
        "--workers-per-channel",
        type=int,
        default=16,
        help="workers sharing one gRPC channel (HTTP/2 connection) [16]",
    )
    p.add_argument(
        "--redis-address",
        metavar="HOST:PORT",
        default=None,
        help="use this Redis for the redis_* scenarios instead of starting a private "
        "redis-server (the run's keys are deleted at the end)",
    )
    p.add_argument(
        "--kafka-address",
        metavar="HOST:PORT",
        default=None,
        help="use this Kafka broker for the *_kafka scenarios instead of starting a private "
        "Tansu (the run's topics are deleted at the end)",
    )
    p.add_argument(
        "--latency",
        choices=["config", "pubsub"],
        default=None,
        help="instead of the scenarios: measure write -> subscriber latency, one store after "
        "the other (config: backend write -> SubscribeConfiguration; pubsub: PublishEvent -> "
        "OnTopicEvent / SubscribeTopicEvents, and the direct client -> direct consumer)",
    )
    p.add_argument(
        "--stores",
        type=_csv,
        default=None,
        help="with --latency: comma-separated stores (config: [memory,redis,etcd,apollo]; "
        "pubsub: components [memory,redis,kafka])",
    )
    p.add_argument(
        "--writes",
        type=int,
        default=None,
        help="with --latency: measured writes per store (config: [100; Apollo 30]) or events "
        "per path (pubsub: [200])",
    )
    p.add_argument(
        "--output-dir", type=Path, default=RESULTS_DIR, help=f"where results go [{RESULTS_DIR}]"
    )
    p.add_argument("--no-write", action="store_true", help="print only, write no files")
    p.add_argument("--list", action="store_true", help="list the scenarios and exit")
    p.add_argument("--render", type=Path, metavar="JSON", help="print a result file as markdown")
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    if args.list:
        for name, cls in sorted(load_scenarios().items()):
            print(f"{name:<20} {cls.description}")
        return 0
    if args.render:
        print(render_markdown(json.loads(args.render.read_text(encoding="utf-8"))), end="")
        return 0

    if args.latency is not None:
        return _latency_main(args)

    duration = args.duration if args.duration is not None else (1.0 if args.quick else 5.0)
    warmup = args.warmup if args.warmup is not None else (0.5 if args.quick else 1.0)
    options = BenchOptions(
        scenarios=args.scenarios,
        concurrency=args.concurrency,
        duration_s=duration,
        warmup_s=warmup,
        processes=args.processes,
        modes=args.modes,
        loop=args.loop,
        sidecar_uvloop=not args.sidecar_no_uvloop,
        workers_per_channel=args.workers_per_channel,
        redis_address=args.redis_address,
        kafka_address=args.kafka_address,
    )
    try:
        options.validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2

    try:
        document = run_benchmark(options)
    except (ValueError, KeyError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    except (SidecarError, LoadGenError, RedisServerError) as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1

    print(render_markdown(document), end="")
    if not args.no_write:
        path = write_results(document, args.output_dir)
        print(f"\nwrote {path} (and {path.with_suffix('.md').name}, latest.json, latest.md)")
    issues = problems(document)
    for issue in issues:
        print(f"PROBLEM: {issue}", file=sys.stderr)
    return 1 if issues else 0


def _latency_main(args: argparse.Namespace) -> int:
    if args.latency == "pubsub":
        return _pubsub_latency_main(args)
    from bench.latency import STORES, LatencyOptions, run_latency, write_latency_results
    from bench.latency import problems as latency_problems
    from bench.latency import render_markdown as render_latency

    options = LatencyOptions(
        stores=args.stores if args.stores is not None else list(STORES),
        writes=args.writes,
        redis_address=args.redis_address,
    )
    return _report_latency(
        options.validate,
        lambda: run_latency(options),
        render_latency,
        write_latency_results,
        latency_problems,
        args,
    )


def _pubsub_latency_main(args: argparse.Namespace) -> int:
    from bench.pubsub_latency import (
        COMPONENTS,
        DEFAULT_MESSAGES,
        PubSubLatencyOptions,
        run_pubsub_latency,
        write_pubsub_latency_results,
    )
    from bench.pubsub_latency import problems as latency_problems
    from bench.pubsub_latency import render_markdown as render_latency

    options = PubSubLatencyOptions(
        components=args.stores if args.stores is not None else list(COMPONENTS),
        messages=args.writes if args.writes is not None else DEFAULT_MESSAGES,
        redis_address=args.redis_address,
        kafka_address=args.kafka_address,
    )
    return _report_latency(
        options.validate,
        lambda: run_pubsub_latency(options),
        render_latency,
        write_pubsub_latency_results,
        latency_problems,
        args,
    )


def _report_latency(
    validate: Callable[[], None],
    run: Callable[[], Mapping[str, Any]],
    render: Callable[[Mapping[str, Any]], str],
    write: Callable[[Mapping[str, Any], Path], Path],
    problems: Callable[[Mapping[str, Any]], list[str]],
    args: argparse.Namespace,
) -> int:
    """Check the options (exit 2), run a latency mode, print its tables, write its files,
    exit 1 on any problem."""
    try:
        validate()
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    try:
        document = run()
    except (SidecarError, RedisServerError) as err:
        print(f"benchmark failed: {err}", file=sys.stderr)
        return 1
    print(render(document), end="")
    if not args.no_write:
        path = write(document, args.output_dir)
        latest = path.name.rsplit("-", 1)[0] + "-latest.*"
        print(f"\nwrote {path} (and {path.with_suffix('.md').name}, {latest})")
    issues = problems(document)
    for issue in issues:
        print(f"PROBLEM: {issue}", file=sys.stderr)
    return 1 if issues else 0


if __name__ == "__main__":
    sys.exit(main())
