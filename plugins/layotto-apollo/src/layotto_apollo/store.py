"""`configuration.apollo`: Layotto's configuration API on Apollo (layotto-semantics.md §3.3).

Mapping:

- `group` is the Apollo namespace (default `application`); `label` is a key suffix, the stored
  key being `key@$label` (an empty label, the default, means the raw key, so existing Apollo
  data reads as it is);
- `tags` are a JSON map stored under `group@$key` (+ `@$label`) in the app's private namespace
  `sidecar_config_tags`, created through the Open API at init;
- reads and the watch use the configured `app_id`, `cluster` and namespaces (the request's
  `app_id` is ignored); writes go to the request's `app_id` through the Open API (items PUT /
  DELETE, then a release of the tags namespace and of every touched group). Without the Open
  API settings the store is read-only.

State: one record per namespace (the last config seen and a version per key: the releaseKey of
the release that last changed it). Every config the store reads, from `get` or from the watch,
goes through `_refresh` (serialised per namespace); a change it reveals is broadcast to every
open watch. So a change is reported once, whichever path saw it first, and item versions only
move when the item does.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from layotto.plugin import (
    DELETED_METADATA,
    VERSION_METADATA,
    BackendUnavailable,
    Component,
    ComponentContext,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    Health,
    InvalidArgument,
    Unsupported,
)

from layotto_apollo.client import (
    NAMESPACE_APPLICATION,
    ApolloConfig,
    ApolloConnectionError,
    ApolloError,
    ApolloHTTPError,
    ApolloTimeoutError,
    ConfigServiceClient,
    Notification,
    OpenApiClient,
    diff,
    strip_properties,
)
from layotto_apollo.errors import translate, translated
from layotto_apollo.settings import TAGS_NAMESPACE, ApolloMetadata

log = logging.getLogger(__name__)

DELIMITER = "@$"
HEALTH_TIMEOUT = 0.8  # the sidecar polls every second; a check must answer within it
INIT_TIMEOUT = 4.0  # the sidecar gives init 5 s: fail first, with our own message
WATCH_BUFFER = 1024  # change batches a watch may fall behind before it is ended
MIN_POLL_INTERVAL = 0.5  # at most 2 polls per second when the server answers 304 at once
KEY_MAX = 128
VALUE_MAX = 20_000
RELEASE_TITLE_MAX = 64
RELEASE_COMMENT_MAX = 256
# SaveConfigurationRequest.metadata (forwarded by the sidecar) may name the release.
RELEASE_TITLE_METADATA = "release_title"
RELEASE_COMMENT_METADATA = "release_comment"


def join_key(key: str, label: str) -> str:
    return f"{key}{DELIMITER}{label}" if label else key


def split_key(stored: str) -> tuple[str, str]:
    key, _, label = stored.partition(DELIMITER)
    return key, label


def tags_key(group: str, key: str, label: str) -> str:
    return f"{group}{DELIMITER}{join_key(key, label)}"


@dataclass
class _Namespace:
    """What the store last saw of one namespace."""

    config: ApolloConfig | None = None  # None: no release (yet)
    versions: dict[str, str] = field(default_factory=dict)
    loaded: bool = False
    lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def values(self) -> Mapping[str, str]:
        return self.config.configurations if self.config is not None else {}


@dataclass(eq=False)
class _Watch:
    send: MemoryObjectSendStream[list[ConfigItem]]
    wake: anyio.Event = field(default_factory=anyio.Event)

    def poke(self) -> None:
        self.wake.set()


class ApolloConfigStore(ConfigStore):
    default_group = NAMESPACE_APPLICATION
    default_label = ""

    def __init__(self, settings: ApolloMetadata, context: ComponentContext) -> None:
        self.settings = settings
        self.context = context
        self._what = f"configuration store {context.name!r}"
        self._client: ConfigServiceClient | None = None
        self._open_api: OpenApiClient | None = None
        self._namespaces: dict[str, _Namespace] = {}
        self._watched: list[str] = list(settings.namespace_name)
        self._watches: set[_Watch] = set()
        self._tags_ready: set[str] = set()  # apps whose sidecar_config_tags exists
        self._closed = False

    @classmethod
    def create(cls, settings: ApolloMetadata, context: ComponentContext) -> Component:
        return cls(settings, context)

    # -- lifecycle -------------------------------------------------------------------------

    async def init(self) -> None:
        """Load every configured namespace (from the server, or from the backup when the server
        cannot be reached), then create `sidecar_config_tags` when the Open API is set."""
        s = self.settings
        self._client = ConfigServiceClient(
            s.address,
            s.app_id,
            s.cluster,
            secret=s.secret.get_secret_value(),
            meta_server=s.meta_server,
            data_center=s.data_center,
            ip=s.ip,
            connect_timeout=s.connect_timeout,
            read_timeout=s.timeout,
            long_poll_timeout=s.long_poll_timeout,
            backup_dir=s.backup_dir,
        )
        if s.writable:
            self._open_api = OpenApiClient(
                s.open_api_address,
                s.open_api_token.get_secret_value(),
                s.open_api_user,
                s.env,
                connect_timeout=s.connect_timeout,
                read_timeout=s.timeout,
            )
        try:
            with anyio.fail_after(INIT_TIMEOUT):
                offline = await self._load_configured()
                if self._open_api is not None:
                    await self._init_tags_namespace(offline)
                await self._tags_map()
        except TimeoutError:
            await self.close()
            raise BackendUnavailable(
                f"{self._what}: Apollo did not answer within {INIT_TIMEOUT:g} s at startup "
                "(check metadata.address)"
            ) from None
        except BaseException:
            await self.close()
            raise

    async def _load_configured(self) -> bool:
        """True when some namespace came from the backup (the server is down)."""
        client = self._require_client()
        offline = False
        for ns in self.settings.namespace_name:
            try:
                await self._refresh(ns, fallback=False)
            except (ApolloConnectionError, ApolloTimeoutError) as err:
                backup = client.load_backup(ns)
                if backup is None:
                    hint = (
                        " and there is no local backup of it"
                        if self.settings.is_backup_config
                        else ""
                    )
                    raise translate(
                        ApolloConnectionError(f"{err.message}{hint} (check metadata.address)")
                        if isinstance(err, ApolloConnectionError)
                        else err,
                        self._what,
                        self.settings.secrets(),
                    ) from None
                log.warning(
                    "%s: Apollo is unreachable (%s); namespace %r starts from the local backup "
                    "(release %s)",
                    self._what,
                    err.message,
                    ns,
                    backup.release_key,
                )
                await self._refresh(ns)  # answered from the backup
                offline = True
            except ApolloError as err:
                raise translate(err, self._what, self.settings.secrets()) from None
        return offline

    async def _init_tags_namespace(self, offline: bool) -> None:
        """POST appnamespaces `sidecar_config_tags`: 200 -> release it once; 400 -> it exists
        (checked with a GET, since Apollo also answers 400 for an unknown app); anything else
        stops the startup. With Apollo unreachable and the config from the backup, the step is
        left for the first write."""
        try:
            await self._ensure_tags_namespace(self.settings.app_id)
        except (ApolloConnectionError, ApolloTimeoutError) as err:
            if not offline:
                raise translate(
                    ApolloConnectionError(f"{err.message} (check metadata.open_api_address)"),
                    self._what,
                    self.settings.secrets(),
                ) from None
            log.warning(
                "%s: the Open API is unreachable (%s); %s will be created on the first write",
                self._what,
                err.message,
                TAGS_NAMESPACE,
            )
        except ApolloError as err:
            raise translate(err, self._what, self.settings.secrets()) from None

    async def _ensure_tags_namespace(self, app_id: str) -> None:
        api = self._require_open_api()
        if app_id in self._tags_ready:
            return
        try:
            await api.create_app_namespace(
                app_id, TAGS_NAMESPACE, "properties", comment="Layotto configuration tags"
            )
        except ApolloHTTPError as err:
            if err.status != 400:
                raise ApolloHTTPError(
                    err.endpoint, err.status, f"cannot create {TAGS_NAMESPACE}: {err.detail}"
                ) from None
            try:
                await api.get_namespace(app_id, self.settings.cluster, TAGS_NAMESPACE)
            except ApolloHTTPError as missing:
                raise ApolloHTTPError(
                    err.endpoint,
                    err.status,
                    f"cannot create {TAGS_NAMESPACE} ({err.detail}) and it does not exist "
                    f"({missing.detail})",
                ) from None
        else:
            await api.publish(app_id, self.settings.cluster, TAGS_NAMESPACE, _release_title())
        self._tags_ready.add(app_id)

    async def close(self) -> None:
        self._closed = True
        for watch in list(self._watches):
            watch.send.close()
            watch.poke()
        client, self._client = self._client, None
        api, self._open_api = self._open_api, None
        with anyio.CancelScope(shield=True):
            if client is not None:
                await client.aclose()
            if api is not None:
                await api.aclose()

    async def check_health(self) -> Health:
        """A cheap config-service read: `/configs` of the first namespace with the releaseKey
        we hold (normally a 304)."""
        client = self._client
        if client is None:
            return Health.down("not started")
        ns = self.settings.namespace_name[0]
        state = self._namespaces.get(ns)
        release_key = state.config.release_key if state and state.config else None
        try:
            with anyio.fail_after(HEALTH_TIMEOUT):
                await client.fetch(ns, release_key)
        except TimeoutError:
            return Health.down(f"Apollo did not answer within {HEALTH_TIMEOUT:g} s")
        except ApolloHTTPError as err:
            if err.status != 404:  # 404: no release yet, but the server answered
                return Health.down(translate(err, "health check", self.settings.secrets()).message)
        except ApolloError as err:
            return Health.down(translate(err, "health check", self.settings.secrets()).message)
        except Exception as err:  # never raise from a health check
            return Health.down(f"health check failed ({type(err).__name__})")
        return Health.up()

    # -- helpers ---------------------------------------------------------------------------

    def _require_client(self) -> ConfigServiceClient:
        if self._client is None:
            raise BackendUnavailable(f"{self._what} is not started (or already closed)")
        return self._client

    def _require_open_api(self) -> OpenApiClient:
        if self._open_api is None:
            if self.settings.writable and self._closed:
                raise BackendUnavailable(f"{self._what} is closed")
            raise Unsupported(
                f"{self._what} is read-only: set open_api_address, open_api_token and "
                "open_api_user to write to Apollo"
            )
        return self._open_api

    def _errors(self) -> AbstractContextManager[None]:
        return translated(self._what, self.settings.secrets())

    def _remember(self, ns: str) -> None:
        """Watch `ns` from now on (a group someone reads, writes or subscribes to)."""
        if ns != TAGS_NAMESPACE and ns not in self._watched:
            self._watched.append(ns)
            for watch in list(self._watches):
                watch.poke()

    async def _refresh(self, namespace: str, *, fallback: bool = True) -> _Namespace:
        """Read a namespace (releaseKey-cached) and record what changed; changes go to every
        open watch. Serialised per namespace, so configs are recorded in the order read."""
        ns = strip_properties(namespace)
        state = self._namespaces.setdefault(ns, _Namespace())
        async with state.lock:
            config = await self._require_client().get_config(ns, fallback=fallback)
            if not state.loaded:
                state.config, state.loaded = config, True
                key = config.release_key if config is not None else ""
                state.versions = dict.fromkeys(state.values, key)
                return state
            if config is state.config or (
                config is not None
                and state.config is not None
                and config.release_key == state.config.release_key
            ):
                return state
            old = state.values
            new = config.configurations if config is not None else {}
            version = config.release_key if config is not None else ""
            changes = diff(old, new)
            for change in changes:
                if change.deleted:
                    state.versions.pop(change.key, None)
                else:
                    state.versions[change.key] = version
            state.config = config
        if changes and self._watches and ns != TAGS_NAMESPACE:
            tags = await self._tags_map()
            batch = []
            for change in changes:
                key, label = split_key(change.key)
                if change.deleted:
                    meta = {DELETED_METADATA: "true", VERSION_METADATA: version}
                    batch.append(ConfigItem(key, "", ns, label, metadata=meta))
                else:
                    batch.append(
                        ConfigItem(
                            key,
                            change.new or "",
                            ns,
                            label,
                            tags=_tags_of(tags, ns, change.key),
                            metadata={VERSION_METADATA: version},
                        )
                    )
            self._broadcast(batch)
        return state

    async def _tags_map(self) -> Mapping[str, str]:
        """The released `sidecar_config_tags` items ({} when it cannot be read)."""
        try:
            return (await self._refresh(TAGS_NAMESPACE)).values
        except ApolloError as err:
            log.warning("%s: cannot read %s: %s", self._what, TAGS_NAMESPACE, err.message)
            return {}

    def _broadcast(self, batch: list[ConfigItem]) -> None:
        for watch in list(self._watches):
            try:
                watch.send.send_nowait(list(batch))
            except anyio.WouldBlock:
                watch.send.close()  # fell behind: that watch ends, its owner resyncs
            except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                pass
            watch.poke()

    # -- reads -----------------------------------------------------------------------------

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        """Items of `query.group` with `query.label` (all of them when no keys are given).
        Answered from the last known config (memory, then the backup file) when Apollo cannot
        be reached."""
        ns = strip_properties(query.group)
        self._require_client()
        with self._errors():
            state = await self._refresh(ns)
            tags = await self._tags_map()
        self._remember(ns)
        values = state.values
        if query.keys:
            stored_keys = [join_key(k, query.label) for k in dict.fromkeys(query.keys)]
            found = [k for k in stored_keys if k in values]
        else:
            found = [k for k in values if split_key(k)[1] == query.label]
        items = []
        for stored in found:
            key, label = split_key(stored)
            items.append(
                ConfigItem(
                    key,
                    values[stored],
                    ns,
                    label,
                    tags=_tags_of(tags, ns, stored),
                    metadata={VERSION_METADATA: state.versions.get(stored, "")},
                )
            )
        return items

    # -- writes ----------------------------------------------------------------------------

    def _check_write(self, app_id: str) -> OpenApiClient:
        api = self._require_open_api()
        if not app_id:
            raise InvalidArgument(
                f"{self._what}: app_id is required to write to Apollo (it names the Apollo app)"
            )
        return api

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        """PUT every item (createIfNotExists) and its tags, then release the tags namespace and
        each touched group. A non-2xx answer is an error (an upstream gap)."""
        api = self._check_write(app_id)
        cluster = self.settings.cluster
        for index, item in enumerate(items):
            _check_item(index, item)
        title, comment = _release_names(metadata)
        groups: list[str] = []
        tags_touched = False
        with self._errors():
            if any(item.tags for item in items):
                await self._ensure_tags_namespace(app_id)
            current_tags = await self._tags_map() if app_id == self.settings.app_id else {}
            for item in items:
                ns = strip_properties(item.group)
                stored = join_key(item.key, item.label)
                await api.put_item(app_id, cluster, ns, stored, item.content)
                if ns not in groups:
                    groups.append(ns)
                tag_key = tags_key(ns, item.key, item.label)
                if item.tags:
                    text = json.dumps(dict(item.tags), ensure_ascii=False, sort_keys=True)
                    await api.put_item(app_id, cluster, TAGS_NAMESPACE, tag_key, text)
                    tags_touched = True
                elif tag_key in current_tags:
                    await self._delete_quietly(api, app_id, TAGS_NAMESPACE, tag_key)
                    tags_touched = True
            if tags_touched:
                await api.publish(app_id, cluster, TAGS_NAMESPACE, title, comment)
            for ns in groups:
                await api.publish(app_id, cluster, ns, title, comment)
        if app_id == self.settings.app_id:
            for ns in groups:
                self._remember(ns)

    async def delete(self, query: ConfigQuery) -> None:
        """DELETE `key@$label` and its tags entry for every key (a missing key is fine), then
        release what changed."""
        api = self._check_write(query.app_id)
        ns = strip_properties(query.group)
        cluster = self.settings.cluster
        title, comment = _release_names(query.metadata)
        with self._errors():
            removed = tags_removed = False
            for key in dict.fromkeys(query.keys):
                if await self._delete_quietly(api, query.app_id, ns, join_key(key, query.label)):
                    removed = True
                tag_key = tags_key(ns, key, query.label)
                if await self._delete_quietly(api, query.app_id, TAGS_NAMESPACE, tag_key):
                    tags_removed = True
            if tags_removed:
                await api.publish(query.app_id, cluster, TAGS_NAMESPACE, title, comment)
            if removed:
                await api.publish(query.app_id, cluster, ns, title, comment)

    async def _delete_quietly(self, api: OpenApiClient, app_id: str, ns: str, key: str) -> bool:
        """DELETE one item; False when it did not exist. Apollo answers 404 both for a missing
        item and a missing namespace: the namespace is checked to tell them apart (the tags
        namespace may be missing: then there are no tags)."""
        try:
            await api.delete_item(app_id, self.settings.cluster, ns, key)
        except ApolloHTTPError as err:
            if err.status != 404:
                raise
            if ns != TAGS_NAMESPACE:
                await api.get_namespace(app_id, self.settings.cluster, ns)
            return False
        return True

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        """Long-poll `/notifications/v2` for the configured namespaces (and every group read or
        written through this store); on a notification, re-read that namespace and yield what
        changed (deleted keys as empty items with `deleted=true`), `version` = releaseKey.
        `app_id` is ignored: Apollo reads use the configured app. Errors are raised (the
        sidecar reconnects and resyncs)."""
        if self._closed:
            raise BackendUnavailable(f"{self._what} is closed")
        client = self._require_client()
        send, receive = anyio.create_memory_object_stream[list[ConfigItem]](WATCH_BUFFER)
        watch = _Watch(send)
        ids: dict[str, int] = {}
        try:
            with self._errors():
                for ns in list(self._watched):
                    await self._refresh(ns, fallback=False)
                    ids.setdefault(ns, -1)
            # From here on every change the store sees reaches this watch (what happened before
            # is the sidecar's resync's business).
            self._watches.add(watch)
            yield []  # established
            while True:
                batch = _drain(receive)
                if batch:
                    yield batch
                    continue
                if self._closed:
                    raise BackendUnavailable(f"{self._what} is closed")
                for ns in self._watched:
                    ids.setdefault(ns, -1)
                wake = watch.wake = anyio.Event()
                started = time.monotonic()
                with self._errors():
                    notifications = await _poll_or_wake(client, dict(ids), wake)
                    if notifications is None:
                        continue  # woken: a broadcast to drain, or a new namespace to watch
                    for n in notifications:
                        changed = _matching(n, ids)
                        if changed is not None:
                            ids[changed] = n.notification_id
                            await self._refresh(changed, fallback=False)
                if not notifications:
                    await anyio.sleep(max(0.0, started + MIN_POLL_INTERVAL - time.monotonic()))
        finally:
            self._watches.discard(watch)
            send.close()
            receive.close()


async def _poll_or_wake(
    client: ConfigServiceClient, ids: dict[str, int], wake: anyio.Event
) -> list[Notification] | None:
    """One long poll, abandoned (None) as soon as `wake` is set."""
    result: list[Notification] | None = None
    error: BaseException | None = None
    async with anyio.create_task_group() as tg:

        async def poll() -> None:
            nonlocal result, error
            try:
                result = await client.poll(ids)
            except Exception as err:
                error = err
            tg.cancel_scope.cancel()

        async def waker() -> None:
            await wake.wait()
            tg.cancel_scope.cancel()

        tg.start_soon(poll)
        tg.start_soon(waker)
    if error is not None:
        raise error
    return result


def _matching(notification: Notification, ids: Mapping[str, int]) -> str | None:
    """Our namespace for a notification (the server echoes our spelling, case aside)."""
    name = strip_properties(notification.namespace)
    if name in ids:
        return name
    lowered = name.lower()
    return next((ns for ns in ids if ns.lower() == lowered), None)


def _drain(receive: MemoryObjectReceiveStream[list[ConfigItem]]) -> list[ConfigItem]:
    batch: list[ConfigItem] = []
    while True:
        try:
            batch.extend(receive.receive_nowait())
        except anyio.WouldBlock:
            return batch
        except anyio.EndOfStream:
            if batch:
                return batch
            raise BackendUnavailable(
                "the Apollo watch was ended (the store closed, or the watch fell behind)"
            ) from None


def _tags_of(tags: Mapping[str, str], ns: str, stored_key: str) -> dict[str, str]:
    text = tags.get(f"{ns}{DELIMITER}{stored_key}")
    if not text:
        return {}
    try:
        value: Any = json.loads(text)
    except ValueError:
        log.warning("ignoring tags of %s/%s: not JSON", ns, stored_key)
        return {}
    if not isinstance(value, dict):
        return {}
    return {str(k): str(v) for k, v in value.items()}


def _check_item(index: int, item: ConfigItem) -> None:
    where = f"items[{index}]"
    if not item.key:
        raise InvalidArgument(f"{where}.key must not be empty")
    if DELIMITER in item.key:
        raise InvalidArgument(f"{where}.key must not contain {DELIMITER!r} (the label delimiter)")
    stored = join_key(item.key, item.label)
    if len(stored) > KEY_MAX:
        raise InvalidArgument(
            f"{where}: Apollo keys are at most {KEY_MAX} characters (key@$label is {len(stored)})"
        )
    if len(item.content) > VALUE_MAX:
        raise InvalidArgument(f"{where}.content: Apollo values are at most {VALUE_MAX} characters")
    if item.tags and len(tags_key(item.group, item.key, item.label)) > KEY_MAX:
        raise InvalidArgument(
            f"{where}: the tags entry group@$key@$label is longer than {KEY_MAX} characters"
        )


def _release_title() -> str:
    """Upstream's release title: the date as MM-DD-YYYY."""
    return dt.datetime.now().strftime("%m-%d-%Y")


def _release_names(metadata: Mapping[str, str]) -> tuple[str, str]:
    """(title, comment) of the releases a write makes: the request's metadata
    `release_title` / `release_comment` when given, else upstream's date title."""
    title = metadata.get(RELEASE_TITLE_METADATA, "").strip() or _release_title()
    comment = metadata.get(RELEASE_COMMENT_METADATA, "").strip()
    if len(title) > RELEASE_TITLE_MAX:
        raise InvalidArgument(
            f"metadata.{RELEASE_TITLE_METADATA}: at most {RELEASE_TITLE_MAX} characters"
        )
    if len(comment) > RELEASE_COMMENT_MAX:
        raise InvalidArgument(
            f"metadata.{RELEASE_COMMENT_METADATA}: at most {RELEASE_COMMENT_MAX} characters"
        )
    return title, comment


__all__ = ["DELIMITER", "ApolloConfigStore", "join_key", "split_key", "tags_key"]
