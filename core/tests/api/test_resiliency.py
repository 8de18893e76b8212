"""Dapr `Resiliency` resources through the running sidecar: loading (resources folder, native
section, scopes, errors), app invocation retries with `matching`, a circuit breaker in front
of a failing app, and the policies reported by /actuator/info."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import grpc
import httpx
import pytest
from dapr.proto.runtime.v1 import dapr_pb2_grpc, metadata_pb2
from layotto.config import load_config
from layotto.errors import ConfigError
from layotto.plugin import Kind
from layotto.resiliency import Resiliency
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_core_test_helpers import serve_asgi
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.anyio


class FlakyTarget:
    """`/fail/<code>/<n>/<key>` answers `code` to the first n calls per key, then 200."""

    def __init__(self) -> None:
        self.calls: dict[str, int] = {}

    async def handle(self, request: Request) -> Response:
        code, failures, key = (request.path_params[p] for p in ("code", "n", "key"))
        seen = self.calls[key] = self.calls.get(key, 0) + 1
        if seen <= int(failures):
            return PlainTextResponse(f"failure {seen}", status_code=int(code))
        return PlainTextResponse(f"ok after {seen}")


RESILIENCY = """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {{name: invoke-policies}}
scopes: [caller]
spec:
  policies:
    retries:
      fiveXX:
        policy: constant
        duration: 10ms
        maxRetries: 3
        matching: {{httpStatusCodes: "500-599"}}
      DefaultAppRetryPolicy: {{policy: constant, duration: 10ms, maxRetries: 1}}
    circuitBreakers:
      fragile: {{maxRequests: 1, timeout: 60s, trip: consecutiveFailures >= 2}}
  targets:
    apps:
      ext: {{retry: fiveXX}}
      breakable: {{circuitBreaker: fragile}}
---
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {{name: not-ours}}
scopes: [someone-else]
spec:
  policies:
    retries:
      DefaultRetryPolicy: {{policy: constant, duration: 10ms, maxRetries: 50}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: ext}}
spec: {{baseUrl: "http://127.0.0.1:{port}"}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: other}}
spec: {{baseUrl: "http://127.0.0.1:{port}"}}
---
apiVersion: dapr.io/v1alpha1
kind: HTTPEndpoint
metadata: {{name: breakable}}
spec: {{baseUrl: "http://127.0.0.1:{port}"}}
"""


@pytest.fixture
def target() -> FlakyTarget:
    return FlakyTarget()


@pytest.fixture
async def sidecar(tmp_path: Path, target: FlakyTarget) -> AsyncIterator[Sidecar]:
    route = Route("/fail/{code}/{n}/{key}", target.handle, methods=["GET", "POST"])
    app = Starlette(routes=[route])
    async with serve_asgi(app) as port:
        resources = tmp_path / "resources"
        resources.mkdir()
        (resources / "all.yaml").write_text(RESILIENCY.format(port=port), encoding="utf-8")
        config = load_config(None, [resources], app_id="caller")
        async with run_sidecar(config) as running:
            yield running


@pytest.fixture
async def http(sidecar: Sidecar) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as client:
        yield client


@pytest.mark.parametrize(
    ("path", "status", "text", "calls"),
    [
        pytest.param("503/2/a", 200, "ok after 3", 3, id="matching-codes-retried-until-good"),
        pytest.param("404/2/b", 404, "failure 1", 1, id="other-codes-passed-back-at-once"),
        # the first call and maxRetries: 3, then the last failed answer is passed back
        pytest.param("500/10/c", 500, "failure 4", 4, id="last-failure-when-retries-run-out"),
    ],
)
async def test_retries_follow_the_matching_codes(
    http: httpx.AsyncClient, target: FlakyTarget, path: str, status: int, text: str, calls: int
) -> None:
    response = await http.get(f"/v1.0/invoke/ext/method/fail/{path}")
    assert response.status_code == status
    assert response.text == text
    assert target.calls[path[-1]] == calls


async def test_the_default_app_policy_covers_other_targets(
    http: httpx.AsyncClient, target: FlakyTarget
) -> None:
    # DefaultAppRetryPolicy (1 retry), no matching: any answer outside 200-399 is retried;
    # the resource scoped to another app (50 retries) is not loaded.
    response = await http.post("/v1.0/invoke/other/method/fail/409/5/d")
    assert response.status_code == 409
    assert target.calls["d"] == 2


async def test_an_open_breaker_stops_calls_to_the_app(
    http: httpx.AsyncClient, target: FlakyTarget
) -> None:
    for _ in range(2):
        response = await http.get("/v1.0/invoke/breakable/method/fail/503/100/e")
        assert response.status_code == 503
    response = await http.get("/v1.0/invoke/breakable/method/fail/503/100/e")
    assert response.status_code == 500
    body = response.json()
    assert body["errorCode"] == "ERR_DIRECT_INVOKE"
    assert "circuit breaker" in body["message"]
    assert target.calls["e"] == 2  # the third call never reached the app


async def test_metadata_lists_the_resources_that_apply(http: httpx.AsyncClient) -> None:
    metadata = (await http.get("/v1.0/metadata")).json()
    # The resource scoped to another app is not loaded, so not listed.
    assert metadata["resiliencies"] == [{"name": "invoke-policies"}]


async def test_grpc_metadata_lists_them_too(sidecar: Sidecar) -> None:
    channel = grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}")
    try:
        stub = dapr_pb2_grpc.DaprStub(channel)
        reply = await stub.GetMetadata(metadata_pb2.GetMetadataRequest())
    finally:
        await channel.close()
    assert [r.name for r in reply.resiliencies] == ["invoke-policies"]


async def test_actuator_info_reports_the_policies_and_breaker_state(
    http: httpx.AsyncClient,
) -> None:
    for _ in range(2):
        await http.get("/v1.0/invoke/breakable/method/fail/503/100/f")
    info = (await http.get("/actuator/info")).json()
    targets = {(t["target"], t.get("name")) for t in info["resiliency"]}
    assert ("app", "ext") in targets
    breakers = [t for t in info["resiliency"] if t["target"] == "breaker"]
    assert any(b["state"] == "open" for b in breakers)


# -- loading -----------------------------------------------------------------------------------


def test_the_native_section_and_resources_merge(tmp_path: Path) -> None:
    native = tmp_path / "layotto.yaml"
    native.write_text(
        """\
