"""End to end: `python -m layotto run` with Dapr YAMLs for configuration.etcd, lock.etcd and
sequencer.etcd on a private etcd, driven by a plain grpcio client; writes for the subscriber go
straight to etcd with aetcd's own client, not through the sidecar.

The grpcio stubs are generated from proto/layotto/spec/proto/runtime/v1/*.proto with
grpc_tools.protoc (as the workspace's tests/ do; the few lines needed are repeated here).
"""

from __future__ import annotations

import asyncio
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import aetcd  # type: ignore[import-untyped]
import grpc
import pytest
from layotto.testing.sidecar import SidecarProcess, runtime_stubs
from layotto_etcd_test_support import EtcdServer

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto" / "layotto"
RPC_TIMEOUT = 5.0
APP_ID = "etcd-e2e"
CONFIG_STORE = "etcd-config"
WRITES = 50
LATENCY_BUDGET = 0.100  # a direct etcd write reaches a subscriber within 100 ms


# -- grpcio stubs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return runtime_stubs(tmp_path_factory.mktemp("etcd-pb2"), PROTO_ROOT)


# -- the sidecar ---------------------------------------------------------------------------


def Sidecar(resources: Path) -> SidecarProcess:
    return SidecarProcess(["--resources-path", str(resources), "--app-id", APP_ID], cwd=REPO_ROOT)


