"""A protocol-faithful Apollo server for tests (config service, meta service, Open API).

Apollo is a Java/Spring Boot application that cannot run on the test machines, so this module
implements the **server side** of its HTTP protocol, as `apollo-protocol.md` describes it (§6
"Building a faithful fake server"). It is not a mock of any client: any Apollo client (this
plugin's, apollo-java, agollo) can talk to it.

What it serves, all on one port (real Apollo splits them: config service 8080, portal 8070):

- config service: `GET /configs/{appId}/{cluster}/{ns}` (releaseKey caching and 304, cluster and
  data-center fallback to `default`, `.properties` stripping, case-insensitive names, public
  namespaces merged in), `GET /configfiles/json/…`, `/configfiles/…` (properties text) and
  `/configfiles/raw/…`, and `GET /notifications/v2` (real long-poll hold, one global release
  message counter, immediate answer when a watch key is ahead, held otherwise until a release or
  the hold timeout → 304);
- meta service: `GET /services/config`, `/services/admin`, `/services/meta`;
- access keys: an app with secrets gets its reads checked (HMAC-SHA1 over `timestamp\\n
  pathWithQuery` as sent on the wire; 401 `RequestTimeTooSkewed` / `Unauthorized`, 400
  `InvalidAppId`);
- Open API (`/openapi/v1`, consumer token in `Authorization`, 401 unknown token, 403 token not
  granted the app): items GET/POST/PUT/DELETE (and `encodedItems`), namespaces GET, namespace
  lock, `apps/{appId}/appnamespaces` create, `apps/{appId}/envclusters`, releases publish and
  `releases/latest`, release rollback. A release creates a new releaseKey and a new release
  message, which wakes the held long polls at once.

State is in memory and survives `stop()`/`start()` (same port), so a test can take the server
down and bring it back. Test hooks: `fail_next` (force a status), `set_latency`,
`request_count`, `notification_id`, `release_key`, `publish` (write and release without HTTP).

Use::

    with ApolloTestServer(long_poll_timeout=1.0) as server:
        server.add_app("SampleApp", namespaces=["application", "db"], secrets=["s3cret"])
        server.add_token("tok", apps=["SampleApp"])
        server.url  # http://127.0.0.1:<free port>

Or from a shell: `python -m layotto_apollo.testing --port 8080 --app SampleApp
--token tok` (see `--help`).

The server runs uvicorn on a thread of its own with its own event loop, so it serves sync tests,
async tests (any event loop) and subprocesses alike; every public method is thread-safe.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import contextlib
import datetime as dt
import hashlib
import hmac
import json
import re
import secrets as _secrets
import socket
import threading
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

CLUSTER_DEFAULT = "default"
NAMESPACE_APPLICATION = "application"
SEPARATOR = "+"
DEFAULT_ENV = "DEV"
DEFAULT_USER = "apollo"
DEFAULT_LONG_POLL_TIMEOUT = 60.0
DEFAULT_AUTH_TIME_TOLERANCE = 60.0
JSON_TYPE = "application/json;charset=UTF-8"

# Endpoint names used by the hooks (`fail_next`, `set_latency`, `request_count`).
ENDPOINTS = ("configs", "configfiles", "notifications", "services", "openapi")

KEY_MAX = 128
VALUE_MAX = 20_000
COMMENT_MAX = 256
RELEASE_TITLE_MAX = 64
FORMATS = ("properties", "xml", "json", "yml", "yaml", "txt")
_NAMESPACE_NAME = re.compile(r"[0-9a-zA-Z_.-]+")


def apollo_signature(secret: str, timestamp_ms: str, path_with_query: str) -> str:
    """Base64(HMAC-SHA1(secret, timestamp + "\\n" + pathWithQuery)), as the config service
    computes it (`apollo-protocol.md` §4)."""
    msg = f"{timestamp_ms}\n{path_with_query}".encode()
    return base64.b64encode(hmac.new(secret.encode(), msg, hashlib.sha1).digest()).decode()


def _now_text() -> str:
    """Apollo's DTO timestamps: `2016-08-11T12:06:41.818+0800`."""
    now = dt.datetime.now().astimezone()
    return (
        now.strftime("%Y-%m-%dT%H:%M:%S.") + f"{now.microsecond // 1000:03d}" + now.strftime("%z")
    )


def _release_key() -> str:
    return time.strftime("%Y%m%d%H%M%S") + "-" + _secrets.token_hex(8)


def strip_properties(namespace: str) -> str:
    """`application.properties` ≡ `application` (ConfigConsts / NamespaceUtil)."""
    if namespace.lower().endswith(".properties"):
        return namespace[: -len(".properties")]
    return namespace


def watch_key(app_id: str, cluster: str, namespace: str) -> str:
    return SEPARATOR.join((app_id, cluster, namespace))


class ApolloHttpError(Exception):
    def __init__(self, status: int, message: str, exception: str = "") -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.exception = exception or {
            400: "BadRequestException",
            401: "UnauthorizedException",
            403: "AccessDeniedException",
            404: "NotFoundException",
        }.get(status, "ApolloException")


def _error(status: int, message: str, exception: str = "") -> JSONResponse:
    err = ApolloHttpError(status, message, exception)
    return JSONResponse(
        {
            "status": status,
            "message": message,
            "timestamp": _now_text(),
            "exception": f"com.ctrip.framework.apollo.common.exception.{err.exception}",
        },
        status_code=status,
        media_type=JSON_TYPE,
    )


# -- state ---------------------------------------------------------------------------------


@dataclass
class Item:
    key: str
    value: str
    comment: str = ""
    created_by: str = DEFAULT_USER
    modified_by: str = DEFAULT_USER
    created_time: str = field(default_factory=_now_text)
    modified_time: str = field(default_factory=_now_text)

    def dto(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "value": self.value,
            "comment": self.comment,
            "dataChangeCreatedBy": self.created_by,
            "dataChangeLastModifiedBy": self.modified_by,
            "dataChangeCreatedTime": self.created_time,
            "dataChangeLastModifiedTime": self.modified_time,
        }


