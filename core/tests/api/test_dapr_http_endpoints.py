"""Invoking non-Dapr HTTP endpoints (daprd's `HTTPEndpoint` resources and full URLs) over the
Dapr HTTP and gRPC APIs, against a real HTTP server: the endpoint's `baseUrl`, its headers
(plain, and read from a `secretstores.local.file` secret at startup), the caller's verb, query,
body and headers passed on; its answer passed back."""

from __future__ import annotations

import json
import shutil
import socket
import ssl
import subprocess
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial
from pathlib import Path
from urllib.parse import quote

import anyio
import grpc
import httpx
import pytest
import uvicorn
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2
from layotto.actors.supervisor import first_leaf
from layotto.config import RuntimeConfig, load_config
from layotto.errors import ConfigError
from layotto.testing import skip_or_fail
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import (
    assert_passed_through,
    assert_unreachable,
    echoed,
    post_orders_request,
    target_app,
    until,
)
from layotto_core_test_helpers import free_port, serve_asgi
from starlette.applications import Starlette

pytestmark = pytest.mark.anyio

SECRET = "Bearer s3cret"


TARGET = target_app("/api")


def local_secrets(file: Path, name: str, secrets: dict[str, dict[str, str]]) -> str:
    """Writes `secrets` to `file`; the YAML of a multi-valued `secretstores.local.file`
    component `name` reading it."""
    file.write_text(json.dumps(secrets), encoding="utf-8")
    return f"""\
apiVersion: dapr.io/v1alpha1
kind: Component
metadata: {{name: {name}}}
spec:
  type: secretstores.local.file
  metadata:
  - {{name: secretsFile, value: "{file}"}}
  - {{name: multiValued, value: "true"}}
"""


def endpoints_config(tmp_path: Path, port: int, secret_key: str = "token") -> RuntimeConfig:
    """A caller app with an `rpc.http` channel (app `target` is the same server, without the
    `/api` prefix), a local-file secret store and three HTTPEndpoints (one scoped away)."""
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "secrets.yaml").write_text(
        local_secrets(tmp_path / "secrets.json", "localsecrets", {"gh": {"token": SECRET}}),
        encoding="utf-8",
    )
    (resources / "endpoints.yaml").write_text(
        f"""\
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: ext}}
spec:
  baseUrl: http://127.0.0.1:{port}/api/
  headers:
  - {{name: X-Plain, value: p1}}
  - name: Authorization
    secretKeyRef: {{name: gh, key: {secret_key}}}
auth: {{secretStore: localsecrets}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: down}}
spec:
  baseUrl: http://127.0.0.1:{free_port()}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: hidden}}
spec:
  baseUrl: http://127.0.0.1:{port}/hidden
scopes: [someone-else]
""",
        encoding="utf-8",
    )
    native = tmp_path / "layotto.yaml"
    native.write_text(
        f"""\
app: {{id: caller}}
components:
- {{name: http, type: rpc.http}}
- name: apps
  type: nameresolution.static
  metadata: {{apps: {{target: ["127.0.0.1:{port}"]}}}}
""",
        encoding="utf-8",
    )
    return load_config(native, [resources])


@pytest.fixture
async def target_port() -> AsyncIterator[int]:
    async with serve_asgi(TARGET) as port:
        yield port


@pytest.fixture
async def sidecar(tmp_path: Path, target_port: int) -> AsyncIterator[Sidecar]:
    async with run_sidecar(endpoints_config(tmp_path, target_port)) as running:
        yield running


async def test_an_endpoint_by_name_gets_the_call_and_its_headers(http: httpx.AsyncClient) -> None:
    response = await http.post(
        "/v1.0/invoke/ext/method/orders/7",
        params={"a": "1", "b": "x y"},
        content=b'{"qty": 1}',
        headers={"content-type": "application/json", "x-trace": "t1", "x-plain": "caller's"},
    )
    got = echoed(response)
    assert got["verb"] == "POST"
    assert got["path"] == "/api/orders/7"  # baseUrl's trailing / and the method's: one
    assert got["query"] == "a=1&b=x+y"
    assert got["body"] == '{"qty": 1}'
    headers = got["headers"]
    assert headers["content-type"] == "application/json"
    assert headers["x-trace"] == "t1"
    # The endpoint's headers, over the caller's own; the secret one read at startup.
    assert headers["x-plain"] == "p1"
    assert headers["authorization"] == SECRET
    assert response.headers["x-answered-by"] == "target"


