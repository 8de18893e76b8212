"""Prometheus metrics (`server.metrics_port`): a sidecar in-process on random ports, real gRPC
(both APIs), HTTP, publish and subscribe calls, then `GET /metrics` scraped and parsed; the
counters must have moved with daprd's names and labels. Plus: no metrics port configured means
nothing listens, a bad request is counted with its status, resiliency activations, and two
sidecars in one process keep separate registries."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import anyio
import httpx
import pytest
from grpclib import GRPCError
from grpclib.const import Status
from layotto._proto.dapr.proto.runtime import v1 as dapr_pb
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import RuntimeConfig, embedded_default_components
from layotto.errors import BackendUnavailable
from layotto.meter import NO_METER
from layotto.metrics import PrometheusMeter
from layotto.plugin import Kind
from layotto.resiliency import Resiliency, ResiliencySpec
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import until
from layotto_core_test_helpers import free_port, serve_asgi
from prometheus_client.parser import text_string_to_metric_families
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

pytestmark = pytest.mark.anyio

APP_ID = "shop"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # grpclib is asyncio-only


def config(**server: Any) -> RuntimeConfig:
    return RuntimeConfig.model_validate(
        {
            "app": {"id": APP_ID, "protocol": "http"},
            "server": server,
            "components": [c.model_dump() for c in embedded_default_components()],
            "pubsub": {"retry_initial_interval": 0.02, "retry_max_interval": 0.05},
        }
    )


async def scrape(sidecar: Sidecar) -> Samples:
    port = sidecar.runtime.metrics_port
    assert port
    async with httpx.AsyncClient() as client:
        response = await client.get(f"http://127.0.0.1:{port}/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


_SAMPLE = re.compile(r"^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$")
_LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse(text: str) -> Samples:
    """Every sample by its name as written (prometheus_client's parser would rename daprd's
    counters to `..._total`); the text must also be valid for that parser."""
    list(text_string_to_metric_families(text))
    samples: Samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = _SAMPLE.match(line)
        assert match, line
        name, labels, number = match.groups()
        pairs = frozenset(_LABEL.findall(labels or ""))
        samples[(name, pairs)] = float(number)
    return samples


def value(samples: Samples, metric: str, /, **labels: str) -> float:
    return samples.get((metric, frozenset(labels.items())), 0.0)


def names(samples: Samples) -> set[str]:
    return {name for name, _ in samples}


# -- an HTTP app subscribed to three topics ------------------------------------------------


class App:
    def __init__(self) -> None:
        self.posted: dict[str, int] = {}
        self.asgi = Starlette(
            routes=[
                Route("/dapr/subscribe", self.subscribe),
                Route("/healthz", lambda request: Response(status_code=200)),
                Route("/{topic}", self.deliver, methods=["POST"]),
            ]
        )

    async def subscribe(self, request: Request) -> Response:
        return JSONResponse(
            [{"pubsubname": "pubsub", "topic": t, "route": f"/{t}"} for t in ("ok", "flaky", "no")]
        )

    async def deliver(self, request: Request) -> Response:
        topic = request.path_params["topic"]
        nth = self.posted[topic] = self.posted.get(topic, 0) + 1
        if topic == "flaky" and nth == 1:
            return JSONResponse({"status": "RETRY"})
        if topic == "no":
            return JSONResponse({"status": "DROP"})
        return JSONResponse({"status": "SUCCESS"})


@asynccontextmanager
async def sidecar_with_app(app: App) -> AsyncIterator[Sidecar]:
    async with (
        serve_asgi(app.asgi) as port,
        run_sidecar(config(metrics_port=0), grace_period=0.5, app_port=port) as sidecar,
    ):
        dispatcher = sidecar.runtime.dispatcher
        assert dispatcher is not None
        await until(lambda: len(dispatcher.info()) == 3, within=10)
        yield sidecar


# -- the tests -----------------------------------------------------------------------------


async def test_grpc_http_publish_and_deliveries_are_counted_with_daprs_labels() -> None:
    app = App()
    async with sidecar_with_app(app) as sc:
        channel = sc.channel()
        try:
            layotto = pb.RuntimeStub(channel)
            dapr = dapr_pb.DaprStub(channel)
            await layotto.save_state(
                pb.SaveStateRequest(
                    store_name="statestore", states=[pb.StateItem(key="k", value=b"v")]
                )
            )
            await layotto.get_state(pb.GetStateRequest(store_name="statestore", key="k"))
            await dapr.get_state(dapr_pb.GetStateRequest(store_name="statestore", key="k"))
            # A bad request: counted with the status it was answered with.
            with pytest.raises(GRPCError) as bad:
                await dapr.get_state(dapr_pb.GetStateRequest(store_name="nope", key="k"))
            assert bad.value.status is Status.INVALID_ARGUMENT
        finally:
            channel.close()
        async with httpx.AsyncClient(base_url=sc.http_url) as http:
            assert (await http.get("/v1.0/state/statestore/user-42")).status_code == 204
            for topic in ("ok", "flaky", "no"):
                published = await http.post(f"/v1.0/publish/pubsub/{topic}", json={"n": 1})
                assert published.status_code == 204
        await until(lambda: app.posted == {"ok": 1, "flaky": 2, "no": 1}, within=10)
        # Each attempt is recorded once the app's answer is back: wait for the last one.
        meter = sc.runtime.meter
        assert isinstance(meter, PrometheusMeter)
        ingress = "dapr_component_pubsub_ingress_count"
        await until(
            lambda: (
                sum(v for (n, _), v in parse(meter.render().decode()).items() if n == ingress) == 4
            )
        )
        samples = await scrape(sc)

    grpc = "dapr_grpc_io_server_completed_rpcs"
    layotto_get = "/spec.proto.runtime.v1.Runtime/GetState"
    dapr_get = "/dapr.proto.runtime.v1.Dapr/GetState"
    ok = {"app_id": APP_ID, "grpc_server_status": "OK"}
    assert value(samples, grpc, grpc_server_method=layotto_get, **ok) == 1
    assert value(samples, grpc, grpc_server_method=dapr_get, **ok) == 1
    invalid = {"app_id": APP_ID, "grpc_server_method": dapr_get}
    assert value(samples, grpc, grpc_server_status="INVALID_ARGUMENT", **invalid) == 1
    latency = "dapr_grpc_io_server_server_latency_count"
    assert value(samples, latency, grpc_server_method=dapr_get, **ok) == 1

    # HTTP: the route template, never the key.
    route = {"app_id": APP_ID, "method": "GET", "path": "/v1.0/state/{store}/{key:path}"}
    assert value(samples, "dapr_http_server_request_count", **route) == 1
    assert value(samples, "dapr_http_server_latency_count", status="204", **route) == 1
    assert not any("user-42" in str(labels) for _, labels in samples)

    # Components: state calls from both APIs (the bad store never reached a component).
    state = {"app_id": APP_ID, "component": "statestore", "success": "true"}
    assert value(samples, "dapr_component_state_count", operation="get", **state) == 3
    assert value(samples, "dapr_component_state_count", operation="set", **state) == 1
    assert value(samples, "dapr_runtime_component_loaded", app_id=APP_ID) == 6

    # Pub/sub: one egress per publish, one ingress per delivery attempt.
    for topic in ("ok", "flaky", "no"):
        egress = {"app_id": APP_ID, "component": "pubsub", "topic": topic, "success": "true"}
        assert value(samples, "dapr_component_pubsub_egress_count", **egress) == 1
    ingress = "dapr_component_pubsub_ingress_count"
    base = {"app_id": APP_ID, "component": "pubsub"}
    assert value(samples, ingress, topic="ok", process_status="success", **base) == 1
    assert value(samples, ingress, topic="flaky", process_status="retry", **base) == 1
    assert value(samples, ingress, topic="flaky", process_status="success", **base) == 1
    assert value(samples, ingress, topic="no", process_status="drop", **base) == 1
    assert "dapr_component_pubsub_ingress_latencies_count" in names(samples)
    assert "process_resident_memory_bytes" in names(samples)


async def test_info_names_the_metrics_port() -> None:
    async with run_sidecar(config(metrics_port=0)) as sc, httpx.AsyncClient() as http:
        info = (await http.get(f"{sc.http_url}/actuator/info")).json()
        assert info["metrics"] == {
            "enabled": True,
            "path": "/metrics",
            "port": sc.runtime.metrics_port,
        }
        other = await http.get(f"http://127.0.0.1:{sc.runtime.metrics_port}/other")
        assert other.status_code == 404


async def test_http_labels_stay_bounded() -> None:
    """Neither a client's method nor its path becomes a label value."""
    async with (
        run_sidecar(config(metrics_port=0), api_token="t") as sc,
        httpx.AsyncClient() as http,
    ):
        await http.request("BREW", f"{sc.http_url}/v1.0/healthz")
        await http.get(f"{sc.http_url}/v1.0/state/statestore/order-1")  # no token: 401
        samples = await scrape(sc)
    requests = "dapr_http_server_request_count"
    assert value(samples, requests, app_id=APP_ID, method="OTHER", path="/v1.0/healthz") == 1
    refused = {"app_id": APP_ID, "method": "GET", "path": "unmatched", "status": "401"}
    assert value(samples, "dapr_http_server_response_count", **refused) == 1
    assert not any("BREW" in str(labels) or "order-1" in str(labels) for _, labels in samples)


