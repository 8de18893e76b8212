"""End-to-end support: generated grpcio stubs, `layotto run` as a real subprocess, and apps
beside it (a script app as a subprocess, grpclib servicers on a thread).

`conftest.py` loads this module as `layotto_e2e_support` (a unique name: other test folders of
the workspace may have a `support` module of their own), so tests import it by that name.
"""

from __future__ import annotations

import asyncio
import http.client
import importlib
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from types import ModuleType
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
PROTO_ROOT = REPO_ROOT / "proto" / "layotto"
RUNTIME_PROTO_DIR = PROTO_ROOT / "spec" / "proto" / "runtime" / "v1"

READY_TIMEOUT_SECONDS = 15.0
READY_MESSAGE = "layotto is ready"


# -- grpcio stubs --------------------------------------------------------------------------


@dataclass(frozen=True)
class RuntimeProtos:
    """The plain grpcio modules generated from spec/proto/runtime/v1."""

    runtime_pb2: ModuleType
    runtime_pb2_grpc: ModuleType
    out_dir: Path


def generate_runtime_protos(out_dir: Path) -> RuntimeProtos:
    """Compile spec/proto/runtime/v1/*.proto with grpc_tools.protoc into `out_dir`, put
    `out_dir` on sys.path and import the result (top-level package: `spec`)."""
    from grpc_tools import protoc

    well_known = Path(protoc.__file__).parent / "_proto"  # google/protobuf/*.proto
    sources = sorted(str(p.relative_to(PROTO_ROOT)) for p in RUNTIME_PROTO_DIR.glob("*.proto"))
    assert sources, f"no .proto files under {RUNTIME_PROTO_DIR}"
    out_dir.mkdir(parents=True, exist_ok=True)
    rc = protoc.main(
        [
            "grpc_tools.protoc",
            f"-I{PROTO_ROOT}",
            f"-I{well_known}",
            f"--python_out={out_dir}",
            f"--grpc_python_out={out_dir}",
            *sources,
        ]
    )
    assert rc == 0, f"grpc_tools.protoc failed ({rc}) on {sources}"
    if str(out_dir) not in sys.path:
        sys.path.insert(0, str(out_dir))
    importlib.invalidate_caches()
    return RuntimeProtos(
        runtime_pb2=importlib.import_module("spec.proto.runtime.v1.runtime_pb2"),
        runtime_pb2_grpc=importlib.import_module("spec.proto.runtime.v1.runtime_pb2_grpc"),
        out_dir=out_dir,
    )


# -- the sidecar subprocess ----------------------------------------------------------------


class OutputBuffer:
    """Drains one pipe on a daemon thread (so it never fills) and keeps every line."""

    def __init__(self, stream: Any, name: str) -> None:
        self.name = name
        self._lines: list[str] = []
        self._cond = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(
            target=self._drain, args=(stream,), name=f"drain-{name}", daemon=True
        )
        self._thread.start()

    def _drain(self, stream: Any) -> None:
        try:
            for raw in iter(stream.readline, b""):
                with self._cond:
                    self._lines.append(raw.decode("utf-8", "replace").rstrip("\r\n"))
                    self._cond.notify_all()
        finally:
            stream.close()
            with self._cond:
                self._closed = True
                self._cond.notify_all()

    @property
    def lines(self) -> list[str]:
        with self._cond:
            return list(self._lines)

    def text(self) -> str:
        return "\n".join(self.lines)

    def join(self, timeout: float = 5.0) -> None:
        self._thread.join(timeout)

    def json_events(self) -> list[dict[str, Any]]:
        events = []
        for line in self.lines:
            try:
                event = json.loads(line)
            except ValueError:
                continue
            if isinstance(event, dict):
                events.append(event)
        return events

    def wait_for_event(self, msg: str, deadline: float) -> dict[str, Any] | None:
        """The first JSON event whose `msg` is `msg`, or None at the deadline / end of output."""
        seen = 0
        while True:
            with self._cond:
                new, seen = self._lines[seen:], len(self._lines)
                closed = self._closed
            for line in new:
                try:
                    event = json.loads(line)
                except ValueError:
                    continue
                if isinstance(event, dict) and event.get("msg") == msg:
                    return event
            if closed:
                return None
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None
            with self._cond:
                if len(self._lines) == seen and not self._closed:
                    self._cond.wait(min(remaining, 0.1))


