"""An Apollo client on httpx, no SDK: the config service (reads with releaseKey caching, the
`/notifications/v2` long poll, access-key signing, meta-service discovery, a local backup) and
the portal's Open API (items, namespaces, releases).

It follows the reference client (apollo-java) where that matters, see `apollo-protocol.md`:

- `GET /configs/{appId}/{cluster}/{ns}` sends the releaseKey it has; a 304 keeps the cached copy.
  After a notification it passes the notification's `messages` along.
- `GET /notifications/v2` is held by the server for up to its long-poll timeout (60 s upstream);
  the client's read timeout is 1.5 times that (90 s upstream), at least one second more.
- With a `secret`, every config-service request carries `Timestamp` and
  `Authorization: Apollo <appId>:<Base64(HMAC-SHA1(secret, timestamp\\npathWithQuery))>`, where
  pathWithQuery is exactly what goes on the wire (the request is built first, then signed).
- With `meta_server=True` the addresses are meta servers: `GET /services/config` names the
  config services (`homepageUrl`), re-read every 5 minutes and whenever all of them fail.
- Several addresses are tried in turn on connection errors; the one that answered is kept.
- With a backup directory, every config read from the server is saved to
  `<dir>/<appId>+<cluster>+<ns>.json`; when the server cannot be reached, the in-memory copy or
  else that file answers (as apollo-java's LocalFileConfigRepository does).

Errors are `ApolloError`s: `ApolloConnectionError` (nothing answered), `ApolloTimeoutError`,
`ApolloHTTPError` (a status the protocol does not expect, with the server's message). Messages
never contain the addresses, the token or the secret.
"""

from __future__ import annotations

import base64
import contextlib
import errno
import hashlib
import hmac
import json
import logging
import os
import random
import socket
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import anyio
import httpx

log = logging.getLogger(__name__)

CLUSTER_DEFAULT = "default"
NAMESPACE_APPLICATION = "application"
DEFAULT_ENV = "DEV"
DEFAULT_LONG_POLL_TIMEOUT = 60.0  # the server's hold (`long.polling.timeout`)
DEFAULT_READ_TIMEOUT = 5.0
DEFAULT_CONNECT_TIMEOUT = 1.0
META_REFRESH_INTERVAL = 300.0
JSON_CONTENT_TYPE = "application/json;charset=UTF-8"


# -- errors --------------------------------------------------------------------------------


class ApolloError(Exception):
    """Base of the client's errors; `message` is safe to show (no hosts, tokens, secrets)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class ApolloConnectionError(ApolloError):
    """No server could be reached (refused, reset, unresolvable, no config service known)."""


class ApolloTimeoutError(ApolloError):
    """A server accepted the connection but did not answer in time."""


class ApolloHTTPError(ApolloError):
    """An unexpected status. `detail` is the server's own message (Apollo's JSON `message`)."""

    def __init__(self, endpoint: str, status: int, detail: str) -> None:
        text = f"{endpoint} answered HTTP {status}"
        super().__init__(f"{text}: {detail}" if detail else text)
        self.endpoint = endpoint
        self.status = status
        self.detail = detail


# -- helpers -------------------------------------------------------------------------------


def signature(secret: str, timestamp_ms: str, path_with_query: str) -> str:
    """Apollo's access-key signature (apollo-core `Signature.signature`)."""
    message = f"{timestamp_ms}\n{path_with_query}".encode()
    digest = hmac.new(secret.encode(), message, hashlib.sha1).digest()
    return base64.b64encode(digest).decode()


def signed_headers(
    app_id: str, secret: str, path_with_query: str, now_ms: int | None = None
) -> dict[str, str]:
    timestamp = str(int(time.time() * 1000) if now_ms is None else now_ms)
    return {
        "Timestamp": timestamp,
        "Authorization": f"Apollo {app_id}:{signature(secret, timestamp, path_with_query)}",
    }


def strip_properties(namespace: str) -> str:
    """`application.properties` is `application` (other formats keep their suffix)."""
    if namespace.lower().endswith(".properties"):
        return namespace[: -len(".properties")]
    return namespace


def long_poll_read_timeout(hold: float) -> float:
    """The client waits longer than the server holds: 90 s for the default 60 s hold."""
    return max(hold * 1.5, hold + 1.0)


