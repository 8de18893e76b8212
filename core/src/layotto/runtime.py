"""serve(): the root task group. Start order, readiness, graceful shutdown.

Startup: components built and started (fail fast) -> sequencer `biggerThan` applied (fail
fast) -> actors started one by one with `tg.start` -> `runtime_startup` UP. Shutdown (first
SIGTERM/SIGINT, or `shutdown.set()`): readiness DOWN -> new calls refused (UNAVAILABLE) and
configuration subscription streams ended -> in-flight calls drain within the grace period ->
actors stop -> background work (configuration watchers, sequencer segment loads) is cancelled
-> components close (shielded, bounded). A second signal exits at once.
"""

from __future__ import annotations

import logging
import os
import signal
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any

import anyio
from anyio.abc import TaskStatus

from layotto.actors.api_server import ApiServer
from layotto.actors.app_health import AppHealth
from layotto.actors.base import Actor
from layotto.actors.binding_dispatcher import BindingDispatcher
from layotto.actors.config_pusher import ConfigPusher
from layotto.actors.config_watchers import ConfigWatchers
from layotto.actors.health_checker import HealthAggregator
from layotto.actors.http_server import HttpServer
from layotto.actors.metrics_server import MetricsServer
from layotto.actors.pubsub_dispatcher import PubSubDispatcher
from layotto.actors.supervisor import Supervisor
from layotto.api.api_access import ApiAccess
from layotto.api.app_callback import AppCallbackClient
from layotto.api.app_channel import AppChannel, declared_subscription
from layotto.api.app_connection import AppConnection
from layotto.api.binding_callback import BindingApp, BindingCallbackClient
from layotto.api.gate import CallGate
from layotto.api.grpc_services import ApiServices, SidecarControl, build_grpc_services
from layotto.api.http_app import HttpContext, build_http_app
from layotto.api.http_app_channel import HttpAppChannel
from layotto.api.http_app_connection import HttpAppConnection
from layotto.api.http_binding_callback import HttpBindingCallbackClient
from layotto.api.http_endpoints import HttpEndpoints, resolve_endpoints
from layotto.components import ComponentRegistry, plan
from layotto.config import RuntimeConfig
from layotto.errors import BackendUnavailable
from layotto.health import BOTH, STARTUP, HealthRegistry
from layotto.meter import NO_METER, Meter
from layotto.plugin import Health, HealthStatus
from layotto.plugin.rpc import RpcRequest, RpcResponse
from layotto.plugins import Catalog
from layotto.resiliency import Resiliency
from layotto.services.bindings import BindingService
from layotto.services.configuration import ConfigurationService
from layotto.services.invoke import InvokeService, LocalApp
from layotto.services.lock import LockService
from layotto.services.pubsub import PubSubService
from layotto.services.pubsub_delivery import DeliveryPolicy
from layotto.services.secrets import SecretService
from layotto.services.sequencer import SequencerService
from layotto.services.state import StateService
from layotto.tracing import NO_TRACER, Tracer
from layotto.version import runtime_version

if TYPE_CHECKING:
    from layotto.actors.trace_exporter import TraceExporter

log = logging.getLogger(__name__)

# The one connection to the app: gRPC (either callback API) or Dapr's HTTP app channel.
AppLink = AppConnection | HttpAppConnection


