"""The private redis-server the tests run against, and small helpers.

`conftest.py` loads this module under the unique name `layotto_redis_test_support` (the workspace
runs pytest with --import-mode=importlib, and other test folders have support modules too).
"""

from __future__ import annotations

import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from layotto.testing import skip_or_fail

START_TIMEOUT = 10.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _ping(port: int, password: str = "") -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            if password:
                s.sendall(f"AUTH {password}\r\n".encode())
                s.recv(64)
            s.sendall(b"PING\r\n")
            return s.recv(64).startswith(b"+PONG")
    except OSError:
        return False


class RedisServer:
    """A redis-server subprocess on a fixed port: stop it, pause it, start it again."""

    def __init__(
        self, binary: str, workdir: Path, password: str = "", *, durable: bool = False
    ) -> None:
        self.binary = binary
        self.workdir = workdir
        self.password = password
        # Durable: every write is fsynced to an append-only file before Redis answers, so a
        # SIGKILL loses nothing that was acknowledged (for broker-crash tests).
        self.durable = durable
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> None:
        assert self.proc is None or self.proc.poll() is not None, "already running"
        self.starts += 1
        args = [
            self.binary,
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "yes" if self.durable else "no",
            *(["--appendfsync", "always"] if self.durable else []),
            "--daemonize",
            "no",
            "--dir",
            str(self.workdir),
        ]
        if self.password:
            args += ["--requirepass", self.password]
        log = (self.workdir / f"redis-{self.starts}.log").open("wb")
        self.proc = subprocess.Popen(
            args, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
        log.close()
        deadline = time.monotonic() + START_TIMEOUT
        while not _ping(self.port, self.password):
            if self.proc.poll() is not None:
                raise RuntimeError(f"redis-server exited with {self.proc.returncode}: {self.log()}")
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not answer PING: {self.log()}")
            time.sleep(0.02)

    def stop(self) -> None:
        """SIGKILL: the server vanishes as in a crash; every client connection is reset."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)

    def pause(self) -> None:
        """SIGSTOP: connections stay open, nothing answers (a hung server)."""
        assert self.proc is not None
        self.proc.send_signal(signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGCONT)

    def log(self) -> str:
        path = self.workdir / f"redis-{self.starts}.log"
        return path.read_text(errors="replace")[-2000:] if path.exists() else ""

    def command(self, *args: str) -> bytes:
        """One command over a raw socket (RESP), for checks that bypass the component."""
        parts = [f"*{len(args)}\r\n".encode()]
        for arg in args:
            data = arg.encode()
            parts.append(f"${len(data)}\r\n".encode() + data + b"\r\n")
        with socket.create_connection(("127.0.0.1", self.port), timeout=2) as s:
            if self.password:
                s.sendall(f"AUTH {self.password}\r\n".encode())
                s.recv(64)
            s.sendall(b"".join(parts))
            return s.recv(65536)


def redis_binary() -> str:
    found = shutil.which("redis-server")
    if found is None:
        skip_or_fail("redis-server not installed")
    return found


ComponentFactory = Callable[..., Awaitable[Any]]
