"""The official Dapr Python SDK (`dapr[grpc]==1.19.0`), unmodified, against `layotto run`.

Every building block the SDK offers and this sidecar serves, driven through `DaprClient` exactly
as an app would, on two backends: the embedded default (no config at all) and Redis (Dapr
Component YAMLs in a resources folder: state, pub/sub, lock and configuration on Redis, a
local-file secret store, a Redis output binding, and an HTTP invocation target).

The SDK reads its settings from the environment on every access (`dapr.conf.settings`), so the
tests point it at the sidecar with `DAPR_GRPC_PORT` / `DAPR_HTTP_PORT`, as a user would.

Quirks handled on purpose (dapr-compat.md 2.3-2.6):
- `DaprClient()` GETs `/v1.0/healthz/outbound` (twice) before any gRPC call;
- `subscribe_configuration` is a server stream the SDK sends without the API token: with a token
  it works only when `server.allow_tokenless_config_subscribe` is set (both cases tested);
- `Subscription.respond_*` only queues the ack: the tests wait for the sidecar to see it before
  closing the stream.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import pytest
import yaml
from layotto_e2e_support import Sidecar, redis_server

pytestmark = pytest.mark.integration

T = TypeVar("T")


def bounded(call: Callable[[], T], seconds: float = 15.0) -> T:
    """Run a blocking SDK call (e.g. `next_message`, which has no timeout) on a thread; fail
    the test instead of hanging when it does not return."""
    result: list[T] = []
    error: list[BaseException] = []

    def run() -> None:
        try:
            result.append(call())
        except BaseException as err:
            error.append(err)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    thread.join(seconds)
    if thread.is_alive():
        raise AssertionError(f"the SDK call did not return within {seconds} s")
    if error:
        raise error[0]
    return result[0]


# -- backends ------------------------------------------------------------------------------


@dataclass
class Backend:
    name: str
    sidecar: Sidecar
    app_id: str
    set_config: Callable[[str, str], None]  # writes a configuration item out of band
    secrets: dict[str, str]  # what `secretstore` holds
    binding: str | None  # an output binding with create/get, or None
    invoke_target: str | None  # an app id reachable over HTTP invocation, or None
    redis_port: int | None = None  # the private redis-server of the "redis" backend


def _layotto_save_config(sidecar: Sidecar, app_id: str) -> Callable[[str, str], None]:
    """The in-memory configuration store is written through the Layotto API (Dapr's API is
    read-only for configuration)."""

    def write(key: str, value: str) -> None:
        import anyio
        from grpclib.client import Channel
        from layotto._proto.spec.proto.runtime import v1 as pb

        async def save() -> None:
            channel = Channel("127.0.0.1", sidecar.grpc_port)
            try:
                await pb.RuntimeStub(channel).save_configuration(
                    pb.SaveConfigurationRequest(
                        store_name="configstore",
                        app_id=app_id,
                        items=[pb.ConfigurationItem(key=key, content=value)],
                    ),
                    timeout=5,
                )
            finally:
                channel.close()

        anyio.run(save)

    return write


def _redis_set_config(port: int, key: str, value: str) -> None:
    import redis

    client = redis.Redis(host="127.0.0.1", port=port, socket_timeout=5)
    try:
        client.set(key, f"{value}||1")  # Dapr's configuration.redis layout: value||version
    finally:
        client.close()


class _Target(threading.Thread):
    """A plain HTTP app (stdlib server on a thread): echoes method, path, query and body."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def _answer(self) -> None:
                length = int(self.headers.get("content-length") or 0)
                body = self.rfile.read(length) if length else b""
                reply = json.dumps(
                    {"method": self.command, "path": self.path, "body": body.decode()}
                ).encode()
                self.send_response(200)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(reply)))
                self.end_headers()
                self.wfile.write(reply)

            do_GET = do_POST = do_PUT = do_DELETE = _answer

            def log_message(self, *args: Any) -> None:
                return None

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]

    def run(self) -> None:
        self.server.serve_forever(poll_interval=0.1)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture(scope="module")
