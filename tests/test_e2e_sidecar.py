"""`layotto run` as a real subprocess, driven by a plain grpcio client generated from the .proto
files: startup and probes, state over gRPC, graceful shutdown under load, the API token, the
CLI, and the three config formats."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from importlib.metadata import version as dist_version
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from layotto_e2e_support import RawGrpcConnection, Sidecar, run_cli

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
RPC_TIMEOUT = 5.0


def stub_for(sidecar: Sidecar, pb2_grpc: Any) -> Any:
    return pb2_grpc.RuntimeStub(sidecar.channel())


def save(stub: Any, pb2: Any, store: str, key: str, value: bytes, **kw: Any) -> Any:
    etag = kw.pop("etag", None)
    item = pb2.StateItem(key=key, value=value)
    if etag is not None:
        item.etag.value = etag
    return stub.SaveState(
        pb2.SaveStateRequest(store_name=store, states=[item]), timeout=RPC_TIMEOUT, **kw
    )


def get(stub: Any, pb2: Any, store: str, key: str, **kw: Any) -> Any:
    return stub.GetState(pb2.GetStateRequest(store_name=store, key=key), timeout=RPC_TIMEOUT, **kw)


def rpc_code(call: Callable[[], object]) -> grpc.StatusCode:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code()  # type: ignore[attr-defined,no-any-return]


def assert_round_trip(sidecar: Sidecar, pb2: Any, pb2_grpc: Any, store: str) -> None:
    stub = stub_for(sidecar, pb2_grpc)
    save(stub, pb2, store, "greeting", b"hello")
    got = get(stub, pb2, store, "greeting")
    assert got.data == b"hello"
    assert got.etag


# -- 1. startup and probes -----------------------------------------------------------------


def test_startup_time_and_probes(
    sidecar_factory: SidecarFactory, record_property: Callable[[str, object], None]
) -> None:
    sidecar = sidecar_factory()
    print(
        f"\nstartup: ready log line after {sidecar.ready_log_after:.3f} s, "
        f"readiness UP after {sidecar.ready_after:.3f} s (spawn -> HTTP 200)"
    )
    record_property("startup_ready_log_seconds", round(sidecar.ready_log_after, 3))
    record_property("startup_readiness_seconds", round(sidecar.ready_after, 3))
    assert sidecar.ready_after < 10, "startup hang guard"

    readiness = sidecar.get("/actuator/health/readiness")
    assert readiness.status_code == 200
    assert readiness.json()["status"] == "UP"
    liveness = sidecar.get("/actuator/health/liveness")
    assert liveness.status_code == 200, liveness.text
    assert liveness.json()["status"] == "UP"

    # Logs are JSON lines on stderr, stdout stays clean; the ready line names both ports.
    events = sidecar.stderr.json_events()
    assert len(events) == len([line for line in sidecar.stderr.lines if line.strip()])
    ready = [e for e in events if e["msg"] == "layotto is ready"]
    assert len(ready) == 1
    assert (ready[0]["grpc_port"], ready[0]["http_port"]) == (sidecar.grpc_port, sidecar.http_port)
    assert sidecar.stdout.lines == []

    # grpc.health.v1 on the gRPC port agrees with readiness.
    health = health_pb2_grpc.HealthStub(sidecar.channel())
    reply = health.Check(health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT)
    assert reply.status == health_pb2.HealthCheckResponse.SERVING


# -- 2. state over plain grpcio ------------------------------------------------------------


def test_state_round_trip(sidecar: Sidecar, pb2: Any, pb2_grpc: Any) -> None:
    stub = stub_for(sidecar, pb2_grpc)
    value = bytes(range(256))  # arbitrary bytes, not text
    save(stub, pb2, "statestore", "rt-key", value)
    got = get(stub, pb2, "statestore", "rt-key")
    assert got.data == value
    assert got.etag != ""

    stub.DeleteState(
        pb2.DeleteStateRequest(store_name="statestore", key="rt-key"), timeout=RPC_TIMEOUT
    )
    gone = get(stub, pb2, "statestore", "rt-key")
    assert gone.data == b""
    assert gone.etag == ""


def test_state_etag_mismatch_is_aborted(sidecar: Sidecar, pb2: Any, pb2_grpc: Any) -> None:
    stub = stub_for(sidecar, pb2_grpc)
    save(stub, pb2, "statestore", "etag-key", b"v1")
    first = get(stub, pb2, "statestore", "etag-key").etag
    save(stub, pb2, "statestore", "etag-key", b"v2", etag=first)  # matching ETag: accepted
    second = get(stub, pb2, "statestore", "etag-key")
    assert second.data == b"v2"
    assert second.etag != first

    stale = rpc_code(lambda: save(stub, pb2, "statestore", "etag-key", b"v3", etag=first))
    assert stale == grpc.StatusCode.ABORTED
    delete_stale = rpc_code(
        lambda: stub.DeleteState(
            pb2.DeleteStateRequest(
                store_name="statestore", key="etag-key", etag=pb2.Etag(value=first)
            ),
            timeout=RPC_TIMEOUT,
        )
    )
    assert delete_stale == grpc.StatusCode.ABORTED
    assert get(stub, pb2, "statestore", "etag-key").data == b"v2"  # neither write happened


def test_unknown_store_is_invalid_argument(sidecar: Sidecar, pb2: Any, pb2_grpc: Any) -> None:
    stub = stub_for(sidecar, pb2_grpc)
    with pytest.raises(grpc.RpcError) as info:
        get(stub, pb2, "no-such-store", "k")
    assert info.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
    assert "no-such-store" in info.value.details()  # type: ignore[attr-defined]
    assert rpc_code(lambda: save(stub, pb2, "no-such-store", "k", b"v")) == (
        grpc.StatusCode.INVALID_ARGUMENT
    )


# -- 3. SIGTERM under load -----------------------------------------------------------------


def test_sigterm_under_load_drains_and_exits_zero(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any
) -> None:
    grace = 3.0
    sidecar = sidecar_factory(["--grace-period", str(grace)])
    threads_n = 8
    stop = threading.Event()
    lock = threading.Lock()
    ok = Counter[str]()
    unavailable = Counter[str]()
    failures: list[str] = []
    sigterm_at: list[float] = []

    def worker(index: int) -> None:
        # One channel per worker: several HTTP/2 connections, as separate clients would have.
        channel = grpc.insecure_channel(sidecar.grpc_target)
        stub = pb2_grpc.RuntimeStub(channel)

        def call(what: str, fn: Callable[[], Any]) -> Any:
            """Run one RPC; tally it by its outcome and by when it *ended* (vs SIGTERM)."""
            try:
                result = fn()
            except grpc.RpcError as err:
                code = err.code()  # type: ignore[attr-defined]
                phase = "after" if sigterm_at else "before"
                with lock:
                    if code == grpc.StatusCode.UNAVAILABLE:
                        unavailable[phase] += 1
                    else:
                        failures.append(f"{what} {phase} SIGTERM: {code.name}: {err.details()}")  # type: ignore[attr-defined]
                return None
            with lock:
                ok["after" if sigterm_at else "before"] += 1
            return result

        n = 0
        try:
            while not stop.is_set():
                key = f"load-{index}-{n % 32}"
                value = f"{index}:{n}".encode()
                n += 1
                if call("SaveState", partial(save, stub, pb2, "statestore", key, value)) is None:
                    if not stop.is_set() and sigterm_at:
                        time.sleep(0.005)  # refused: do not spin on a closed port
                    continue
                got = call("GetState", partial(get, stub, pb2, "statestore", key))
                if got is not None and got.data != value:
                    with lock:
                        failures.append(f"{key}: read {got.data!r}, wrote {value!r}")
        finally:
            channel.close()

    workers = [
        threading.Thread(target=worker, args=(i,), name=f"load-{i}", daemon=True)
        for i in range(threads_n)
    ]
    for t in workers:
        t.start()
    try:
        # Load for a while (at least 200 calls), so that calls are in flight at SIGTERM.
        loaded_at = time.monotonic()
        while (ok["before"] < 200 or time.monotonic() - loaded_at < 0.5) and not failures:
            assert time.monotonic() - loaded_at < 10, f"load too slow: {ok}"
            time.sleep(0.01)
        load_seconds = time.monotonic() - loaded_at

        sigterm_at.append(time.monotonic())
        sidecar.signal(signal.SIGTERM)
        rc = sidecar.wait(grace + 2)
        exited_after = time.monotonic() - sigterm_at[0]
        assert rc == 0, sidecar.log()
        assert sidecar.readiness_code() is None  # the HTTP port is gone with the process
        time.sleep(0.3)  # the workers keep calling a closed port: UNAVAILABLE only
    finally:
        stop.set()
        for t in workers:
            t.join(RPC_TIMEOUT + 2)
    assert not any(t.is_alive() for t in workers)

    print(
        f"\nSIGTERM under load: {sum(ok.values())} successful calls "
        f"({ok['before']} before SIGTERM, {ok['after']} after), "
        f"UNAVAILABLE {unavailable['before']} before / {unavailable['after']} after, "
        f"exit 0 after {exited_after:.3f} s; ~{ok['before'] / load_seconds:.0f} calls/s "
        f"with {threads_n} threads"
    )
    assert failures == [], f"{len(failures)} failed call(s), first ones: {failures[:10]}"
    assert unavailable["before"] == 0
    assert unavailable["after"] > 0  # the workers really were calling through the shutdown
    messages = [e["msg"] for e in sidecar.stderr.json_events()]
    assert "signal SIGTERM: shutting down" in messages
    assert messages[-1] == "layotto stopped"
    assert not [e for e in sidecar.stderr.json_events() if e["level"] in ("error", "critical")]


# -- 4. draining, and a second signal ------------------------------------------------------


SAVE_STATE = "/spec.proto.runtime.v1.Runtime/SaveState"
GET_STATE = "/spec.proto.runtime.v1.Runtime/GetState"
HELD_GRACE = 2.0


@dataclass
class HeldCall:
    sidecar: Sidecar
    conn: RawGrpcConnection
    stream_id: int


@pytest.fixture
def held_call(sidecar_factory: SidecarFactory, pb2: Any) -> Iterator[HeldCall]:
    """A sidecar with one SaveState call held in flight: its HEADERS are sent, its request
    message is not, so the server-side handler is running and waiting for it."""
    sidecar = sidecar_factory(["--grace-period", str(HELD_GRACE)])
    conn = RawGrpcConnection(sidecar.grpc_port)
    try:
        held = conn.start(SAVE_STATE)
        # A whole call on the same connection, accepted after the held one: once it is
        # answered, the server has run the held call's handler up to where it waits.
        probe = conn.unary(
            GET_STATE, pb2.GetStateRequest(store_name="statestore", key="k").SerializeToString()
        )
        assert probe.grpc_status == 0, probe
        assert conn.responses[held].headers == {}  # no answer yet: the call is in flight
        yield HeldCall(sidecar, conn, held)
    finally:
        conn.close()


def wait_until(predicate: Callable[[], bool], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.01)


def save_request(pb2: Any, key: str, value: bytes) -> bytes:
    item = pb2.StateItem(key=key, value=value)
    return pb2.SaveStateRequest(store_name="statestore", states=[item]).SerializeToString()  # type: ignore[no-any-return]


def test_in_flight_call_completes_while_draining(
    held_call: HeldCall, pb2: Any, pb2_grpc: Any
) -> None:
    sidecar, conn = held_call.sidecar, held_call.conn
    stub = stub_for(sidecar, pb2_grpc)

    sidecar.signal(signal.SIGTERM)
    wait_until(lambda: sidecar.readiness_code() == 503, 3)
    assert sidecar.get("/actuator/health/readiness").json()["status"] == "DOWN"
    assert sidecar.proc.poll() is None  # still draining: the held call is in flight
    # New calls are refused as UNAVAILABLE, on a new connection and on the held one's.
    assert rpc_code(lambda: get(stub, pb2, "statestore", "k")) == grpc.StatusCode.UNAVAILABLE
    refused = conn.unary(SAVE_STATE, save_request(pb2, "late", b"x"))
    assert refused.grpc_status == grpc.StatusCode.UNAVAILABLE.value[0], refused
    # grpc.health.v1 must not say SERVING: NOT_SERVING, or refused like any new call.
    health = health_pb2_grpc.HealthStub(sidecar.channel())
    try:
        answer: object = health.Check(
            health_pb2.HealthCheckRequest(service=""), timeout=RPC_TIMEOUT
        ).status
    except grpc.RpcError as err:
        answer = err.code()  # type: ignore[attr-defined]
    assert answer in (health_pb2.HealthCheckResponse.NOT_SERVING, grpc.StatusCode.UNAVAILABLE)

    # The call accepted before SIGTERM completes normally...
    conn.finish(held_call.stream_id, save_request(pb2, "held", b"done"))
    finished = time.monotonic()
    answer = conn.wait(held_call.stream_id)
    assert answer.grpc_status == 0, answer
    # ...and with nothing left in flight the sidecar exits 0 without waiting out the grace.
    rc = sidecar.wait(HELD_GRACE + 2)
    assert rc == 0, sidecar.log()
    assert time.monotonic() - finished < HELD_GRACE
    assert "still running after" not in sidecar.log()


def test_grace_period_bounds_the_drain(held_call: HeldCall) -> None:
    sidecar = held_call.sidecar
    sidecar.signal(signal.SIGTERM)
    signalled = time.monotonic()
    rc = sidecar.wait(HELD_GRACE + 2)  # the held call never completes
    elapsed = time.monotonic() - signalled
    assert rc == 0, sidecar.log()
    assert elapsed >= HELD_GRACE - 0.2, f"exited after {elapsed:.2f} s, a call still in flight"
    assert f"1 call(s) still running after the {HELD_GRACE:.1f} s grace period" in sidecar.log()


def test_second_sigterm_while_draining_exits_at_once(held_call: HeldCall) -> None:
    sidecar = held_call.sidecar
    sidecar.signal(signal.SIGTERM)
    wait_until(lambda: sidecar.readiness_code() == 503, 3)
    assert sidecar.proc.poll() is None  # draining, held by the call in flight
    second = time.monotonic()
    sidecar.signal(signal.SIGTERM)
    rc = sidecar.wait(1.0)  # well before the grace period would end
    assert time.monotonic() - second < 1.0
    assert rc != 0
    assert "second signal: exiting now" in sidecar.log()


def test_two_signals_back_to_back_exit_non_zero(sidecar_factory: SidecarFactory) -> None:
    # Two SIGTERMs sent back to back may be merged by the kernel into one pending signal, so
    # the second is a SIGINT: the runtime treats both alike and they are never merged.
    sidecar = sidecar_factory()
    sidecar.signal(signal.SIGTERM)
    sidecar.signal(signal.SIGINT)
    rc = sidecar.wait(2.0)
    assert rc != 0, sidecar.log()


# -- 5. API token --------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["flag", "env"])
def test_api_token(sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any, via: str) -> None:
    token = "s3cret-token"
    if via == "flag":
        sidecar = sidecar_factory(["--api-token", token])
    else:
        sidecar = sidecar_factory(env={"LAYOTTO_API_TOKEN": token})
    stub = stub_for(sidecar, pb2_grpc)

    missing = rpc_code(lambda: save(stub, pb2, "statestore", "k", b"v"))
    assert missing == grpc.StatusCode.UNAUTHENTICATED
    wrong = rpc_code(
        lambda: get(stub, pb2, "statestore", "k", metadata=(("dapr-api-token", "nope"),))
    )
    assert wrong == grpc.StatusCode.UNAUTHENTICATED

    for header in ("dapr-api-token", "layotto-api-token"):
        md = ((header, token),)
        save(stub, pb2, "statestore", "k", header.encode(), metadata=md)
        assert get(stub, pb2, "statestore", "k", metadata=md).data == header.encode()
    # Probes stay open without the token.
    assert sidecar.get("/actuator/health/readiness").status_code == 200


# -- 6. CLI --------------------------------------------------------------------------------


def test_cli_check_good_config(tmp_path: Path) -> None:
    config = tmp_path / "layotto.yaml"
    config.write_text(
        "components:\n  - name: orders\n    type: state.in-memory\n", encoding="utf-8"
    )
    result = run_cli("check", "--config", str(config))
    assert result.returncode == 0, result.stderr
    assert "OK" in result.stdout
    assert "orders" in result.stdout


def test_cli_check_lists_resiliency_and_refuses_a_missing_policy(tmp_path: Path) -> None:
    config = tmp_path / "layotto.yaml"
    good = (
        "components:\n  - name: orders\n    type: state.in-memory\n"
        "resiliency:\n  policies:\n    timeouts: {general: 2s}\n"
        "  targets:\n    components:\n      orders: {outbound: {timeout: general}}\n"
    )
    config.write_text(good, encoding="utf-8")
    result = run_cli("check", "-c", str(config))
    assert result.returncode == 0, result.stderr
    assert "resiliency: 1 polic(ies), 1 target(s)" in result.stdout
    config.write_text(good.replace("timeout: general", "timeout: missing"), encoding="utf-8")
    result = run_cli("check", "-c", str(config))
    assert result.returncode != 0
    assert "spec.targets.components.orders.outbound.timeout" in result.stderr
    assert "no timeout policy named 'missing'" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_check_bad_config_lists_installed_types(tmp_path: Path) -> None:
    config = tmp_path / "layotto.yaml"
    config.write_text("components:\n  - name: orders\n    type: state.nosuch\n", encoding="utf-8")
    result = run_cli("check", "-c", str(config))
    assert result.returncode != 0
    message = result.stdout + result.stderr
    assert "state.nosuch" in message
    assert "in-memory" in message
    assert "OK" not in result.stdout
    assert "Traceback" not in message


def test_cli_run_bad_config_exits_non_zero(tmp_path: Path) -> None:
    config = tmp_path / "layotto.yaml"
    config.write_text("components:\n  - name: orders\n    type: state.nosuch\n", encoding="utf-8")
    result = run_cli("run", "-c", str(config), "--grpc-port", "0", "--http-port", "0", timeout=15)
    assert result.returncode != 0
    assert "in-memory" in result.stderr
    assert "Traceback" not in result.stderr


def test_cli_plugins_lists_builtin_in_memory_state() -> None:
    result = run_cli("plugins")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    type_lines = [i for i, line in enumerate(lines) if line.split()[:1] == ["state.in-memory"]]
    assert type_lines, result.stdout
    # The plugin header above it names the distribution: "<plugin>  (layotto <version>)".
    header = next(line for line in reversed(lines[: type_lines[0]]) if not line.startswith(" "))
    assert f"(layotto {dist_version('layotto')})" in header


def test_cli_version() -> None:
    result = run_cli("version")
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == f"layotto {dist_version('layotto')}"


# -- 7./8. config formats ------------------------------------------------------------------

DAPR_COMPONENT = """\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata:
  name: mystore
