"""End-to-end helpers for plugin test suites: the sidecar as a real subprocess, and plain
grpcio stubs generated from the Layotto protos (needs grpcio and grpcio-tools)."""

from __future__ import annotations

import http.client
import importlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from types import ModuleType
from typing import Any

READY_TIMEOUT = 20.0
# Inherited settings that would change what a test's sidecar does.
_SCRUBBED_ENV = ("LAYOTTO_API_TOKEN", "RUNTIME_CONFIG")


def runtime_stubs(out_dir: Path, proto_root: Path) -> tuple[ModuleType, ModuleType]:
    """Generate and import `spec.proto.runtime.v1` runtime_pb2 / runtime_pb2_grpc.
    `proto_root` is the include root holding `spec/proto/...` (the workspace's proto/layotto)."""
    from grpc_tools import protoc  # type: ignore[import-untyped]

    runtime_dir = proto_root / "spec" / "proto" / "runtime" / "v1"
    well_known = Path(protoc.__file__).parent / "_proto"
    sources = sorted(str(p.relative_to(proto_root)) for p in runtime_dir.glob("*.proto"))
    if not sources:
        raise FileNotFoundError(f"no .proto files under {runtime_dir}")
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{proto_root}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *sources,
        ]
    )
    if rc != 0:
        raise RuntimeError(f"grpc_tools.protoc failed ({rc})")
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    return (
        importlib.import_module("spec.proto.runtime.v1.runtime_pb2"),
        importlib.import_module("spec.proto.runtime.v1.runtime_pb2_grpc"),
    )


class SidecarProcess:
    """`python -m layotto run ARGS --grpc-port 0 --http-port 0 --log-format json`, started with
    this interpreter (not `uv run`, which forwards signals), its stderr drained by a thread."""

    def __init__(self, args: list[str], *, cwd: Path | None = None) -> None:
        env = {k: v for k, v in os.environ.items() if k not in _SCRUBBED_ENV}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "layotto",
                "run",
                *args,
                "--grpc-port",
                "0",
                "--http-port",
                "0",
                "--log-format",
                "json",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            cwd=cwd,
            env={**env, "PYTHONUNBUFFERED": "1"},
            start_new_session=True,
        )
        self.lines: list[str] = []
        self._ready = threading.Event()
        self.grpc_port = self.http_port = 0
        self.channel: Any = None
        threading.Thread(target=self._drain, daemon=True).start()

    def _drain(self) -> None:
        assert self.proc.stderr is not None
        for raw in iter(self.proc.stderr.readline, b""):
            line = raw.decode("utf-8", "replace").rstrip()
            self.lines.append(line)
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict) and event.get("msg") == "layotto is ready":
                self.grpc_port, self.http_port = int(event["grpc_port"]), int(event["http_port"])
                self._ready.set()
        self._ready.set()  # the process ended: stop waiting

    def wait_ready(self) -> None:
        assert self._ready.wait(READY_TIMEOUT), f"no ready line:\n{self.log()}"
        assert self.grpc_port, f"sidecar exited before it was ready:\n{self.log()}"
        self.wait_readiness(200)

    def wait_readiness(self, status: int, within: float = READY_TIMEOUT) -> float:
        """Poll readiness until it answers `status`; the seconds that took."""
        start = time.monotonic()
        while self.readiness() != status:
            assert time.monotonic() - start < within, f"readiness never {status}:\n{self.log()}"
            time.sleep(0.05)
        return time.monotonic() - start

    def readiness(self) -> int | None:
        conn = http.client.HTTPConnection("127.0.0.1", self.http_port, timeout=1.0)
        try:
            conn.request("GET", "/actuator/health/readiness")
            return conn.getresponse().status
        except (OSError, http.client.HTTPException):
            return None
        finally:
            conn.close()

    def stub(self, pb2_grpc: ModuleType) -> Any:
        """A grpcio RuntimeStub on one channel per sidecar."""
        import grpc  # type: ignore[import-untyped]

        if self.channel is None:
            self.channel = grpc.insecure_channel(f"127.0.0.1:{self.grpc_port}")
        return pb2_grpc.RuntimeStub(self.channel)

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    def kill(self) -> None:
        if self.channel is not None:
            self.channel.close()
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
