"""Smoke test of the benchmark harness: both modes, both state scenarios, tiny durations.

Not collected by default (pytest's testpaths); run `uv run pytest bench`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import bench` under pytest

from bench.harness import BenchOptions, problems, run_benchmark
from bench.report import render_markdown, write_results

pytestmark = pytest.mark.integration

SCENARIOS = ["state_get", "state_save"]
CONCURRENCY = [1, 4]


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    options = BenchOptions(
        scenarios=SCENARIOS, concurrency=CONCURRENCY, duration_s=0.5, warmup_s=0.2
    )
    document = run_benchmark(options, progress=None)
    path = write_results(document, tmp_path_factory.mktemp("results"))
    assert (path.parent / "latest.json").read_text() == path.read_text()
    assert path.with_suffix(".md").is_file()
    loaded: dict[str, Any] = json.loads(path.read_text())
    return loaded


def test_every_run_has_throughput_and_sane_percentiles(results: dict[str, Any]) -> None:
    seen = {(r["scenario"], r["concurrency"], r["mode"]) for r in results["runs"]}
    expected = {(s, c, m) for s in SCENARIOS for c in CONCURRENCY for m in ("direct", "sidecar")}
    assert seen == expected
    for run in results["runs"]:
        label = f"{run['scenario']} c={run['concurrency']} {run['mode']}"
        assert run["errors"] == 0, f"{label}: {run['first_error']}"
        assert run["calls"] > 0, label
        assert run["throughput_per_s"] > 0, label
        lat = run["latency_us"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"], label
        assert run["sidecar_peak_rss_bytes"] > 0, label
        if run["mode"] == "sidecar":
            assert run["sidecar_cpu_s"] > 0, label
            assert run["sidecar_cpu_ms_per_1k_calls"] > 0, label


def test_comparisons_and_markdown(results: dict[str, Any]) -> None:
    assert len(results["comparisons"]) == len(SCENARIOS) * len(CONCURRENCY)
    for row in results["comparisons"]:
        assert row["throughput_ratio"] > 0
        assert row["added_p50_us"] is not None
    markdown = render_markdown(results)
    for name in SCENARIOS:
        assert f"| {name} | 4 | sidecar |" in markdown


def test_sidecar_started_and_exited_cleanly(results: dict[str, Any]) -> None:
    (sidecar,) = results["sidecars"]
    assert sidecar["startup_to_ready_s"] > 0
    assert sidecar["idle_rss_bytes"] > 0
    assert sidecar["peak_rss_bytes"] >= sidecar["idle_rss_bytes"]
    assert sidecar["exit_code"] == 0, "the sidecar did not exit 0 on SIGTERM"
    assert problems(results) == []
