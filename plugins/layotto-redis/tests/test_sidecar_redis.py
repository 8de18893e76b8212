"""End to end: `python -m layotto run` with Dapr YAMLs for state.redis, lock.redis,
sequencer.redis and configuration.redis on the private redis-server, driven by a plain grpcio
client.

The grpcio stubs are generated from proto/layotto/spec/proto/runtime/v1/*.proto with
grpc_tools.protoc (as the workspace's tests/ do; the few lines needed are repeated here).
"""

from __future__ import annotations

import math
import queue
import statistics
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType
from typing import Any

import grpc
import pytest
import redis
from layotto.testing.sidecar import SidecarProcess, runtime_stubs
from layotto_redis_test_support import RedisServer

pytestmark = pytest.mark.integration

REPO_ROOT = Path(__file__).resolve().parents[3]
PROTO_ROOT = REPO_ROOT / "proto" / "layotto"
RPC_TIMEOUT = 5.0
DETECT_WITHIN = 2.0  # readiness must follow Redis within 2 s, both ways
APP_ID = "redis-e2e"


# -- grpcio stubs --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pb(tmp_path_factory: pytest.TempPathFactory) -> tuple[ModuleType, ModuleType]:
    return runtime_stubs(tmp_path_factory.mktemp("redis-pb2"), PROTO_ROOT)


# -- the sidecar ---------------------------------------------------------------------------


def Sidecar(resources: Path) -> SidecarProcess:
    return SidecarProcess(["--resources-path", str(resources), "--app-id", APP_ID], cwd=REPO_ROOT)


