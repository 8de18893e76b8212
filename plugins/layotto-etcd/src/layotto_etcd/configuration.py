"""`configuration.etcd`: Layotto's etcd layout.

    /<appId>/<group>/<label>/<key>            the item's content
    /<appId>/<group>/<label>/<key>/<tagName>  one key per tag, holding the tag's value

Group and label default to `default`. `*` as group or label in a get matches every one.
Names must not be empty nor contain `/` (the layout could not tell them apart otherwise).

- get: one range read (of `/<appId>/<group>/<label>/`, or wider with `*`), filtered by key;
  `metadata["version"]` is the highest mod revision of the item and its tags.
- set: per item, the content and every tag in one transaction, which also deletes the tags the
  item no longer has (guarded by a compare on the tag range, retried when it moved).
- delete: the item key and its tag keys, for every key of the request, in one transaction.
- watch(app_id): one watch stream on `/<appId>/`; `[]` once etcd confirmed the watch. Each
  batch of events becomes items. A deleted item key gives an item with empty content and
  `metadata["deleted"] = "true"`; any other change is read back (one transaction), so the item
  carries all its tags, at the batch's own revision. The first batch after the watch was
  established, and any older batch after it, is read as of the revision of that first read
  instead (items gone by then count as deleted): the sidecar reads the current items right
  after the watch is established, and this keeps it from going back to older values.
- When the stream breaks the watch raises `BackendUnavailable` and remembers the last revision
  it delivered: the next `watch` of that app id resumes right after it, so nothing written in
  between (on another member, or right after etcd restarted) is missed. If etcd has compacted
  that revision away, the watch starts from the present (the sidecar's resync covers the gap).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]
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

from layotto_etcd.base import EtcdComponent
from layotto_etcd.client import (
    MAX_TXN_OPS,
    closed_under_us,
    cmp_range_mod_below,
    op_delete,
    op_put,
    op_range,
    prefix_end,
    watch_create,
)
from layotto_etcd.errors import is_compacted
from layotto_etcd.settings import EtcdSettings

log = logging.getLogger(__name__)

WILDCARD = "*"
# A watch that broke is resumed at its last revision when watched again within this many
# seconds (the sidecar's watcher retries within a few); later ones start from the present.
RESUME_WINDOW = 300.0
_SET_ATTEMPTS = 10


class EtcdConfigMetadata(EtcdSettings):
    pass


def _check_name(field_name: str, value: str, *, wildcard: bool = False) -> None:
    if not value:
        raise InvalidArgument(f"field '{field_name}' must not be empty")
    if value == WILDCARD:
        if wildcard:
            return
        raise InvalidArgument(f"field '{field_name}' must not be the wildcard '*' here")
    if "/" in value:
        raise InvalidArgument(f"field '{field_name}' must not contain '/' (got {value!r})")


def _item_key(app_id: str, group: str, label: str, key: str) -> bytes:
    return f"/{app_id}/{group}/{label}/{key}".encode()


@dataclass
class _Found:
    """An item assembled from its keys."""

    group: str
    label: str
    key: str
    content: str | None = None  # None: only tag keys were seen
    revision: int = 0
    tags: dict[str, str] = field(default_factory=dict)

    def item(self) -> ConfigItem:
        return ConfigItem(
            key=self.key,
            content=self.content or "",
            group=self.group,
            label=self.label,
            tags=dict(self.tags),
            metadata={VERSION_METADATA: str(self.revision)},
        )


def _split(app_id: str, raw_key: bytes) -> list[str] | None:
    """`/<app>/<g>/<l>/<k>[/<tag>]` -> [g, l, k] or [g, l, k, tag]; None for other keys."""
    try:
        text = raw_key.decode()
    except UnicodeDecodeError:
        return None
    head = f"/{app_id}/"
    if not text.startswith(head):
        return None
    parts = text[len(head) :].split("/")
    if len(parts) not in (3, 4) or not all(parts):
        return None
    return parts


def _assemble(app_id: str, kvs: Iterable[Any]) -> dict[tuple[str, str, str], _Found]:
    found: dict[tuple[str, str, str], _Found] = {}
    for kv in kvs:
        parts = _split(app_id, bytes(kv.key))
        if parts is None:
            continue
        ident = (parts[0], parts[1], parts[2])
        entry = found.get(ident)
        if entry is None:
            entry = found[ident] = _Found(*ident)
        entry.revision = max(entry.revision, int(kv.mod_revision))
        value = bytes(kv.value).decode(errors="replace")
        if len(parts) == 3:
            entry.content = value
        else:
            entry.tags[parts[3]] = value
    return {ident: entry for ident, entry in found.items() if entry.content is not None}


def _deleted(ident: tuple[str, str, str], revision: int) -> ConfigItem:
    group, label, key = ident
    return ConfigItem(
        key=key,
        content="",
        group=group,
        label=label,
        metadata={DELETED_METADATA: "true", VERSION_METADATA: str(revision)},
    )


def _matches(pattern: str, value: str) -> bool:
    return pattern in (WILDCARD, value)


class EtcdConfigStore(EtcdComponent, ConfigStore):
    label = "configuration store"
    default_group = "default"
    default_label = "default"

    def __init__(self, settings: EtcdConfigMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        # app id -> (the revision a new watch starts from, when the old one broke).
        self._resume: dict[str, tuple[int, float]] = {}

    @classmethod
    def create(cls, metadata: EtcdConfigMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    # -- get -------------------------------------------------------------------------------

    async def get(self, query: ConfigQuery) -> list[ConfigItem]:
        _check_name("app_id", query.app_id)
        _check_name("group", query.group, wildcard=True)
        _check_name("label", query.label, wildcard=True)
        for key in query.keys:
            _check_name("keys", key)
        if query.group == WILDCARD:
            prefix = f"/{query.app_id}/".encode()
        elif query.label == WILDCARD:
            prefix = f"/{query.app_id}/{query.group}/".encode()
        else:
            prefix = f"/{query.app_id}/{query.group}/{query.label}/".encode()
        reply = await self.etcd.range(prefix, prefix_end(prefix))
        found = [
            entry
            for entry in _assemble(query.app_id, reply.kvs).values()
            if _matches(query.group, entry.group) and _matches(query.label, entry.label)
        ]
        if not query.keys:
            return [entry.item() for entry in found]
        by_key: dict[str, list[_Found]] = {}
        for entry in found:
            by_key.setdefault(entry.key, []).append(entry)
        items: list[ConfigItem] = []
        for key in dict.fromkeys(query.keys):
            items.extend(entry.item() for entry in by_key.get(key, ()))
        return items

    # -- set / delete ----------------------------------------------------------------------

    async def set(
        self, app_id: str, items: Sequence[ConfigItem], metadata: Mapping[str, str]
    ) -> None:
        _check_name("app_id", app_id)
        latest: dict[bytes, ConfigItem] = {}
        for item in items:
            _check_name("key", item.key)
            _check_name("group", item.group)
            _check_name("label", item.label)
            for tag in item.tags:
                _check_name("tags", tag)
            if len(item.tags) + 2 > MAX_TXN_OPS // 2:
                raise InvalidArgument(
                    f"item {item.key!r} has {len(item.tags)} tags; at most "
                    f"{MAX_TXN_OPS // 2 - 2} fit in one etcd transaction"
                )
            latest[_item_key(app_id, item.group, item.label, item.key)] = item  # last one wins
        # Each chunk is one transaction: at most MAX_TXN_OPS operations, counting every
        # stale tag that may need a delete as well.
        chunk: list[tuple[bytes, ConfigItem]] = []
        budget = 0
        for key, item in latest.items():
            cost = (len(item.tags) + 1) * 2
            if chunk and budget + cost > MAX_TXN_OPS:
                await self._set_chunk(chunk)
                chunk, budget = [], 0
            chunk.append((key, item))
            budget += cost
        if chunk:
            await self._set_chunk(chunk)

    async def _set_chunk(self, chunk: list[tuple[bytes, ConfigItem]]) -> None:
        etcd = self.etcd
        for _ in range(_SET_ATTEMPTS):
            # Which tags exist now (keys only), at one revision.
            seen = await etcd.txn(
                success=[op_range(k + b"/", prefix_end(k + b"/"), keys_only=True) for k, _ in chunk]
            )
            revision = int(seen.header.revision)
            compare = []
            ops = []
            for (key, item), response in zip(chunk, seen.responses, strict=True):
                tag_prefix = key + b"/"
                wanted = {tag_prefix + name.encode(): value for name, value in item.tags.items()}
                compare.append(
                    cmp_range_mod_below(tag_prefix, prefix_end(tag_prefix), revision + 1)
                )
                ops.append(op_put(key, item.content.encode()))
                ops.extend(op_put(k, v.encode()) for k, v in wanted.items())
                ops.extend(
                    op_delete(bytes(kv.key))
                    for kv in response.response_range.kvs
                    if bytes(kv.key) not in wanted
                )
            reply = await etcd.txn(compare=compare, success=ops)
            if reply.succeeded:
                return
        raise self.failure("set: the tags kept changing under concurrent writers; try again")

    async def delete(self, query: ConfigQuery) -> None:
        _check_name("app_id", query.app_id)
        _check_name("group", query.group)
        _check_name("label", query.label)
        for key in query.keys:
            _check_name("keys", key)
        keys = list(dict.fromkeys(query.keys))
        per_txn = MAX_TXN_OPS // 2
        for start in range(0, len(keys), per_txn):
            ops = []
            for key in keys[start : start + per_txn]:
                item_key = _item_key(query.app_id, query.group, query.label, key)
                ops.append(op_delete(item_key))
                ops.append(op_delete(item_key + b"/", prefix_end(item_key + b"/")))
            await self.etcd.txn(success=ops)

    # -- watch -----------------------------------------------------------------------------

    async def watch(self, app_id: str) -> AsyncIterator[list[ConfigItem]]:
        _check_name("app_id", app_id)
        prefix = f"/{app_id}/".encode()
        etcd = self.etcd
        start, broke_at = self._resume.get(app_id, (0, 0.0))
        if start and time.monotonic() - broke_at > RESUME_WINDOW:
            start = 0  # nobody watched for long: start from now (the sidecar resyncs anyway)
        call, created = await self._create_watch(prefix, start)
        # The last revision whose changes this watch has delivered.
        delivered = start - 1 if start else int(created.header.revision)
        self._resume.pop(app_id, None)
        # Changes up to `floor` are reported as of `floor` (see `_items_as_of`); None until
        # the first batch after the watch was established.
        floor: int | None = None
        clean_exit = False
        try:
            yield []
            while True:
                try:
                    response = await call.read()
                except (grpc.RpcError, grpc.aio.UsageError) as err:
                    raise etcd.translate(err) from err
                except asyncio.CancelledError:
                    if closed_under_us():
                        raise etcd.closed() from None
                    raise
                if response is grpc.aio.EOF:
                    raise BackendUnavailable(f"{self._what}: the etcd watch stream ended")
                if response.canceled or response.compact_revision:
                    raise self._canceled(response)
                if not len(response.events):  # a progress notification
                    delivered = max(delivered, int(response.header.revision))
                    continue
                batch_revision = max(int(ev.kv.mod_revision) for ev in response.events)
                if floor is None or batch_revision <= floor:
                    items, read_at = await self._items_as_of(app_id, response.events, floor or 0)
                    floor = read_at or None
                else:
                    items = await self._items_exact(app_id, response.events, batch_revision)
                delivered = max(delivered, batch_revision)
                if items:
                    yield items
        except GeneratorExit:
            clean_exit = True
            raise
        except asyncio.CancelledError:
            clean_exit = True
            raise
        finally:
            call.cancel()
            if not clean_exit:
                resume = delivered + 1
                earlier = self._resume.get(app_id)
                if earlier is not None and earlier[0] < resume:
                    resume = earlier[0]
                self._resume[app_id] = (resume, time.monotonic())

    async def _create_watch(self, prefix: bytes, start: int) -> tuple[Any, Any]:
        """Open a stream and create the watch; returns (call, the `created` response)."""
        etcd = self.etcd
        deadline = self.settings.request_timeout
        for attempt in range(2):
            token = etcd.token
            call = etcd.open_stream("Watch", "Watch")
            try:
                async with asyncio.timeout(deadline):
                    await call.write(watch_create(prefix, prefix_end(prefix), start))
                    response = await call.read()
            except TimeoutError:
                call.cancel()
                raise BackendUnavailable(
                    f"{self._what}: etcd did not create the watch within {deadline:g} s"
                ) from None
            except (grpc.RpcError, grpc.aio.UsageError) as err:
                call.cancel()
                if attempt == 0 and await etcd.renew_token_after(err, token):
                    continue
                raise etcd.translate(err) from err
            except asyncio.CancelledError:
                call.cancel()
                if closed_under_us():
                    raise etcd.closed() from None
                raise
            except BaseException:
                call.cancel()
                raise
            if response is grpc.aio.EOF:
                call.cancel()
                raise BackendUnavailable(f"{self._what}: the etcd watch stream ended")
            if response.compact_revision and start:
                # The revision to resume from is gone: start from now. The sidecar's resync
                # (a fresh get, diffed) covers what happened in between.
                call.cancel()
                log.warning(
                    "%s: cannot resume the watch at revision %d (compacted up to %d); "
                    "watching from now on",
                    self._what,
                    start,
                    response.compact_revision,
                )
                return await self._create_watch(prefix, 0)
            if response.canceled or not response.created:
                call.cancel()
                if (
                    attempt == 0
                    and response.canceled
                    and not response.compact_revision
                    and await etcd.renew_token_after_watch_refused(
                        str(response.cancel_reason), token
                    )
                ):
                    continue  # the stream's token was stale: open a new one with a fresh token
                raise self._canceled(response)
            return call, response
        raise AssertionError("unreachable")

    def _canceled(self, response: Any) -> LayottoError:
        if response.compact_revision:
            return BackendUnavailable(
                f"{self._what}: the watch fell behind etcd's compaction; it will restart"
            )
        reason = str(response.cancel_reason or "no reason given")
        if "permission denied" in reason:
            return self.failure("etcd refused the watch (permission denied)")
        return BackendUnavailable(f"{self._what}: etcd canceled the watch ({reason})")

    @staticmethod
    def _touched(app_id: str, events: Any) -> dict[tuple[str, str, str], bool]:
        """The items a batch of events touched: (group, label, key) -> the item key itself
        was deleted (by its last event in the batch)."""
        touched: dict[tuple[str, str, str], bool] = {}
        for event in events:
            parts = _split(app_id, bytes(event.kv.key))
            if parts is None:
                continue
            ident = (parts[0], parts[1], parts[2])
            if len(parts) == 3:
                touched[ident] = event.type == rpc.Event.DELETE
            else:
                touched.setdefault(ident, False)
        return touched

    async def _items_exact(self, app_id: str, events: Any, revision: int) -> list[ConfigItem]:
        """A live batch: deleted items as such, the others read back (with their tags) at the
        batch's own revision, so every change is reported as it was made."""
        touched = self._touched(app_id, events)
        alive = [ident for ident, deleted in touched.items() if not deleted]
        current, _ = await self._read_items(app_id, alive, revision)
        items: list[ConfigItem] = []
        for ident, deleted in touched.items():
            if deleted:
                items.append(_deleted(ident, revision))
            elif ident in current:
                items.append(current[ident].item())
        return items

    async def _items_as_of(
        self, app_id: str, events: Any, revision: int
    ) -> tuple[list[ConfigItem], int]:
        """A batch from before `revision` (0: now): every touched item as it is at that
        revision, absent ones as deleted. Returns the items and the revision read.

        The first batch after a (re)connect, and every older one after it (a resumed watch
        catching up), is reported this way. The sidecar reads the current items right after
        the watch is established and diffs them with what it saw; reporting older events as
        of a revision no older than that read keeps it from ever going back to a stale value.
        """
        touched = self._touched(app_id, events)
        current, read_at = await self._read_items(app_id, list(touched), revision)
        items = [
            current[ident].item() if ident in current else _deleted(ident, read_at)
            for ident in touched
        ]
        return items, read_at

    async def _read_items(
        self, app_id: str, idents: list[tuple[str, str, str]], revision: int
    ) -> tuple[dict[tuple[str, str, str], _Found], int]:
        """The items at `revision` (0: now), and the revision read."""
        kvs: list[Any] = []
        per_read = MAX_TXN_OPS // 2
        for start in range(0, len(idents), per_read):
            ops = []
            for ident in idents[start : start + per_read]:
                key = _item_key(app_id, *ident)
                ops.append(op_range(key))
                ops.append(op_range(key + b"/", prefix_end(key + b"/")))
            reply = await self._txn_at(ops, revision)
            revision = revision or int(reply.header.revision)  # later chunks: the same one
            for response in reply.responses:
                kvs.extend(response.response_range.kvs)
        return _assemble(app_id, kvs), revision

    async def _txn_at(self, ops: list[Any], revision: int) -> Any:
        """A read-only transaction of ranges at `revision` (at the current one once that
        revision is compacted away)."""
        for op in ops:
            op.request_range.revision = revision
        try:
            return await self.etcd.txn(success=ops)
        except LayottoError as err:
            if not is_compacted(err.__cause__):
                raise
        for op in ops:
            op.request_range.revision = 0
        return await self.etcd.txn(success=ops)
