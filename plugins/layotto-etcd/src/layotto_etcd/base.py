"""What the three etcd components share: one client per component, its lifecycle, health."""

from __future__ import annotations

import asyncio
import contextlib

from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentError,
    Health,
    LayottoError,
)

from layotto_etcd.client import EtcdClient
from layotto_etcd.settings import EtcdSettings

HEALTH_TIMEOUT = 0.5  # the sidecar polls every second; a check must answer well within it
INIT_TIMEOUT = 4.0  # the sidecar gives init 5 s; fail first, with our own message


class EtcdComponent(Component):
    """Owns one `EtcdClient` (one gRPC channel to the cluster), opened in `init`."""

    label = "etcd component"  # e.g. "lock store": used in error messages

    def __init__(self, settings: EtcdSettings, context: ComponentContext) -> None:
        self.settings = settings
        self.context = context
        self._what = f"{self.label} {context.name!r}"
        self._client: EtcdClient | None = None

    # -- lifecycle -------------------------------------------------------------------------

    async def init(self) -> None:
        """Connect and ask etcd for its status; a failure is a clear startup error that names
        the metadata to check (never a host or a password)."""
        client = EtcdClient(self.settings, self._what)
        timeout = min(self.settings.dial_timeout, INIT_TIMEOUT)
        try:
            await client.connect(timeout)
        except TimeoutError:
            await _close_quietly(client)
            raise BackendTimeout(
                f"{self._what}: etcd did not answer within {timeout:g} s (check metadata.endpoints)"
            ) from None
        except LayottoError as err:
            await _close_quietly(client)
            hint = "" if "check metadata" in err.message else " (check metadata.endpoints)"
            raise type(err)(f"{err.message}{hint}") from None
        except BaseException:
            await _close_quietly(client)
            raise
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await _close_quietly(client)

    async def check_health(self) -> Health:
        client = self._client
        if client is None:
            return Health.down("not started")
        try:
            status = await client.status(deadline=HEALTH_TIMEOUT)
        except BackendTimeout:
            return Health.down(f"etcd did not answer within {HEALTH_TIMEOUT:g} s")
        except LayottoError as err:
            return Health.down(err.message)
        except Exception as err:  # check_health must not raise
            return Health.down(f"health check failed ({type(err).__name__})")
        if not status.leader:
            return Health.down("etcd has no leader")
        if list(status.errors):
            return Health.down(f"etcd reports: {'; '.join(status.errors)}")
        return Health.up()

    # -- for subclasses --------------------------------------------------------------------

    @property
    def etcd(self) -> EtcdClient:
        if self._client is None:
            raise BackendUnavailable(f"{self._what} is not started (or already closed)")
        return self._client

    def failure(self, message: str) -> LayottoError:
        return ComponentError(f"{self._what}: {message}")


async def _close_quietly(client: EtcdClient) -> None:
    with contextlib.suppress(Exception):  # closing a channel to a dead server must not raise
        await asyncio.wait_for(client.close(), 2.0)