@pytest.mark.parametrize("verb", ["GET", "PUT", "DELETE", "PATCH"])
async def test_every_verb_is_passed_on(http: httpx.AsyncClient, verb: str) -> None:
    response = await http.request(verb, "/v1.0/invoke/ext/method/things")
    assert echoed(response)["verb"] == verb


async def test_the_dapr_app_id_header_names_an_endpoint(http: httpx.AsyncClient) -> None:
    got = echoed(await http.put("/things/3", content=b"x", headers={"dapr-app-id": "ext"}))
    assert (got["verb"], got["path"], got["body"]) == ("PUT", "/api/things/3", "x")
    assert "dapr-app-id" not in got["headers"]
    assert got["headers"]["authorization"] == SECRET


@pytest.mark.parametrize("encoded", [True, False])
async def test_a_full_url_is_called_directly(
    http: httpx.AsyncClient, target_port: int, encoded: bool
) -> None:
    url = f"http://127.0.0.1:{target_port}"
    target = quote(url, safe="") if encoded else url
    got = echoed(await http.get(f"/v1.0/invoke/{target}/method/x/y", params={"q": "1"}))
    assert (got["path"], got["query"]) == ("/x/y", "q=1")
    # No endpoint's headers on a plain URL.
    assert "x-plain" not in got["headers"]
    assert "authorization" not in got["headers"]


async def test_an_unknown_name_is_an_app_id(http: httpx.AsyncClient) -> None:
    # `target` is no endpoint: the rpc.http channel calls it, without /api and the headers.
    got = echoed(await http.get("/v1.0/invoke/target/method/x"))
    assert got["path"] == "/x"
    assert "x-plain" not in got["headers"]


async def test_a_scoped_out_endpoint_is_not_loaded(http: httpx.AsyncClient) -> None:
    # `hidden` is scoped to another app: an unknown app id, which no resolver knows.
    response = await http.get("/v1.0/invoke/hidden/method/x")
    assert response.status_code == 500
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"


@pytest.mark.parametrize("code", [400, 404, 418, 503])
async def test_the_endpoints_error_answer_passes_through(
    http: httpx.AsyncClient, code: int
) -> None:
    assert_passed_through(await http.get(f"/v1.0/invoke/ext/method/status/{code}"), code)


async def test_an_unreachable_endpoint_is_500(http: httpx.AsyncClient) -> None:
    assert_unreachable(await http.get("/v1.0/invoke/down/method/x"), "down")


async def test_an_endpoint_past_the_timeout_is_504(http: httpx.AsyncClient) -> None:
    response = await http.get(
        "/v1.0/invoke/ext/method/slow", headers={"rpc_request_timeout": "200"}
    )
    assert response.status_code == 504
    assert response.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_metadata_lists_the_loaded_endpoints(http: httpx.AsyncClient) -> None:
    body = (await http.get("/v1.0/metadata")).json()
    assert body["httpEndpoints"] == [{"name": "ext"}, {"name": "down"}]


