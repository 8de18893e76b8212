"""An in-process lock store: resource -> (owner, expiry), expiry checked when a lock is touched.

Every operation runs without awaiting, so each one is atomic with respect to the event loop.
Expiry uses the monotonic clock: a wall-clock jump must not release or extend a lease.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from layotto.plugin import (
    Component,
    ComponentContext,
    ComponentMetadata,
    InvalidArgument,
    LockStatus,
    LockStore,
)

# Expired leases are dropped when touched; a sweep past this many entries bounds what is left
# behind by resources that are never touched again.
_SWEEP_AT_LEAST = 1024


class InMemoryLockMetadata(ComponentMetadata):
    pass


@dataclass(slots=True)
class _Lease:
    owner: str
    expires_at: float  # clock seconds


class InMemoryLockStore(LockStore):
    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock  # injectable, so tests can move time without sleeping
        self._leases: dict[str, _Lease] = {}
        self._sweep_at = _SWEEP_AT_LEAST

    def __len__(self) -> int:
        """Leases kept, expired ones not yet dropped included."""
        return len(self._leases)

    @classmethod
    def create(cls, metadata: InMemoryLockMetadata, context: ComponentContext) -> Component:
        return cls()

    def _live(self, resource_id: str, now: float) -> _Lease | None:
        lease = self._leases.get(resource_id)
        if lease is not None and lease.expires_at <= now:
            del self._leases[resource_id]
            return None
        return lease

    def _sweep(self, now: float) -> None:
        if len(self._leases) < self._sweep_at:
            return
        self._leases = {r: lease for r, lease in self._leases.items() if lease.expires_at > now}
        # Amortised: the next sweep waits until the live set has doubled.
        self._sweep_at = max(_SWEEP_AT_LEAST, 2 * len(self._leases))

    @staticmethod
    def _check_expire(expire_seconds: int) -> None:
        if expire_seconds <= 0:
            raise InvalidArgument(f"field 'expire' must be positive, got {expire_seconds}")

    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        self._check_expire(expire_seconds)
        now = self._clock()
        if self._live(resource_id, now) is not None:
            return False  # held, by this owner too: locks are not reentrant
        self._sweep(now)
        self._leases[resource_id] = _Lease(owner, now + expire_seconds)
        return True

    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        lease = self._live(resource_id, self._clock())
        if lease is None:
            return LockStatus.LOCK_UNEXIST
        if lease.owner != owner:
            return LockStatus.LOCK_BELONG_TO_OTHERS
        del self._leases[resource_id]
        return LockStatus.SUCCESS

    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        self._check_expire(expire_seconds)
        now = self._clock()
        lease = self._live(resource_id, now)
        if lease is None:
            return LockStatus.LOCK_UNEXIST  # an expired lease is not brought back
        if lease.owner != owner:
            return LockStatus.LOCK_BELONG_TO_OTHERS
        lease.expires_at = now + expire_seconds
        return LockStatus.SUCCESS