def _segment(text: str) -> str:
    return quote(text, safe="")


def _query(params: Sequence[tuple[str, str]]) -> str:
    return "&".join(f"{_segment(k)}={_segment(v)}" for k, v in params)


def _server_message(response: httpx.Response) -> str:
    """Apollo's JSON error `message`, or the first line of a text body, kept short."""
    text = response.text.strip()
    with contextlib.suppress(ValueError):
        body = json.loads(text)
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            text = body["message"]
    line = text.splitlines()[0] if text else ""
    return line if len(line) <= 300 else line[:297] + "..."


def _describe_transport_error(err: httpx.TransportError) -> str:
    """A host-free reason (httpx's own text may name the host)."""
    if isinstance(err, httpx.ConnectTimeout):
        return "connect timed out"
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ConnectionRefusedError):
            return "connection refused"
        if isinstance(cause, ConnectionResetError | BrokenPipeError):
            return "the connection was reset"
        if isinstance(cause, socket.gaierror):
            return "the host name does not resolve"
        if isinstance(cause, OSError) and cause.errno in (errno.EHOSTUNREACH, errno.ENETUNREACH):
            return "host unreachable"
        cause = cause.__cause__ or cause.__context__
    if isinstance(err, httpx.ConnectError):
        return "connect failed"
    if isinstance(err, httpx.RemoteProtocolError):
        return "the server closed the connection"
    if isinstance(err, httpx.ReadError | httpx.WriteError):
        return "the connection was reset"
    return type(err).__name__


# -- data ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ApolloConfig:
    """One namespace's released configuration, as `/configs` returns it."""

    app_id: str
    cluster: str
    namespace: str
    configurations: Mapping[str, str]
    release_key: str

    def to_json(self) -> dict[str, Any]:
        return {
            "appId": self.app_id,
            "cluster": self.cluster,
            "namespaceName": self.namespace,
            "configurations": dict(self.configurations),
            "releaseKey": self.release_key,
        }

    @classmethod
    def from_json(cls, body: Any, namespace: str) -> ApolloConfig:
        if not isinstance(body, dict) or not isinstance(body.get("configurations", {}), dict):
            raise ValueError("not an Apollo config")
        configurations = {
            str(k): "" if v is None else str(v) for k, v in body.get("configurations", {}).items()
        }
        return cls(
            app_id=str(body.get("appId", "")),
            cluster=str(body.get("cluster", CLUSTER_DEFAULT)),
            namespace=namespace,
            configurations=configurations,
            release_key=str(body.get("releaseKey", "")),
        )


