"""The sidecar under test: a `python -m layotto run` subprocess and its resource usage."""

from __future__ import annotations

import collections
import contextlib
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil  # type: ignore[import-untyped,unused-ignore]

from bench.lifecycle import Managed

READY_MSG = "layotto is ready"


class SidecarError(RuntimeError):
    pass


@dataclass(frozen=True, slots=True)
class Usage:
    """A snapshot of the sidecar's cumulative CPU seconds and current RSS."""

    cpu_s: float
    rss: int


def _cpu_seconds(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


def read_vm_hwm(pid: int) -> int | None:
    """Peak RSS in bytes as the kernel counts it (Linux ``VmHWM``); None elsewhere."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        return None
    return None


class Sidecar(Managed):
    """Spawn the sidecar, wait for readiness, sample its CPU and RSS, SIGTERM it at the end.

    The sidecar runs in its own session, so a Ctrl-C at the terminal reaches only the harness,
    which then stops the sidecar with one SIGTERM (a second signal would make it exit at once).
    With ``check_exit`` (the default) leaving the context raises :class:`SidecarError` when the
    sidecar did not exit 0 after SIGTERM; otherwise read :attr:`exit_code`.
    """

    def __init__(
        self,
        *,
        config: Mapping[str, Any] | None = None,
        extra_args: Sequence[str] = (),
        env: Mapping[str, str] | None = None,
        log_level: str = "info",
        ready_timeout: float = 30.0,
        stop_timeout: float = 20.0,
        sample_interval: float = 0.05,
        check_exit: bool = True,
    ) -> None:
        self._config = config
        self._extra_args = list(extra_args)
        self._env = dict(env or {})
        self._log_level = log_level
        self._ready_timeout = ready_timeout
        self._stop_timeout = stop_timeout
        self._sample_interval = sample_interval
        self._check_exit = check_exit

        self._popen: subprocess.Popen[str] | None = None
        self._proc: psutil.Process | None = None
        self._config_dir: tempfile.TemporaryDirectory[str] | None = None
        self._log_tail: collections.deque[str] = collections.deque(maxlen=200)
        self._ready = threading.Event()
        self._ready_at: float | None = None
        self._stop_sampling = threading.Event()
        self._sampler: threading.Thread | None = None
        self._reader: threading.Thread | None = None
        self._lock = threading.Lock()
        self._peak_rss = 0
        self._window_peak_rss = 0

        self.grpc_port = 0
        self.http_port = 0
        self.pid = 0
        self.startup_s = 0.0
        self.idle_rss = 0
        self.final_rss: int | None = None
        self.vm_hwm: int | None = None
        self.exit_code: int | None = None
        self.shutdown_s: float | None = None
        self.killed = False

    # -- lifecycle -------------------------------------------------------------------------

    def check_stopped(self) -> None:
        if self._check_exit and self.exit_code != 0:
            raise SidecarError(
                f"sidecar exited {self.exit_code} after SIGTERM (expected 0); last log lines:\n"
                + self.log_tail(20)
            )

    def command(self) -> list[str]:
        cmd = [sys.executable, "-m", "layotto", "run", "--grpc-port", "0", "--http-port", "0"]
        cmd += ["--log-format", "json", "--log-level", self._log_level]
        if self._config is not None:
            self._config_dir = tempfile.TemporaryDirectory(prefix="layotto-bench-")
            path = Path(self._config_dir.name) / "config.json"
            path.write_text(json.dumps(self._config), encoding="utf-8")
            cmd += ["--config", str(path)]
        return cmd + self._extra_args

    def start(self) -> None:
        cmd = self.command()
        started = time.perf_counter()
        self._popen = subprocess.Popen(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
            encoding="utf-8",
            errors="replace",
            env={**os.environ, **self._env},
            start_new_session=True,
        )
        self.pid = self._popen.pid
        self._proc = psutil.Process(self.pid)
        assert self._popen.stderr is not None
        self._reader = threading.Thread(
            target=self._read_logs, args=(self._popen.stderr,), name="sidecar-logs", daemon=True
        )
        self._reader.start()

        deadline = started + self._ready_timeout
        while not self._ready.wait(0.05):
            if self._popen.poll() is not None:
                if self._reader is not None:
                    self._reader.join(timeout=1.0)
                raise SidecarError(
                    f"sidecar exited {self._popen.returncode} before it was ready:\n"
                    + self.log_tail(30)
                )
            if time.perf_counter() > deadline:
                raise SidecarError(
                    f"sidecar not ready within {self._ready_timeout:.0f} s:\n" + self.log_tail(30)
                )
        assert self._ready_at is not None
        self.startup_s = self._ready_at - started
        self.idle_rss = int(self._proc.memory_info().rss)
        self._peak_rss = self._window_peak_rss = self.idle_rss
        self._sampler = threading.Thread(target=self._sample, name="sidecar-rss", daemon=True)
        self._sampler.start()

    def stop(self) -> int | None:
        """SIGTERM, wait for the exit (SIGKILL after ``stop_timeout``); return the exit code."""
        popen = self._popen
        if popen is None or self.exit_code is not None:
            return self.exit_code
        if popen.poll() is None:
            with contextlib.suppress(psutil.Error):
                self.final_rss = self.rss()
            self.vm_hwm = read_vm_hwm(popen.pid)
            self._stop_sampling.set()
            started = time.perf_counter()
            popen.send_signal(signal.SIGTERM)
            try:
                popen.wait(self._stop_timeout)
            except subprocess.TimeoutExpired:
                self.killed = True
                popen.kill()
                popen.wait()
            self.shutdown_s = time.perf_counter() - started
        self._stop_sampling.set()
        self.exit_code = popen.returncode
        for thread in (self._sampler, self._reader):
            if thread is not None:
                thread.join(timeout=2.0)
        if self._config_dir is not None:
            self._config_dir.cleanup()
        return self.exit_code

    # -- logs ------------------------------------------------------------------------------

    def _read_logs(self, stream: IO[str]) -> None:
        for line in stream:
            line = line.rstrip("\n")
            self._log_tail.append(line)
            if self._ready.is_set() or READY_MSG not in line:
                continue
            try:
                record = json.loads(line)
            except ValueError:
                continue
            if isinstance(record, dict) and record.get("msg") == READY_MSG:
                self.grpc_port = int(record["grpc_port"])
                self.http_port = int(record["http_port"])
                self._ready_at = time.perf_counter()
                self._ready.set()

    def log_tail(self, lines: int = 20) -> str:
        return "\n".join(list(self._log_tail)[-lines:])

    # -- resource usage --------------------------------------------------------------------

    def _process(self) -> psutil.Process:
        if self._proc is None:
            raise SidecarError("sidecar not started")
        return self._proc

    def alive(self) -> bool:
        return self._popen is not None and self._popen.poll() is None

    def rss(self) -> int:
        return int(self._process().memory_info().rss)

    def cpu_seconds(self) -> float:
        """Cumulative user + system CPU seconds of the sidecar process."""
        return _cpu_seconds(self._process())

    def _sample(self) -> None:
        proc = self._process()
        while not self._stop_sampling.wait(self._sample_interval):
            try:
                rss = int(proc.memory_info().rss)
            except psutil.Error:
                return
            with self._lock:
                self._peak_rss = max(self._peak_rss, rss)
                self._window_peak_rss = max(self._window_peak_rss, rss)

    def snapshot(self) -> Usage:
        return Usage(cpu_s=self.cpu_seconds(), rss=self.rss())

    def reset_window_peak(self) -> None:
        """Start a new peak-RSS window (see :attr:`window_peak_rss`)."""
        rss = self.rss()
        with self._lock:
            self._window_peak_rss = rss
            self._peak_rss = max(self._peak_rss, rss)

    @property
    def window_peak_rss(self) -> int:
        """Highest sampled RSS since the last :meth:`reset_window_peak`."""
        with self._lock:
            return self._window_peak_rss

    @property
    def peak_rss(self) -> int:
        """Highest RSS seen: the kernel's ``VmHWM`` where known, else the sampled maximum."""
        with self._lock:
            sampled = self._peak_rss
        hwm = self.vm_hwm
        if hwm is None and self._popen is not None and self._popen.poll() is None:
            hwm = read_vm_hwm(self.pid)
        return max(sampled, hwm or 0)

    def summary(self) -> dict[str, Any]:
        return {
            "pid": self.pid,
            "command": " ".join(self.command_line()),
            "startup_to_ready_s": round(self.startup_s, 4),
            "idle_rss_bytes": self.idle_rss,
            "final_rss_bytes": self.final_rss,
            "peak_rss_bytes": self.peak_rss,
            "vm_hwm_bytes": self.vm_hwm,
            "exit_code": self.exit_code,
            "shutdown_s": None if self.shutdown_s is None else round(self.shutdown_s, 4),
            "killed_after_timeout": self.killed,
            "env": dict(self._env),
        }

    def command_line(self) -> list[str]:
        return list(self._popen.args) if self._popen is not None else []  # type: ignore[arg-type]
