"""`lock.etcd`: a lock is a key `<keyPrefixPath><resource id>` holding the owner, attached to a
lease whose TTL is the lock's expiry.

- TryLock: grant a lease (TTL = expire), then `Txn If CreateRevision(key) == 0 Then Put(key,
  owner, lease)`. When the key exists the lease is revoked again and the answer is `false`.
- Unlock: `Txn If Value(key) == owner Then Get(key), Delete(key) Else Get(key)`; no key is
  LOCK_UNEXIST, another value LOCK_BELONG_TO_OTHERS. The released lock's lease is revoked.
- LockKeepAlive: an etcd lease can only be refreshed to its *granted* TTL, and a refresh cannot
  be made conditional on the owner. So a renewal grants a new lease (TTL = expire) and moves the
  key onto it in one transaction guarded by the owner: `Txn If Value(key) == owner Then Get(key),
  Put(key, owner, new lease) Else Get(key)`. The owner check and the new expiry are atomic; a
  missing key is never recreated, and another owner's key is left alone. The old (or unused
  new) lease is revoked afterwards.

etcd rounds a lease TTL up to its minimum (2 s with the default election timeout), so a lock
asked to live 1 s may live up to 2 s.
"""

from __future__ import annotations

from typing import Any

from layotto.plugin import (
    Component,
    ComponentContext,
    InvalidArgument,
    LockStatus,
    LockStore,
)

from layotto_etcd.base import EtcdComponent
from layotto_etcd.client import cmp_create, cmp_value, op_delete, op_put, op_range
from layotto_etcd.settings import MAX_LEASE_TTL, EtcdKeyPrefixSettings


class EtcdLockMetadata(EtcdKeyPrefixSettings):
    pass


def _check(resource_id: str, owner: str, expire_seconds: int | None = None) -> None:
    if not resource_id:
        raise InvalidArgument("field 'resource_id' must not be empty")
    if not owner:
        raise InvalidArgument("field 'lock_owner' must not be empty")
    if expire_seconds is not None and expire_seconds <= 0:
        raise InvalidArgument(f"field 'expire' must be greater than 0, got {expire_seconds}")
    if expire_seconds is not None and expire_seconds > MAX_LEASE_TTL:
        raise InvalidArgument(f"field 'expire' must be at most {MAX_LEASE_TTL} (etcd's limit)")


def _first_kv(response: Any) -> Any:
    kvs = response.response_range.kvs
    return kvs[0] if len(kvs) else None


class EtcdLockStore(EtcdComponent, LockStore):
    label = "lock store"

    def __init__(self, settings: EtcdLockMetadata, context: ComponentContext) -> None:
        super().__init__(settings, context)
        self._prefix = settings.key_prefix_path

    @classmethod
    def create(cls, metadata: EtcdLockMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    def key(self, resource_id: str) -> bytes:
        return f"{self._prefix}{resource_id}".encode()

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        _check(resource_id, owner, expire_seconds)
        key = self.key(resource_id)
        etcd = self.etcd
        lease = await etcd.lease_grant(expire_seconds)
        try:
            reply = await etcd.txn(
                compare=[cmp_create(key, 0)],
                success=[op_put(key, owner.encode(), lease=lease)],
            )
        except Exception:
            await etcd.lease_revoke(lease)  # an unknown outcome must not leave a lock held
            raise
        if not reply.succeeded:
            await etcd.lease_revoke(lease)
            return False
        return True

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        _check(resource_id, owner)
        key = self.key(resource_id)
        etcd = self.etcd
        reply = await etcd.txn(
            compare=[cmp_value(key, owner.encode())],
            success=[op_range(key), op_delete(key)],
            failure=[op_range(key)],
        )
        held = _first_kv(reply.responses[0])
        if reply.succeeded:
            if held is not None:
                await etcd.lease_revoke(int(held.lease))
            return LockStatus.SUCCESS
        return LockStatus.LOCK_UNEXIST if held is None else LockStatus.LOCK_BELONG_TO_OTHERS

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        _check(resource_id, owner, expire_seconds)
        key = self.key(resource_id)
        etcd = self.etcd
        lease = await etcd.lease_grant(expire_seconds)
        try:
            reply = await etcd.txn(
                compare=[cmp_value(key, owner.encode())],
                success=[op_range(key), op_put(key, owner.encode(), lease=lease)],
                failure=[op_range(key)],
            )
        except Exception:
            await etcd.lease_revoke(lease)  # an unknown outcome must not leave a lock held
            raise
        held = _first_kv(reply.responses[0])
        if reply.succeeded:
            if held is not None and int(held.lease) != lease:
                await etcd.lease_revoke(int(held.lease))
            return LockStatus.SUCCESS
        await etcd.lease_revoke(lease)
        return LockStatus.LOCK_UNEXIST if held is None else LockStatus.LOCK_BELONG_TO_OTHERS
