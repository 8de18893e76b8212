"""Connection settings shared by every Redis component, spelled as Dapr's `state.redis` metadata.

Values arrive as strings from Dapr YAML; pydantic's lax mode coerces them ("true", "5"), and the
durations accept Go's notation ("5s", "500ms", "1m30s") as well as a plain number of seconds.
"""

from __future__ import annotations

import os
import re
from typing import Annotated, Any

from layotto.plugin import ComponentMetadata
from layotto.plugin.addresses import split_host_port
from layotto.plugin.durations import Duration, parse_duration
from pydantic import AliasChoices, BeforeValidator, Field, SecretStr, field_validator
from redis.asyncio import BlockingConnectionPool, Redis, SSLConnection
from redis.asyncio.retry import Retry
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.exceptions import ConnectionError as RedisConnectionError

# A connection attempt never waits longer than this, whatever `dialTimeout` says: a sidecar
# whose Redis is gone must notice within a second and answer UNAVAILABLE, not hang.
MAX_CONNECT_TIMEOUT = 1.0
RETRY_BACKOFF_BASE = 0.008  # go-redis' MinRetryBackoff

# Duration fields and parse_duration come from the SPI (layotto.plugin.durations).


def _default_pool_size() -> int:
    # go-redis (and so Dapr): 10 connections per CPU.
    return 10 * (os.cpu_count() or 1)


class RedisSettings(ComponentMetadata):
    """`redisHost` is required; everything else has Dapr's default."""

    redis_host: str = Field(alias="redisHost", min_length=1)
    redis_password: SecretStr = Field(default=SecretStr(""), alias="redisPassword")
    redis_username: str = Field(default="", alias="redisUsername")
    redis_db: int = Field(default=0, ge=0, validation_alias=AliasChoices("redisDB", "db"))
    enable_tls: bool = Field(default=False, alias="enableTLS")
    # Not a Dapr setting: Dapr skips certificate verification whenever TLS is on; here it is
    # verified unless this is set.
    insecure_skip_verify: bool = Field(default=False, alias="insecureSkipVerify")
    dial_timeout: Duration = Field(default=5.0, gt=0, alias="dialTimeout")
    read_timeout: Duration = Field(default=3.0, gt=0, alias="readTimeout")
    write_timeout: Duration | None = Field(default=None, gt=0, alias="writeTimeout")
    pool_size: int = Field(default_factory=_default_pool_size, gt=0, alias="poolSize")
    pool_timeout: Duration | None = Field(default=None, gt=0, alias="poolTimeout")
    max_retries: int = Field(default=3, ge=-1, alias="maxRetries")
    max_retry_backoff: Duration = Field(default=2.0, ge=0, alias="maxRetryBackoff")
    redis_type: str = Field(default="node", alias="redisType")
    failover: bool = Field(default=False, alias="failover")

    @field_validator("redis_host")
    @classmethod
    def _check_host(cls, value: str) -> str:
        split_host_port(value, example_port=6379)
        return value.strip()

    @field_validator("redis_type")
    @classmethod
    def _check_type(cls, value: str) -> str:
        if value.strip().lower() != "node":
            raise ValueError(f"only 'node' (a standalone Redis) is supported, not {value!r}")
        return "node"

    @field_validator("failover")
    @classmethod
    def _check_failover(cls, value: bool) -> bool:
        if value:
            raise ValueError("Redis Sentinel failover is not supported")
        return value

    # -- derived ---------------------------------------------------------------------------

    @property
    def host(self) -> str:
        return split_host_port(self.redis_host)[0]

    @property
    def port(self) -> int:
        return split_host_port(self.redis_host)[1]

    @property
    def password(self) -> str:
        return self.redis_password.get_secret_value()

    @property
    def socket_timeout(self) -> float:
        """redis-py has one timeout for reads and writes: the larger of the two."""
        return max(self.read_timeout, self.write_timeout or self.read_timeout)

    @property
    def connect_timeout(self) -> float:
        return min(self.dial_timeout, MAX_CONNECT_TIMEOUT)

    @property
    def effective_pool_timeout(self) -> float:
        # go-redis' PoolTimeout default: ReadTimeout + 1 s.
        return self.pool_timeout if self.pool_timeout is not None else self.read_timeout + 1.0

    def secrets(self) -> list[str]:
        """Strings that must never appear in an error message."""
        found = [self.password, self.redis_host, self.host, f"{self.host}:{self.port}"]
        return [s for s in found if s]