def write_resources(directory: Path, address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "redis.yaml").write_text(
        f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: redis-state
spec:
  type: state.redis
  version: v1
  metadata:
  - name: redisHost
    value: "{address}"
  - name: dialTimeout
    value: 500ms
  - name: readTimeout
    value: 1s
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: redis-lock
spec:
  type: lock.redis
  version: v1
  metadata:
  - name: redisHost
    value: "{address}"
---
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: redis-sequencer
spec:
  type: sequencer.redis
  version: v1
  metadata:
  - name: redisHost
    value: "{address}"
  - name: biggerThan
    value: '{{"order": 1000}}'
"""
    )
    return directory


@pytest.fixture
def sidecar(own_redis_server: RedisServer, tmp_path: Path) -> Iterator[SidecarProcess]:
    car = Sidecar(write_resources(tmp_path / "resources", own_redis_server.address))
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


# -- the building blocks -------------------------------------------------------------------


def test_state(
    sidecar: SidecarProcess, own_redis_server: RedisServer, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    store = "redis-state"
    stub.SaveState(
        pb2.SaveStateRequest(store_name=store, states=[pb2.StateItem(key="k1", value=b"v1")]),
        timeout=RPC_TIMEOUT,
    )
    got = stub.GetState(pb2.GetStateRequest(store_name=store, key="k1"), timeout=RPC_TIMEOUT)
    assert (got.data, got.etag) == (b"v1", "1")
    # The Layotto API stores state keys unprefixed, in Dapr's hash layout.
    raw = own_redis_server.command("HGETALL", "k1")
    assert b"data" in raw
    assert b"v1" in raw
    assert b"version" in raw

    stale = pb2.StateItem(key="k1", value=b"x", etag=pb2.Etag(value="7"))
    assert (
        code_of(
            lambda: stub.SaveState(
                pb2.SaveStateRequest(store_name=store, states=[stale]), timeout=RPC_TIMEOUT
            )
        )
        is grpc.StatusCode.ABORTED
    )
    bad = pb2.StateItem(key="k1", value=b"x", etag=pb2.Etag(value="not-a-number"))
    assert (
        code_of(
            lambda: stub.SaveState(
                pb2.SaveStateRequest(store_name=store, states=[bad]), timeout=RPC_TIMEOUT
            )
        )
        is grpc.StatusCode.INVALID_ARGUMENT
    )
    ttl = pb2.StateItem(key="k2", value=b"v2", metadata={"ttlInSeconds": "600"})
    stub.SaveState(pb2.SaveStateRequest(store_name=store, states=[ttl]), timeout=RPC_TIMEOUT)
    got = stub.GetState(pb2.GetStateRequest(store_name=store, key="k2"), timeout=RPC_TIMEOUT)
    assert "ttlExpireTime" in got.metadata

    bulk = stub.GetBulkState(
        pb2.GetBulkStateRequest(store_name=store, keys=["k1", "k2", "k3"]), timeout=RPC_TIMEOUT
    )
    assert [(i.key, i.data) for i in bulk.items] == [("k1", b"v1"), ("k2", b"v2"), ("k3", b"")]

    stub.ExecuteStateTransaction(
        pb2.ExecuteStateTransactionRequest(
            storeName=store,
            operations=[
                pb2.TransactionalStateOperation(
                    operationType="delete", request=pb2.StateItem(key="k1")
                ),
                pb2.TransactionalStateOperation(
                    operationType="upsert", request=pb2.StateItem(key="k3", value=b"v3")
                ),
            ],
        ),
        timeout=RPC_TIMEOUT,
    )
    got = stub.GetState(pb2.GetStateRequest(store_name=store, key="k1"), timeout=RPC_TIMEOUT)
    assert got.data == b""
    stub.DeleteState(pb2.DeleteStateRequest(store_name=store, key="k3"), timeout=RPC_TIMEOUT)
    assert own_redis_server.command("EXISTS", "k3").startswith(b":0")


def test_lock(
    sidecar: SidecarProcess, own_redis_server: RedisServer, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    store = "redis-lock"

    def try_lock(owner: str, expire: int = 10) -> bool:
        reply = stub.TryLock(
            pb2.TryLockRequest(
                store_name=store, resource_id="res", lock_owner=owner, expire=expire
            ),
            timeout=RPC_TIMEOUT,
        )
        return bool(reply.success)

    assert try_lock("alice") is True
    assert try_lock("alice") is False
    assert try_lock("bob") is False
    # Layotto's default lock prefix: lock|||<app id>||<resource>
    assert own_redis_server.command("GET", f"lock|||{APP_ID}||res").endswith(b"alice\r\n")
    unlock = stub.Unlock(
        pb2.UnlockRequest(store_name=store, resource_id="res", lock_owner="bob"),
        timeout=RPC_TIMEOUT,
    )
    assert unlock.status == pb2.UnlockResponse.LOCK_BELONG_TO_OTHERS
    keep = stub.LockKeepAlive(
        pb2.LockKeepAliveRequest(
            store_name=store, resource_id="res", lock_owner="alice", expire=60
        ),
        timeout=RPC_TIMEOUT,
    )
    assert keep.status == pb2.LockKeepAliveResponse.SUCCESS
    unlock = stub.Unlock(
        pb2.UnlockRequest(store_name=store, resource_id="res", lock_owner="alice"),
        timeout=RPC_TIMEOUT,
    )
    assert unlock.status == pb2.UnlockResponse.SUCCESS
    unlock = stub.Unlock(
        pb2.UnlockRequest(store_name=store, resource_id="res", lock_owner="alice"),
        timeout=RPC_TIMEOUT,
    )
    assert unlock.status == pb2.UnlockResponse.LOCK_UNEXIST
    assert try_lock("bob") is True


def test_sequencer(sidecar: SidecarProcess, pb: tuple[ModuleType, ModuleType]) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    strong = pb2.SequencerOptions(increment=pb2.SequencerOptions.STRONG)

    def next_id(key: str, options: Any = None) -> int:
        request = pb2.GetNextIdRequest(store_name="redis-sequencer", key=key)
        if options is not None:
            request.options.CopyFrom(options)
        return int(stub.GetNextId(request, timeout=RPC_TIMEOUT).next_id)

    assert [next_id("ids", strong) for _ in range(3)] == [1, 2, 3]
    weak = [next_id("weak") for _ in range(5)]
    assert weak == sorted(set(weak))
    assert next_id("order", strong) > 1000  # biggerThan from the component YAML


# -- the outage ----------------------------------------------------------------------------


def test_outage_through_the_sidecar(
    sidecar: SidecarProcess, own_redis_server: RedisServer, pb: tuple[ModuleType, ModuleType]
) -> None:
    pb2, pb2_grpc = pb
    stub = sidecar.stub(pb2_grpc)
    get = pb2.GetStateRequest(store_name="redis-state", key="k")
    stub.SaveState(
        pb2.SaveStateRequest(store_name="redis-state", states=[pb2.StateItem(key="k", value=b"v")]),
        timeout=RPC_TIMEOUT,
    )
    assert sidecar.readiness() == 200

    own_redis_server.stop()
    stopped = time.monotonic()
    while sidecar.readiness() != 503:
        assert time.monotonic() - stopped < 5, "readiness never went DOWN"
        time.sleep(0.05)
    down_after = time.monotonic() - stopped

    start = time.monotonic()
    with pytest.raises(grpc.RpcError) as info:
        stub.GetState(get, timeout=RPC_TIMEOUT)
    failed_after = time.monotonic() - start
    assert info.value.code() is grpc.StatusCode.UNAVAILABLE, info.value
    details = info.value.details() or ""
    assert "127.0.0.1" not in details
    assert str(own_redis_server.port) not in details

    own_redis_server.start()
    restarted = time.monotonic()
    while sidecar.readiness() != 200:
        assert time.monotonic() - restarted < 5, "readiness never came back UP"
        time.sleep(0.05)
    up_after = time.monotonic() - restarted
    assert stub.GetState(get, timeout=RPC_TIMEOUT).data == b""  # nothing persisted
    stub.SaveState(
        pb2.SaveStateRequest(store_name="redis-state", states=[pb2.StateItem(key="k", value=b"w")]),
        timeout=RPC_TIMEOUT,
    )
    assert stub.GetState(get, timeout=RPC_TIMEOUT).data == b"w"
    assert sidecar.proc.poll() is None  # no restart
    print(
        f"\nsidecar outage: readiness 503 after {down_after:.3f} s, GetState UNAVAILABLE in "
        f"{failed_after:.3f} s, readiness 200 after restart {up_after:.3f} s"
    )
    assert down_after < DETECT_WITHIN
    assert failed_after < DETECT_WITHIN
    assert up_after < DETECT_WITHIN


# -- configuration -------------------------------------------------------------------------

CONFIG_STORE = "redis-config"
CHANGE_WITHIN = 0.1  # a direct write reaches a subscriber within 100 ms
WRITES = 50


def write_config_resources(directory: Path, address: str) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "config.yaml").write_text(
        f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: {CONFIG_STORE}
spec:
  type: configuration.redis
  version: v1
  metadata:
  - name: redisHost
    value: "{address}"
"""
    )
    return directory


