"""`layotto run | plugins | check | version`."""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path
from typing import Any

import anyio
import click

from layotto.config import DEFAULT_METRICS_PORT, RuntimeConfig, load_config
from layotto.errors import ConfigError
from layotto.logs import setup_logging
from layotto.version import runtime_version

log = logging.getLogger("layotto")

EXIT_CONFIG = 2
EXIT_FATAL = 3


def _config_options(func: Any) -> Any:
    func = click.option(
        "--resources-path",
        "resources_paths",
        multiple=True,
        type=click.Path(path_type=Path, file_okay=False),
        help="Folder of Dapr Component YAMLs (repeatable).",
    )(func)
    return click.option(
        "-c",
        "--config",
        "config_file",
        type=click.Path(path_type=Path, dir_okay=False),
        envvar="RUNTIME_CONFIG",
        help="Config file: native YAML/JSON or Layotto's grpc_config JSON.",
    )(func)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
def main() -> None:
    """Layotto for Python: an application runtime sidecar (Layotto and Dapr APIs)."""


@main.command()
@_config_options
@click.option("--grpc-port", type=int, help="gRPC API port [default: 34904].")
@click.option("--http-port", type=int, help="HTTP port (actuator, Dapr HTTP) [default: 34999].")
@click.option("--host", help="Address to bind [default: 127.0.0.1].")
@click.option("--app-id", help="This app's id (key prefixes, consumer groups).")
@click.option("--app-port", type=int, help="The app's callback port; 0 = no callbacks.")
@click.option(
    "--app-protocol",
    type=click.Choice(["auto", "dapr", "layotto", "http"]),
    help="How the app takes callbacks: gRPC (auto, dapr, layotto) or http [auto].",
)
@click.option("--api-token", envvar="LAYOTTO_API_TOKEN", help="Require this token on every call.")
@click.option("--grace-period", type=float, help="Seconds in-flight calls get at shutdown [5].")
@click.option(
    "--metrics-port",
    type=click.IntRange(0, 65535),
    help=f"Prometheus /metrics port [default: server.metrics_port, else {DEFAULT_METRICS_PORT}].",
)
@click.option(
    "--enable-metrics",
    type=click.BOOL,
    default=True,
    show_default=True,
    envvar="LAYOTTO_ENABLE_METRICS",
    help="Serve Prometheus metrics (--enable-metrics=false: none, no port).",
)
@click.option(
    "--log-level",
    default="info",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"]),
)
@click.option(
    "--log-format", default="text", show_default=True, type=click.Choice(["text", "json"])
)
def run(
    config_file: Path | None,
    resources_paths: tuple[Path, ...],
    grpc_port: int | None,
    http_port: int | None,
    host: str | None,
    app_id: str | None,
    app_port: int | None,
    app_protocol: str | None,
    api_token: str | None,
    grace_period: float | None,
    metrics_port: int | None,
    enable_metrics: bool,
    log_level: str,
    log_format: str,
) -> None:
    """Start the sidecar."""
    setup_logging(log_level, log_format)
    try:
        config = load_config(config_file, resources_paths, app_id=app_id).with_overrides(
            grpc_port=grpc_port,
            http_port=http_port,
            host=host,
            api_token=api_token,
            grace_period=grace_period,
            app_id=app_id,
            app_port=app_port,
            app_protocol=app_protocol,
        )
        _serve(_with_metrics(config, enable_metrics, metrics_port))
    except ConfigError as err:
        log.error("%s", err)
        sys.exit(EXIT_CONFIG)


def _with_metrics(config: RuntimeConfig, enabled: bool, port: int | None) -> RuntimeConfig:
    """daprd's defaults: metrics on, port 9090. A port from the flag or the config must be
    free; the implied 9090 may be taken (another sidecar on this host), which only warns."""
    server = config.server
    if not enabled or not server.metrics_enabled:
        update: dict[str, object] = {"metrics_port": None}
    elif port is not None:
        update = {"metrics_port": port, "metrics_optional": False}
    elif server.metrics_port is None:
        update = {"metrics_port": DEFAULT_METRICS_PORT, "metrics_optional": True}
    else:
        update = {}
    return config.model_copy(update={"server": server.model_copy(update=update)})


def _serve(config: RuntimeConfig) -> None:
    from layotto.actors.supervisor import FatalError
    from layotto.plugins import load_catalog
    from layotto.runtime import Runtime, run_until_signalled

    runtime = Runtime(config, load_catalog())
    try:
        anyio.run(
            run_until_signalled,
            runtime,
            backend="asyncio",
            backend_options={"use_uvloop": _uvloop_available()},
        )
    except* ConfigError as group:
        raise group.exceptions[0] from None
    except* FatalError as group:
        log.critical("FATAL: %s", group.exceptions[0])
        sys.exit(EXIT_FATAL)
    except* OSError as group:
        # Typically a port that is taken: say which, without a traceback.
        raise ConfigError(f"cannot serve: {group.exceptions[0]}") from None


def _uvloop_available() -> bool:
    if os.environ.get("LAYOTTO_NO_UVLOOP"):
        return False
    try:
        import uvloop  # noqa: F401
    except ImportError:
        return False
    return True


@main.command()
def plugins() -> None:
    """List installed plugins with their distribution, version and component types."""
    from layotto.plugins import load_catalog

    try:
        catalog = load_catalog()
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    for plugin in catalog.plugins:
        click.echo(f"{plugin.name}  ({plugin.distribution} {plugin.version})")
        for spec in plugin.specs:
            line = f"    {spec.qualified_type:<28} {spec.version}"
            click.echo(f"{line}  {spec.description}".rstrip())


@main.command()
@_config_options
def check(config_file: Path | None, resources_paths: tuple[Path, ...]) -> None:
    """Validate the configuration (plugins, component types, metadata, secret references)
    and exit. Secret references must name a configured secret store; no secret is read."""
    from layotto.components import validate
    from layotto.plugins import load_catalog

    setup_logging("warning")
    try:
        config = load_config(config_file, resources_paths)
        built = validate(config, load_catalog())
    except ConfigError as err:
        click.echo(f"error: {err}", err=True)
        sys.exit(EXIT_CONFIG)
    click.echo(f"configuration OK: {len(built)} component(s)")
    for item in built:
        # Secret references are checked to name a configured store, not read: say so.
        stores = sorted({ref.store for ref in item.refs})
        reads = f"  [secrets from {', '.join(stores)}, read at startup]" if stores else ""
        click.echo(
            f"    {item.config.name:<20} {item.config.qualified_type}  "
            f"({item.config.source}){reads}"
        )
    for endpoint in config.http_endpoints:
        click.echo(f"    endpoint {endpoint.name:<11} {endpoint.base_url}")
    targets = config.resiliency.targets
    named = len(targets.apps) + len(targets.components)
    policies = config.resiliency.policies
    defined = len(policies.timeouts) + len(policies.retries) + len(policies.circuit_breakers)
    if defined:
        click.echo(f"    resiliency: {defined} polic(ies), {named} target(s)")


@main.command()
def version() -> None:
    """Print the runtime version."""
    click.echo(f"layotto {runtime_version()}")