@dataclass
class Release:
    id: int
    app_id: str
    cluster: str
    namespace: str
    release_key: str
    name: str
    comment: str
    configurations: dict[str, str]
    released_by: str
    time: str = field(default_factory=_now_text)
    abandoned: bool = False

    def dto(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "appId": self.app_id,
            "clusterName": self.cluster,
            "namespaceName": self.namespace,
            "name": self.name,
            "configurations": dict(self.configurations),
            "comment": self.comment,
            "dataChangeCreatedBy": self.released_by,
            "dataChangeLastModifiedBy": self.released_by,
            "dataChangeCreatedTime": self.time,
            "dataChangeLastModifiedTime": self.time,
        }


@dataclass
class AppNamespace:
    name: str
    app_id: str
    format: str = "properties"
    is_public: bool = False
    comment: str = ""
    created_by: str = DEFAULT_USER

    def dto(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "appId": self.app_id,
            "format": self.format,
            "isPublic": self.is_public,
            "comment": self.comment,
            "dataChangeCreatedBy": self.created_by,
            "dataChangeLastModifiedBy": self.created_by,
        }


@dataclass
class App:
    app_id: str
    namespaces: dict[str, AppNamespace] = field(default_factory=dict)  # lower name -> ns
    secrets: list[str] = field(default_factory=list)
    clusters: dict[str, list[str]] = field(default_factory=dict)  # env -> cluster names


@dataclass(eq=False)
class _Waiter:
    """One held `/notifications/v2` request: woken once, by the first release of any of its
    watch keys."""

    loop: asyncio.AbstractEventLoop
    future: asyncio.Future[list[dict[str, Any]]]
    keys: dict[str, str]  # watch key -> namespace name as the client spelled it


class ApolloState:
    """The server's data, thread-safe (one lock; nothing blocks while holding it)."""

    def __init__(self, env: str = DEFAULT_ENV, envs: Iterable[str] = (DEFAULT_ENV,)) -> None:
        self.lock = threading.RLock()
        self.env = env.upper()  # the env this config service serves
        self.envs = {e.upper() for e in envs} | {self.env}
        self.apps: dict[str, App] = {}
        self.public: dict[str, AppNamespace] = {}  # lower name -> public app namespace
        # (env, appId, cluster, ns) -> key -> item; ns in its canonical spelling
        self.items: dict[tuple[str, str, str, str], dict[str, Item]] = {}
        # (env, appId, cluster, ns) -> releases, oldest first
        self.releases: dict[tuple[str, str, str, str], list[Release]] = {}
        self.release_ids = 0
        self.message_id = 0  # the global release-message counter
        self.notifications: dict[str, int] = {}  # watch key -> latest message id (served env)
        self.tokens: dict[str, set[str] | None] = {}  # token -> apps (None = every app)
        self.users: set[str] = {DEFAULT_USER}
        self.waiters: dict[str, set[_Waiter]] = {}

    # -- apps and namespaces ---------------------------------------------------------------

    def add_app(
        self,
        app_id: str,
        namespaces: Iterable[str] = (),
        secrets: Iterable[str] = (),
        clusters: Iterable[str] = (),
    ) -> App:
        with self.lock:
            app = self.apps.get(app_id)
            if app is None:
                app = App(app_id)
                app.namespaces[NAMESPACE_APPLICATION] = AppNamespace(NAMESPACE_APPLICATION, app_id)
                self.apps[app_id] = app
            for env in self.envs:
                names = app.clusters.setdefault(env, [CLUSTER_DEFAULT])
                names.extend(c for c in clusters if c not in names)
            for name in namespaces:
                self.add_namespace(app_id, name)
            app.secrets.extend(s for s in secrets if s not in app.secrets)
            return app

    def add_namespace(
        self, app_id: str, name: str, fmt: str = "properties", is_public: bool = False
    ) -> AppNamespace:
        with self.lock:
            app = self.apps[app_id]
            ns = app.namespaces.get(name.lower())
            if ns is None:
                ns = AppNamespace(name, app_id, fmt, is_public)
                app.namespaces[name.lower()] = ns
                if is_public:
                    self.public[name.lower()] = ns
            return ns

    def own_namespace(self, app_id: str, name: str) -> AppNamespace | None:
        app = self.apps.get(app_id)
        return None if app is None else app.namespaces.get(name.lower())

    def normalize(self, app_id: str, name: str) -> str:
        """NamespaceUtil: strip `.properties`, then the app's own spelling, then a public one."""
        name = strip_properties(name)
        own = self.own_namespace(app_id, name)
        if own is not None:
            return own.name
        public = self.public.get(name.lower())
        return public.name if public is not None else name

    def public_owner(self, app_id: str, name: str) -> str | None:
        """The owner of the public namespace `name`, when it is not `app_id`'s own."""
        if self.own_namespace(app_id, name) is not None:
            return None
        public = self.public.get(name.lower())
        return None if public is None or public.app_id == app_id else public.app_id

    # -- releases and notifications --------------------------------------------------------

    def active_release(self, env: str, app_id: str, cluster: str, ns: str) -> Release | None:
        for release in reversed(self.releases.get((env, app_id, cluster, ns), [])):
            if not release.abandoned:
                return release
        return None

    def find_release(
        self, app_id: str, cluster: str, ns: str, data_center: str | None
    ) -> Release | None:
        """ConfigService.loadConfig: the cluster, then the data center, then `default`."""
        tried: list[str] = []
        if cluster != CLUSTER_DEFAULT:
            tried.append(cluster)
        if data_center and data_center != cluster:
            tried.append(data_center)
        tried.append(CLUSTER_DEFAULT)
        for name in tried:
            release = self.active_release(self.env, app_id, name, ns)
            if release is not None:
                return release
        return None

    def watch_keys(self, app_id: str, cluster: str, ns: str, data_center: str | None) -> list[str]:
        """NotificationControllerV2.assembleAllWatchKeys for one (normalized) namespace."""

        def keys_for(owner: str) -> list[str]:
            found = []
            if cluster != CLUSTER_DEFAULT:
                found.append(watch_key(owner, cluster, ns))
            if data_center and data_center != cluster:
                found.append(watch_key(owner, data_center, ns))
            found.append(watch_key(owner, CLUSTER_DEFAULT, ns))
            return found

        keys = keys_for(app_id)
        owner = self.public_owner(app_id, ns)
        if owner is not None:
            keys.extend(k for k in keys_for(owner) if k not in keys)
        return keys

    def release(
        self,
        env: str,
        app_id: str,
        cluster: str,
        ns: str,
        *,
        title: str = "",
        comment: str = "",
        released_by: str = DEFAULT_USER,
    ) -> Release:
        """Publish the current items of a namespace: a new releaseKey, a new release message."""
        with self.lock:
            items = self.items.get((env, app_id, cluster, ns), {})
            self.release_ids += 1
            release = Release(
                id=self.release_ids,
                app_id=app_id,
                cluster=cluster,
                namespace=ns,
                release_key=_release_key(),
                name=title or time.strftime("%Y%m%d%H%M%S") + "-release",
                comment=comment,
                configurations={k: item.value for k, item in items.items()},
                released_by=released_by,
            )
            self.releases.setdefault((env, app_id, cluster, ns), []).append(release)
            self._message(env, watch_key(app_id, cluster, ns))
            return release

    def rollback(self, env: str, release_id: int) -> Release:
        with self.lock:
            for key, history in self.releases.items():
                for release in history:
                    if release.id == release_id and key[0] == env:
                        active = self.active_release(*key)
                        if active is not release:
                            raise ApolloHttpError(400, "release is not active")
                        release.abandoned = True
                        self._message(env, watch_key(key[1], key[2], key[3]))
                        return release
            raise ApolloHttpError(404, f"release not found for id: {release_id}")

    def _message(self, env: str, key: str) -> None:
        """Write a release message and wake every long poll held on its key."""
        if env != self.env:
            return  # another env's config service: nobody here watches it
        self.message_id += 1
        self.notifications[key] = self.message_id
        for waiter in list(self.waiters.get(key, ())):
            self._unregister(waiter)
            result = [
                {
                    "namespaceName": waiter.keys[key],
                    "notificationId": self.message_id,
                    "messages": {"details": {key: self.message_id}},
                }
            ]
            with contextlib.suppress(RuntimeError):  # its loop closed: the server stopped
                waiter.loop.call_soon_threadsafe(_resolve, waiter.future, result)

    def register(self, waiter: _Waiter) -> None:
        for key in waiter.keys:
            self.waiters.setdefault(key, set()).add(waiter)

    def unregister(self, waiter: _Waiter) -> None:
        with self.lock:
            self._unregister(waiter)

    def _unregister(self, waiter: _Waiter) -> None:
        for key in waiter.keys:
            holders = self.waiters.get(key)
            if holders is not None:
                holders.discard(waiter)
                if not holders:
                    del self.waiters[key]


