"""Prometheus metrics, with daprd's names and labels where daprd has the metric.

One `PrometheusMeter` per runtime, each with its own `CollectorRegistry` (never the global
one), so tests and several sidecars in one process do not collide. Served by
`metrics_app` on the metrics port (`GET /metrics`, Prometheus text format 0.0.4).

Counts: daprd exports its counters under their plain names (`dapr_http_server_request_count`,
not `..._count_total`), which prometheus_client's `Counter` cannot (it always appends
`_total`). They are therefore kept here in plain dicts (one event loop, no lock needed) and
written by `render` with `# TYPE ... counter`; histograms, gauges and the process collector
are prometheus_client's, rendered by `generate_latest`. Latencies are in milliseconds, as
daprd's. Labelled children are cached per label tuple, so a recorded call costs a dict lookup
and an `observe`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Final

from prometheus_client import CollectorRegistry, Gauge, Histogram, ProcessCollector
from prometheus_client.exposition import generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.registry import Collector
from starlette.types import ASGIApp, Receive, Scope, Send

from layotto.meter import CIRCUIT_BREAKER, Activation, ComponentMeter, Meter

# What generate_latest writes (prometheus_client's CONTENT_TYPE_LATEST now names 1.0.0).
CONTENT_TYPE: Final = "text/plain; version=0.0.4; charset=utf-8"

# Milliseconds: from an in-memory call (well under 1 ms) to a call timing out.
LATENCY_BUCKETS_MS: Final = (
    0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 60000,
)  # fmt: skip

# Component calls, per kind: daprd's metric where it has one, ours for its extensions.
COMPONENT_METRICS: Final[dict[str, str]] = {
    "state": "dapr_component_state",
    "configuration": "dapr_component_configuration",
    "secretstores": "dapr_component_secret",
    "bindings": "dapr_component_output_binding",
    "lock": "layotto_component_lock",
    "sequencer": "layotto_component_sequencer",
}

_BREAKER_STATES: Final = ("closed", "half-open", "open")

Labels = tuple[str, ...]


class _Counter:
    """A daprd-named counter: label values -> count."""

    __slots__ = ("doc", "labels", "name", "values")

    def __init__(self, name: str, doc: str, labels: Labels) -> None:
        self.name = name
        self.doc = doc
        self.labels = labels
        self.values: dict[Labels, float] = {}

    def inc(self, key: Labels, amount: float = 1.0) -> None:
        values = self.values
        values[key] = values.get(key, 0.0) + amount

    def render(self) -> str:
        lines = [f"# HELP {self.name} {self.doc}\n# TYPE {self.name} counter\n"]
        for key, value in list(self.values.items()):
            pairs = ",".join(f'{n}="{_escape(v)}"' for n, v in zip(self.labels, key, strict=True))
            lines.append(f"{self.name}{{{pairs}}} {_number(value)}\n")
        return "".join(lines)


def _escape(value: str) -> str:
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


def _number(value: float) -> str:
    return str(int(value)) if value.is_integer() else repr(value)


class _WithoutCreated(Collector):
    """The registry without prometheus_client's `*_created` series (one per labelled child:
    they would double the series count, and daprd has none)."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self._registry = registry

    def collect(self) -> Iterable[Metric]:
        for metric in self._registry.collect():
            metric.samples = [s for s in metric.samples if not s.name.endswith("_created")]
            yield metric


class _Timed:
    """A count and a latency histogram sharing their labels (daprd's `_count`/`_latencies`
    pairs), with the histogram children cached per label tuple."""

    __slots__ = ("app_id", "children", "count", "histogram")

    def __init__(
        self,
        registry: CollectorRegistry,
        app_id: str,
        count: _Counter,
        histogram: str,
        doc: str,
        labels: Labels,
    ) -> None:
        self.app_id = app_id
        self.count = count
        self.histogram = Histogram(
            histogram, doc, ["app_id", *labels], registry=registry, buckets=LATENCY_BUCKETS_MS
        )
        # Label values -> (the histogram child's observe, the count's full key).
        self.children: dict[Labels, tuple[Callable[[float], None], Labels]] = {}

    def record(self, key: Labels, seconds: float) -> None:
        child = self.children.get(key)
        if child is None:
            full = (self.app_id, *key)
            child = self.children[key] = (self.histogram.labels(*full).observe, full)
        observe, full = child
        observe(seconds * 1000.0)
        counts = self.count.values
        counts[full] = counts.get(full, 0.0) + 1.0


class _ComponentCalls(ComponentMeter):
    __slots__ = ("_name", "_timed")

    def __init__(self, timed: _Timed, name: str) -> None:
        self._timed = timed
        self._name = name

    def record(self, operation: str, success: bool, seconds: float) -> None:
        self._timed.record((self._name, operation, "true" if success else "false"), seconds)