def _stream_duration(value: Any) -> Any:
    """Dapr documents a bare number for `processingTimeout` and `redeliverInterval` as
    milliseconds ("5000"), and Layotto's Go components read it so: a bare number here is
    milliseconds, a Go duration ("5s", "500ms") is what it says."""
    if isinstance(value, bool):
        return value  # rejected by parse_duration
    if isinstance(value, int | float):
        return parse_duration(value) / 1000.0
    if isinstance(value, str) and _BARE_NUMBER.fullmatch(value.strip()):
        return parse_duration(value) / 1000.0
    return value


_BARE_NUMBER = re.compile(r"[+-]?(\d+(?:\.\d*)?|\.\d+)")

# A duration where a bare number counts as milliseconds (the two Redis Streams timings).
MillisDuration = Annotated[Duration, BeforeValidator(_stream_duration)]


class RedisPubSubMetadata(RedisSettings):
    """`pubsub.redis` (Redis Streams): the shared connection settings plus Dapr's stream
    settings. `consumerID` is the consumer group and the consumer name, as in Dapr; empty means
    the sidecar's app id."""

    consumer_id: str = Field(default="", alias="consumerID")
    # Not a Dapr setting: the consumer name inside the group (default: the consumerID, as Dapr
    # uses it). Give each replica its own (e.g. the pod name) so that one replica's restart
    # does not re-read another's in-flight entries.
    consumer_name: str = Field(default="", alias="consumerName")
    processing_timeout: MillisDuration = Field(default=60.0, ge=0, alias="processingTimeout")
    redeliver_interval: MillisDuration = Field(default=60.0, ge=0, alias="redeliverInterval")
    max_len_approx: int | None = Field(default=None, ge=0, alias="maxLenApprox")
    concurrency: int = Field(default=10, ge=1, alias="concurrency")
    queue_depth: int = Field(default=100, ge=1, alias="queueDepth")

    @field_validator("consumer_id", "consumer_name")
    @classmethod
    def _check_name(cls, value: str) -> str:
        return value.strip()

    @field_validator("max_len_approx", mode="before")
    @classmethod
    def _blank_is_unlimited(cls, value: Any) -> Any:
        if isinstance(value, str) and not value.strip():
            return None
        return value

    @property
    def redelivery(self) -> bool:
        """Reclaiming entries other consumers left pending; off when either timing is 0."""
        return self.processing_timeout > 0 and self.redeliver_interval > 0

    @property
    def max_len(self) -> int | None:
        """`XADD MAXLEN ~ n`, None for no trimming (unset or 0, as in Dapr)."""
        return self.max_len_approx or None


def create_client(
    settings: RedisSettings, *, max_retries: int | None = None, pool_size: int | None = None
) -> Redis:
    """One client, one bounded connection pool. No I/O: connections open on first use.

    Retries cover connection errors only (a refused connect, a connection the server closed):
    a timeout is not retried, so a call never waits much longer than `readTimeout`. Connect
    attempts are capped at one second each. `max_retries` and `pool_size` override the
    settings (a pub/sub connection must not reconnect behind its owner's back, say).
    """
    retries = max(settings.max_retries if max_retries is None else max_retries, 0)
    backoff = (
        ExponentialWithJitterBackoff(cap=settings.max_retry_backoff, base=RETRY_BACKOFF_BASE)
        if settings.max_retry_backoff > 0
        else NoBackoff()
    )
    kwargs: dict[str, Any] = {
        "host": settings.host,
        "port": settings.port,
        "db": settings.redis_db,
        "username": settings.redis_username or None,
        "password": settings.password or None,
        "socket_timeout": settings.socket_timeout,
        "socket_connect_timeout": settings.connect_timeout,
        "socket_keepalive": True,
        "retry": Retry(backoff, retries, supported_errors=(RedisConnectionError,)),
        "client_name": None,
    }
    if settings.enable_tls:
        kwargs["connection_class"] = SSLConnection
        if settings.insecure_skip_verify:
            kwargs["ssl_cert_reqs"] = "none"
            kwargs["ssl_check_hostname"] = False
    pool = BlockingConnectionPool(
        max_connections=settings.pool_size if pool_size is None else pool_size,
        timeout=settings.effective_pool_timeout,
        **kwargs,
    )
    return Redis.from_pool(pool)