async def test_grpc_metadata_lists_the_loaded_endpoints(sidecar: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        got = await dapr_pb2_grpc.DaprStub(chan).GetMetadata(
            metadata_pb2.GetMetadataRequest(), timeout=10
        )
    assert [e.name for e in got.http_endpoints] == ["ext", "down"]


async def test_grpc_invoke_service_reaches_an_endpoint(sidecar: Sidecar) -> None:
    async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
        request = post_orders_request("ext")
        response = await dapr_pb2_grpc.DaprStub(chan).InvokeService(request, timeout=10)
    got = json.loads(response.data.value)
    assert (got["verb"], got["path"], got["query"], got["body"]) == (
        "POST",
        "/api/orders/1",
        "a=1",
        "payload",
    )
    assert got["headers"]["authorization"] == SECRET


async def test_a_secret_header_that_cannot_be_read_stops_startup(
    tmp_path: Path, target_port: int
) -> None:
    config = endpoints_config(tmp_path, target_port, secret_key="nope")
    with pytest.raises(BaseExceptionGroup) as info:
        async with run_sidecar(config):
            pass
    error = first_leaf(info.value)
    assert isinstance(error, ConfigError)
    message = str(error)
    assert "HTTPEndpoint 'ext'" in message
    assert "spec.headers.authorization" in message
    assert "no key 'nope'" in message
    assert SECRET not in message


# -- clientTLS: an https endpoint that asks for a client certificate ---------------------------


def make_certificates(directory: Path) -> dict[str, str]:
    """A throwaway CA, a server certificate for 127.0.0.1 and a client one (openssl): PEM
    texts by name (`ca`, `server`, `server.key`, `client`, `client.key`)."""
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail("openssl not installed (needed to make test certificates)")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], cwd=directory, check=True, capture_output=True)

    curve = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes"]
    run("req", "-x509", *curve, "-keyout", "ca.key", "-out", "ca.pem", "-days", "2",
        "-subj", "/CN=layotto-test-ca")  # fmt: skip
    for name, usage in (("server", "serverAuth"), ("client", "clientAuth")):
        (directory / f"{name}.ext").write_text(
            f"subjectAltName=IP:127.0.0.1\nextendedKeyUsage={usage}\n", encoding="utf-8"
        )
        run("req", *curve, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", f"/CN={name}")
        run("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key",
            "-CAcreateserial", "-out", f"{name}.pem", "-days", "2",
            "-extfile", f"{name}.ext")  # fmt: skip
    files = {"ca": "ca.pem", "server": "server.pem", "server.key": "server.key"}
    files |= {"client": "client.pem", "client.key": "client.key"}
    return {name: (directory / file).read_text(encoding="utf-8") for name, file in files.items()}


@asynccontextmanager
async def serve_https(app: Starlette, directory: Path) -> AsyncIterator[int]:
    """`app` over https on 127.0.0.1, requiring a client certificate signed by `ca.pem`."""
    sock = socket.create_server(("127.0.0.1", 0))
    config = uvicorn.Config(
        app,
        lifespan="off",
        log_config=None,
        access_log=False,
        http="h11",
        ws="none",
        loop="none",
        ssl_certfile=str(directory / "server.pem"),
        ssl_keyfile=str(directory / "server.key"),
        ssl_ca_certs=str(directory / "ca.pem"),
        ssl_cert_reqs=ssl.CERT_REQUIRED,
    )
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(partial(server.serve, sockets=[sock]))
        await until(lambda: server.started)
        try:
            yield int(sock.getsockname()[1])
        finally:
            server.should_exit = True
    sock.close()


def tls_config(tmp_path: Path, port: int, pems: dict[str, str]) -> RuntimeConfig:
    secrets = {"tls": {"cert": pems["client"], "key": pems["client.key"]}}
    store = local_secrets(tmp_path / "tls-secrets.json", "tlssecrets", secrets)
    ca = json.dumps(pems["ca"])  # a YAML double-quoted scalar is a JSON string
    resources = tmp_path / "tls-resources"
    resources.mkdir()
    (resources / "all.yaml").write_text(
        store
        + f"""\
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: secure}}
spec:
  baseUrl: https://127.0.0.1:{port}
  clientTLS:
    rootCA: {{value: {ca}}}
    certificate: {{secretKeyRef: {{name: tls, key: cert}}}}
    privateKey: {{secretKeyRef: {{name: tls, key: key}}}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: nocert}}
spec:
  baseUrl: https://127.0.0.1:{port}
  clientTLS:
    rootCA: {{value: {ca}}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: untrusted}}
spec:
  baseUrl: https://127.0.0.1:{port}
""",
        encoding="utf-8",
    )
    return load_config(None, [resources], app_id="caller")


async def test_client_tls_trusts_the_root_ca_and_presents_the_certificate(tmp_path: Path) -> None:
    pems = make_certificates(tmp_path)
    async with (
        serve_https(TARGET, tmp_path) as port,
        run_sidecar(tls_config(tmp_path, port, pems)) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        got = echoed(await http.post("/v1.0/invoke/secure/method/orders", content=b"x"))
        assert (got["path"], got["body"]) == ("/orders", "x")
        # Without the client certificate the server refuses; without the CA the sidecar does.
        for name in ("nocert", "untrusted"):
            refused = await http.get(f"/v1.0/invoke/{name}/method/orders")
            assert refused.status_code == 500, name
            assert refused.json()["errorCode"] == "ERR_DIRECT_INVOKE"


async def test_a_client_certificate_that_does_not_load_stops_startup(tmp_path: Path) -> None:
    pems = make_certificates(tmp_path)
    pems["client.key"] = pems["ca"]  # not a key
    with pytest.raises(BaseExceptionGroup) as info:
        async with run_sidecar(tls_config(tmp_path, free_port(), pems)):
            pass
    error = first_leaf(info.value)
    assert isinstance(error, ConfigError)
    assert "HTTPEndpoint 'secure'" in str(error)
    assert "spec.clientTLS.certificate and privateKey do not load" in str(error)
    assert "BEGIN" not in str(error)