def _resolve(future: asyncio.Future[list[dict[str, Any]]], result: list[dict[str, Any]]) -> None:
    if not future.done():
        future.set_result(result)


# -- the server ----------------------------------------------------------------------------


@dataclass
class _Fault:
    status: int
    times: int
    body: str


class ApolloTestServer:
    """The Apollo server on `127.0.0.1:<port>`, in a background thread; see the module doc."""

    def __init__(
        self,
        *,
        port: int = 0,
        host: str = "127.0.0.1",
        long_poll_timeout: float = DEFAULT_LONG_POLL_TIMEOUT,
        auth_time_tolerance: float = DEFAULT_AUTH_TIME_TOLERANCE,
        env: str = DEFAULT_ENV,
        envs: Iterable[str] = (DEFAULT_ENV,),
    ) -> None:
        self.host = host
        self.port = port
        self.long_poll_timeout = long_poll_timeout
        self.auth_time_tolerance = auth_time_tolerance
        self.state = ApolloState(env, envs)
        # What `/services/config` answers; None = this server itself.
        self.config_service_urls: list[str] | None = None
        self._faults: dict[str, list[_Fault]] = {}
        self._latency: dict[str, float] = {}
        self._counts: dict[str, int] = dict.fromkeys(ENDPOINTS, 0)
        self._hook_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: uvicorn.Server | None = None
        self._started = threading.Event()
        self._start_error: BaseException | None = None
        self.app = self._asgi_app()

    # -- lifecycle -------------------------------------------------------------------------

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> ApolloTestServer:
        """Bind (a free port the first time, the same port after a stop) and serve."""
        if self.running:
            raise RuntimeError("the Apollo test server is already running")
        # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on sockets that say they are TCP;
        # without it a keep-alive answer waits ~40 ms (Nagle against the client's delayed ACK).
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((self.host, self.port))
        sock.listen(128)
        self.port = sock.getsockname()[1]
        self._started.clear()
        self._start_error = None
        self._thread = threading.Thread(
            target=self._run, args=(sock,), name=f"apollo-test-server-{self.port}", daemon=True
        )
        self._thread.start()
        if not self._started.wait(10):
            raise RuntimeError("the Apollo test server did not start within 10 s")
        if self._start_error is not None:
            raise RuntimeError("the Apollo test server failed to start") from self._start_error
        return self

    def stop(self) -> None:
        """Stop as in a crash: open connections (held long polls too) are aborted, the port is
        closed. The state stays; `start()` serves it again on the same port."""
        loop, server, thread = self._loop, self._server, self._thread
        if thread is None:
            return
        if loop is not None and server is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed in between
                loop.call_soon_threadsafe(self._abort, server)
        thread.join(10)
        self._thread = self._loop = self._server = None
        with self.state.lock:
            self.state.waiters.clear()

    def restart(self) -> None:
        self.stop()
        self.start()

    def __enter__(self) -> ApolloTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _run(self, sock: socket.socket) -> None:
        try:
            asyncio.run(self._serve(sock))
        except BaseException as err:  # pragma: no cover - reported through start()
            self._start_error = err
            self._started.set()
        finally:
            sock.close()

    async def _serve(self, sock: socket.socket) -> None:
        config = uvicorn.Config(
            self.app,
            lifespan="off",
            log_config=None,
            log_level="warning",
            access_log=False,
            http="h11",
            ws="none",
            loop="none",
            timeout_graceful_shutdown=1,
        )
        config.load()
        server = uvicorn.Server(config)
        server.lifespan = config.lifespan_class(config)
        self._loop = asyncio.get_running_loop()
        self._server = server
        await server.startup(sockets=[sock])
        if server.should_exit:
            raise OSError(f"cannot serve on {self.url}")
        self._started.set()
        await server.main_loop()
        await server.shutdown(sockets=[sock])

    @staticmethod
    def _abort(server: uvicorn.Server) -> None:
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.abort()
        server.force_exit = True
        server.should_exit = True

    # -- test hooks ------------------------------------------------------------------------

    def add_app(
        self,
        app_id: str,
        namespaces: Iterable[str] = (),
        secrets: Iterable[str] = (),
        clusters: Iterable[str] = (),
    ) -> None:
        """An app with `application` plus `namespaces` (private, properties), the access-key
        `secrets` that turn signature checks on, and extra `clusters` (every env)."""
        self.state.add_app(app_id, namespaces, secrets, clusters)

    def add_public_namespace(self, app_id: str, name: str) -> None:
        self.state.add_namespace(app_id, name, is_public=True)

    def set_secrets(self, app_id: str, secrets: Iterable[str]) -> None:
        """Replace the app's access-key secrets (empty: no checks)."""
        with self.state.lock:
            self.state.apps[app_id].secrets = list(secrets)

    def add_token(self, token: str, apps: Iterable[str] | None = None) -> None:
        """An Open API consumer token granted `apps` (None: every app)."""
        with self.state.lock:
            self.state.tokens[token] = None if apps is None else set(apps)

    def add_user(self, user: str) -> None:
        with self.state.lock:
            self.state.users.add(user)

    def fail_next(self, endpoint: str, status: int, times: int = 1, body: str = "") -> None:
        """The next `times` requests to `endpoint` (one of ENDPOINTS) answer `status`."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        with self._hook_lock:
            self._faults.setdefault(endpoint, []).append(_Fault(status, times, body))

    def set_latency(self, endpoint: str, seconds: float) -> None:
        """Delay every answer of `endpoint` by `seconds` (0 turns it off)."""
        if endpoint not in ENDPOINTS:
            raise ValueError(f"endpoint must be one of {ENDPOINTS}")
        with self._hook_lock:
            self._latency[endpoint] = seconds

    def request_count(self, endpoint: str) -> int:
        with self._hook_lock:
            return self._counts[endpoint]

    def reset_counts(self) -> None:
        with self._hook_lock:
            self._counts = dict.fromkeys(ENDPOINTS, 0)

    def notification_id(self, app_id: str, namespace: str, cluster: str = CLUSTER_DEFAULT) -> int:
        """The latest release-message id of `appId+cluster+namespace` (-1: never released)."""
        with self.state.lock:
            ns = self.state.normalize(app_id, namespace)
            return self.state.notifications.get(watch_key(app_id, cluster, ns), -1)

    def release_key(
        self, app_id: str, namespace: str, cluster: str = CLUSTER_DEFAULT, env: str | None = None
    ) -> str | None:
        with self.state.lock:
            ns = self.state.normalize(app_id, namespace)
            release = self.state.active_release(
                (env or self.state.env).upper(), app_id, cluster, ns
            )
            return None if release is None else release.release_key

    def items(
        self, app_id: str, namespace: str, cluster: str = CLUSTER_DEFAULT, env: str | None = None
    ) -> dict[str, str]:
        """The (unreleased) items of a namespace, as the Open API sees them."""
        with self.state.lock:
            ns = self.state.normalize(app_id, namespace)
            key = ((env or self.state.env).upper(), app_id, cluster, ns)
            return {k: item.value for k, item in self.state.items.get(key, {}).items()}

    def publish(
        self,
        app_id: str,
        namespace: str,
        items: Mapping[str, str | None],
        *,
        cluster: str = CLUSTER_DEFAULT,
        env: str | None = None,
    ) -> str:
        """Write items (None deletes one) and release, as the portal would; returns the new
        releaseKey. The namespace is created (private, properties) when missing."""
        env_name = (env or self.state.env).upper()
        with self.state.lock:
            if app_id not in self.state.apps:
                self.state.add_app(app_id)
            ns = self.state.add_namespace(app_id, strip_properties(namespace)).name
            stored = self.state.items.setdefault((env_name, app_id, cluster, ns), {})
            for key, value in items.items():
                if value is None:
                    stored.pop(key, None)
                elif key in stored:
                    stored[key].value = value
                    stored[key].modified_time = _now_text()
                else:
                    stored[key] = Item(key, value)
            return self.state.release(env_name, app_id, cluster, ns).release_key

    # -- plumbing --------------------------------------------------------------------------

    async def _enter(self, endpoint: str) -> Response | None:
        with self._hook_lock:
            self._counts[endpoint] += 1
            latency = self._latency.get(endpoint, 0.0)
            faults = self._faults.get(endpoint)
            fault = None
            if faults:
                fault = faults[0]
                fault.times -= 1
                if fault.times <= 0:
                    faults.pop(0)
        if latency > 0:
            await asyncio.sleep(latency)
        if fault is not None:
            if fault.status in (200, 304):
                return Response(fault.body or None, status_code=fault.status)
            return _error(fault.status, fault.body or f"injected status {fault.status}")
        return None

    def _asgi_app(self) -> Starlette:
        config = _ConfigService(self)
        openapi = _OpenApi(self)
        ns = "/envs/{env}/apps/{app_id}/clusters/{cluster}/namespaces/{ns}"
        base = "/openapi/v1"
        routes = [
            Route("/configs/{app_id}/{cluster}/{ns}", config.configs, methods=["GET"]),
            Route("/configfiles/json/{app_id}/{cluster}/{ns}", config.json_file, methods=["GET"]),
            Route("/configfiles/raw/{app_id}/{cluster}/{ns}", config.raw_file, methods=["GET"]),
            Route("/configfiles/{app_id}/{cluster}/{ns}", config.properties_file, methods=["GET"]),
            Route("/notifications/v2", config.notifications, methods=["GET"]),
            Route("/services/{kind}", config.services, methods=["GET"]),
            Route(
                f"{base}/apps/{{app_id}}/appnamespaces",
                openapi.create_app_namespace,
                methods=["POST"],
            ),
            Route(f"{base}/apps/{{app_id}}/envclusters", openapi.env_clusters, methods=["GET"]),
            Route(
                f"{base}/envs/{{env}}/apps/{{app_id}}/clusters/{{cluster}}/namespaces",
                openapi.namespaces,
                methods=["GET"],
            ),
            Route(f"{base}{ns}", openapi.namespace, methods=["GET"]),
            Route(f"{base}{ns}/lock", openapi.namespace_lock, methods=["GET"]),
            Route(f"{base}{ns}/items", openapi.items, methods=["GET", "POST"]),
            Route(f"{base}{ns}/items/{{key:path}}", openapi.item, methods=["GET", "PUT", "DELETE"]),
            Route(
                f"{base}{ns}/encodedItems/{{key:path}}",
                openapi.encoded_item,
                methods=["GET", "PUT", "DELETE"],
            ),
            Route(f"{base}{ns}/releases", openapi.publish, methods=["POST"]),
            Route(f"{base}{ns}/releases/latest", openapi.latest_release, methods=["GET"]),
            Route(
                f"{base}/envs/{{env}}/releases/{{release_id:int}}/rollback",
                openapi.rollback,
                methods=["PUT"],
            ),
        ]
        return Starlette(routes=routes)


def _json(body: Any, status: int = 200) -> Response:
    return JSONResponse(body, status_code=status, media_type=JSON_TYPE)


def _path_with_query(request: Request) -> str:
    """The request URI and raw query string as they came on the wire (still encoded)."""
    raw = request.scope.get("raw_path") or request.scope["path"].encode()
    path = raw.decode("latin-1") if isinstance(raw, bytes) else str(raw)
    query = request.scope.get("query_string", b"").decode("latin-1")
    return f"{path}?{query}" if query else path


class _ConfigService:
    """`/configs`, `/configfiles`, `/notifications/v2`, `/services`."""

    def __init__(self, server: ApolloTestServer) -> None:
        self.server = server
        self.state = server.state

    def _check_access(self, request: Request, app_id: str | None) -> Response | None:
        """ClientAuthenticationFilter: only apps with secrets are checked."""
        if not app_id:
            return _error(400, "InvalidAppId")
        with self.state.lock:
            app = self.state.apps.get(app_id)
            secrets = list(app.secrets) if app is not None else []
        if not secrets:
            return None
        timestamp = request.headers.get("Timestamp", "")
        try:
            skew = abs(time.time() * 1000 - int(timestamp)) / 1000
        except ValueError:
            return _error(401, "RequestTimeTooSkewed")
        if skew > self.server.auth_time_tolerance:
            return _error(401, "RequestTimeTooSkewed")
        authorization = request.headers.get("Authorization", "")
        parts = authorization.split(":")
        if not authorization.startswith("Apollo ") or len(parts) != 2:
            return _error(401, "Unauthorized")
        path = _path_with_query(request)
        for secret in secrets:
            expected = apollo_signature(secret, timestamp, path)
            if hmac.compare_digest(expected, parts[1]):
                return None
        return _error(401, "Unauthorized")

    async def _guard(self, request: Request, endpoint: str, app_id: str | None) -> Response | None:
        early = await self.server._enter(endpoint)
        if early is not None:
            return early
        return self._check_access(request, app_id)

    def _load(self, request: Request) -> tuple[str, str, str, list[Release]]:
        """ConfigController.queryConfig's release lookup: the app's own release, then a public
        namespace's (the app's keys win)."""
        app_id = request.path_params["app_id"]
        cluster = request.path_params["cluster"]
        data_center = request.query_params.get("dataCenter")
        with self.state.lock:
            ns = self.state.normalize(app_id, request.path_params["ns"])
            releases: list[Release] = []
            own = self.state.find_release(app_id, cluster, ns, data_center)
            loaded_cluster = cluster
            if own is not None:
                releases.append(own)
                loaded_cluster = own.cluster
            owner = self.state.public_owner(app_id, ns)
            if owner is not None:
                public = self.state.find_release(owner, cluster, ns, data_center)
                if public is not None:
                    releases.append(public)
        return app_id, loaded_cluster, ns, releases

    @staticmethod
    def _merged(releases: list[Release]) -> dict[str, str]:
        merged: dict[str, str] = {}
        for release in reversed(releases):
            merged.update(release.configurations)
        return merged

    def _not_found(self, request: Request) -> Response:
        p = request.path_params
        return PlainTextResponse(
            f"Could not load configurations with appId: {p['app_id']}, clusterName: "
            f"{p['cluster']}, namespace: {p['ns']}",
            status_code=404,
        )

    async def configs(self, request: Request) -> Response:
        denied = await self._guard(request, "configs", request.path_params["app_id"])
        if denied is not None:
            return denied
        app_id, cluster, _, releases = self._load(request)
        if not releases:
            return self._not_found(request)
        merged_key = SEPARATOR.join(r.release_key for r in releases)
        if merged_key == request.query_params.get("releaseKey", "-1"):
            return Response(status_code=304)
        return _json(
            {
                "appId": app_id,
                "cluster": cluster,
                "namespaceName": request.path_params["ns"],
                "configurations": self._merged(releases),
                "releaseKey": merged_key,
            }
        )

    async def json_file(self, request: Request) -> Response:
        denied = await self._guard(request, "configfiles", request.path_params["app_id"])
        if denied is not None:
            return denied
        releases = self._load(request)[3]
        if not releases:
            return self._not_found(request)
        return _json(self._merged(releases))

    async def properties_file(self, request: Request) -> Response:
        denied = await self._guard(request, "configfiles", request.path_params["app_id"])
        if denied is not None:
            return denied
        releases = self._load(request)[3]
        if not releases:
            return self._not_found(request)
        lines = [
            f"{_prop_escape(k, True)}={_prop_escape(v, False)}"
            for k, v in self._merged(releases).items()
        ]
        return PlainTextResponse("\n".join(lines) + ("\n" if lines else ""))

    async def raw_file(self, request: Request) -> Response:
        denied = await self._guard(request, "configfiles", request.path_params["app_id"])
        if denied is not None:
            return denied
        _, _, ns, releases = self._load(request)
        if not releases:
            return self._not_found(request)
        content = self._merged(releases).get("content", "")
        suffix = ns.rsplit(".", 1)[-1].lower() if "." in ns else "properties"
        media = {
            "json": "application/json",
            "yaml": "application/yaml",
            "yml": "application/yaml",
            "xml": "application/xml",
        }.get(suffix, "text/plain")
        return Response(content, media_type=f"{media};charset=UTF-8")

    async def services(self, request: Request) -> Response:
        early = await self.server._enter("services")
        if early is not None:
            return early
        kind = request.path_params["kind"]
        if kind not in ("config", "admin", "meta"):
            return _error(404, f"no such service: {kind}")
        names = {
            "config": "apollo-configservice",
            "admin": "apollo-adminservice",
            "meta": "apollo-configservice",
        }
        urls = self.server.config_service_urls
        if urls is None or kind == "admin":
            urls = [f"{self.server.url}/"]
        return _json(
            [
                {
                    "appName": names[kind],
                    "instanceId": f"{url.split('://', 1)[-1].rstrip('/')}:{names[kind]}",
                    "homepageUrl": url,
                }
                for url in urls
            ]
        )

    async def notifications(self, request: Request) -> Response:
        app_id = request.query_params.get("appId")
        denied = await self._guard(request, "notifications", app_id)
        if denied is not None:
            return denied
        assert app_id is not None
        cluster = request.query_params.get("cluster")
        if not cluster:
            return _error(400, "Required String parameter 'cluster' is not present")
        data_center = request.query_params.get("dataCenter")
        try:
            wanted = json.loads(request.query_params.get("notifications", ""))
            if not isinstance(wanted, list) or not wanted:
                raise ValueError
            entries = [
                (str(n["namespaceName"]), int(n.get("notificationId", -1)))
                for n in wanted
                if isinstance(n, dict) and n.get("namespaceName")
            ]
            if not entries:
                raise ValueError
        except (ValueError, KeyError, TypeError):
            return _error(400, "invalid notifications format")

        with self.state.lock:
            # filterNotifications: normalize, and keep the lowest id of names differing in case
            filtered: dict[str, tuple[str, int]] = {}
            for original, notification_id in entries:
                stripped = strip_properties(original)
                normalized = self.state.normalize(app_id, stripped)
                if normalized in filtered and filtered[normalized][1] < notification_id:
                    continue
                filtered[normalized] = (stripped, notification_id)
            ready: list[dict[str, Any]] = []
            keys: dict[str, str] = {}
            for normalized, (original, client_id) in filtered.items():
                watched = self.state.watch_keys(app_id, cluster, normalized, data_center)
                details = {
                    k: self.state.notifications[k] for k in watched if k in self.state.notifications
                }
                latest = max(details.values(), default=-1)
                if latest > client_id:
                    ready.append(
                        {
                            "namespaceName": original,
                            "notificationId": latest,
                            "messages": {"details": details},
                        }
                    )
                for k in watched:
                    keys.setdefault(k, original)
            if ready:
                return _json(ready)
            loop = asyncio.get_running_loop()
            waiter = _Waiter(loop, loop.create_future(), keys)
            self.state.register(waiter)
        disconnect: asyncio.Future[None] = asyncio.ensure_future(_disconnected(request))
        pending: set[asyncio.Future[Any]] = {waiter.future, disconnect}
        try:
            done, _ = await asyncio.wait(
                pending,
                timeout=self.server.long_poll_timeout,
                return_when=asyncio.FIRST_COMPLETED,
            )
        finally:
            disconnect.cancel()
            self.state.unregister(waiter)
        if waiter.future in done:
            return _json(waiter.future.result())
        return Response(status_code=304)


async def _disconnected(request: Request) -> None:
    while True:
        message = await request.receive()
        if message["type"] == "http.disconnect":
            return


def _prop_escape(text: str, is_key: bool) -> str:
    out = []
    for ch in text:
        if ch in "\\":
            out.append("\\\\")
        elif ch == "\n":
            out.append("\\n")
        elif ch == "\r":
            out.append("\\r")
        elif ch == "\t":
            out.append("\\t")
        elif is_key and ch in "=: #!":
            out.append("\\" + ch)
        elif ord(ch) > 0x7E:
            out.append(f"\\u{ord(ch):04x}" if ord(ch) <= 0xFFFF else ch)
        else:
            out.append(ch)
    return "".join(out)


class _OpenApi:
    """`/openapi/v1/…`: the portal's Open API (apollo-protocol.md §5)."""

    def __init__(self, server: ApolloTestServer) -> None:
        self.server = server
        self.state = server.state

    # -- checks ----------------------------------------------------------------------------

    async def _begin(self, request: Request, app_id: str) -> None:
        """Hooks, then ConsumerAuthenticationFilter (401) and the permission check (403)."""
        early = await self.server._enter("openapi")
        if early is not None:
            raise _Early(early)
        token = request.headers.get("Authorization", "")
        with self.state.lock:
            if token not in self.state.tokens:
                raise ApolloHttpError(401, "Unauthorized")
            granted = self.state.tokens[token]
        if granted is not None and app_id not in granted:
            raise ApolloHttpError(403, "Forbidden")

    def _env(self, request: Request) -> str:
        env = str(request.path_params["env"]).upper()
        if env not in self.state.envs:
            raise ApolloHttpError(400, f"Invalid env: {request.path_params['env']}")
        return env

    def _app(self, app_id: str) -> App:
        app = self.state.apps.get(app_id)
        if app is None:
            raise ApolloHttpError(404, f"App not found for appId: {app_id}")
        return app

    def _namespace_key(self, request: Request) -> tuple[str, str, str, str]:
        """(env, appId, cluster, ns) of an existing namespace, or 404."""
        env = self._env(request)
        p = request.path_params
        app = self._app(p["app_id"])
        if p["cluster"] not in app.clusters.get(env, []):
            raise ApolloHttpError(404, f"cluster not found for {p['app_id']} {p['cluster']}")
        ns = app.namespaces.get(p["ns"].lower())
        if ns is None:
            raise ApolloHttpError(
                404, f"namespace not found for {p['app_id']} {p['cluster']} {p['ns']}"
            )
        return env, p["app_id"], p["cluster"], ns.name

    def _user(self, user: Any, what: str) -> str:
        if not isinstance(user, str) or not user:
            raise ApolloHttpError(400, f"{what} should not be null or empty")
        if user not in self.state.users:
            raise ApolloHttpError(400, f"User {user} doesn't exist!")
        return user

    @staticmethod
    async def _body(request: Request) -> dict[str, Any]:
        try:
            body = json.loads(await request.body() or b"null")
        except ValueError:
            raise ApolloHttpError(400, "request body is not valid JSON") from None
        if not isinstance(body, dict):
            raise ApolloHttpError(400, "request body must be a JSON object")
        return body

    @staticmethod
    async def _run(handler: Callable[[], Awaitable[Response]]) -> Response:
        try:
            return await handler()
        except _Early as early:
            return early.response
        except ApolloHttpError as err:
            return _error(err.status, err.message, err.exception)

    # -- namespaces ------------------------------------------------------------------------

    async def create_app_namespace(self, request: Request) -> Response:
        async def handle() -> Response:
            app_id = request.path_params["app_id"]
            await self._begin(request, app_id)
            body = await self._body(request)
            name, fmt = body.get("name"), str(body.get("format") or "properties").lower()
            if body.get("appId") != app_id:
                raise ApolloHttpError(400, "AppId not equal. AppId in path = " + app_id)
            if not isinstance(name, str) or not _NAMESPACE_NAME.fullmatch(name):
                raise ApolloHttpError(
                    400, "Invalid Namespace format: only letters, digits, '_', '-' and '.'"
                )
            if fmt not in FORMATS:
                raise ApolloHttpError(400, f"Invalid namespace format. format = {fmt}")
            is_public = str(body.get("isPublic", False)).lower() == "true"
            creator = self._user(body.get("dataChangeCreatedBy"), "dataChangeCreatedBy")
            comment = str(body.get("comment") or "")
            if len(comment) > COMMENT_MAX:
                raise ApolloHttpError(400, "comment too long")
            if fmt != "properties" and not name.lower().endswith("." + fmt):
                name = f"{name}.{fmt}"
            with self.state.lock:
                if app_id not in self.state.apps:
                    raise ApolloHttpError(400, f"App not exist. AppId = {app_id}")
                exists = self.state.own_namespace(app_id, name) is not None or (
                    is_public and name.lower() in self.state.public
                )
                if exists:
                    raise ApolloHttpError(400, f"AppNamespace {name} already exists!")
                ns = self.state.add_namespace(app_id, name, fmt, is_public)
                ns.comment, ns.created_by = comment, creator
                return _json(ns.dto())

        return await self._run(handle)

    async def env_clusters(self, request: Request) -> Response:
        async def handle() -> Response:
            app_id = request.path_params["app_id"]
            await self._begin(request, app_id)
            with self.state.lock:
                app = self._app(app_id)
                return _json(
                    [{"env": env, "clusters": list(c)} for env, c in sorted(app.clusters.items())]
                )

        return await self._run(handle)

    def _namespace_dto(self, env: str, app_id: str, cluster: str, ns: AppNamespace) -> Any:
        items = self.state.items.get((env, app_id, cluster, ns.name), {})
        return {
            "appId": app_id,
            "clusterName": cluster,
            "namespaceName": ns.name,
            "comment": ns.comment,
            "format": ns.format,
            "isPublic": ns.is_public,
            "items": [item.dto() for item in items.values()],
            "dataChangeCreatedBy": ns.created_by,
            "dataChangeLastModifiedBy": ns.created_by,
        }

    async def namespaces(self, request: Request) -> Response:
        async def handle() -> Response:
            p = request.path_params
            await self._begin(request, p["app_id"])
            with self.state.lock:
                env = self._env(request)
                app = self._app(p["app_id"])
                if p["cluster"] not in app.clusters.get(env, []):
                    raise ApolloHttpError(404, f"cluster not found: {p['cluster']}")
                return _json(
                    [
                        self._namespace_dto(env, p["app_id"], p["cluster"], ns)
                        for ns in app.namespaces.values()
                    ]
                )

        return await self._run(handle)

    async def namespace(self, request: Request) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            with self.state.lock:
                env, app_id, cluster, name = self._namespace_key(request)
                ns = self.state.apps[app_id].namespaces[name.lower()]
                return _json(self._namespace_dto(env, app_id, cluster, ns))

        return await self._run(handle)

    async def namespace_lock(self, request: Request) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            with self.state.lock:
                name = self._namespace_key(request)[3]
            return _json({"namespaceName": name, "isLocked": False})

        return await self._run(handle)

    # -- items -----------------------------------------------------------------------------

    @staticmethod
    def _check_item(key: Any, value: Any, comment: Any) -> tuple[str, str, str]:
        if not isinstance(key, str) or not key:
            raise ApolloHttpError(400, "item key should not be empty")
        if len(key) > KEY_MAX:
            raise ApolloHttpError(400, f"key too long, max length is {KEY_MAX}")
        if value is None:
            value = ""
        if not isinstance(value, str):
            raise ApolloHttpError(400, "item value must be a string")
        if len(value) > VALUE_MAX:
            raise ApolloHttpError(400, f"value too long, max length is {VALUE_MAX}")
        comment = "" if comment is None else str(comment)
        if len(comment) > COMMENT_MAX:
            raise ApolloHttpError(400, f"comment too long, max length is {COMMENT_MAX}")
        return key, value, comment

    async def items(self, request: Request) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            if request.method == "POST":
                body = await self._body(request)
                with self.state.lock:
                    key = self._namespace_key(request)
                    k, v, c = self._check_item(
                        body.get("key"), body.get("value"), body.get("comment")
                    )
                    creator = self._user(body.get("dataChangeCreatedBy"), "dataChangeCreatedBy")
                    stored = self.state.items.setdefault(key, {})
                    if k in stored:
                        raise ApolloHttpError(400, f"item already exists: {k}")
                    stored[k] = Item(k, v, c, creator, creator)
                    return _json(stored[k].dto())
            try:
                page = int(request.query_params.get("page", "0"))
                size = int(request.query_params.get("size", "50"))
            except ValueError:
                raise ApolloHttpError(400, "page and size must be numbers") from None
            if page < 0 or size <= 0:
                raise ApolloHttpError(400, "page should be >= 0 and size > 0")
            with self.state.lock:
                key = self._namespace_key(request)
                all_items = list(self.state.items.get(key, {}).values())
            chunk = all_items[page * size : (page + 1) * size]
            return _json(
                {
                    "content": [item.dto() for item in chunk],
                    "page": page,
                    "size": size,
                    "total": len(all_items),
                }
            )

        return await self._run(handle)

    async def item(self, request: Request) -> Response:
        return await self._item(request, request.path_params["key"])

    async def encoded_item(self, request: Request) -> Response:
        raw = request.path_params["key"]
        try:
            padded = raw + "=" * (-len(raw) % 4)
            if "-" in raw or "_" in raw:
                decoded = base64.urlsafe_b64decode(padded)
            else:
                decoded = base64.b64decode(padded, validate=True)
            key = decoded.decode("utf-8")
        except (binascii.Error, ValueError):
            early = await self.server._enter("openapi")
            return early or _error(400, "Invalid encoded key")
        return await self._item(request, key)

    async def _item(self, request: Request, path_key: str) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            if request.method == "GET":
                with self.state.lock:
                    ns_key = self._namespace_key(request)
                    item = self.state.items.get(ns_key, {}).get(path_key)
                    if item is None:
                        raise ApolloHttpError(404, f"item not found for {path_key}")
                    return _json(item.dto())
            if request.method == "DELETE":
                self._user(request.query_params.get("operator"), "operator")  # required, known
                with self.state.lock:
                    ns_key = self._namespace_key(request)
                    stored = self.state.items.get(ns_key, {})
                    if path_key not in stored:
                        raise ApolloHttpError(404, f"item not found for {path_key}")
                    del stored[path_key]
                    return Response(status_code=200)
            # PUT
            body = await self._body(request)
            create = request.query_params.get("createIfNotExists", "false").lower() == "true"
            with self.state.lock:
                ns_key = self._namespace_key(request)
                k, v, c = self._check_item(body.get("key"), body.get("value"), body.get("comment"))
                if k != path_key:
                    raise ApolloHttpError(400, "Key in path and payload is not consistent")
                modifier = self._user(
                    body.get("dataChangeLastModifiedBy"), "dataChangeLastModifiedBy"
                )
                stored = self.state.items.setdefault(ns_key, {})
                existing = stored.get(k)
                if existing is None:
                    if not create:
                        raise ApolloHttpError(404, f"item not found for {k}")
                    creator = self._user(body.get("dataChangeCreatedBy"), "dataChangeCreatedBy")
                    stored[k] = Item(k, v, c, creator, modifier)
                else:
                    existing.value, existing.modified_by = v, modifier
                    if body.get("comment") is not None:
                        existing.comment = c
                    existing.modified_time = _now_text()
            return Response(status_code=200)

        return await self._run(handle)

    # -- releases --------------------------------------------------------------------------

    async def publish(self, request: Request) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            body = await self._body(request)
            title, by = body.get("releaseTitle"), body.get("releasedBy")
            if not title or not by:
                raise ApolloHttpError(400, "Params(releaseTitle and releasedBy) can not be empty")
            if not isinstance(title, str) or len(title) > RELEASE_TITLE_MAX:
                raise ApolloHttpError(400, f"releaseTitle too long, max {RELEASE_TITLE_MAX}")
            comment = str(body.get("releaseComment") or "")
            if len(comment) > COMMENT_MAX:
                raise ApolloHttpError(400, f"releaseComment too long, max {COMMENT_MAX}")
            with self.state.lock:
                released_by = self._user(by, "releasedBy")
                env, app_id, cluster, ns = self._namespace_key(request)
                release = self.state.release(
                    env, app_id, cluster, ns, title=title, comment=comment, released_by=released_by
                )
                return _json(release.dto())

        return await self._run(handle)

    async def latest_release(self, request: Request) -> Response:
        async def handle() -> Response:
            await self._begin(request, request.path_params["app_id"])
            with self.state.lock:
                release = self.state.active_release(*self._namespace_key(request))
                if release is None:
                    return Response(status_code=200)
                return _json(release.dto())

        return await self._run(handle)

    async def rollback(self, request: Request) -> Response:
        async def handle() -> Response:
            release_id = int(request.path_params["release_id"])
            with self.state.lock:
                owner = next(
                    (
                        r.app_id
                        for h in self.state.releases.values()
                        for r in h
                        if r.id == release_id
                    ),
                    "",
                )
            await self._begin(request, owner)
            self._user(request.query_params.get("operator"), "operator")
            self.state.rollback(self._env(request), release_id)
            return Response(status_code=200)

        return await self._run(handle)