app: {id: caller}
components:
- {name: statestore, type: state.in-memory}
resiliency:
  policies:
    timeouts: {quick: 200ms}
  targets:
    components:
      statestore: {outbound: {timeout: quick, retry: fromResource}}
""",
        encoding="utf-8",
    )
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "r.yaml").write_text(
        """\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {name: r}
spec:
  policies:
    retries:
      fromResource: {policy: exponential, maxInterval: 2s, maxRetries: 4}
""",
        encoding="utf-8",
    )
    config = load_config(native, [resources])
    policy = Resiliency.from_spec(config.resiliency).component_outbound("statestore", Kind.STATE)
    assert policy.timeout == 0.2
    assert policy.retry is not None
    assert policy.retry.max_retries == 4


@pytest.mark.parametrize(
    ("spec", "expected"),
    [
        (
            "targets: {apps: {b: {retry: missing}}}",
            "spec.targets.apps.b.retry: no retry policy named 'missing'",
        ),
        (
            "policies: {retries: {r: {policy: sometimes}}}",
            "spec.policies.retries.r.policy",
        ),
        (
            "policies: {circuitBreakers: {c: {trip: 'requests + 1'}}}",
            "spec.policies.circuitBreakers.c.trip",
        ),
        (
            "policies: {timeouts: {t: soon}}",
            "spec.policies.timeouts.t",
        ),
    ],
)
def test_errors_name_the_file_and_the_field(tmp_path: Path, spec: str, expected: str) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    (resources / "bad.yaml").write_text(
        "apiVersion: dapr.io/v1alpha1\nkind: Resiliency\nmetadata: {name: bad}\n"
        f"spec: {{{spec}}}\n",
        encoding="utf-8",
    )
    with pytest.raises(ConfigError) as caught:
        load_config(None, [resources])
    message = str(caught.value)
    assert "bad.yaml" in message
    assert expected in message


def test_the_same_policy_in_two_resources_is_an_error(tmp_path: Path) -> None:
    resources = tmp_path / "resources"
    resources.mkdir()
    for name in ("a", "b"):
        (resources / f"{name}.yaml").write_text(
            f"""\
apiVersion: dapr.io/v1alpha1
kind: Resiliency
metadata: {{name: {name}}}
spec: {{policies: {{timeouts: {{general: 5s}}}}}}
""",
            encoding="utf-8",
        )
    with pytest.raises(ConfigError) as caught:
        load_config(None, [resources])
    assert "general" in str(caught.value)
    assert "a.yaml" in str(caught.value)
    assert "b.yaml" in str(caught.value)


def test_no_resiliency_configured_means_no_policies() -> None:
    info: Any = Resiliency.from_spec(load_config().resiliency).describe()
    assert info == []
