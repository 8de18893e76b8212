"""The lock-store SPI: non-blocking, non-reentrant leases owned by an opaque owner string."""

from __future__ import annotations

from abc import abstractmethod
from enum import StrEnum

from layotto.plugin.component import Component


class LockStatus(StrEnum):
    """Unlock and keep-alive outcomes (the Layotto enums; Dapr's map 1:1)."""

    SUCCESS = "SUCCESS"
    LOCK_UNEXIST = "LOCK_UNEXIST"
    LOCK_BELONG_TO_OTHERS = "LOCK_BELONG_TO_OTHERS"
    INTERNAL_ERROR = "INTERNAL_ERROR"


class LockStore(Component):
    """Keys arrive already prefixed by the sidecar. Raise a LayottoError (e.g.
    BackendUnavailable) when the backend fails: the sidecar then answers INTERNAL_ERROR plus an
    error status."""

    @abstractmethod
    async def try_lock(self, resource_id: str, owner: str, expire_seconds: int) -> bool:
        """Take the lock if nobody holds it (the same owner included); never wait."""

    @abstractmethod
    async def unlock(self, resource_id: str, owner: str) -> LockStatus:
        """SUCCESS, LOCK_UNEXIST (missing or expired) or LOCK_BELONG_TO_OTHERS."""

    @abstractmethod
    async def keep_alive(self, resource_id: str, owner: str, expire_seconds: int) -> LockStatus:
        """Owner only: expiry becomes now + expire_seconds. A missing or expired lock is
        LOCK_UNEXIST and is not recreated; another owner's is LOCK_BELONG_TO_OTHERS, unchanged."""