def write_resources(directory: Path, address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    components = [
        (CONFIG_STORE, "configuration.etcd", [("dialTimeout", "2s")]),
        ("etcd-lock", "lock.etcd", []),
        ("etcd-sequencer", "sequencer.etcd", [("biggerThan", '{"order": 1000}')]),
    ]
    docs = []
    for name, kind, extra in components:
        metadata = [("endpoints", address), *extra]
        lines = "".join(f"  - name: {k}\n    value: '{v}'\n" for k, v in metadata)
        docs.append(
            "apiVersion: dapr.io/v1alpha1\nkind: Component\n"
            f"metadata:\n  name: {name}\nspec:\n  type: {kind}\n  version: v1\n"
            f"  metadata:\n{lines}"
        )
    (directory / "etcd.yaml").write_text("---\n".join(docs))
    return directory


@pytest.fixture
def sidecar(own_etcd_server: EtcdServer, tmp_path: Path) -> Iterator[SidecarProcess]:
    car = Sidecar(write_resources(tmp_path / "resources", own_etcd_server.address))
    try:
        car.wait_ready()
        yield car
    finally:
        car.kill()


def code_of(call: Any) -> grpc.StatusCode | None:
    try:
        call()
    except grpc.RpcError as err:
        return err.code()  # type: ignore[no-any-return]
    return None


class EtcdWriter:
    """aetcd's client on an event loop of its own (the tests themselves are synchronous)."""

    def __init__(self, server: EtcdServer) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.client = aetcd.Client(host="127.0.0.1", port=server.client_port, timeout=5)

    def run(self, coro: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(10)

    def put(self, key: str, value: str) -> None:
        self.run(self.client.put(key.encode(), value.encode()))

    def get(self, key: str) -> Any:
        return self.run(self.client.get(key.encode()))

    def close(self) -> None:
        self.run(self.client.close())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


@pytest.fixture
def writer(own_etcd_server: EtcdServer) -> Iterator[EtcdWriter]:
    w = EtcdWriter(own_etcd_server)
    try:
        yield w
    finally:
        w.close()


class Subscriber:
    """One SubscribeConfiguration stream; every item received goes to `received` with the
    time it arrived."""

    def __init__(self, stub: Any, pb2: ModuleType, **request: Any) -> None:
        self.received: queue.Queue[tuple[float, Any]] = queue.Queue()
        self.error: grpc.RpcError | None = None
        self._done = threading.Event()
        first = pb2.SubscribeConfigurationRequest(**request)

        def requests() -> Iterator[Any]:
            yield first
            self._done.wait()  # keep our side open

        self.call = stub.SubscribeConfiguration(requests())
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                now = time.perf_counter()
                for item in response.items:
                    self.received.put((now, item))
        except grpc.RpcError as err:
            self.error = err

    def next(self, within: float = 5.0) -> tuple[float, Any]:
        try:
            return self.received.get(timeout=within)
        except queue.Empty:
            code = self.error.code() if self.error is not None else None
            raise AssertionError(
                f"nothing received within {within} s (stream error: {code})"
            ) from None

    def close(self) -> None:
        self._done.set()
        self.call.cancel()


def percentile(values: list[float], fraction: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(fraction * len(ordered)) - 1))
    return ordered[index]


# -- configuration -------------------------------------------------------------------------


def test_direct_etcd_writes_reach_a_subscriber(
    sidecar: SidecarProcess, writer: EtcdWriter, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    writer.put(f"/{APP_ID}/default/default/feature", "v-initial")
    sub = Subscriber(
        stub,
        pb2,
        store_name=CONFIG_STORE,
        app_id=APP_ID,
        keys=["feature"],
        metadata={"sendInitialValues": "true"},  # the first response says we are subscribed
    )
    try:
        _, first = sub.next(within=10)
        assert (first.key, first.content) == ("feature", "v-initial")
        assert (first.group, first.label) == ("default", "default")

        latencies: list[float] = []
        for n in range(WRITES):
            content = f"v-{n}"
            start = time.perf_counter()
            writer.put(f"/{APP_ID}/default/default/feature", content)
            arrived, got = sub.next()
            assert (got.key, got.content) == ("feature", content)
            latencies.append(arrived - start)
            writer.put(f"/{APP_ID}/default/default/unwatched", content)  # not for this subscriber
        assert sub.received.empty()
    finally:
        sub.close()
    p50, p99 = statistics.median(latencies), percentile(latencies, 0.99)
    print(
        f"\netcd put -> SubscribeConfiguration over {WRITES} writes: p50 {p50 * 1000:.1f} ms, "
        f"p99 {p99 * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms"
    )
    assert p99 < LATENCY_BUDGET, latencies


def test_configuration_api_uses_the_etcd_layout(
    sidecar: SidecarProcess, writer: EtcdWriter, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    item = pb2.ConfigurationItem(
        key="db", content="postgres://x", group="", label="prod", tags={"owner": "team-a"}
    )
    stub.SaveConfiguration(
        pb2.SaveConfigurationRequest(store_name=CONFIG_STORE, app_id=APP_ID, items=[item]),
        timeout=RPC_TIMEOUT,
    )
    assert writer.get(f"/{APP_ID}/default/prod/db").value == b"postgres://x"
    assert writer.get(f"/{APP_ID}/default/prod/db/owner").value == b"team-a"
    got = stub.GetConfiguration(
        pb2.GetConfigurationRequest(
            store_name=CONFIG_STORE, app_id=APP_ID, label="prod", keys=["db"]
        ),
        timeout=RPC_TIMEOUT,
    )
    assert [(i.key, i.content, i.group, dict(i.tags)) for i in got.items] == [
        ("db", "postgres://x", "default", {"owner": "team-a"})
    ]
    assert got.items[0].metadata["version"]
    stub.DeleteConfiguration(
        pb2.DeleteConfigurationRequest(
            store_name=CONFIG_STORE, app_id=APP_ID, label="prod", keys=["db"]
        ),
        timeout=RPC_TIMEOUT,
    )
    assert writer.get(f"/{APP_ID}/default/prod/db") is None
    assert writer.get(f"/{APP_ID}/default/prod/db/owner") is None
    bad = pb2.ConfigurationItem(key="a/b", content="x")
    request = pb2.SaveConfigurationRequest(store_name=CONFIG_STORE, app_id=APP_ID, items=[bad])
    assert code_of(lambda: stub.SaveConfiguration(request, timeout=RPC_TIMEOUT)) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


# -- lock and sequencer --------------------------------------------------------------------


def test_lock_and_sequencer(
    sidecar: SidecarProcess, writer: EtcdWriter, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    lock = "etcd-lock"
    taken = stub.TryLock(
        pb2.TryLockRequest(store_name=lock, resource_id="res", lock_owner="me", expire=30),
        timeout=RPC_TIMEOUT,
    )
    assert taken.success
    # The sidecar's default key prefix, under keyPrefixPath.
    assert writer.get(f"/layotto/lock|||{APP_ID}||res").value == b"me"
    again = stub.TryLock(
        pb2.TryLockRequest(store_name=lock, resource_id="res", lock_owner="you", expire=30),
        timeout=RPC_TIMEOUT,
    )
    assert not again.success
    renewed = stub.LockKeepAlive(
        pb2.LockKeepAliveRequest(store_name=lock, resource_id="res", lock_owner="you", expire=9),
        timeout=RPC_TIMEOUT,
    )
    assert renewed.status == pb2.LockKeepAliveResponse.LOCK_BELONG_TO_OTHERS
    renewed = stub.LockKeepAlive(
        pb2.LockKeepAliveRequest(store_name=lock, resource_id="res", lock_owner="me", expire=9),
        timeout=RPC_TIMEOUT,
    )
    assert renewed.status == pb2.LockKeepAliveResponse.SUCCESS
    unlocked = stub.Unlock(
        pb2.UnlockRequest(store_name=lock, resource_id="res", lock_owner="me"),
        timeout=RPC_TIMEOUT,
    )
    assert unlocked.status == pb2.UnlockResponse.SUCCESS

    strong = pb2.SequencerOptions(increment=pb2.SequencerOptions.STRONG)
    ids = [
        stub.GetNextId(
            pb2.GetNextIdRequest(store_name="etcd-sequencer", key="order", options=strong),
            timeout=RPC_TIMEOUT,
        ).next_id
        for _ in range(3)
    ]
    assert ids[0] > 1000  # biggerThan
    assert ids == [ids[0], ids[0] + 1, ids[0] + 2]
    weak = stub.GetNextId(
        pb2.GetNextIdRequest(store_name="etcd-sequencer", key="order"), timeout=RPC_TIMEOUT
    ).next_id
    assert weak == ids[-1] + 1  # no segments: WEAK calls etcd directly


# -- outage --------------------------------------------------------------------------------


def test_outage_readiness_and_resubscribe(
    sidecar: SidecarProcess,
    own_etcd_server: EtcdServer,
    writer: EtcdWriter,
    pb: tuple[ModuleType, ModuleType],
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    writer.put(f"/{APP_ID}/default/default/flag", "before")
    sub = Subscriber(
        stub,
        pb2,
        store_name=CONFIG_STORE,
        app_id=APP_ID,
        keys=["flag"],
        metadata={"sendInitialValues": "true"},
    )
    try:
        assert sub.next(within=10)[1].content == "before"
        own_etcd_server.stop()
        down_after = sidecar.wait_readiness(503, within=5)
        start = time.monotonic()
        code = code_of(
            lambda: stub.TryLock(
                pb2.TryLockRequest(
                    store_name="etcd-lock", resource_id="r", lock_owner="o", expire=5
                ),
                timeout=RPC_TIMEOUT,
            )
        )
        failed_within = time.monotonic() - start
        assert code == grpc.StatusCode.UNAVAILABLE
        assert failed_within < 1.0
        restarted = time.monotonic()
        own_etcd_server.start()
        answering = time.monotonic() - restarted
        writer.put(f"/{APP_ID}/default/default/flag", "after-restart")
        up_after = answering + sidecar.wait_readiness(200, within=10)
        _, got = sub.next(within=15)
        delivered_after = time.monotonic() - restarted
        assert got.content == "after-restart"
    finally:
        sub.close()
    print(
        f"\nsidecar outage: readiness 503 {down_after:.2f} s after etcd died, TryLock "
        f"UNAVAILABLE in {failed_within * 1000:.0f} ms; after the restart began: etcd answered "
        f"in {answering:.2f} s, readiness 200 at {up_after:.2f} s, the same stream got the "
        f"first post-restart write at {delivered_after:.2f} s"
    )