def target() -> Iterator[_Target]:
    app = _Target()
    app.start()
    yield app
    app.stop()


def _component(name: str, type_: str, metadata: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "apiVersion": "dapr.io/v1alpha1",
        "kind": "Component",
        "metadata": {"name": name},
        "spec": {
            "type": type_,
            "version": "v1",
            "metadata": [{"name": k, "value": v} for k, v in metadata.items()],
        },
        **extra,
    }


def _redis_resources(folder: Path, target_port: int, redis_port: int) -> Path:
    secrets_file = folder / "secrets.json"
    secrets_file.write_text(json.dumps({"db-pass": "s3cr3t", "api": {"key": "k-123"}}))
    redis = {"redisHost": f"127.0.0.1:{redis_port}"}
    documents = [
        _component("statestore", "state.redis", redis),
        _component("pubsub", "pubsub.redis", redis),
        _component("lockstore", "lock.redis", redis),
        _component("configstore", "configuration.redis", redis),
        _component("secretstore", "secretstores.local.file", {"secretsFile": str(secrets_file)}),
        _component("cache", "bindings.redis", redis),
        _component("http", "rpc.http", {}),
        _component(
            "apps",
            "nameresolution.static",
            {"apps": json.dumps({"target": [f"127.0.0.1:{target_port}"]})},
        ),
    ]
    (folder / "components.yaml").write_text(yaml.safe_dump_all(documents))
    return folder


@pytest.fixture(scope="module")
def redis_port(tmp_path_factory: pytest.TempPathFactory) -> Iterator[int]:
    """A private redis-server for the "redis" backend (skipped, or failed when integration
    tests are required, without the binary)."""
    with redis_server(tmp_path_factory.mktemp("redis"), need="the Dapr SDK on Redis") as port:
        yield port


@pytest.fixture(scope="module", params=["embedded", "redis"])
def backend(
    request: pytest.FixtureRequest,
    target: _Target,
    tmp_path_factory: pytest.TempPathFactory,
    module_sidecar_factory: Callable[..., Sidecar],
) -> Backend:
    app_id = f"sdk-{uuid.uuid4().hex[:8]}"
    if request.param == "embedded":
        sidecar = module_sidecar_factory(["--app-id", app_id])
        return Backend(
            "embedded", sidecar, app_id, _layotto_save_config(sidecar, app_id), {}, None, None
        )
    redis_port = request.getfixturevalue("redis_port")
    folder = _redis_resources(tmp_path_factory.mktemp("dapr-resources"), target.port, redis_port)
    sidecar = module_sidecar_factory(["--app-id", app_id, "--resources-path", str(folder)])
    return Backend(
        "redis",
        sidecar,
        app_id,
        partial(_redis_set_config, redis_port),
        {"db-pass": "s3cr3t", "api:key": "k-123"},
        "cache",
        "target",
        redis_port,
    )


