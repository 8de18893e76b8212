"""Secrets end to end, `layotto run` as a subprocess: the Redis password of a Dapr `state.redis`
component comes from a `secretstores.local.file` store through `secretKeyRef` (against a private
`redis-server --requirepass`), a wrong or missing secret stops startup with a clear message, and
GetSecret/GetBulkSecret answer on the embedded default and on a local file with a scopes policy."""

from __future__ import annotations

import json
import secrets
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml
from layotto_e2e_support import Sidecar, run_cli
from layotto_e2e_support import redis_server as start_redis

pytestmark = pytest.mark.integration

SidecarFactory = Callable[..., Sidecar]
RPC_TIMEOUT = 5.0
REDIS_START_TIMEOUT = 10.0


# -- a private redis-server that requires a password -----------------------------------------


@dataclass(frozen=True)
class Redis:
    port: int
    password: str


@pytest.fixture(scope="module")
def redis_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    password = "pw-" + secrets.token_hex(8)
    with start_redis(
        tmp_path_factory.mktemp("redis"),
        password=password,
        need="the secretKeyRef -> Redis password test",
        wait=REDIS_START_TIMEOUT,
    ) as port:
        yield Redis(port, password)


def redis_resources(folder: Path, redis: Redis, password: str, key: str = "password") -> Path:
    """A local.file secret store holding `password`, and a Dapr state.redis reading it."""
    folder.mkdir(parents=True, exist_ok=True)
    secrets_file = folder / "secrets.json"
    secrets_file.write_text(json.dumps({"redis": {"password": password, "user": "default"}}))
    documents = [
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "metadata": {"name": "localsecrets"},
            "spec": {
                "type": "secretstores.local.file",
                "version": "v1",
                "metadata": [
                    {"name": "secretsFile", "value": str(secrets_file)},
                    {"name": "multiValued", "value": "true"},
                ],
            },
        },
        {
            "apiVersion": "dapr.io/v1alpha1",
            "kind": "Component",
            "auth": {"secretstore": "localsecrets"},
            "metadata": {"name": "statestore"},
            "spec": {
                "type": "state.redis",
                "version": "v1",
                "metadata": [
                    {"name": "redisHost", "value": f"127.0.0.1:{redis.port}"},
                    {"name": "redisPassword", "secretKeyRef": {"name": "redis", "key": key}},
                ],
            },
        },
    ]
    (folder / "components.yaml").write_text(yaml.safe_dump_all(documents), encoding="utf-8")
    return folder


def run_until_exit(resources: Path) -> subprocess.CompletedProcess[str]:
    return run_cli(
        "run", "--resources-path", str(resources), "--grpc-port", "0", "--http-port", "0",
        timeout=30,
    )  # fmt: skip


def rpc_error(call: Callable[[], object]) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value


# -- the Redis password from a secret store --------------------------------------------------


def test_redis_password_from_a_secret_store(
    sidecar_factory: SidecarFactory, pb2: Any, pb2_grpc: Any, tmp_path: Path, redis_server: Redis
) -> None:
    resources = redis_resources(tmp_path / "res", redis_server, redis_server.password)
    sidecar = sidecar_factory(["--resources-path", str(resources)])
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    item = pb2.StateItem(key="greeting", value=b"hello from redis")
    stub.SaveState(
        pb2.SaveStateRequest(store_name="statestore", states=[item]), timeout=RPC_TIMEOUT
    )
    got = stub.GetState(
        pb2.GetStateRequest(store_name="statestore", key="greeting"), timeout=RPC_TIMEOUT
    )
    assert got.data == b"hello from redis"
    assert got.etag
    # The store itself is readable too, as the multi-valued secret it is.
    secret = stub.GetSecret(
        pb2.GetSecretRequest(store_name="localsecrets", key="redis"), timeout=RPC_TIMEOUT
    )
    assert dict(secret.data) == {"password": redis_server.password, "user": "default"}
    assert redis_server.password not in sidecar.log()


def test_a_wrong_redis_password_stops_startup(tmp_path: Path, redis_server: Redis) -> None:
    wrong = "wrong-" + secrets.token_hex(8)
    result = run_until_exit(redis_resources(tmp_path / "res", redis_server, wrong))
    assert result.returncode != 0
    assert "component 'statestore' (state.redis) failed to start" in result.stderr
    assert "authentication failed" in result.stderr
    assert "redisPassword" in result.stderr
    assert wrong not in result.stderr
    assert "Traceback" not in result.stderr