class SidecarStartError(AssertionError):
    pass


@dataclass(frozen=True)
class HttpResponse:
    status_code: int
    text: str

    def json(self) -> Any:
        return json.loads(self.text)


def http_get(port: int, path: str, timeout: float = 2.0) -> HttpResponse:
    """A plain GET on 127.0.0.1 (stdlib, no client set-up cost: startup timing stays honest).
    Raises OSError when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return HttpResponse(response.status, response.read().decode("utf-8", "replace"))
    finally:
        conn.close()


@dataclass
class Sidecar:
    proc: subprocess.Popen[bytes]
    args: list[str]
    stderr: OutputBuffer
    stdout: OutputBuffer
    spawned_at: float  # time.monotonic() just before Popen
    grpc_port: int = 0
    http_port: int = 0
    ready_log_after: float = 0.0  # seconds from spawn to the "layotto is ready" line
    ready_after: float = 0.0  # seconds from spawn to readiness 200
    _channels: list[Any] = field(default_factory=list)

    @property
    def grpc_target(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.http_port}{path}"

    def get(self, path: str, timeout: float = 2.0) -> HttpResponse:
        return http_get(self.http_port, path, timeout)

    def readiness_code(self) -> int | None:
        """HTTP status of the readiness probe, or None when nothing answers."""
        try:
            return self.get("/actuator/health/readiness", timeout=1.0).status_code
        except (OSError, http.client.HTTPException):
            return None

    def channel(self) -> Any:
        """A grpcio channel to the sidecar, closed at teardown."""
        import grpc

        channel = grpc.insecure_channel(self.grpc_target)
        self._channels.append(channel)
        return channel

    def signal(self, signum: int = signal.SIGTERM) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signum)

    def wait(self, timeout: float) -> int:
        """The exit code; fails the test (with the log) if the process outlives `timeout`."""
        try:
            return self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            raise AssertionError(
                f"sidecar still running {timeout:.1f} s later; log:\n{self.log()}"
            ) from None

    def log(self) -> str:
        self.stderr.join(0.5)
        out = self.stdout.text()
        return self.stderr.text() + (f"\n--- stdout ---\n{out}" if out else "")

    def kill(self) -> None:
        """Always safe: closes channels, kills the process if alive, reaps it."""
        for channel in self._channels:
            channel.close()
        self._channels.clear()
        if self.proc.poll() is None:
            self.proc.kill()
        try:
            self.proc.wait(10)
        finally:
            self.stderr.join(2)
            self.stdout.join(2)


def layotto_command(*args: str) -> list[str]:
    # Never through `uv run`: uv forwards signals, which would double-signal the sidecar.
    return [sys.executable, "-m", "layotto", *args]


def subprocess_env(extra: Mapping[str, str] | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("LAYOTTO_API_TOKEN", "RUNTIME_CONFIG")}
    env["PYTHONUNBUFFERED"] = "1"
    env.update(extra or {})
    return env


def spawn_sidecar(
    args: Sequence[str] = (),
    env: Mapping[str, str] | None = None,
    timeout: float = READY_TIMEOUT_SECONDS,
) -> Sidecar:
    """Start `layotto run --grpc-port 0 --http-port 0 --log-format json <args>` and wait for the
    ready log line and readiness 200. The caller owns the result and must `kill()` it (the
    `sidecar_factory` fixture does); on failure here the process is already killed."""
    cmd = layotto_command(
        "run", "--grpc-port", "0", "--http-port", "0", "--log-format", "json", *args
    )
    spawned_at = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=subprocess_env(env),
        cwd=REPO_ROOT,
        start_new_session=True,  # a Ctrl-C at the terminal must not signal it behind our back
    )
    assert proc.stdout is not None
    assert proc.stderr is not None
    sidecar = Sidecar(
        proc=proc,
        args=cmd,
        stderr=OutputBuffer(proc.stderr, "stderr"),
        stdout=OutputBuffer(proc.stdout, "stdout"),
        spawned_at=spawned_at,
    )
    try:
        _wait_ready(sidecar, spawned_at + timeout)
    except BaseException:
        sidecar.kill()
        raise
    return sidecar


def _wait_ready(sidecar: Sidecar, deadline: float) -> None:
    def fail(why: str) -> SidecarStartError:
        return SidecarStartError(f"{why}\ncommand: {sidecar.args}\nlog:\n{sidecar.log()}")

    event = sidecar.stderr.wait_for_event(READY_MESSAGE, deadline)
    if event is None:
        if sidecar.proc.poll() is not None:
            raise fail(f"sidecar exited with {sidecar.proc.returncode} before it was ready")
        raise fail(f"no {READY_MESSAGE!r} log line within the deadline")
    sidecar.ready_log_after = time.monotonic() - sidecar.spawned_at
    try:
        sidecar.grpc_port = int(event["grpc_port"])
        sidecar.http_port = int(event["http_port"])
    except (KeyError, TypeError, ValueError):
        raise fail(f"the ready line lacks grpc_port/http_port: {event}") from None
    assert sidecar.grpc_port > 0, event
    assert sidecar.http_port > 0, event
    last: object = None
    while time.monotonic() < deadline:
        if sidecar.proc.poll() is not None:
            raise fail(f"sidecar exited with {sidecar.proc.returncode} after the ready line")
        try:
            response = sidecar.get("/actuator/health/readiness", timeout=1.0)
            last = f"{response.status_code} {response.text}"
            if response.status_code == 200:
                sidecar.ready_after = time.monotonic() - sidecar.spawned_at
                return
        except (OSError, http.client.HTTPException) as err:
            last = repr(err)
        time.sleep(0.02)
    raise fail(f"readiness never answered 200 (last: {last})")


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, timeout: float = 30.0
) -> subprocess.CompletedProcess[str]:
    """`python -m layotto <args>`, captured, bounded."""
    return subprocess.run(
        layotto_command(*args),
        capture_output=True,
        text=True,
        env=subprocess_env(env),
        cwd=REPO_ROOT,
        timeout=timeout,
        check=False,
        stdin=subprocess.DEVNULL,
    )


# -- apps beside the sidecar -----------------------------------------------------------------


def free_port() -> int:
    """A port nothing listens on now (bound, then closed: connections to it are refused)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def redis_answers(port: int, password: str | None = None) -> bool:
    """Whether a Redis on 127.0.0.1:`port` answers PING (after AUTH `password`, if given)."""
    auth = f"AUTH {password}\r\n" if password is not None else ""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.settimeout(0.5)
            s.sendall(f"{auth}PING\r\n".encode())
            reply = b""
            while b"+PONG" not in reply:
                chunk = s.recv(64)
                if not chunk:
                    return False
                reply += chunk
            return True
    except OSError:
        return False