@dataclass
class Runtime:
    """Handles for tests and the CLI: what is bound where, and how to stop it."""

    config: RuntimeConfig
    catalog: Catalog
    health: HealthRegistry = field(default_factory=HealthRegistry)
    shutdown: anyio.Event = field(default_factory=anyio.Event)
    grpc_port: int | None = None
    http_port: int | None = None
    metrics_port: int | None = None  # bound while serving metrics (`server.metrics_port`)
    # What every layer records metrics with: a PrometheusMeter with its own registry when
    # `server.metrics_port` is set (created by serve()), else NO_METER.
    meter: Meter = NO_METER
    metrics_server: MetricsServer | None = None  # set while serving, with metrics
    # Spans of every layer: a recording tracer when `tracing.sampling_rate` > 0 (created by
    # serve()), else NO_TRACER; its exporter actor when a collector is configured.
    tracer: Tracer = NO_TRACER
    trace_exporter: TraceExporter | None = None
    components: ComponentRegistry = field(default_factory=ComponentRegistry)
    config_watchers: ConfigWatchers | None = None  # set while serving
    app_health: AppHealth | None = None  # set while serving, with an app port
    dispatcher: PubSubDispatcher | None = None  # set while serving, with an app port
    config_pusher: ConfigPusher | None = None  # set while serving, with an app port
    # Set while serving, with an app port and input bindings configured.
    binding_dispatcher: BindingDispatcher | None = None
    # Dapr's extended metadata: set by SetMetadata / PUT /v1.0/metadata/{key}, kept in memory.
    extended_metadata: dict[str, str] = field(default_factory=dict)

    def info(self) -> dict[str, Any]:
        return {
            "app": {
                "name": "Layotto for Python",
                "version": runtime_version(),
                "id": self.config.app.id,
            },
            "plugins": [
                {
                    "name": p.name,
                    "distribution": p.distribution,
                    "version": p.version,
                    "components": [s.qualified_type for s in p.specs],
                }
                for p in self.catalog.plugins
            ],
            "components": [
                {
                    "name": b.config.name,
                    "type": b.config.qualified_type,
                    "version": b.config.version,
                }
                for b in self.components
            ],
            "metrics": self._metrics_info(),
            # Targets and their policies; each circuit breaker with its state and counts.
            "resiliency": self.components.resiliency.describe(),
            "subscriptions": {
                "configuration": self.config_watchers.info() if self.config_watchers else [],
                "pubsub": self.dispatcher.info() if self.dispatcher else [],
                "bindings": self.binding_dispatcher.reading if self.binding_dispatcher else [],
            },
        }

    def _metrics_info(self) -> dict[str, Any]:
        if self.config.server.metrics_port is None:
            return {"enabled": False}
        info: dict[str, Any] = {"enabled": True, "path": "/metrics", "port": self.metrics_port}
        if self.metrics_server is not None and self.metrics_server.unavailable:
            info["unavailable"] = self.metrics_server.unavailable
        return info

    def _make_meter(self) -> Meter:
        """Prometheus metrics when a metrics port is configured (prometheus_client is only
        imported then); one registry per runtime."""
        if self.config.server.metrics_port is None:
            return NO_METER
        from layotto.metrics import PrometheusMeter

        return PrometheusMeter(self.config.app.id)

    def _make_tracing(self) -> tuple[Tracer, TraceExporter | None]:
        """Tracing is imported and built only when `tracing.sampling_rate` > 0."""
        if self.config.tracing.sampling_rate <= 0:
            return NO_TRACER, None
        from layotto.actors.trace_exporter import build_tracing

        return build_tracing(self.config.tracing, self.config.app.id or "layotto")

    def dapr_metadata(self) -> dict[str, Any]:
        components = []
        for b in self.components:
            entry: dict[str, Any] = {
                "name": b.config.name,
                "type": b.config.qualified_type,
                "version": b.config.version,
            }
            features = sorted(f.value for f in getattr(b.component, "features", ()))
            if features:
                entry["capabilities"] = features
            components.append(entry)
        body: dict[str, Any] = {
            "id": self.config.app.id,
            "runtimeVersion": runtime_version(),
            "components": components,
            "extended": dict(self.extended_metadata),
            "subscriptions": [
                {
                    "pubsubname": s["pubsubName"],
                    "topic": s["topic"],
                    **({"rules": s["rules"]} if s.get("rules") else {}),
                    "deadLetterTopic": s["deadLetterTopic"],
                    "type": s.get("type", "PROGRAMMATIC"),
                }
                for s in (self.dispatcher.info() if self.dispatcher else [])
            ],
            "actorRuntime": {"runtimeStatus": "DISABLED", "hostReady": False},
        }
        if self.config.http_endpoints:
            body["httpEndpoints"] = [{"name": e.name} for e in self.config.http_endpoints]
        if self.config.resiliency_names:
            body["resiliencies"] = [{"name": name} for name in self.config.resiliency_names]
        if self.config.app.port:
            app: dict[str, Any] = {
                "port": self.config.app.port,
                "protocol": "http" if self.config.app.protocol == "http" else "grpc",
                "channelAddress": self.config.app.host,
            }
            health = self.app_health.metadata() if self.app_health else None
            if health:
                app["health"] = health
            body["appConnectionProperties"] = app
        return body

    async def serve(self, *, task_status: TaskStatus[None] = anyio.TASK_STATUS_IGNORED) -> None:
        config = self.config
        planned = plan(config, self.catalog)  # validated, no I/O: secrets are read at start
        # The one connection to the app, for every caller (callbacks, health, invocation).
        connection: AppLink | None = None
        local_app: LocalApp | None = None
        if config.app.port:
            link = HttpAppConnection if config.app.protocol == "http" else AppConnection
            connection = link(config.app.host, config.app.port, api_token=config.app.api_token)
            local_app = partial(self._invoke_app, connection)
        external: HttpEndpoints | None = None  # Dapr HTTPEndpoints and full-URL targets
        self.meter = meter = self._make_meter()
        self.components.meter = meter
        self.tracer, self.trace_exporter = self._make_tracing()
        self.components.tracer = self.tracer
        # Timeouts, retries and breakers for components and apps, read by every service.
        self.components.resiliency = Resiliency.from_spec(config.resiliency, meter=meter)
        for name in config.resiliency_names:
            meter.resiliency_loaded(name)
        for target in self.components.resiliency.describe():
            log.info("resiliency policy", extra={"resiliency": target})
        try:
            await self.components.start_planned(planned)
            for built in self.components:
                meter.component_loaded(built.config.kind.value, built.config.name)
            external = HttpEndpoints(
                await resolve_endpoints(config.http_endpoints, self.components)
            )
            gate = CallGate()
            sequencer = SequencerService(self.components, config.app.id)
            watchers = ConfigWatchers(self.health)
            services = ApiServices(
                StateService(self.components, config.app.id),
                LockService(self.components, config.app.id),
                sequencer,
                ConfigurationService(self.components, watchers),
                PubSubService(self.components, policy=_delivery_policy(config)),
                InvokeService(
                    self.components,
                    config.rpc,
                    own_app_id=config.app.id,
                    local_app=local_app,
                    external=external,
                ),
                SecretService(self.components, config.secrets.scopes),
                BindingService(self.components),
                StateService(self.components, config.app.id, default_key_prefix="appid"),
                LockService(self.components, config.app.id, key_scheme="dapr"),
            )
            # The sequencer's background segment loads and the configuration watchers live in
            # task groups of their own that outlive the API: they close after the drain,
            # before the components do.
            async with sequencer.running(), watchers.running():
                self.config_watchers = watchers
                try:
                    await self._serve_api(services, gate, connection, task_status)
                finally:
                    self.config_watchers = None
        finally:
            with anyio.CancelScope(shield=True):
                if connection is not None:
                    await connection.aclose()
                if external is not None:
                    await external.aclose()
            await self.components.close()
        log.info("layotto stopped")

    async def _invoke_app(self, connection: AppLink, request: RpcRequest) -> RpcResponse:
        """An invocation addressed to our own app id: the app's Dapr OnInvoke, or the HTTP
        call itself for an HTTP app. Refused at once while the app fails its health checks,
        as daprd short-circuits it."""
        if self.app_health is not None and self.app_health.refuses_calls:
            raise BackendUnavailable("app is not in a healthy state", reason="ERR_DIRECT_INVOKE")
        return await connection.invoke(request)

    async def _serve_api(
        self,
        services: ApiServices,
        gate: CallGate,
        connection: AppLink | None,
        task_status: TaskStatus[None],
    ) -> None:
        """Actors up, readiness UP, then wait for shutdown: readiness DOWN, drain, stop."""
        config = self.config
        access = ApiAccess(config.api)  # daprd's API allow/deny lists, for both ports
        grpc = build_grpc_services(
            services,
            gate,
            config.server.api_token,
            app_id=config.app.id,
            allow_tokenless_config_subscribe=config.server.allow_tokenless_config_subscribe,
            control=SidecarControl(
                self.dapr_metadata, self.extended_metadata.__setitem__, self.shutdown.set
            ),
            meter=self.meter,
            tracer=self.tracer,
            access=access,
        )
        self.health.on_readiness_change(lambda s: grpc.health.set_serving(s is HealthStatus.UP))
        api = ApiServer(
            grpc.handlers,
            config.server.host,
            config.server.grpc_port,
        )
        # Configuration subscriptions made over Dapr's HTTP API are pushed to the app.
        pusher = None
        if connection is not None:
            pusher = ConfigPusher(
                services.configuration,
                connection,
                config.app.id,
                protocol=config.app.protocol,
                tracer=self.tracer,
            )
        http = HttpServer(
            build_http_app(
                HttpContext(
                    self.health,
                    config.app.id,
                    self.info,
                    self.dapr_metadata,
                    config.server.api_token,
                    services=services,
                    gate=gate,
                    set_metadata=self.extended_metadata.__setitem__,
                    shutdown=self.shutdown.set,
                    config_updates=pusher,
                    meter=self.meter,
                    tracer=self.tracer,
                    access=access,
                )
            ),
            config.server.host,
            config.server.http_port,
        )
        checker = HealthAggregator(self.health, self.components)
        supervisor = Supervisor(self.health)
        actors: list[Actor] = [http, checker, api]
        self.metrics_server = self._metrics_server()
        if self.metrics_server is not None:
            actors.insert(0, self.metrics_server)
        if self.trace_exporter is not None:
            actors.insert(0, self.trace_exporter)  # stopped last: drained calls' spans go out
        if connection is not None:
            # One health prober per runtime, started before (and stopped after) the
            # dispatchers it gates; invocations of the app consult it too.
            self.app_health = AppHealth(
                connection,
                self.health,
                check_path=connection.health_check_path,
            )
            actors.append(self.app_health)
            if pusher is not None:
                self.config_pusher = pusher
                actors.append(pusher)
            channel, binding_app = _app_clients(config, connection, services)
            self.dispatcher = PubSubDispatcher(
                services.pubsub,
                channel,
                self.health,
                self.app_health,
                grace_period=config.server.grace_period,
                declared=[declared_subscription(s) for s in config.subscriptions],
            )
            actors.append(self.dispatcher)
            if binding_app is not None:
                self.binding_dispatcher = BindingDispatcher(
                    services.bindings,
                    services.dapr_state,
                    binding_app,
                    self.health,
                    self.app_health,
                    grace_period=config.server.grace_period,
                )
                actors.append(self.binding_dispatcher)
        elif config.subscriptions:
            # daprd starts app subscriptions only with an app channel: declared ones wait,
            # undelivered, for an app that never comes. A warning, as daprd does not fail.
            log.warning(
                "%d declarative subscription(s) and no app port: nothing is delivered",
                len(config.subscriptions),
                extra={
                    "subscriptions": [f"{s.pubsub_name}/{s.topic}" for s in config.subscriptions]
                },
            )
        try:
            await self._run_actors(supervisor, actors, (api, http), gate, task_status)
        finally:
            self.metrics_server = None
            self.metrics_port = None
            self.app_health = None
            self.config_pusher = None
            self.dispatcher = None
            self.binding_dispatcher = None

    async def _run_actors(
        self,
        supervisor: Supervisor,
        actors: list[Actor],
        servers: tuple[ApiServer, HttpServer],
        gate: CallGate,
        task_status: TaskStatus[None],
    ) -> None:
        config = self.config
        api, http = servers
        async with anyio.create_task_group() as tg:
            # HTTP first, so probes answer (INIT) while the rest starts.
            await tg.start(supervisor.run, actors)
            self.grpc_port, self.http_port = api.bound_port, http.bound_port
            if self.metrics_server is not None:
                self.metrics_port = self.metrics_server.bound_port
            self.health.set(STARTUP, Health.up(), BOTH)
            log.info(
                "layotto is ready",
                extra={
                    "grpc_port": self.grpc_port,
                    "http_port": self.http_port,
                    "metrics_port": self.metrics_port,
                },
            )
            task_status.started()
            await self.shutdown.wait()
            with anyio.CancelScope(shield=True):
                self.health.set(STARTUP, Health(HealthStatus.DOWN, {"reason": "shutdown"}), BOTH)
                grace = config.server.grace_period
                if self.dispatcher is not None:
                    # Deliveries drain alongside the calls, within the same grace period.
                    self.dispatcher.begin_drain(grace)
                if self.binding_dispatcher is not None:
                    self.binding_dispatcher.begin_drain(grace)
                drained = await gate.drain(grace)
                if not drained:
                    log.warning(
                        "%d call(s) still running after the %.1f s grace period",
                        gate.in_flight,
                        grace,
                    )
                await supervisor.stop()
            tg.cancel_scope.cancel()

    def _metrics_server(self) -> MetricsServer | None:
        server = self.config.server
        if server.metrics_port is None:
            return None
        from layotto.metrics import PrometheusMeter, metrics_app

        assert isinstance(self.meter, PrometheusMeter)
        return MetricsServer(
            metrics_app(self.meter),
            server.host,
            server.metrics_port,
            optional=server.metrics_optional,
        )