@pytest.fixture
def config_sidecar(own_redis_server: RedisServer, tmp_path: Path) -> Iterator[SidecarProcess]:
    own_redis_server.command("CONFIG", "SET", "notify-keyspace-events", "")  # the sidecar's job
    car = Sidecar(write_config_resources(tmp_path / "resources", own_redis_server.address))
    try:
        car.wait_ready()
        yield car
    finally:
        car.kill()


class Subscriber:
    """A SubscribeConfiguration stream read by a thread: (arrival time, item) per item."""

    def __init__(self, stub: Any, request: Any) -> None:
        self.items: queue.Queue[tuple[float, Any]] = queue.Queue()
        self.call = stub.SubscribeConfiguration(iter([request]))  # half-closed: still receives
        self.error: grpc.RpcError | None = None
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        try:
            for response in self.call:
                now = time.perf_counter()
                for item in response.items:
                    self.items.put((now, item))
        except grpc.RpcError as err:
            self.error = err

    def next_item(self, key: str, timeout: float = 2.0) -> tuple[float, Any]:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0, f"no change of {key!r} within {timeout} s (stream error: {self.error})"
            try:
                at, item = self.items.get(timeout=left)
            except queue.Empty:
                continue
            if item.key == key:
                return at, item

    def cancel(self) -> None:
        self.call.cancel()


def test_configuration(
    config_sidecar: SidecarProcess, own_redis_server: RedisServer, pb: tuple[ModuleType, ModuleType]
) -> None:
    """Writes made straight to Redis (redis-py, Dapr's `SET key "value||N"`) reach a
    SubscribeConfiguration stream within 100 ms; the latency is measured over 50 writes."""
    pb2, pb2_grpc = pb
    stub = config_sidecar.stub(pb2_grpc)
    direct = redis.Redis(host="127.0.0.1", port=own_redis_server.port)
    try:
        # Save/Get through the sidecar land in Dapr's layout.
        stub.SaveConfiguration(
            pb2.SaveConfigurationRequest(
                store_name=CONFIG_STORE,
                app_id=APP_ID,
                items=[pb2.ConfigurationItem(key="greeting", content="hello", tags={"t": "1"})],
            ),
            timeout=RPC_TIMEOUT,
        )
        assert direct.get("greeting") == b"hello||1"
        got = stub.GetConfiguration(
            pb2.GetConfigurationRequest(store_name=CONFIG_STORE, app_id=APP_ID, keys=["greeting"]),
            timeout=RPC_TIMEOUT,
        )
        assert [(i.key, i.content, i.group, i.label) for i in got.items] == [
            ("greeting", "hello", "default", "default")
        ]
        assert got.items[0].metadata["version"] == "1"
        assert dict(got.items[0].tags) == {"t": "1"}

        subscriber = Subscriber(
            stub,
            pb2.SubscribeConfigurationRequest(
                store_name=CONFIG_STORE, app_id=APP_ID, keys=["feature", "warm-up"]
            ),
        )
        try:
            # The subscription is live once a write shows up: until then, write again.
            for n in range(50):
                direct.set("warm-up", f"w{n}||{n}")
                try:
                    subscriber.next_item("warm-up", timeout=0.1)
                    break
                except AssertionError:
                    continue
            else:
                pytest.fail(f"the subscription never delivered (stream error: {subscriber.error})")

            latencies = []
            for n in range(1, WRITES + 1):
                start = time.perf_counter()
                direct.set("feature", f"on-{n}||{n}")
                at, item = subscriber.next_item("feature")
                latencies.append(at - start)
                assert (item.content, item.metadata["version"]) == (f"on-{n}", str(n))

            direct.delete("feature")
            _, gone = subscriber.next_item("feature")
            assert gone.content == ""
        finally:
            subscriber.cancel()
    finally:
        direct.close()
    ordered = sorted(latencies)
    p50 = statistics.median(ordered) * 1000
    p99 = ordered[math.ceil(len(ordered) * 0.99) - 1] * 1000  # nearest rank
    print(
        f"\nconfiguration.redis through the sidecar, {WRITES} direct writes: "
        f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {ordered[-1] * 1000:.2f} ms"
    )
    assert p99 < CHANGE_WITHIN * 1000, ordered[-5:]  # with 50 writes, p99 is the slowest