async def test_without_a_metrics_port_nothing_is_recorded_or_served() -> None:
    async with run_sidecar(config()) as sc, httpx.AsyncClient() as http:
        assert sc.runtime.metrics_port is None
        assert sc.runtime.metrics_server is None  # no actor, no socket
        assert sc.runtime.meter is NO_METER
        info = (await http.get(f"{sc.http_url}/actuator/info")).json()
        assert info["metrics"] == {"enabled": False}


async def test_a_configured_port_that_is_taken_fails_startup_an_implied_one_only_warns() -> None:
    port = free_port()
    with anyio.fail_after(20):
        async with run_sidecar(config(metrics_port=port)) as first:
            assert first.runtime.metrics_port == port
            # The CLI's implied 9090: another sidecar has it, so this one serves no metrics.
            async with run_sidecar(config(metrics_port=port, metrics_optional=True)) as second:
                assert second.runtime.metrics_port is None
                assert second.runtime.info()["metrics"]["unavailable"].startswith(f"port {port}")
                stopping = anyio.current_time()
            # ... and the idle metrics actor does not hold up the shutdown.
            assert anyio.current_time() - stopping < 1.5
            with pytest.raises(Exception) as taken:  # noqa: PT011
                await _start_and_stop(config(metrics_port=port))
            assert _caused_by(taken.value, OSError)