@contextmanager
def redis_server(
    workdir: Path, *, password: str | None = None, need: str = "this test", wait: float = 10.0
) -> Iterator[int]:
    """A private, throwaway `redis-server` on a free port of 127.0.0.1 (with `requirepass`
    when `password` is given); yields the port, kills it on exit. Without the binary: skipped
    with the reason, or failed when integration tests are required."""
    from layotto.testing import skip_or_fail

    binary = shutil.which("redis-server")
    if binary is None:
        skip_or_fail(f"redis-server not installed: {need} needs it")
    port = free_port()
    options = {
        "port": str(port),
        "bind": "127.0.0.1",
        "save": "",  # no snapshots, no append-only file: a throwaway server
        "appendonly": "no",
        "daemonize": "no",
        "dir": str(workdir),
    }
    if password is not None:
        options["requirepass"] = password
    argv = [binary, *(arg for name, value in options.items() for arg in (f"--{name}", value))]
    log_path = workdir / "redis.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen(
            argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + wait
        while not redis_answers(port, password):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"redis-server did not start: {log_path.read_text()[-2000:]}")
            time.sleep(0.02)
        yield port
    finally:
        proc.kill()
        proc.wait(10)


class ScriptApp:
    """A Python app (e.g. one built with the Dapr SDK) run from `source` as a subprocess, its
    port (a free one) as its first argument; `records` are the JSON lines it prints. The
    caller must `kill()` it."""

    def __init__(self, source: str, script: Path, *, wait: float = 15.0) -> None:
        script.write_text(source)
        self.port = free_port()
        self._wait = wait
        self.proc = subprocess.Popen(
            [sys.executable, "-W", "ignore::DeprecationWarning", str(script), str(self.port)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=subprocess_env(),
            start_new_session=True,
        )
        self.stdout = OutputBuffer(self.proc.stdout, "app-stdout")
        self.stderr = OutputBuffer(self.proc.stderr, "app-stderr")

    def records(self, kind: str | None = None, **match: Any) -> list[dict[str, Any]]:
        return [
            r
            for r in self.stdout.json_events()
            if (kind is None or r.get("kind") == kind)
            and all(r.get(k) == v for k, v in match.items())
        ]

    def wait(self, done: Callable[[], bool], what: str, within: float | None = None) -> None:
        deadline = time.monotonic() + (self._wait if within is None else within)
        while not done():
            assert self.proc.poll() is None, f"the app exited:\n{self.log()}"
            assert time.monotonic() < deadline, f"timed out waiting for {what}:\n{self.log()}"
            time.sleep(0.05)

    def log(self) -> str:
        return f"{self.stdout.text()}\n--- stderr ---\n{self.stderr.text()}"

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait(10)
        self.stdout.join(2)
        self.stderr.join(2)


@contextmanager
def script_app(source: str, script: Path, *, wait: float = 15.0) -> Iterator[ScriptApp]:
    """A `ScriptApp` once it printed its `{"kind": "starting"}` line; killed on exit."""
    app = ScriptApp(source, script, wait=wait)
    try:
        app.wait(lambda: bool(app.records("starting")), "the app to start")
        yield app
    finally:
        app.kill()


@contextmanager
def grpclib_app(*servicers: Any) -> Iterator[int]:
    """Serve grpclib `servicers` on 127.0.0.1 from a thread of its own (its own event loop,
    so a synchronous test can call the sidecar meanwhile); yields the port, closes on exit."""
    from grpclib.server import Server

    loop = asyncio.new_event_loop()
    started = threading.Event()
    servers: list[Server] = []
    ports: list[int] = []

    def run() -> None:
        asyncio.set_event_loop(loop)

        async def start() -> None:
            server = Server(list(servicers))  # made on its loop: grpclib binds the running loop
            servers.append(server)
            await server.start("127.0.0.1", 0)
            listener: Any = server._server  # grpclib does not expose the bound port
            ports.append(int(listener.sockets[0].getsockname()[1]))

        loop.run_until_complete(start())
        started.set()
        loop.run_forever()

    thread = threading.Thread(target=run, name="grpclib-app", daemon=True)
    thread.start()
    assert started.wait(10), "the grpclib app did not start"
    try:
        yield ports[0]
    finally:

        async def stop() -> None:
            servers[0].close()
            await servers[0].wait_closed()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)


