"""A private ``redis-server`` for the Redis scenarios: started and stopped by the harness.

``with RedisServer() as server: ...`` starts ``redis-server --port N --save "" --appendonly no``
on a free loopback port (nothing persisted, its working directory a temporary one), waits for
``PING`` and stops it (SIGTERM, SIGKILL after a timeout) on exit. The harness samples its CPU
separately, so Redis's own work is not counted as noise from other jobs on the machine.
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from bench.lifecycle import Managed

BINARY = "redis-server"
START_TIMEOUT_S = 10.0
STOP_TIMEOUT_S = 10.0
PORT_ATTEMPTS = 3  # a free port can be taken between the probe and redis-server's bind


class RedisServerError(RuntimeError):
    pass


def redis_server_binary() -> str | None:
    """The ``redis-server`` on PATH, or None."""
    return shutil.which(BINARY)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def resp(host: str, port: int, *args: str, timeout: float = 1.0) -> bytes:
    """One command over a raw socket (RESP); the first reply chunk (enough for PING/INFO)."""
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        data = arg.encode()
        parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
    with socket.create_connection((host, port), timeout=timeout) as s:
        s.settimeout(timeout)
        s.sendall(b"".join(parts))
        return s.recv(65536)


def ping(host: str, port: int) -> bool:
    try:
        return resp(host, port, "PING", timeout=0.5).startswith(b"+PONG")
    except OSError:
        return False


def server_version(host: str, port: int) -> str | None:
    """``redis_version`` from ``INFO server``, or None."""
    try:
        reply = resp(host, port, "INFO", "server")
    except OSError:
        return None
    for line in reply.decode("utf-8", "replace").splitlines():
        if line.startswith("redis_version:"):
            return line.split(":", 1)[1].strip()
    return None


class RedisServer(Managed):
    """A ``redis-server`` subprocess on a free loopback port, for the duration of a ``with``."""

    def __init__(self, binary: str | None = None, *, host: str = "127.0.0.1") -> None:
        found = binary or redis_server_binary()
        if found is None:
            raise RedisServerError(f"{BINARY} is not installed (not on PATH)")
        self.binary = found
        self.host = host
        self.port = 0
        self.version: str | None = None
        self._proc: subprocess.Popen[bytes] | None = None
        self._workdir: tempfile.TemporaryDirectory[str] | None = None

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def _log(self) -> str:
        if self._workdir is None:
            return ""
        path = Path(self._workdir.name) / "redis.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def start(self) -> None:
        self._workdir = tempfile.TemporaryDirectory(prefix="layotto-bench-redis-")
        for attempt in range(PORT_ATTEMPTS):
            self.port = free_port()
            if self._start_once():
                self.version = server_version(self.host, self.port)
                return
            if attempt == PORT_ATTEMPTS - 1 or "Address already in use" not in self._log():
                break
        raise RedisServerError(f"{BINARY} did not start on {self.address}:\n{self._log()}")

    def _start_once(self) -> bool:
        assert self._workdir is not None
        workdir = Path(self._workdir.name)
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            self.host,
            "--save",
            "",
            "--appendonly",
            "no",
            "--daemonize",
            "no",
            "--dir",
            str(workdir),
        ]
        with (workdir / "redis.log").open("wb") as log:
            self._proc = subprocess.Popen(
                args,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C reaches the harness, which stops it
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while not ping(self.host, self.port):
            if self._proc.poll() is not None:
                self._proc = None
                return False
            if time.monotonic() > deadline:
                self._terminate()
                raise RedisServerError(
                    f"{BINARY} did not answer PING within {START_TIMEOUT_S:g} s:\n{self._log()}"
                )
            time.sleep(0.02)
        return True

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)  # with --save "" it exits at once, writing nothing
        try:
            proc.wait(STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def stop(self) -> None:
        self._terminate()
        if self._workdir is not None:
            self._workdir.cleanup()
            self._workdir = None