async def _start_and_stop(cfg: RuntimeConfig) -> None:
    async with run_sidecar(cfg):
        pass


def _caused_by(err: BaseException, kind: type[BaseException]) -> bool:
    if isinstance(err, kind):
        return True
    if isinstance(err, BaseExceptionGroup):
        return any(_caused_by(e, kind) for e in err.exceptions)
    cause = err.__cause__ or err.__context__
    return cause is not None and _caused_by(cause, kind)


async def test_two_sidecars_in_one_process_keep_separate_registries() -> None:
    async with (
        run_sidecar(config(metrics_port=0)) as a,
        run_sidecar(config(metrics_port=0)) as b,
        httpx.AsyncClient() as http,
    ):
        await http.get(f"{a.http_url}/v1.0/state/statestore/k")
        got_a, got_b = await scrape(a), await scrape(b)
    route = {"app_id": APP_ID, "method": "GET", "path": "/v1.0/state/{store}/{key:path}"}
    assert value(got_a, "dapr_http_server_request_count", **route) == 1
    assert value(got_b, "dapr_http_server_request_count", **route) == 0


async def test_resiliency_activations_and_breaker_state() -> None:
    """A retry policy counts each retry; a breaker counts its state changes and shows its
    state in the gauge (recorded on the meter directly: no sidecar needed)."""
    spec = ResiliencySpec.model_validate(
        {
            "policies": {
                "retries": {"twice": {"policy": "constant", "duration": "1ms", "maxRetries": 2}},
                "circuitBreakers": {"cb": {"trip": "consecutiveFailures >= 1", "timeout": "60s"}},
            },
            "targets": {
                "components": {"statestore": {"outbound": {"retry": "twice"}}},
                "apps": {"other": {"circuitBreaker": "cb"}},
            },
        }
    )
    meter = PrometheusMeter(APP_ID)
    resiliency = Resiliency(spec, meter=meter)

    async def failing() -> None:
        raise BackendUnavailable("down")

    with pytest.raises(BackendUnavailable):
        await resiliency.component_outbound("statestore", Kind.STATE).run(failing)
    with pytest.raises(BackendUnavailable):
        await resiliency.app("other").run(failing)
    samples = parse(meter.render().decode())
    activations = "dapr_resiliency_activations_total"
    retry = {
        "app_id": APP_ID,
        "name": "twice",
        "policy": "retry",
        "flow_direction": "outbound",
        "target": "state_statestore",
        "status": "",
    }
    assert value(samples, activations, **retry) == 2
    breaker = {
        "app_id": APP_ID,
        "name": "cb",
        "policy": "circuitbreaker",
        "flow_direction": "outbound",
        "target": "app_other",
    }
    assert value(samples, activations, status="open", **breaker) == 1
    assert value(samples, "dapr_resiliency_cb_state", status="open", **breaker) == 1
    assert value(samples, "dapr_resiliency_cb_state", status="closed", **breaker) == 0


def test_counters_are_exported_under_daprs_plain_names() -> None:
    meter = PrometheusMeter(APP_ID)
    meter.http_request("GET", "/v1.0/healthz", 204, 0.001)
    text = meter.render().decode()
    assert "# TYPE dapr_http_server_request_count counter\n" in text
    assert (
        'dapr_http_server_request_count{app_id="shop",method="GET",path="/v1.0/healthz"} 1\n'
        in (text)
    )
    assert "_created" not in text
    assert (
        value(
            parse(text),
            "dapr_http_server_request_count",
            app_id=APP_ID,
            method="GET",
            path="/v1.0/healthz",
        )
        == 1
    )