# -- a raw HTTP/2 gRPC client: holds a call in flight on purpose ---------------------------


@dataclass
class RawResponse:
    headers: dict[str, str] = field(default_factory=dict)
    trailers: dict[str, str] = field(default_factory=dict)
    data: bytes = b""
    ended: bool = False
    reset: int | None = None  # RST_STREAM error code, if the server reset the stream

    @property
    def grpc_status(self) -> int | None:
        raw = self.trailers.get("grpc-status", self.headers.get("grpc-status"))
        return None if raw is None else int(raw)

    @property
    def grpc_message(self) -> str:
        return self.trailers.get("grpc-message", self.headers.get("grpc-message", ""))


class RawGrpcConnection:
    """One HTTP/2 connection speaking gRPC frame by frame, built on `h2`.

    grpcio always sends a unary request whole; this client can send a call's HEADERS and hold
    back its DATA. The server has then accepted the call, which waits for its request message
    and so stays in flight until `finish()`: the only way to keep a call running on a store
    that answers at once."""

    def __init__(self, port: int, timeout: float = 5.0) -> None:
        import h2.config
        import h2.connection

        self._authority = f"127.0.0.1:{port}"
        self._sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        self._conn = h2.connection.H2Connection(
            config=h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
        )
        self._conn.initiate_connection()
        self._flush()
        self.responses: dict[int, RawResponse] = {}
        self.terminated = False

    def _flush(self) -> None:
        data = self._conn.data_to_send()
        if data:
            self._sock.sendall(data)

    def start(self, path: str, metadata: Sequence[tuple[str, str]] = ()) -> int:
        """Send a call's HEADERS only; returns the stream id."""
        stream_id: int = self._conn.get_next_available_stream_id()
        self._conn.send_headers(
            stream_id,
            [
                (":method", "POST"),
                (":scheme", "http"),
                (":path", path),
                (":authority", self._authority),
                ("content-type", "application/grpc"),
                ("te", "trailers"),
                *metadata,
            ],
        )
        self._flush()
        self.responses[stream_id] = RawResponse()
        return stream_id

    def finish(self, stream_id: int, message: bytes) -> None:
        """Send the request message (length-prefixed, uncompressed) and end the request."""
        frame = b"\x00" + len(message).to_bytes(4, "big") + message
        self._conn.send_data(stream_id, frame, end_stream=True)
        self._flush()

    def wait(self, stream_id: int, timeout: float = 5.0) -> RawResponse:
        """Read frames until `stream_id` ends (or is reset, or the connection goes)."""
        import h2.events

        deadline = time.monotonic() + timeout
        response = self.responses[stream_id]
        while not (response.ended or response.reset is not None or self.terminated):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"stream {stream_id}: no end within {timeout} s")
            self._sock.settimeout(remaining)
            data = self._sock.recv(65536)
            if not data:
                self.terminated = True
                break
            for event in self._conn.receive_data(data):
                target = self.responses.get(getattr(event, "stream_id", 0) or 0)
                if isinstance(event, h2.events.ResponseReceived) and target:
                    target.headers.update(dict(event.headers))
                elif isinstance(event, h2.events.TrailersReceived) and target:
                    target.trailers.update(dict(event.headers))
                elif isinstance(event, h2.events.DataReceived):
                    if target:
                        target.data += event.data
                    self._conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id
                    )
                elif isinstance(event, h2.events.StreamEnded) and target:
                    target.ended = True
                elif isinstance(event, h2.events.StreamReset) and target:
                    target.reset = int(event.error_code)
                elif isinstance(event, h2.events.ConnectionTerminated):
                    self.terminated = True
            self._flush()
        return response

    def unary(self, path: str, message: bytes, timeout: float = 5.0) -> RawResponse:
        stream_id = self.start(path)
        self.finish(stream_id, message)
        return self.wait(stream_id, timeout)

    def close(self) -> None:
        try:
            self._conn.close_connection()
            self._flush()
        except OSError:
            pass
        finally:
            self._sock.close()