@pytest.fixture
def dapr_env(backend: Backend, monkeypatch: pytest.MonkeyPatch) -> Backend:
    monkeypatch.setenv("DAPR_GRPC_PORT", str(backend.sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(backend.sidecar.http_port))
    monkeypatch.setenv("DAPR_HEALTH_TIMEOUT", "10")
    for name in ("DAPR_API_TOKEN", "DAPR_GRPC_ENDPOINT", "DAPR_HTTP_ENDPOINT"):
        monkeypatch.delenv(name, raising=False)
    return backend


@pytest.fixture
def client(dapr_env: Backend) -> Iterator[Any]:
    from dapr.clients import DaprClient

    with DaprClient() as d:
        yield d


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


# -- state ---------------------------------------------------------------------------------


def test_state_round_trip_with_etags(client: Any) -> None:
    from dapr.clients.exceptions import DaprGrpcError

    key = unique("order")
    client.save_state("statestore", key, '{"qty": 3}')
    got = client.get_state("statestore", key)
    assert json.loads(got.data) == {"qty": 3}
    assert got.etag
    client.save_state("statestore", key, '{"qty": 4}', etag=got.etag)
    with pytest.raises(DaprGrpcError) as info:
        client.save_state("statestore", key, '{"qty": 5}', etag=got.etag)  # stale
    assert info.value.code().name == "ABORTED"
    assert json.loads(client.get_state("statestore", key).data) == {"qty": 4}
    client.delete_state("statestore", key)
    missing = client.get_state("statestore", key)
    assert missing.data == b""
    assert missing.etag == ""


def test_state_bulk_and_transaction(client: Any) -> None:
    from dapr.clients.grpc._request import TransactionalStateOperation, TransactionOperationType
    from dapr.clients.grpc._state import StateItem

    a, b, c = unique("a"), unique("b"), unique("c")
    client.save_bulk_state("statestore", [StateItem(a, "1"), StateItem(b, "2")])
    client.execute_state_transaction(
        "statestore",
        [
            TransactionalStateOperation(key=c, data="3"),
            TransactionalStateOperation(
                key=a, data="", operation_type=TransactionOperationType.delete
            ),
        ],
    )
    items = {item.key: item.data for item in client.get_bulk_state("statestore", [a, b, c]).items}
    assert items == {a: b"", b: b"2", c: b"3"}


def test_state_errors_carry_dapr_reasons(client: Any) -> None:
    from dapr.clients.exceptions import DaprGrpcError

    with pytest.raises(DaprGrpcError) as info:
        client.get_state("no-such-store", "k")
    assert info.value.code().name == "INVALID_ARGUMENT"
    assert info.value.error_code() == "DAPR_STATE_NOT_FOUND"


def test_state_keys_are_prefixed_with_the_app_id(dapr_env: Backend, client: Any) -> None:
    """Dapr's key scheme `<app id>||key` (dapr-compat 3.1): the Layotto surface, which stores
    keys as given, does not see the bare key; on Redis the stored key is daprd's."""
    key = unique("scoped")
    client.save_state("statestore", key, "mine")
    assert client.get_state("statestore", key).data == b"mine"
    assert _layotto_get_state(dapr_env.sidecar, key) == b""
    if dapr_env.name == "redis":
        import redis

        direct = redis.Redis(host="127.0.0.1", port=dapr_env.redis_port, socket_timeout=5)
        try:
            assert direct.exists(f"{dapr_env.app_id}||{key}")
            assert not direct.exists(key)
        finally:
            direct.close()


def _layotto_get_state(sidecar: Sidecar, key: str) -> bytes:
    import anyio
    from grpclib.client import Channel
    from layotto._proto.spec.proto.runtime import v1 as pb

    async def get() -> bytes:
        channel = Channel("127.0.0.1", sidecar.grpc_port)
        try:
            response = await pb.RuntimeStub(channel).get_state(
                pb.GetStateRequest(store_name="statestore", key=key), timeout=5
            )
            return response.data
        finally:
            channel.close()

    return anyio.run(get)


# -- pub/sub -------------------------------------------------------------------------------


def test_publish_and_streaming_subscribe(dapr_env: Backend, client: Any) -> None:
    topic = unique("orders")
    subscription = client.subscribe("pubsub", topic)
    try:
        client.publish_event("pubsub", topic, '{"id": 1}', data_content_type="application/json")
        message = bounded(subscription.next_message)
        assert message.data() == {"id": 1}
        assert message.topic() == topic
        assert message.pubsub_name() == "pubsub"
        assert message.source() == dapr_env.app_id  # Dapr's envelope: source = the app id
        assert message.type() == "com.dapr.event.sent"
        subscription.respond_success(message)
        time.sleep(0.3)  # respond_* only queues the ack
    finally:
        subscription.close()


def test_retry_answer_redelivers_on_the_stream(client: Any) -> None:
    topic = unique("retry")
    subscription = client.subscribe("pubsub", topic)
    try:
        client.publish_event("pubsub", topic, "once", data_content_type="text/plain")
        first = bounded(subscription.next_message)
        subscription.respond_retry(first)
        again = bounded(subscription.next_message)
        assert again.id() == first.id()
        assert again.data() == "once"
        subscription.respond_success(again)
        time.sleep(0.3)
    finally:
        subscription.close()


def test_bulk_publish(client: Any) -> None:
    topic = unique("bulk")
    subscription = client.subscribe("pubsub", topic)
    try:
        response = client.publish_events(
            "pubsub", topic, ["one", "two", "three"], data_content_type="text/plain"
        )
        assert response.failed_entries == []
        seen = []
        for _ in range(3):
            message = bounded(subscription.next_message)
            seen.append(message.data())
            subscription.respond_success(message)
        assert sorted(seen) == ["one", "three", "two"]
        time.sleep(0.3)
    finally:
        subscription.close()


# -- configuration -------------------------------------------------------------------------


def test_configuration_get_and_subscribe(dapr_env: Backend, client: Any) -> None:
    key = unique("feature")
    dapr_env.set_config(key, "on")
    got = client.get_configuration("configstore", [key])
    assert got.items[key].value == "on"

    updates: list[dict[str, str]] = []
    arrived = threading.Event()

    def handler(sub_id: str, response: Any) -> None:
        updates.append({k: v.value for k, v in response.items.items()})
        arrived.set()

    sub_id = client.subscribe_configuration("configstore", [key], handler)
    assert sub_id, "the first stream message (its id) did not arrive within the SDK's 5 s"
    dapr_env.set_config(key, "off")
    assert arrived.wait(10), "no configuration update reached the handler"
    assert updates[-1] == {key: "off"}
    assert client.unsubscribe_configuration("configstore", sub_id) is True
    assert client.unsubscribe_configuration("configstore", sub_id) is False


# -- lock ----------------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:The Distributed Lock API is an Alpha version")
def test_lock_is_exclusive_and_released_on_exit(client: Any) -> None:
    from dapr.clients.grpc._response import UnlockResponseStatus

    resource = unique("res")
    with client.try_lock("lockstore", resource, "owner-a", expiry_in_seconds=10) as lock:
        assert lock.success
        other = client.try_lock("lockstore", resource, "owner-b", expiry_in_seconds=10)
        assert not other.success
        assert (
            client.unlock("lockstore", resource, "owner-b").status
            == UnlockResponseStatus.lock_belongs_to_others
        )
    assert (
        client.unlock("lockstore", resource, "owner-a").status
        == UnlockResponseStatus.lock_does_not_exist
    )


# -- secrets -------------------------------------------------------------------------------


def test_secrets(dapr_env: Backend, client: Any) -> None:
    bulk = client.get_bulk_secret("secretstore").secrets
    assert {k: v for k, values in bulk.items() for v in values.values()} == dapr_env.secrets
    for key, value in dapr_env.secrets.items():
        assert client.get_secret("secretstore", key).secret == {key: value}


# -- bindings ------------------------------------------------------------------------------


def test_output_binding(dapr_env: Backend, client: Any) -> None:
    if dapr_env.binding is None:
        import grpc

        # SDK 1.19's invoke_binding does not wrap the RpcError in DaprGrpcError.
        with pytest.raises(grpc.RpcError) as info:
            client.invoke_binding("cache", "create", b"x")
        assert info.value.code().name == "FAILED_PRECONDITION"
        return
    key = unique("bound")
    client.invoke_binding(dapr_env.binding, "create", b"payload", binding_metadata={"key": key})
    got = client.invoke_binding(dapr_env.binding, "get", b"", binding_metadata={"key": key})
    assert got.data == b"payload"


# -- invoke --------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["http", "grpc"])
def test_invoke_method(dapr_env: Backend, protocol: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK's default is HTTP `/v1.0/invoke/{app}/method/{method}`; with
    DAPR_API_METHOD_INVOCATION_PROTOCOL=grpc it calls InvokeService."""
    from dapr.clients import DaprClient

    monkeypatch.setenv("DAPR_API_METHOD_INVOCATION_PROTOCOL", protocol)
    if dapr_env.invoke_target is None:
        # The embedded default has no rpc channel: the SDK gets daprd's answer for that.
        import grpc
        from dapr.clients.exceptions import DaprHttpError

        with DaprClient() as d, pytest.raises((DaprHttpError, grpc.RpcError)) as info:
            d.invoke_method("nobody", "m", data=b"x", http_verb="POST")
        if protocol == "http":
            assert isinstance(info.value, DaprHttpError)
            assert info.value.status_code == 500
            assert info.value.error_code == "ERR_DIRECT_INVOKE"  # an attribute here
        else:
            assert isinstance(info.value, grpc.RpcError)
            assert info.value.code() == grpc.StatusCode.FAILED_PRECONDITION
            assert "rpc.http" in (info.value.details() or "")
        return
    with DaprClient() as d:
        response = d.invoke_method(
            dapr_env.invoke_target, "orders/7", data=b'{"qty": 1}', http_verb="POST"
        )
    echoed = json.loads(response.data)
    assert echoed["method"] == "POST"
    assert echoed["path"] == "/orders/7"
    assert echoed["body"] == '{"qty": 1}'


# -- metadata ------------------------------------------------------------------------------


def test_metadata(dapr_env: Backend, client: Any) -> None:
    client.set_metadata("team", "payments")
    metadata = client.get_metadata()
    assert metadata.application_id == dapr_env.app_id
    assert metadata.extended_metadata.get("team") == "payments"
    names = {c.name for c in metadata.registered_components}
    assert {"statestore", "pubsub", "lockstore", "configstore", "secretstore"} <= names


# -- the API token and the SDK's token-less server streams ----------------------------------


@pytest.mark.parametrize("tokenless", [False, True], ids=["strict", "tokenless-config-subscribe"])
def test_api_token_and_config_subscribe(
    tokenless: bool,
    tmp_path: Path,
    sidecar_factory: Callable[..., Sidecar],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """With an API token, the SDK sends it on unary calls but not on SubscribeConfigurationAlpha1
    (dapr-compat 2.3): strict (daprd's behaviour, our default) refuses that stream, so the SDK's
    subscribe_configuration gives None; `server.allow_tokenless_config_subscribe` lets it in."""
    from dapr.clients import DaprClient

    config = tmp_path / "layotto.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "app": {"id": "tokened"},
                "server": {"allow_tokenless_config_subscribe": tokenless},
                "components": [{"name": "configstore", "type": "configuration.in-memory"}],
            }
        )
    )
    sidecar = sidecar_factory(["-c", str(config), "--api-token", "t0ken"])
    monkeypatch.setenv("DAPR_GRPC_PORT", str(sidecar.grpc_port))
    monkeypatch.setenv("DAPR_HTTP_PORT", str(sidecar.http_port))
    monkeypatch.setenv("DAPR_API_TOKEN", "t0ken")
    with DaprClient() as d:
        assert d.get_configuration("configstore", ["k"]).items == {}  # unary: token sent
        sub_id = d.subscribe_configuration("configstore", ["k"], lambda *_: None)
        if tokenless:
            assert sub_id
            assert d.unsubscribe_configuration("configstore", sub_id) is True
        else:
            assert sub_id is None  # the stream was refused: UNAUTHENTICATED
    monkeypatch.setenv("DAPR_API_TOKEN", "wrong")
    with DaprClient() as d, pytest.raises(Exception, match=r"UNAUTHENTICATED|api token"):
        d.get_configuration("configstore", ["k"])
