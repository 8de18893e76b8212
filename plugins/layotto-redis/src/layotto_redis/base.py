"""What the three Redis components share: one client per component, its lifecycle, health."""

from __future__ import annotations

import asyncio
import contextlib
from contextlib import AbstractContextManager

from layotto.plugin import (
    BackendTimeout,
    BackendUnavailable,
    Component,
    ComponentContext,
    ComponentError,
    Health,
    LayottoError,
)
from redis.asyncio import Redis

from layotto_redis.errors import Translator, translate
from layotto_redis.settings import RedisSettings, create_client

HEALTH_TIMEOUT = 0.5  # the sidecar polls every second; a check must answer well within it
INIT_TIMEOUT = 4.0  # the sidecar gives init 5 s; fail first, with our own message


class RedisComponent(Component):
    """Owns one `redis.asyncio.Redis` (and so one connection pool), created in `init`."""

    label = "redis component"  # e.g. "state store": used in error messages

    def __init__(self, settings: RedisSettings, context: ComponentContext) -> None:
        self.settings = settings
        self.context = context
        self._client: Redis | None = None
        self._what = f"{self.label} {context.name!r}"
        # Computed once: the settings are frozen, and every call needs them on its error path.
        self._secrets = tuple(settings.secrets())
        self._translator = Translator(self._what, self._secrets)

    # -- lifecycle -------------------------------------------------------------------------

    async def init(self) -> None:
        """Create the client and PING through it; a failure is a clear startup error (naming the
        metadata to check, never the password)."""
        client = create_client(self.settings)
        try:
            async with asyncio.timeout(INIT_TIMEOUT):
                await client.ping()
        except TimeoutError:  # the deadline above (redis-py raises its own TimeoutError)
            await close_quietly(client)
            raise BackendTimeout(
                f"{self._what}: Redis did not answer PING within {INIT_TIMEOUT:g} s "
                "(check metadata.redisHost)"
            ) from None
        except Exception as err:
            await close_quietly(client)
            cause = translate(err, self._what, self._secrets)
            hint = "" if "redisPassword" in cause.message else " (check metadata.redisHost)"
            raise type(cause)(f"{cause.message}{hint}") from None
        except BaseException:
            await close_quietly(client)
            raise
        self._client = client

    async def close(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            await close_quietly(client)

    async def check_health(self) -> Health:
        client = self._client
        if client is None:
            return Health.down("not started")
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                await client.ping()
        except TimeoutError:
            return Health.down(f"Redis did not answer PING within {HEALTH_TIMEOUT:g} s")
        except Exception as err:
            return Health.down(translate(err, "ping", self._secrets).message)
        return Health.up()

    # -- for subclasses --------------------------------------------------------------------

    @property
    def client(self) -> Redis:
        if self._client is None:
            raise BackendUnavailable(f"{self._what} is not started (or already closed)")
        return self._client

    def errors(self) -> AbstractContextManager[None]:
        """`with self.errors(): ...` turns redis-py failures into the SPI's errors."""
        return self._translator

    def failure(self, message: str) -> LayottoError:
        return ComponentError(f"{self._what}: {message}")


async def close_quietly(client: Redis) -> None:
    with contextlib.suppress(Exception):  # closing a pool to a dead server must not raise
        await client.aclose()
