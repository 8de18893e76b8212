"""The examples keep working: the quickstart against a real sidecar (embedded default and each
sample config), and `layotto check` on each sample config."""

from __future__ import annotations

import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import yaml
from layotto_e2e_support import (
    READY_MESSAGE,
    REPO_ROOT,
    OutputBuffer,
    Sidecar,
    layotto_command,
    run_cli,
    subprocess_env,
)

pytestmark = pytest.mark.integration

EXAMPLES = REPO_ROOT / "examples"
CONFIG = EXAMPLES / "config"

# (id, `layotto run`/`layotto check` arguments)
CONFIGS = [
    ("native-yaml", ["-c", str(CONFIG / "layotto.yaml")]),
    ("layotto-json", ["-c", str(CONFIG / "layotto.json")]),
    ("dapr-components", ["--resources-path", str(CONFIG / "components")]),
]


def run_example(
    script: str, env: dict[str, str], timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    """Run `examples/<script>` from the repository root with environment `env`."""
    return subprocess.run(
        [sys.executable, str(EXAMPLES / script)],
        capture_output=True,
        text=True,
        env=env,
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


def run_quickstart(grpc_port: int) -> subprocess.CompletedProcess[str]:
    return run_example("quickstart.py", subprocess_env({"LAYOTTO_GRPC_PORT": str(grpc_port)}))


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
    result = run_example(
        "pubsub_quickstart.py", subprocess_env({"LAYOTTO_GRPC_PORT": str(sidecar.grpc_port)})
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


def test_dapr_sdk_quickstart_runs_unmodified(sidecar_factory: Callable[..., Sidecar]) -> None:
    """The Dapr SDK example against the embedded default, configured only by the two port
    variables a Dapr user sets."""
    sidecar = sidecar_factory(["--app-id", "quickstart"])
    env = {"DAPR_GRPC_PORT": str(sidecar.grpc_port), "DAPR_HTTP_PORT": str(sidecar.http_port)}
    result = run_example(
        "dapr_sdk_quickstart.py",
        {k: v for k, v in subprocess_env(env).items() if not k.startswith("DAPR_API")},
        timeout=60,
    )
    assert result.returncode == 0, f"{result.stderr}\nsidecar log:\n{sidecar.log()}"
    lines = result.stdout.splitlines()
    assert lines[0].startswith('state: {"qty": 3} etag: ')
    assert lines[1] == "event: {'id': 1} from quickstart"
    assert lines[2] == "configuration: (empty)"
    assert lines[3] == "locked: True"
    assert lines[4] == "secrets: {}"
    assert lines[5].startswith("sidecar: quickstart [")
    assert "'statestore'" in lines[5]


@pytest.fixture
def app_sidecar() -> Iterator[Callable[..., Sidecar]]:
    """`start(args) -> Sidecar` for a sidecar with an app port: it stays not-ready (503) until
    its app serves, so this waits for the ready log line only. Killed at teardown."""
    started: list[Sidecar] = []

    def start(args: list[str]) -> Sidecar:
        cmd = layotto_command(
            "run", "--grpc-port", "0", "--http-port", "0", "--log-format", "json", *args
        )
        proc = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
            cwd=REPO_ROOT,
            start_new_session=True,
        )
        sidecar = Sidecar(
            proc=proc,
            args=cmd,
            stderr=OutputBuffer(proc.stderr, "stderr"),
            stdout=OutputBuffer(proc.stdout, "stdout"),
            spawned_at=time.monotonic(),
        )
        started.append(sidecar)
        event = sidecar.stderr.wait_for_event(READY_MESSAGE, time.monotonic() + 15)
        assert event is not None, f"no ready line:\n{sidecar.log()}"
        sidecar.grpc_port, sidecar.http_port = int(event["grpc_port"]), int(event["http_port"])
        return sidecar

    try:
        yield start
    finally:
        for sidecar in started:
            sidecar.kill()


def test_invoke_quickstart_calls_app_b_through_two_sidecars(
    sidecar_factory: Callable[..., Sidecar],
    app_sidecar: Callable[..., Sidecar],
    tmp_path: Path,
) -> None:
    with socket.socket() as sock:  # a free port for app B (the script serves it)
        sock.bind(("127.0.0.1", 0))
        app_b_port = sock.getsockname()[1]
    invoke = CONFIG / "invoke"
    sidecar_b = app_sidecar(["-c", str(invoke / "sidecar-b.yaml"), "--app-port", str(app_b_port)])
    # Sidecar A's config as shipped, but with appB resolved to this test's sidecar B.
    config_a = yaml.safe_load((invoke / "sidecar-a.yaml").read_text())
    (resolver,) = [c for c in config_a["components"] if c["type"] == "nameresolution.static"]
    resolver["metadata"]["apps"]["appB"] = [f"127.0.0.1:{sidecar_b.grpc_port}"]
    (tmp_path / "sidecar-a.yaml").write_text(yaml.safe_dump(config_a))
    sidecar_a = sidecar_factory(["-c", str(tmp_path / "sidecar-a.yaml")])
    result = run_example(
        "invoke_quickstart.py",
        subprocess_env(
            {"LAYOTTO_GRPC_PORT": str(sidecar_a.grpc_port), "APP_B_PORT": str(app_b_port)}
        ),
    )
    logs = f"sidecar A:\n{sidecar_a.log()}\nsidecar B:\n{sidecar_b.log()}"
    assert result.returncode == 0, f"{result.stderr}\n{logs}"
    assert result.stdout.strip() == "appB answered greet: hello, newcomer"


@pytest.mark.parametrize("name", ["sidecar-a.yaml", "sidecar-b.yaml"])
def test_invoke_configs_pass_check(name: str) -> None:
    result = run_cli("check", "-c", str(CONFIG / "invoke" / name))
    assert result.returncode == 0, result.stderr
    assert "configuration OK" in result.stdout


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
        Path("invoke/sidecar-a.yaml"),
        Path("invoke/sidecar-b.yaml"),
    }