class _Early(Exception):
    def __init__(self, response: Response) -> None:
        super().__init__("early response")
        self.response = response


# -- command line --------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:  # pragma: no cover - manual use
    parser = argparse.ArgumentParser(
        prog="python -m layotto_apollo.testing",
        description="A protocol-faithful Apollo server (config service, meta service, Open API)"
        " with in-memory state, for tests and demos.",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8080)
    parser.add_argument(
        "--app",
        action="append",
        default=[],
        metavar="APP_ID[:NS1,NS2]",
        help="an app and its extra namespaces (repeatable)",
    )
    parser.add_argument(
        "--token",
        action="append",
        default=[],
        metavar="TOKEN[:APP1,APP2]",
        help="an Open API consumer token and the apps it may write (default every app)",
    )
    parser.add_argument(
        "--secret", action="append", default=[], metavar="APP_ID:SECRET", help="an access key"
    )
    parser.add_argument("--user", action="append", default=[], help="an Open API user")
    parser.add_argument(
        "--hold",
        type=float,
        default=DEFAULT_LONG_POLL_TIMEOUT,
        help="long-poll hold in seconds (default 60)",
    )
    parser.add_argument("--env", default=DEFAULT_ENV)
    args = parser.parse_args(argv)
    server = ApolloTestServer(
        host=args.host,
        port=args.port,
        long_poll_timeout=args.hold,
        env=args.env,
        envs=[args.env],
    )
    for spec in args.app:
        app_id, _, names = spec.partition(":")
        server.add_app(app_id, [n for n in names.split(",") if n])
    for spec in args.secret:
        app_id, _, secret = spec.partition(":")
        server.add_app(app_id, secrets=[secret])
    for spec in args.token:
        token, _, apps = spec.partition(":")
        server.add_token(token, [a for a in apps.split(",") if a] or None)
    for user in args.user:
        server.add_user(user)
    server.start()
    print(f"Apollo test server on {server.url} (Ctrl-C stops it)", flush=True)
    try:
        while server.running:
            time.sleep(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()


if __name__ == "__main__":  # pragma: no cover
    main()
