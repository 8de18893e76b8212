"""`configuration.redis`: Dapr's layout (`SET key "value||version"`), watched through keyspace
notifications, with Layotto's group, label and tags on top.

- An item is a Redis **string** holding `<content>||<version>`, which is what Dapr's
  `configuration.redis` reads and writes. This component writes integer versions, one more than
  the version it replaces (1 for a new key, or when the old version was not an integer). Data
  written by others keeps the version it was given, or has none (`SET k v`).
- The stored key is the key itself when group and label are the defaults (`default`/`default`),
  so Dapr's data is read as it is and Dapr reads what this component writes. Any other group or
  label gives `<group>||<label>||<key>`. The app id is not part of the key (Dapr has none): every
  app id reads the same items.
- Tags live in one hash, `||layotto-config-tags`: field = stored key, value = a JSON object.
  A write sets the value and its tags in one Lua script (atomic), and a delete removes both.
- `watch` PSUBSCRIBEs to `__keyspace@<db>__:*` on a dedicated connection that never reconnects
  on its own (a silent reconnect would lose events; the sidecar's watcher reconnects and
  resyncs instead). Every event names a key: the watch reads it and reports the item, or a
  deleted item when the key is gone (del, expired, evicted, renamed away). Events that arrive
  together are read in one round trip and reported as one batch.
- Keyspace notifications are off by default on a Redis server. At init, and again before each
  watch (a restarted server has lost the setting), the component makes sure
  `notify-keyspace-events` contains `K$gxe` (keyspace events for string commands, generic
  commands, expiry and eviction), adding what is missing with CONFIG SET. When CONFIG is not
  allowed, init fails and says what to set on the server.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from layotto.plugin import (
    DELETED_METADATA,
    VERSION_METADATA,
    BackendUnavailable,
    Component,
    ComponentContext,
    ConfigItem,
    ConfigQuery,
    ConfigStore,
    InvalidArgument,
    LayottoError,
)
from pydantic import Field
from redis import exceptions as rx
from redis.asyncio import Redis
from redis.asyncio.client import PubSub
from redis.commands.core import AsyncScript

from layotto_redis.base import RedisComponent, close_quietly
from layotto_redis.errors import scrub
from layotto_redis.settings import RedisSettings, create_client

log = logging.getLogger(__name__)

SEPARATOR = "||"  # between content and version, and between group, label and key
TAGS_KEY = "||layotto-config-tags"  # no stored key can have this name (see `KeyLayout`)
REQUIRED_EVENTS = "K$gxe"  # keyspace events of string and generic commands, expiry, eviction
HEARTBEAT = 5.0  # an idle watch pings its connection this often; no answer by the next: down
DRAIN_LIMIT = 512  # notifications read into one batch at most
READ_CHUNK = 500  # keys per read script when listing every key
SCAN_COUNT = 1000


class RedisConfigMetadata(RedisSettings):
    # Not a Dapr setting. false: never CONFIG SET notify-keyspace-events (for a managed Redis
    # that forbids CONFIG, where it is set in the server's own configuration instead).
    enable_keyspace_events: bool = Field(default=True, alias="enableKeyspaceEvents")


# -- the scripts -----------------------------------------------------------------------------

# KEYS: stored keys, then the tags hash. -> one {value, tags} per key: value false when the key
# is missing or holds something other than a string (not a configuration item, as in Dapr),
# tags false when the item has none.
_READ = """
local tags = KEYS[#KEYS]
local out = {}
for i = 1, #KEYS - 1 do
  local v = redis.pcall("GET", KEYS[i])
  if type(v) == "table" then v = false end
  local t = false
  if v then t = redis.call("HGET", tags, KEYS[i]) end
  out[i] = {v, t}
end
return out
"""

# KEYS: stored keys, then the tags hash. ARGV: content and tags JSON ("" = none) per key.
# Checks every key first (absent or a string), then writes them all: all or nothing.
# -> the new versions.
_SET = """
local tags = KEYS[#KEYS]
local n = #KEYS - 1
for i = 1, n do
  local t = redis.call("TYPE", KEYS[i])["ok"]
  if t ~= "none" and t ~= "string" then
    return redis.error_reply("key '" .. KEYS[i] .. "' holds a " .. t ..
      ", not a configuration item")
  end
end
local versions = {}
for i = 1, n do
  local key = KEYS[i]
  local old = redis.call("GET", key)
  local version = 0
  if old then
    local v = string.match(old, "^.*||(%d+)$")
    if v then version = tonumber(v) end
  end
  local new = string.format("%d", version + 1)
  redis.call("SET", key, ARGV[2 * i - 1] .. "||" .. new)
  if ARGV[2 * i] ~= "" then
    redis.call("HSET", tags, key, ARGV[2 * i])
  else
    redis.call("HDEL", tags, key)
  end
  versions[i] = new
end
return versions
"""

# KEYS: stored keys, then the tags hash. Deletes the strings (a key of another type is not a
# configuration item and is left alone) and their tags.
_DELETE = """
local tags = KEYS[#KEYS]
for i = 1, #KEYS - 1 do
  if redis.call("TYPE", KEYS[i])["ok"] == "string" then
    redis.call("DEL", KEYS[i])
  end
  redis.call("HDEL", tags, KEYS[i])
end
return 0
"""


# -- keys and values -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class KeyLayout:
    """Where (group, label, key) is stored, and back.

    Keys must not contain `||`, groups and labels must not contain `|`: so a stored key either
    has no `||` (the default group and label) or is exactly `<group>||<label>||<key>`, and
    nothing else (state keys `<prefix>||<key>`, lock keys `lock|||...`, the tags hash) parses
    as an item.
    """

    default_group: str
    default_label: str

    def is_default(self, group: str, label: str) -> bool:
        return group == self.default_group and label == self.default_label

    def check(self, group: str, label: str, key: str, field: str = "key") -> None:
        if not key:
            raise InvalidArgument(f"field {field!r} must not be empty")
        if SEPARATOR in key:
            raise InvalidArgument(f"field {field!r} {key!r} must not contain {SEPARATOR!r}")
        for name, value in (("group", group), ("label", label)):
            if not value or "|" in value:
                raise InvalidArgument(f"field {name!r} {value!r} must not be empty or contain '|'")

    def stored(self, group: str, label: str, key: str, field: str = "key") -> str:
        self.check(group, label, key, field)
        if self.is_default(group, label):
            return key
        return f"{group}{SEPARATOR}{label}{SEPARATOR}{key}"

    def parse(self, stored: str) -> tuple[str, str, str] | None:
        """(group, label, key) of a stored key, None when it is not an item's key."""
        if SEPARATOR not in stored:
            return (self.default_group, self.default_label, stored) if stored else None
        parts = stored.split(SEPARATOR, 2)
        if len(parts) != 3:
            return None
        group, label, key = parts
        if not group or not label or not key or "|" in group or "|" in label:
            return None
        if SEPARATOR in key or self.is_default(group, label):
            return None
        return group, label, key

    def pattern(self, group: str, label: str) -> str:
        """The SCAN pattern of every stored key of (group, label)."""
        if self.is_default(group, label):
            return "*"
        return f"{_glob_escape(group)}{SEPARATOR}{_glob_escape(label)}{SEPARATOR}*"


def _glob_escape(text: str) -> str:
    return "".join("\\" + c if c in "*?[]\\" else c for c in text)


def split_value(raw: bytes) -> tuple[str, str]:
    """(content, version) of a stored value: the version follows the last `||` (Dapr splits
    at the first, which differs only for content that itself contains `||`)."""
    text = raw.decode("utf-8", "replace")
    content, sep, version = text.rpartition(SEPARATOR)
    return (content, version) if sep else (text, "")


def _tags(raw: Any) -> dict[str, str]:
    if raw is None:
        return {}
    try:
        decoded = json.loads(raw)
    except ValueError:
        return {}
    if not isinstance(decoded, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in decoded.items()}


def _decode_key(raw: bytes | str) -> str | None:
    if isinstance(raw, str):
        return raw
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        return None  # not a key the API can name


def _missing_events(current: str) -> str:
    """The flags of REQUIRED_EVENTS that `current` (a notify-keyspace-events value) lacks.
    `A` stands for every class but key-miss and new-key events."""
    flags = set(current)
    missing = "" if "K" in flags else "K"
    if "A" not in flags:
        missing += "".join(c for c in REQUIRED_EVENTS[1:] if c not in flags)
    return missing


# -- the store -------------------------------------------------------------------------------


class RedisConfigStore(RedisComponent, ConfigStore):
    label = "configuration store"
    default_group = "default"
    default_label = "default"

    def __init__(self, settings: RedisConfigMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._enable_events = settings.enable_keyspace_events
        self._layout = KeyLayout(self.default_group, self.default_label)
        self._channel_prefix = f"__keyspace@{settings.redis_db}__:".encode()
        self._read_script: AsyncScript | None = None
        self._set_script: AsyncScript | None = None
        self._delete_script: AsyncScript | None = None
        self._watch_clients: set[Redis] = set()

    @classmethod
    def create(cls, metadata: RedisConfigMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def init(self) -> None:
        await super().init()
        try:
            await self._ensure_keyspace_events()
        except BaseException:
            await super().close()
            raise
        self._read_script = self.client.register_script(_READ)
        self._set_script = self.client.register_script(_SET)
        self._delete_script = self.client.register_script(_DELETE)

    async def close(self) -> None:
        clients, self._watch_clients = self._watch_clients, set()
        for client in clients:  # ends every watch: its next read fails
            await close_quietly(client)
        await super().close()

    # -- keyspace notifications ------------------------------------------------------------

    async def _ensure_keyspace_events(self) -> None:
        """notify-keyspace-events must hold K$gxe: add what is missing (CONFIG SET), or fail
        saying what to set on the server."""
        hint = (
            f"set notify-keyspace-events to include {REQUIRED_EVENTS!r} in the server's "
            "configuration, or allow CONFIG GET/SET for this user"
        )
        try:
            with self.errors():
                reply = await self.client.config_get("notify-keyspace-events")
        except LayottoError as err:
            if not isinstance(err.__cause__, rx.ResponseError):
                raise
            reason = scrub(str(err.__cause__).strip().splitlines()[0], self._secrets)
            if not self._enable_events:
                log.warning(
                    "%s: cannot check notify-keyspace-events (%s); watches rely on the "
                    "server having %r",
                    self._what,
                    reason,
                    REQUIRED_EVENTS,
                )
                return
            raise self.failure(f"CONFIG GET is not permitted ({reason}): {hint}") from None
        current = str(_first_value(reply))
        missing = _missing_events(current)
        if not missing:
            return
        if not self._enable_events:
            raise self.failure(
                f"notify-keyspace-events is {current!r}, watches need {REQUIRED_EVENTS!r} "
                "(metadata.enableKeyspaceEvents is false, so it is not changed)"
            )
        try:
            with self.errors():
                await self.client.config_set("notify-keyspace-events", current + missing)
        except LayottoError as err:
            if not isinstance(err.__cause__, rx.ResponseError):
                raise
            reason = scrub(str(err.__cause__).strip().splitlines()[0], self._secrets)
            raise self.failure(
                f"cannot enable keyspace notifications, CONFIG SET is not permitted "
                f"({reason}): {hint}"
            ) from None
        log.info(
            "%s: notify-keyspace-events %r -> %r (keyspace notifications for watches)",
            self._what,
            current,
            current + missing,
        )

    # -- reads -----------------------------------------------------------------------------

    def _scripts(self) -> tuple[AsyncScript, AsyncScript, AsyncScript]:
        if self._read_script is None or self._set_script is None or self._delete_script is None:
            raise self.failure("not started")
        return self._read_script, self._set_script, self._delete_script

    async def _read(self, stored: Sequence[str]) -> list[ConfigItem | None]:
        """The items at these stored keys, in order (None: missing, or not an item)."""
        if not stored:
            return []
        client = self.client
        read, _, _ = self._scripts()
        with self.errors():
            replies = await read(keys=[*stored, TAGS_KEY], client=client)
        items: list[ConfigItem | None] = []
        for key, (value, tags) in zip(stored, replies, strict=True):
            where = self._layout.parse(key)
            if value is None or where is None:
                items.append(None)
                continue
            group, label, user_key = where
            content, version = split_value(value)
            metadata = {VERSION_METADATA: version} if version else {}
            items.append(ConfigItem(user_key, content, group, label, _tags(tags), metadata))
        return items

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        if query.keys:
            stored = [
                self._layout.stored(query.group, query.label, key, f"keys[{i}]")
                for i, key in enumerate(query.keys)
            ]
            found = await self._read(list(dict.fromkeys(stored)))
            return [item for item in found if item is not None]
        self._layout.check(query.group, query.label, "*")
        keys = await self._scan(query.group, query.label)
        items: list[ConfigItem] = []
        for start in range(0, len(keys), READ_CHUNK):
            found = await self._read(keys[start : start + READ_CHUNK])
            items += [item for item in found if item is not None]
        return items

    async def _scan(self, group: str, label: str) -> list[str]:
        """Every stored key of (group, label), sorted. A full SCAN of the database for the
        default group and label (their keys have no prefix to match)."""
        found: set[str] = set()
        with self.errors():
            async for raw in self.client.scan_iter(
                match=self._layout.pattern(group, label), count=SCAN_COUNT
            ):
                key = _decode_key(raw)
                if key is None:
                    continue
                where = self._layout.parse(key)
                if where is not None and where[:2] == (group, label):
                    found.add(key)
        return sorted(found)

    # -- writes ----------------------------------------------------------------------------

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        if not items:
            return
        keys: list[str] = []
        args: list[str] = []
        for i, item in enumerate(items):
            keys.append(self._layout.stored(item.group, item.label, item.key, f"items[{i}].key"))
            args.append(item.content)
            args.append(json.dumps(dict(item.tags), sort_keys=True) if item.tags else "")
        client = self.client
        _, write, _ = self._scripts()
        with self.errors():
            await write(keys=[*keys, TAGS_KEY], args=args, client=client)

    async def delete(self, query: ConfigQuery) -> None:
        if not query.keys:
            return
        stored = [
            self._layout.stored(query.group, query.label, key, f"keys[{i}]")
            for i, key in enumerate(query.keys)
        ]
        client = self.client
        _, _, remove = self._scripts()
        with self.errors():
            await remove(keys=[*dict.fromkeys(stored), TAGS_KEY], client=client)

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        """Every change in the database (the app id does not scope keys), batched. Raises
        BackendUnavailable when the connection is lost or stops answering."""
        self.client  # noqa: B018 - BackendUnavailable when not started or closed
        await self._ensure_keyspace_events()
        client = create_client(self.settings, max_retries=0, pool_size=1)
        self._watch_clients.add(client)
        pubsub = client.pubsub()
        try:
            with self.errors():
                await pubsub.psubscribe(self._channel_prefix + b"*")
                await self._subscribed(pubsub)
            yield []
            while True:
                keys = await self._changed_keys(pubsub)
                batch = await self._changes(keys)
                if batch:
                    yield batch
        finally:
            self._watch_clients.discard(client)
            try:
                with self.errors():
                    await pubsub.aclose()  # type: ignore[no-untyped-call]
            except LayottoError:
                pass
            finally:
                await close_quietly(client)

    async def _subscribed(self, pubsub: PubSub) -> None:
        """Wait for the PSUBSCRIBE confirmation: events are delivered from then on."""
        deadline = self.settings.socket_timeout
        message = await pubsub.get_message(timeout=deadline)
        if message is None or message.get("type") != "psubscribe":
            raise BackendUnavailable(
                f"{self._what}: Redis did not confirm the keyspace subscription "
                f"within {deadline:g} s"
            )

    async def _changed_keys(self, pubsub: PubSub) -> list[str]:
        """Wait for the next keyspace events; the stored keys they name, in order, unique."""
        keys: dict[str, None] = {}
        pinged = False
        while not keys:
            with self.errors():
                message = await pubsub.get_message(timeout=HEARTBEAT)
            if message is None:
                if pinged:
                    raise BackendUnavailable(
                        f"{self._what}: Redis did not answer a ping on the watch connection "
                        f"within {HEARTBEAT:g} s"
                    )
                with self.errors():
                    await pubsub.ping()
                pinged = True
                continue
            pinged = False
            self._collect(message, keys)
            for _ in range(DRAIN_LIMIT):  # whatever else has arrived: the same batch
                with self.errors():
                    message = await pubsub.get_message(timeout=0)
                if message is None:
                    break
                self._collect(message, keys)
        return list(keys)

    def _collect(self, message: Mapping[str, Any], keys: dict[str, None]) -> None:
        if message.get("type") != "pmessage":
            return
        channel = message.get("channel")
        if not isinstance(channel, bytes) or not channel.startswith(self._channel_prefix):
            return
        key = _decode_key(channel[len(self._channel_prefix) :])
        if key is not None and self._layout.parse(key) is not None:
            keys[key] = None

    async def _changes(self, keys: list[str]) -> list[ConfigItem]:
        """The current items at `keys`; deleted items for those that are gone."""
        batch: list[ConfigItem] = []
        for start in range(0, len(keys), READ_CHUNK):
            chunk = keys[start : start + READ_CHUNK]
            for key, item in zip(chunk, await self._read(chunk), strict=True):
                if item is not None:
                    batch.append(item)
                    continue
                where = self._layout.parse(key)
                if where is not None:
                    group, label, user_key = where
                    batch.append(
                        ConfigItem(user_key, "", group, label, metadata={DELETED_METADATA: "true"})
                    )
        return batch


def _first_value(reply: Any) -> Any:
    if isinstance(reply, Mapping):
        for value in reply.values():
            return value.decode() if isinstance(value, bytes) else value
    return ""


__all__ = ["KeyLayout", "RedisConfigMetadata", "RedisConfigStore", "split_value"]