class PrometheusMeter(Meter):
    enabled = True

    def __init__(self, app_id: str) -> None:
        self.app_id = app_id
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_*, as daprd exports
        self._counters: list[_Counter] = []
        reg = self.registry
        self._grpc = _Timed(
            reg,
            app_id,
            self._counter(
                "dapr_grpc_io_server_completed_rpcs",
                "Count of RPCs by method and status.",
                ("app_id", "grpc_server_method", "grpc_server_status"),
            ),
            "dapr_grpc_io_server_server_latency",
            "Distribution of server latency in milliseconds, by method.",
            ("grpc_server_method", "grpc_server_status"),
        )
        self._http_requests = self._counter(
            "dapr_http_server_request_count",
            "Number of HTTP requests started in server.",
            ("app_id", "method", "path"),
        )
        self._http = _Timed(
            reg,
            app_id,
            self._counter(
                "dapr_http_server_response_count",
                "Number of HTTP responses in server.",
                ("app_id", "method", "path", "status"),
            ),
            "dapr_http_server_latency",
            "HTTP request end to end latency in server, in milliseconds.",
            ("method", "path", "status"),
        )
        self._egress = _Timed(
            reg,
            app_id,
            self._counter(
                "dapr_component_pubsub_egress_count",
                "The number of outgoing messages published to the pub/sub component.",
                ("app_id", "component", "success", "topic"),
            ),
            "dapr_component_pubsub_egress_latencies",
            "The latency of the response from the pub/sub component, in milliseconds.",
            ("component", "success", "topic"),
        )
        self._ingress = _Timed(
            reg,
            app_id,
            self._counter(
                "dapr_component_pubsub_ingress_count",
                "The number of incoming messages arriving from the pub/sub component.",
                ("app_id", "component", "process_status", "topic"),
            ),
            "dapr_component_pubsub_ingress_latencies",
            "The consuming app event processing latency, in milliseconds.",
            ("component", "process_status", "topic"),
        )
        self._components: dict[str, _Timed] = {}
        for kind, prefix in COMPONENT_METRICS.items():
            self._components[kind] = _Timed(
                reg,
                app_id,
                self._counter(
                    f"{prefix}_count",
                    f"The number of operations performed on the {kind} component.",
                    ("app_id", "component", "operation", "success"),
                ),
                f"{prefix}_latencies",
                f"The latency of the response from the {kind} component, in milliseconds.",
                ("component", "operation", "success"),
            )
        self._loaded = self._counter(
            "dapr_runtime_component_loaded",
            "The number of successfully loaded components.",
            ("app_id",),
        )
        self._init = self._counter(
            "dapr_runtime_component_init_total",
            "The number of initialized components.",
            ("app_id", "component"),
        )
        resiliency = ("app_id", "name", "policy", "flow_direction", "target", "status")
        self._activations = self._counter(
            "dapr_resiliency_activations_total",
            "Number of times a resiliency policy has been activated in a building block "
            "after a failure or after a state change.",
            resiliency,
        )
        self._resiliency_loaded = self._counter(
            "dapr_resiliency_loaded",
            "Number of resiliency policies loaded.",
            ("app_id", "name"),
        )
        self._breaker_state = Gauge(
            "dapr_resiliency_cb_state",
            "A resiliency policy's current CircuitBreakerState state (1 for the current one).",
            list(resiliency),
            registry=reg,
        )

    def _counter(self, name: str, doc: str, labels: Labels) -> _Counter:
        counter = _Counter(name, doc, labels)
        self._counters.append(counter)
        return counter

    # -- recording ---------------------------------------------------------------------------

    def component(self, kind: str, name: str) -> ComponentMeter | None:
        timed = self._components.get(kind)
        return None if timed is None else _ComponentCalls(timed, name)

    def component_loaded(self, kind: str, name: str) -> None:
        self._loaded.inc((self.app_id,))
        self._init.inc((self.app_id, name))

    def grpc_method(self, path: str) -> Callable[[str, float], None] | None:
        grpc = self._grpc

        def record(status: str, seconds: float) -> None:
            grpc.record((path, status), seconds)

        return record

    def http_request(self, method: str, path: str, status: int, seconds: float) -> None:
        self._http_requests.inc((self.app_id, method, path))
        self._http.record((method, path, str(status)), seconds)

    def pubsub_egress(self, component: str, topic: str, success: bool, seconds: float) -> None:
        self._egress.record((component, "true" if success else "false", topic), seconds)

    def pubsub_ingress(self, component: str, topic: str, status: str, seconds: float) -> None:
        self._ingress.record((component, status, topic), seconds)

    def resiliency(
        self, direction: str, target: str, names: Mapping[str, str]
    ) -> Activation | None:
        app_id, activations, gauge = self.app_id, self._activations, self._breaker_state
        breaker = names.get(CIRCUIT_BREAKER)
        if breaker is not None:
            # Closed from the start, so the gauge shows the breaker before it ever trips.
            for state in _BREAKER_STATES:
                key = (app_id, breaker, CIRCUIT_BREAKER, direction, target, state)
                gauge.labels(*key).set(1 if state == "closed" else 0)

        def activated(policy: str, status: str) -> None:
            name = names.get(policy, "")
            activations.inc((app_id, name, policy, direction, target, status))
            if policy == CIRCUIT_BREAKER:
                for state in _BREAKER_STATES:
                    key = (app_id, name, policy, direction, target, state)
                    gauge.labels(*key).set(1 if state == status else 0)

        return activated

    def resiliency_loaded(self, name: str) -> None:
        self._resiliency_loaded.inc((self.app_id, name))

    # -- exposition --------------------------------------------------------------------------

    def render(self) -> bytes:
        """Every metric in Prometheus text format 0.0.4."""
        counters = "".join(c.render() for c in self._counters if c.values)
        return counters.encode() + generate_latest(_WithoutCreated(self.registry))


def metrics_app(meter: PrometheusMeter) -> ASGIApp:
    """A minimal ASGI app: `GET /metrics` (and `/`) answer the metrics, anything else 404."""

    async def app(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        if scope["path"] not in ("/metrics", "/"):
            status, body, ctype = 404, b"not found\n", "text/plain; charset=utf-8"
        elif scope["method"] not in ("GET", "HEAD"):
            status, body, ctype = 405, b"method not allowed\n", "text/plain; charset=utf-8"
        else:
            status, body, ctype = 200, meter.render(), CONTENT_TYPE
        headers = [(b"content-type", ctype.encode()), (b"content-length", b"%d" % len(body))]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send(
            {"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body}
        )

    return app