@dataclass(frozen=True, slots=True)
class Notification:
    """One changed namespace from `/notifications/v2`."""

    namespace: str
    notification_id: int
    messages: Mapping[str, int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class Change:
    """One key of a namespace that differs between two configurations."""

    key: str
    old: str | None  # None: added
    new: str | None  # None: deleted

    @property
    def deleted(self) -> bool:
        return self.new is None


def diff(old: Mapping[str, str], new: Mapping[str, str]) -> list[Change]:
    """Added and modified keys (in the new map's order), then deleted ones."""
    changes = [Change(k, old.get(k), v) for k, v in new.items() if old.get(k) != v]
    changes.extend(Change(k, v, None) for k, v in old.items() if k not in new)
    return changes


# -- the config service --------------------------------------------------------------------


class ConfigServiceClient:
    """Reads and notifications for one app and cluster. Cheap to create; no I/O until used."""

    def __init__(
        self,
        addresses: Sequence[str],
        app_id: str,
        cluster: str = CLUSTER_DEFAULT,
        *,
        secret: str = "",
        meta_server: bool = False,
        data_center: str = "",
        ip: str = "",
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        long_poll_timeout: float = DEFAULT_LONG_POLL_TIMEOUT,
        backup_dir: Path | None = None,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        if not addresses:
            raise ValueError("at least one address is required")
        self.app_id = app_id
        self.cluster = cluster
        self.secret = secret
        self.meta_server = meta_server
        self.data_center = data_center
        self.ip = ip
        self.read_timeout = read_timeout
        self.connect_timeout = connect_timeout
        self.long_poll_timeout = long_poll_timeout
        self.backup_dir = backup_dir
        self._addresses = [a.rstrip("/") for a in addresses]
        self._services: list[str] = [] if meta_server else list(self._addresses)
        self._services_at = 0.0
        self._current = 0
        self._cache: dict[str, ApolloConfig] = {}
        self._messages: dict[str, str] = {}
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
            headers={"Accept": "application/json"},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    # -- public ----------------------------------------------------------------------------

    def cached(self, namespace: str) -> ApolloConfig | None:
        return self._cache.get(strip_properties(namespace))

    async def fetch(self, namespace: str, release_key: str | None = None) -> ApolloConfig | None:
        """One `/configs` read. None means 304 (the server has `release_key` too). A namespace
        without any release raises ApolloHTTPError 404."""
        ns = strip_properties(namespace)
        params = [("releaseKey", release_key or "-1")]
        if self.ip:
            params.append(("ip", self.ip))
        if self.data_center:
            params.append(("dataCenter", self.data_center))
        if ns in self._messages:
            params.append(("messages", self._messages[ns]))
        path = f"/configs/{_segment(self.app_id)}/{_segment(self.cluster)}/{_segment(ns)}"
        response = await self._get("/configs", path, params, self.read_timeout)
        if response.status_code == 304:
            return None
        if response.status_code != 200:
            raise ApolloHTTPError("/configs", response.status_code, _server_message(response))
        try:
            return ApolloConfig.from_json(response.json(), ns)
        except ValueError:
            raise ApolloHTTPError("/configs", 200, "the answer is not an Apollo config") from None

    async def get_config(self, namespace: str, *, fallback: bool = True) -> ApolloConfig | None:
        """The namespace's current config, revalidated with the cached releaseKey (a 304 keeps
        the cache). None when the namespace has no release. With `fallback`, a server that
        cannot be reached (or answers 5xx) is answered from memory or the backup file; without
        a copy the error is raised."""
        ns = strip_properties(namespace)
        cached = self._cache.get(ns)
        try:
            fresh = await self.fetch(ns, cached.release_key if cached else None)
        except ApolloHTTPError as err:
            if err.status == 404:
                self._cache.pop(ns, None)
                return None
            if not (fallback and err.status >= 500):
                raise
            return self._fallback(ns, err)
        except (ApolloConnectionError, ApolloTimeoutError) as err:
            if not fallback:
                raise
            return self._fallback(ns, err)
        if fresh is None:
            if cached is not None:
                return cached
            # A 304 without a copy (the server got a releaseKey we do not hold): read again.
            fresh = await self.fetch(ns, None)
            if fresh is None:
                raise ApolloHTTPError("/configs", 304, "unexpected 304 for a first read")
        if cached is None or cached.release_key != fresh.release_key:
            self._cache[ns] = fresh
            await self._save_backup(fresh)
        return self._cache[ns]

    def load_backup(self, namespace: str) -> ApolloConfig | None:
        path = self._backup_file(strip_properties(namespace))
        if path is None:
            return None
        try:
            body = json.loads(path.read_text(encoding="utf-8"))
            config = ApolloConfig.from_json(body, strip_properties(namespace))
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as err:
            log.warning("ignoring unreadable Apollo backup %s: %s", path, err)
            return None
        return config

    async def poll(self, notifications: Mapping[str, int]) -> list[Notification]:
        """One `/notifications/v2` long poll with the ids we have (-1: nothing yet). Returns the
        changed namespaces (their `messages` are remembered for the next `/configs` read), or
        [] when the server's hold ran out (304)."""
        body = json.dumps(
            [
                {"namespaceName": strip_properties(ns), "notificationId": nid}
                for ns, nid in notifications.items()
            ],
            separators=(",", ":"),
        )
        params = [("appId", self.app_id), ("cluster", self.cluster), ("notifications", body)]
        if self.data_center:
            params.append(("dataCenter", self.data_center))
        if self.ip:
            params.append(("ip", self.ip))
        timeout = long_poll_read_timeout(self.long_poll_timeout)
        response = await self._get("/notifications/v2", "/notifications/v2", params, timeout)
        if response.status_code == 304:
            return []
        if response.status_code != 200:
            raise ApolloHTTPError(
                "/notifications/v2", response.status_code, _server_message(response)
            )
        try:
            found = [
                Notification(
                    namespace=str(n["namespaceName"]),
                    notification_id=int(n["notificationId"]),
                    messages={
                        str(k): int(v)
                        for k, v in ((n.get("messages") or {}).get("details") or {}).items()
                    },
                )
                for n in response.json()
            ]
        except (ValueError, KeyError, TypeError, AttributeError):
            raise ApolloHTTPError(
                "/notifications/v2", 200, "the answer is not a notification list"
            ) from None
        for n in found:
            if n.messages:
                self._messages[strip_properties(n.namespace)] = json.dumps(
                    {"details": dict(n.messages)}, separators=(",", ":")
                )
        return found

    async def get_json_file(self, namespace: str) -> dict[str, str]:
        """`/configfiles/json/…`: the released map from the server's (lagging) file cache."""
        ns = strip_properties(namespace)
        path = f"/configfiles/json/{_segment(self.app_id)}/{_segment(self.cluster)}/{_segment(ns)}"
        params = [("ip", self.ip)] if self.ip else []
        response = await self._get("/configfiles/json", path, params, self.read_timeout)
        if response.status_code != 200:
            raise ApolloHTTPError(
                "/configfiles/json", response.status_code, _server_message(response)
            )
        body = response.json()
        if not isinstance(body, dict):
            raise ApolloHTTPError("/configfiles/json", 200, "the answer is not a JSON map")
        return {str(k): str(v) for k, v in body.items()}

    async def discover(self) -> list[str]:
        """The config services the meta servers know (`/services/config`), in their order."""
        last: ApolloError | None = None
        for meta in self._addresses:
            url = f"{meta}/services/config?{_query([('appId', self.app_id), ('ip', self.ip)])}"
            try:
                response = await self._http.get(url)
            except httpx.TimeoutException:
                last = ApolloTimeoutError("the Apollo meta server did not answer in time")
                continue
            except httpx.TransportError as err:
                last = ApolloConnectionError(
                    f"the Apollo meta server is unavailable ({_describe_transport_error(err)})"
                )
                continue
            if response.status_code != 200:
                last = ApolloHTTPError(
                    "/services/config", response.status_code, _server_message(response)
                )
                continue
            try:
                urls = [str(s["homepageUrl"]).rstrip("/") for s in response.json()]
            except (ValueError, KeyError, TypeError):
                last = ApolloHTTPError("/services/config", 200, "not a service list")
                continue
            if urls:
                return urls
            last = ApolloConnectionError("the Apollo meta server knows no config service")
        assert last is not None
        raise last

    async def config_services(self, *, refresh: bool = False) -> list[str]:
        if not self.meta_server:
            return list(self._services)
        stale = time.monotonic() - self._services_at > META_REFRESH_INTERVAL
        if refresh or stale or not self._services:
            urls = await self.discover()
            if set(urls) != set(self._services):
                random.shuffle(urls)  # spread clients over the replicas, as apollo-java does
                self._services = urls
                self._current = 0
            self._services_at = time.monotonic()
        return list(self._services)

    # -- plumbing --------------------------------------------------------------------------

    async def _get(
        self, endpoint: str, path: str, params: Sequence[tuple[str, str]], read_timeout: float
    ) -> httpx.Response:
        """GET `path?params` on the current config service, then the next ones on connection
        errors. The request is signed over the exact bytes that go on the wire."""
        query = _query(params)
        last: ApolloError | None = None
        for attempt in range(2 if self.meta_server else 1):
            services = await self.config_services(refresh=attempt > 0)
            for step in range(len(services)):
                index = (self._current + step) % len(services)
                url = f"{services[index]}{path}" + (f"?{query}" if query else "")
                timeout = httpx.Timeout(read_timeout, connect=self.connect_timeout)
                request = self._http.build_request("GET", url, timeout=timeout)
                if self.secret:
                    raw = request.url.raw_path.decode("ascii")
                    request.headers.update(signed_headers(self.app_id, self.secret, raw))
                try:
                    response = await self._http.send(request)
                except httpx.TimeoutException as err:
                    if isinstance(err, httpx.ConnectTimeout):
                        last = ApolloConnectionError(
                            f"Apollo config service is unavailable ({endpoint}: connect timed out)"
                        )
                        continue
                    raise ApolloTimeoutError(
                        f"Apollo config service did not answer {endpoint} within {read_timeout:g} s"
                    ) from None
                except httpx.TransportError as err:
                    last = ApolloConnectionError(
                        f"Apollo config service is unavailable "
                        f"({endpoint}: {_describe_transport_error(err)})"
                    )
                    continue
                self._current = index
                if response.status_code in (401, 403):
                    raise ApolloHTTPError(
                        endpoint,
                        response.status_code,
                        _server_message(response)
                        + (
                            " (check metadata.secret)"
                            if self.secret
                            else " (the app has access keys: set metadata.secret)"
                        ),
                    )
                return response
        assert last is not None
        raise last

    def _fallback(self, ns: str, err: ApolloError) -> ApolloConfig:
        copy = self._cache.get(ns)
        source = "the cached copy"
        if copy is None:
            copy = self.load_backup(ns)
            source = "the local backup"
            if copy is None:
                raise err
            self._cache[ns] = copy
        log.warning("Apollo namespace %r: %s; answering from %s", ns, err.message, source)
        return copy

    def _backup_file(self, ns: str) -> Path | None:
        if self.backup_dir is None:
            return None
        name = "+".join(_segment(p) for p in (self.app_id, self.cluster, ns))
        return self.backup_dir / f"{name}.json"

    async def _save_backup(self, config: ApolloConfig) -> None:
        path = self._backup_file(config.namespace)
        if path is None:
            return
        data = json.dumps(config.to_json(), ensure_ascii=False, indent=1)
        try:
            await anyio.to_thread.run_sync(_write_atomically, path, data)
        except OSError as err:
            log.warning("cannot write the Apollo backup %s: %s", path, err)


def _write_atomically(path: Path, data: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def default_backup_dir(app_id: str) -> Path:
    """`<temp dir>/layotto-apollo/<app id>`."""
    return Path(tempfile.gettempdir()) / "layotto-apollo" / _segment(app_id)


# -- the Open API --------------------------------------------------------------------------


class OpenApiClient:
    """The portal's Open API (`/openapi/v1`) with a consumer token, for one env."""

    def __init__(
        self,
        address: str,
        token: str,
        user: str,
        env: str = DEFAULT_ENV,
        *,
        connect_timeout: float = DEFAULT_CONNECT_TIMEOUT,
        read_timeout: float = DEFAULT_READ_TIMEOUT,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.base = address.rstrip("/") + "/openapi/v1"
        self.user = user
        self.env = env
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(read_timeout, connect=connect_timeout),
            transport=transport,
            follow_redirects=False,
            headers={"Authorization": token, "Content-Type": JSON_CONTENT_TYPE},
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _namespace_path(self, app_id: str, cluster: str, ns: str) -> str:
        return (
            f"/envs/{_segment(self.env)}/apps/{_segment(app_id)}/clusters/{_segment(cluster)}"
            f"/namespaces/{_segment(ns)}"
        )

    @staticmethod
    def _item_path(key: str) -> str:
        """`items/{key}` percent-encoded; keys with a slash use `encodedItems/{base64url}`, since
        servlet containers reject an encoded slash in a path."""
        if "/" in key or "\\" in key:
            encoded = base64.urlsafe_b64encode(key.encode()).decode().rstrip("=")
            return f"/encodedItems/{encoded}"
        return f"/items/{_segment(key)}"

    async def _call(
        self,
        method: str,
        path: str,
        endpoint: str,
        *,
        params: Sequence[tuple[str, str]] = (),
        body: Any = None,
    ) -> httpx.Response:
        query = _query(params)
        url = f"{self.base}{path}" + (f"?{query}" if query else "")
        content = None if body is None else json.dumps(body, ensure_ascii=False).encode()
        try:
            response = await self._http.request(method, url, content=content)
        except httpx.TimeoutException as err:
            if isinstance(err, httpx.ConnectTimeout):
                raise ApolloConnectionError(
                    f"Apollo Open API is unavailable ({endpoint}: connect timed out)"
                ) from None
            raise ApolloTimeoutError(f"Apollo Open API did not answer {endpoint} in time") from None
        except httpx.TransportError as err:
            raise ApolloConnectionError(
                f"Apollo Open API is unavailable ({endpoint}: {_describe_transport_error(err)})"
            ) from None
        if not 200 <= response.status_code < 300:
            detail = _server_message(response)
            if response.status_code == 401:
                detail = f"{detail} (the open_api_token is not accepted)".strip()
            elif response.status_code == 403:
                detail = f"{detail} (the open_api_token may not modify this app/namespace)"
            raise ApolloHTTPError(f"Open API {endpoint}", response.status_code, detail.strip())
        return response

    # -- items -----------------------------------------------------------------------------

    async def get_item(self, app_id: str, cluster: str, ns: str, key: str) -> dict[str, Any]:
        path = self._namespace_path(app_id, cluster, ns) + self._item_path(key)
        return dict((await self._call("GET", path, "GET item")).json())

    async def list_items(
        self, app_id: str, cluster: str, ns: str, page: int = 0, size: int = 50
    ) -> dict[str, Any]:
        path = self._namespace_path(app_id, cluster, ns) + "/items"
        params = [("page", str(page)), ("size", str(size))]
        return dict((await self._call("GET", path, "GET items", params=params)).json())

    async def create_item(
        self, app_id: str, cluster: str, ns: str, key: str, value: str, comment: str = ""
    ) -> dict[str, Any]:
        path = self._namespace_path(app_id, cluster, ns) + "/items"
        body = {"key": key, "value": value, "dataChangeCreatedBy": self.user}
        if comment:
            body["comment"] = comment
        return dict((await self._call("POST", path, "POST item", body=body)).json())

    async def put_item(
        self,
        app_id: str,
        cluster: str,
        ns: str,
        key: str,
        value: str,
        *,
        create_if_not_exists: bool = True,
        comment: str | None = None,
    ) -> None:
        path = self._namespace_path(app_id, cluster, ns) + self._item_path(key)
        body: dict[str, str] = {
            "key": key,
            "value": value,
            "dataChangeCreatedBy": self.user,
            "dataChangeLastModifiedBy": self.user,
        }
        if comment is not None:
            body["comment"] = comment
        params = [("createIfNotExists", "true")] if create_if_not_exists else []
        await self._call("PUT", path, "PUT item", params=params, body=body)

    async def delete_item(self, app_id: str, cluster: str, ns: str, key: str) -> None:
        path = self._namespace_path(app_id, cluster, ns) + self._item_path(key)
        params = [("key", key), ("operator", self.user)]
        await self._call("DELETE", path, "DELETE item", params=params)

    # -- namespaces and releases ----------------------------------------------------------

    async def get_namespace(self, app_id: str, cluster: str, ns: str) -> dict[str, Any]:
        path = self._namespace_path(app_id, cluster, ns)
        return dict((await self._call("GET", path, "GET namespace")).json())

    async def create_app_namespace(
        self,
        app_id: str,
        name: str,
        fmt: str = "properties",
        *,
        is_public: bool = False,
        comment: str = "",
    ) -> dict[str, Any]:
        body: dict[str, Any] = {
            "name": name,
            "appId": app_id,
            "format": fmt,
            "isPublic": is_public,
            "dataChangeCreatedBy": self.user,
        }
        if comment:
            body["comment"] = comment
        path = f"/apps/{_segment(app_id)}/appnamespaces"
        return dict((await self._call("POST", path, "POST appnamespaces", body=body)).json())

    async def publish(
        self, app_id: str, cluster: str, ns: str, title: str, comment: str = ""
    ) -> dict[str, Any]:
        path = self._namespace_path(app_id, cluster, ns) + "/releases"
        body = {"releaseTitle": title, "releasedBy": self.user}
        if comment:
            body["releaseComment"] = comment
        response = await self._call("POST", path, "POST releases", body=body)
        return dict(response.json()) if response.content else {}

    async def latest_release(self, app_id: str, cluster: str, ns: str) -> dict[str, Any] | None:
        path = self._namespace_path(app_id, cluster, ns) + "/releases/latest"
        response = await self._call("GET", path, "GET latest release")
        return dict(response.json()) if response.content else None