def test_a_missing_secret_key_stops_startup_naming_it(tmp_path: Path, redis_server: Redis) -> None:
    resources = redis_resources(tmp_path / "res", redis_server, redis_server.password, key="pass")
    result = run_until_exit(resources)
    assert result.returncode != 0
    message = result.stderr
    assert "component 'statestore' (state.redis)" in message
    assert "metadata.redisPassword" in message
    assert "secret 'redis' key 'pass' in secret store 'localsecrets'" in message
    assert "has no key 'pass' (its keys: 'password', 'user')" in message
    assert redis_server.password not in message
    assert "Traceback" not in message


# -- GetSecret / GetBulkSecret ---------------------------------------------------------------


def test_the_embedded_default_secret_store(sidecar: Sidecar, pb2: Any, pb2_grpc: Any) -> None:
    stub = pb2_grpc.RuntimeStub(sidecar.channel())
    bulk = stub.GetBulkSecret(
        pb2.GetBulkSecretRequest(store_name="secretstore"), timeout=RPC_TIMEOUT
    )
    assert dict(bulk.data) == {}
    err = rpc_error(
        lambda: stub.GetSecret(
            pb2.GetSecretRequest(store_name="secretstore", key="nope"), timeout=RPC_TIMEOUT
        )
    )
    assert err.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    assert "nope" in err.details()  # type: ignore[attr-defined]
    info = sidecar.get("/actuator/info").json()
    assert {"name": "secretstore", "type": "secretstores.in-memory"}.items() <= next(
        c for c in info["components"] if c["name"] == "secretstore"
    ).items()


@pytest.fixture
def scoped_file_sidecar(sidecar_factory: SidecarFactory, tmp_path: Path) -> Sidecar:
    secrets_file = tmp_path / "secrets.json"
    secrets_file.write_text(
        json.dumps({"db": {"user": "app", "password": "pw"}, "token": "t0k", "admin": "root"})
    )
    config = tmp_path / "layotto.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "components": [
                    {
                        "name": "files",
                        "type": "secretstores.local.file",
                        "metadata": {"secretsFile": str(secrets_file), "multiValued": True},
                    }
                ],
                "secrets": {"scopes": {"files": {"denied_secrets": ["admin"]}}},
            }
        ),
        encoding="utf-8",
    )
    return sidecar_factory(["--config", str(config)])


def test_local_file_secrets_with_a_scopes_policy(
    scoped_file_sidecar: Sidecar, pb2: Any, pb2_grpc: Any
) -> None:
    stub = pb2_grpc.RuntimeStub(scoped_file_sidecar.channel())

    def get(key: str) -> dict[str, str]:
        request = pb2.GetSecretRequest(store_name="files", key=key)
        return dict(stub.GetSecret(request, timeout=RPC_TIMEOUT).data)

    assert get("db") == {"user": "app", "password": "pw"}
    assert get("token") == {"token": "t0k"}
    denied = rpc_error(lambda: get("admin"))
    assert denied.code() == grpc.StatusCode.PERMISSION_DENIED  # type: ignore[attr-defined]
    assert "root" not in (denied.details() or "")  # type: ignore[attr-defined]
    missing = rpc_error(lambda: get("nope"))
    assert missing.code() == grpc.StatusCode.INTERNAL  # type: ignore[attr-defined]
    unknown = rpc_error(
        lambda: stub.GetSecret(
            pb2.GetSecretRequest(store_name="vault", key="db"), timeout=RPC_TIMEOUT
        )
    )
    assert unknown.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]

    bulk = stub.GetBulkSecret(pb2.GetBulkSecretRequest(store_name="files"), timeout=RPC_TIMEOUT)
    assert {key: dict(value.secrets) for key, value in bulk.data.items()} == {
        "db": {"user": "app", "password": "pw"},
        "token": {"token": "t0k"},
    }  # the denied secret is left out
    # Dapr's metadata endpoint reports the multi-valued capability.
    metadata = scoped_file_sidecar.get("/v1.0/metadata").json()
    [files] = [c for c in metadata["components"] if c["name"] == "files"]
    assert files["capabilities"] == ["MULTIPLE_KEY_VALUES_PER_SECRET"]
