"""The last-seen state of every configuration item that an active subscription covers, and what
counts as a real change against it.

A watcher feeds it two kinds of input: batches from the store's watch (`observe`) and fresh
reads after a (re)connect or a new subscription (`resync`). Both return only the items whose
content, tags or `metadata["version"]` differ from what was last seen (deleted keys as items
with empty content), and record them. So a change the watch missed while it was disconnected is
found by the resync, and a change the resync already reported is not reported again when the
watch delivers it late. When versions are decimal integers that grow with every change (etcd
revisions, counters), an item older than the one last seen is a stale replay and is dropped
too; other versions (Apollo release keys) are compared for equality only.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass

from layotto.plugin import DELETED_METADATA, VERSION_METADATA, ConfigItem
from layotto.services.config_subscription import SubscriptionScope

_Where = tuple[str, str, str]  # (group, label, key)
_Signature = tuple[str, tuple[tuple[str, str], ...], str | None]


@dataclass(frozen=True, slots=True)
class Read:
    """One `get` a resync needs: every key of (group, label) when `keys` is empty."""

    group: str
    label: str
    keys: tuple[str, ...]

    def covers(self, item: ConfigItem) -> bool:
        if (item.group, item.label) != (self.group, self.label):
            return False
        return not self.keys or item.key in self.keys


def _where(item: ConfigItem) -> _Where:
    return (item.group, item.label, item.key)


def _signature(item: ConfigItem) -> _Signature:
    return (item.content, tuple(sorted(item.tags.items())), item.metadata.get(VERSION_METADATA))


def _version(item: ConfigItem) -> int | None:
    raw = item.metadata.get(VERSION_METADATA, "")
    return int(raw) if raw.isdigit() else None


def _older(item: ConfigItem, than: ConfigItem) -> bool:
    """True when both carry decimal versions and `item`'s is lower: a stale replay. Versions
    that are not decimal integers (Apollo release keys) are only compared for equality."""
    mine, theirs = _version(item), _version(than)
    return mine is not None and theirs is not None and mine < theirs


def deleted_item(item: ConfigItem) -> ConfigItem:
    """`item` as a deletion notice: empty content, no tags, `metadata["deleted"] = "true"`
    (and the version of the deletion when the store reported one)."""
    metadata = {DELETED_METADATA: "true"}
    version = item.metadata.get(VERSION_METADATA) if item.deleted else None
    if version:
        metadata[VERSION_METADATA] = version
    return ConfigItem(item.key, "", item.group, item.label, metadata=metadata)


class ChangeTracker:
    def __init__(self) -> None:
        self._seen: dict[_Where, ConfigItem] = {}
        self._scopes: Counter[SubscriptionScope] = Counter()

    # -- scopes ----------------------------------------------------------------------------

    def track(self, scope: SubscriptionScope) -> None:
        self._scopes[scope] += 1

    def untrack(self, scope: SubscriptionScope) -> None:
        self._scopes[scope] -= 1
        if self._scopes[scope] <= 0:
            del self._scopes[scope]
            self._seen = {w: i for w, i in self._seen.items() if self._covered(i)}

    def _covered(self, item: ConfigItem) -> bool:
        return any(scope.matches(item) for scope in self._scopes)

    def reads(self) -> list[Read]:
        """The fewest reads that cover every tracked scope: one per (group, label), of all
        keys when any scope wants all of them, else of the union of the scopes' keys."""
        wanted: dict[tuple[str, str], set[str] | None] = {}
        for scope in self._scopes:
            where = (scope.group, scope.label)
            if not scope.keys:
                wanted[where] = None
            elif where not in wanted:
                wanted[where] = set(scope.keys)
            else:
                keys = wanted[where]
                if keys is not None:
                    keys.update(scope.keys)
        return [
            Read(group, label, () if keys is None else tuple(sorted(keys)))
            for (group, label), keys in sorted(wanted.items())
        ]

    @staticmethod
    def read_for(scope: SubscriptionScope) -> Read:
        return Read(scope.group, scope.label, scope.keys)

    # -- changes ---------------------------------------------------------------------------

    def _record(self, item: ConfigItem) -> ConfigItem | None:
        """The change `item` makes, if any, recorded. A deleted key stays as a tombstone (a
        deletion notice), so a stale replay of an older write is recognised after it too."""
        where = _where(item)
        previous = self._seen.get(where)
        if previous is not None and _older(item, previous):
            return None  # a replay of something already superseded
        if item.deleted:
            notice = deleted_item(item)
            self._seen[where] = notice
            if previous is None or previous.deleted:
                return None  # nothing to delete from the subscribers' view
            return notice
        if (
            previous is not None
            and not previous.deleted
            and _signature(previous) == _signature(item)
        ):
            return None
        self._seen[where] = item
        return item

    def observe(self, batch: Iterable[ConfigItem]) -> list[ConfigItem]:
        """The real changes in a watch batch (items no scope covers are ignored)."""
        changes = []
        for item in batch:
            if self._covered(item):
                change = self._record(item)
                if change is not None:
                    changes.append(change)
        return changes

    def resync(self, read: Read, fresh: Iterable[ConfigItem]) -> list[ConfigItem]:
        """The real changes between what was last seen within `read` and its fresh result:
        new and changed items, and deletions for items that are gone."""
        current = {_where(i): i for i in fresh if read.covers(i) and self._covered(i)}
        changes = []
        for item in current.values():
            change = self._record(item)
            if change is not None:
                changes.append(change)
        gone = [
            i
            for w, i in self._seen.items()
            if read.covers(i) and w not in current and not i.deleted
        ]
        for item in gone:
            notice = deleted_item(item)
            self._seen[_where(item)] = notice
            changes.append(notice)
        return changes