spec:
  type: state.in-memory
  version: v1
  metadata:
    - name: keyPrefix
      value: name
"""


def test_dapr_resources_path(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any, tmp_path: Path
) -> None:
    (tmp_path / "statestore.yaml").write_text(DAPR_COMPONENT, encoding="utf-8")
    sidecar = sidecar_factory(["--resources-path", str(tmp_path)])
    assert_round_trip(sidecar, pb2, pb2_grpc, "mystore")
    # The resources folder replaces the embedded default.
    stub = stub_for(sidecar, pb2_grpc)
    code = rpc_code(lambda: get(stub, pb2, "statestore", "greeting"))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    info = sidecar.get("/actuator/info").json()
    assert {"name": "mystore", "type": "state.in-memory"}.items() <= info["components"][0].items()
    assert len(info["components"]) == 1


def test_layotto_json_config(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any, tmp_path: Path
) -> None:
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {
                "grpc_config": {
                    "state": {"state_demo": {"type": "in-memory"}},
                    "app": {"app_id": "app1"},
                }
            }
        ),
        encoding="utf-8",
    )
    sidecar = sidecar_factory(["--config", str(config)])
    assert_round_trip(sidecar, pb2, pb2_grpc, "state_demo")
    metadata = sidecar.get("/v1.0/metadata").json()
    assert metadata["id"] == "app1"
    assert [c["name"] for c in metadata["components"]] == ["state_demo"]