def _app_clients(
    config: RuntimeConfig, connection: AppLink, services: ApiServices
) -> tuple[AppChannel, BindingApp | None]:
    """What the dispatchers call the app through, for the API the app speaks; no binding
    client without input bindings configured, or for a Layotto app (Layotto's AppCallback
    has no binding events)."""
    timeout = config.pubsub.app_timeout
    inputs = list(services.bindings.inputs())
    if isinstance(connection, HttpAppConnection):
        binding_app: BindingApp | None = None
        if inputs:
            binding_app = HttpBindingCallbackClient(connection, inputs, event_timeout=timeout)
        return HttpAppChannel(connection, delivery_timeout=timeout), binding_app
    protocol = config.app.protocol
    if protocol == "http":  # not reached: an HTTP app has an HttpAppConnection
        raise AssertionError("an HTTP app over a gRPC connection")
    channel = AppCallbackClient(connection, protocol=protocol, delivery_timeout=timeout)
    if protocol == "layotto" or not inputs:
        return channel, None
    return channel, BindingCallbackClient(connection, event_timeout=timeout)


def _delivery_policy(config: RuntimeConfig) -> DeliveryPolicy:
    delivery = config.pubsub
    return DeliveryPolicy(
        concurrency=delivery.concurrency,
        mailbox=delivery.mailbox,
        retry_initial_interval=delivery.retry_initial_interval,
        retry_max_interval=delivery.retry_max_interval,
        max_retries=delivery.max_retries,
        app_timeout=delivery.app_timeout,
    )


async def run_until_signalled(runtime: Runtime) -> None:
    """Serve until SIGTERM/SIGINT; a second signal exits at once."""
    async with anyio.create_task_group() as tg:

        async def watch_signals() -> None:
            with anyio.open_signal_receiver(signal.SIGTERM, signal.SIGINT) as signals:
                async for signum in signals:
                    if runtime.shutdown.is_set():
                        log.warning("second signal: exiting now")
                        logging.shutdown()
                        os._exit(128 + signum)
                    log.info("signal %s: shutting down", signal.Signals(signum).name)
                    runtime.shutdown.set()

        tg.start_soon(watch_signals)
        await runtime.serve()
        tg.cancel_scope.cancel()
