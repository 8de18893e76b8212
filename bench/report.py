"""Render a result document as markdown; write the JSON and markdown files."""

from __future__ import annotations

import json
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

RESULTS_DIR = Path(__file__).resolve().parent / "results"
MIB = 2**20


def _us(value: float | None) -> str:
    if value is None:
        return "—"
    if abs(value) < 10:
        return f"{value:.2f}"
    if abs(value) < 100:
        return f"{value:.1f}"
    return f"{value:,.0f}"


def _num(value: float | None, fmt: str) -> str:
    return "—" if value is None else format(value, fmt)


def _mib(value: int | None) -> str:
    return "—" if value is None else f"{value / MIB:.1f}"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], right: Sequence[bool]) -> str:
    align = ["---:" if r else ":---" for r in right]
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def render_markdown(document: Mapping[str, Any]) -> str:
    meta = document["meta"]
    options = meta["options"]
    out: list[str] = [
        f"## Benchmark {meta['started_at']}",
        "",
        f"layotto {meta.get('layotto')} (git {meta.get('git')}), Python {meta['python']}, "
        f"{meta['cpu_count']} CPUs, {meta['platform']}. "
        f"{options['duration_s']:g} s measured after {options['warmup_s']:g} s warm-up per run; "
        f"{options['processes']} load-generator process(es) on {meta['loadgen_loop']}; "
        f"sidecar uvloop: {'yes' if meta['sidecar_uvloop'] else 'no'}. "
        "Latencies in µs.",
        "",
    ]
    for backend in document.get("backends", []):
        kind = "external"
        if backend.get("private"):
            kind = backend.get("note") or "private, nothing persisted"
        out += [
            f"Backend: {backend['name']} {backend.get('version') or '?'} at "
            f"{backend['address']} ({kind}).",
            "",
        ]
    scenarios = document.get("scenarios") or {}
    if scenarios:
        out += [f"- `{name}`: {text}" for name, text in scenarios.items()] + [""]

    rows = []
    for r in document["runs"]:
        lat = r["latency_us"] or {}
        rows.append(
            [
                r["scenario"],
                str(r["concurrency"]),
                r["mode"],
                f"{r['throughput_per_s']:,.0f}",
                _us(lat.get("p50")),
                _us(lat.get("p90")),
                _us(lat.get("p99")),
                _us(lat.get("mean")),
                str(r["errors"]),
                _num(r["sidecar_cpu_s"], ".2f"),
                _num(r["sidecar_cpu_ms_per_1k_calls"], ".1f"),
                _num(r["loadgen_cpu_s"], ".2f"),
                _num(r.get("backend_cpu_s"), ".2f"),
                _num(r.get("other_cpu_s"), ".2f"),
                _mib(r["sidecar_peak_rss_bytes"]),
            ]
        )
    header = [
        "scenario",
        "conc",
        "mode",
        "calls/s",
        "p50",
        "p90",
        "p99",
        "mean",
        "errors",
        "sidecar CPU s",
        "sidecar CPU ms / 1k calls",
        "loadgen CPU s",
        "backend CPU s",
        "other CPU s",
        "sidecar peak RSS MiB",
    ]
    right = [False, True, False] + [True] * 12
    out += [_table(header, rows, right), ""]

    if document["comparisons"]:
        rows = [
            [
                c["scenario"],
                str(c["concurrency"]),
                _us(c["added_p50_us"]),
                _us(c["added_p90_us"]),
                _us(c["added_p99_us"]),
                _num(c["throughput_ratio"], ".3f"),
                _num(1 / c["throughput_ratio"] if c["throughput_ratio"] else None, ".1f"),
            ]
            for c in document["comparisons"]
        ]
        header = [
            "scenario",
            "conc",
            "added p50",
            "added p90",
            "added p99",
            "throughput sidecar / direct",
            "direct / sidecar throughput",
        ]
        out += ["Sidecar vs direct (sidecar minus direct, µs):", ""]
        out += [_table(header, rows, [False] + [True] * 6), ""]

    if document.get("baselines"):
        rows = [
            [
                b["scenario"],
                b["baseline"],
                b["mode"],
                str(b["concurrency"]),
                f"{b['throughput_per_s']:,.0f}",
                f"{b['baseline_throughput_per_s']:,.0f}",
                _num(b["ratio"], ".2f"),
            ]
            for b in document["baselines"]
        ]
        header = ["scenario", "vs", "mode", "conc", "calls/s", "vs calls/s", "ratio"]
        out += ["Throughput against another scenario (same mode, same concurrency):", ""]
        out += [_table(header, rows, [False, False, False] + [True] * 4), ""]

    if document["sidecars"]:
        rows = [
            [
                ", ".join(s["scenarios"]),
                f"{s['startup_to_ready_s']:.2f}",
                _mib(s["idle_rss_bytes"]),
                _mib(s["peak_rss_bytes"]),
                str(s["exit_code"]),
                _num(s["shutdown_s"], ".2f"),
            ]
            for s in document["sidecars"]
        ]
        header = [
            "sidecar for",
            "start → ready s",
            "idle RSS MiB",
            "peak RSS MiB",
            "exit code",
            "SIGTERM → exit s",
        ]
        out += [_table(header, rows, [False] + [True] * 5), ""]

    for skipped in document["skipped"]:
        out.append(f"- skipped {skipped['scenario']}: {skipped['reason']}")
    return "\n".join(out).rstrip() + "\n"


def write_results(document: Mapping[str, Any], directory: Path = RESULTS_DIR) -> Path:
    """Write ``<timestamp>.json`` and ``<timestamp>.md`` and copy both to ``latest.*``."""
    directory.mkdir(parents=True, exist_ok=True)
    stamp = document["meta"]["started_at"].replace(":", "").replace("-", "").replace("+0000", "Z")
    json_path = directory / f"{stamp}.json"
    md_path = directory / f"{stamp}.md"
    json_path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    md_path.write_text(render_markdown(document), encoding="utf-8")
    shutil.copyfile(json_path, directory / "latest.json")
    shutil.copyfile(md_path, directory / "latest.md")
    return json_path
