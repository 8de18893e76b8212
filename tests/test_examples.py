"""The examples keep working: the quickstart against a real sidecar (embedded default and each
sample config), and `layotto check` on each sample config."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from layotto_e2e_support import REPO_ROOT, Sidecar, run_cli, subprocess_env

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "examples"
CONFIG = EXAMPLES / "config"

# (id, `layotto run`/`layotto check` arguments)
CONFIGS = [
    ("native-yaml", ["-c", str(CONFIG / "layotto.yaml")]),
    ("layotto-json", ["-c", str(CONFIG / "layotto.json")]),
    ("dapr-components", ["--resources-path", str(CONFIG / "components")]),
]


def run_quickstart(grpc_port: int) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(EXAMPLES / "quickstart.py")],
        capture_output=True,
        text=True,
        env=subprocess_env({"LAYOTTO_GRPC_PORT": str(grpc_port)}),
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )


@pytest.mark.parametrize(
    "args", [[], *(args for _, args in CONFIGS)], ids=["default", *(i for i, _ in CONFIGS)]
)
def test_quickstart_prints_world(sidecar_factory: Callable[..., Sidecar], args: list[str]) -> None:
    sidecar = sidecar_factory(args)
    result = run_quickstart(sidecar.grpc_port)
    assert result.returncode == 0, f"{result.stderr}\nsidecar log:\n{sidecar.log()}"
    assert result.stdout.strip() == "world"


def test_pubsub_quickstart_receives_what_it_published(
    sidecar_factory: Callable[..., Sidecar],
) -> None:
    sidecar = sidecar_factory([])  # the embedded default has `pubsub` (in-memory)
    result = subprocess.run(
        [sys.executable, str(EXAMPLES / "pubsub_quickstart.py")],
        capture_output=True,
        text=True,
        env=subprocess_env({"LAYOTTO_GRPC_PORT": str(sidecar.grpc_port)}),
        cwd=REPO_ROOT,
        timeout=30,
        check=False,
        stdin=subprocess.DEVNULL,
    )
    assert result.returncode == 0, f"{result.stderr}\nsidecar log:\n{sidecar.log()}"
    lines = result.stdout.splitlines()
    published = [line.split()[1] for line in lines if line.startswith("published")]
    received = [line.split(maxsplit=2)[1:] for line in lines if line.startswith("received")]
    assert len(published) == 3
    assert all(published), "PublishEvent gave no message-id header"
    assert [event_id for event_id, _ in received] == published
    # JSON data arrives re-marshalled (compact), as from Dapr.
    assert [data for _, data in received] == ['{"order":0}', '{"order":1}', '{"order":2}']


def test_quickstart_fails_without_a_sidecar() -> None:
    # Port 1 on loopback: nothing listens there, so the example must fail, not print `world`.
    result = run_quickstart(1)
    assert result.returncode != 0
    assert "world" not in result.stdout


@pytest.mark.parametrize("args", [args for _, args in CONFIGS], ids=[i for i, _ in CONFIGS])
def test_sample_configs_pass_check(args: list[str]) -> None:
    result = run_cli("check", *args)
    assert result.returncode == 0, result.stderr
    assert "configuration OK: 1 component(s)" in result.stdout
    assert "statestore" in result.stdout
    assert "state.in-memory" in result.stdout


def test_sample_configs_are_all_covered() -> None:
    on_disk = {p.relative_to(CONFIG) for p in CONFIG.rglob("*") if p.is_file()}
    assert on_disk == {
        Path("layotto.yaml"),
        Path("layotto.json"),
        Path("components/statestore.yaml"),
    }
