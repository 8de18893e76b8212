"""Unit tests of the metadata model: no server needed."""

from __future__ import annotations

import pytest
from layotto_redis import RedisLockMetadata, RedisSettings, RedisStateMetadata, parse_duration
from layotto_redis.settings import MAX_CONNECT_TIMEOUT, create_client
from pydantic import ValidationError


def fields_in(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [
        ("5s", 5.0),
        ("500ms", 0.5),
        ("1m30s", 90.0),
        ("1.5h", 5400.0),
        ("250us", 0.00025),
        ("100µs", 0.0001),
        ("2", 2.0),
        ("0.25", 0.25),
        (3, 3.0),
        (1.5, 1.5),
        (" 10s ", 10.0),
        ("-1s", -1.0),
    ],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "5", "s", "5q", "5 s", "1h-1m", "abc", "nan", True, None])
def test_bad_durations(raw: object) -> None:
    if raw == "5":
        assert parse_duration(raw) == 5.0  # a bare number is seconds
        return
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


def test_defaults_are_daprs() -> None:
    m = RedisSettings.model_validate({"redisHost": "localhost:6379"})
    assert (m.host, m.port, m.redis_db) == ("localhost", 6379, 0)
    assert m.password == ""
    assert m.enable_tls is False
    assert m.dial_timeout == 5.0
    assert m.read_timeout == 3.0
    assert m.socket_timeout == 3.0
    assert m.max_retries == 3
    assert m.max_retry_backoff == 2.0
    assert m.pool_size >= 10
    assert m.effective_pool_timeout == 4.0
    # Connect attempts are capped so an outage is noticed quickly.
    assert m.connect_timeout == MAX_CONNECT_TIMEOUT


def test_strings_are_coerced_as_from_dapr_yaml() -> None:
    m = RedisStateMetadata.model_validate(
        {
            "redisHost": "redis.local:6380",
            "redisPassword": "s3cret",
            "redisUsername": "app",
            "redisDB": "3",
            "enableTLS": "true",
            "dialTimeout": "500ms",
            "readTimeout": "2s",
            "writeTimeout": "4s",
            "poolSize": "7",
            "poolTimeout": "1s",
            "maxRetries": "0",
            "maxRetryBackoff": "100ms",
            "ttlInSeconds": "60",
        }
    )
    assert (m.host, m.port, m.redis_db, m.redis_username) == ("redis.local", 6380, 3, "app")
    assert m.password == "s3cret"
    assert m.enable_tls is True
    assert m.dial_timeout == 0.5
    assert m.connect_timeout == 0.5
    assert m.socket_timeout == 4.0  # the larger of read and write
    assert m.pool_size == 7
    assert m.effective_pool_timeout == 1.0
    assert m.max_retries == 0
    assert m.max_retry_backoff == pytest.approx(0.1)
    assert m.ttl_in_seconds == 60


def test_layotto_db_alias() -> None:
    assert RedisLockMetadata.model_validate({"redisHost": "h:1", "db": "2"}).redis_db == 2


def test_password_is_not_in_repr() -> None:
    m = RedisSettings.model_validate({"redisHost": "h:1", "redisPassword": "hunter2"})
    assert "hunter2" not in repr(m)
    assert "hunter2" not in str(m)
    assert "hunter2" in m.secrets()


def test_redis_host_is_required() -> None:
    with pytest.raises(ValidationError) as info:
        RedisSettings.model_validate({})
    assert fields_in(info.value) == {"redisHost"}


@pytest.mark.parametrize(
    ("metadata", "field"),
    [
        ({"redisHost": "localhost"}, "redisHost"),
        ({"redisHost": "localhost:"}, "redisHost"),
        ({"redisHost": ":6379"}, "redisHost"),
        ({"redisHost": "localhost:99999"}, "redisHost"),
        ({"redisHost": "::1:6379"}, "redisHost"),
        ({"redisHost": "h:1", "redisDB": "x"}, "redisDB"),
        ({"redisHost": "h:1", "redisDB": "-1"}, "redisDB"),
        ({"redisHost": "h:1", "enableTLS": "maybe"}, "enableTLS"),
        ({"redisHost": "h:1", "dialTimeout": "5 seconds"}, "dialTimeout"),
        ({"redisHost": "h:1", "readTimeout": "0s"}, "readTimeout"),
        ({"redisHost": "h:1", "writeTimeout": "-1"}, "writeTimeout"),
        ({"redisHost": "h:1", "poolSize": "0"}, "poolSize"),
        ({"redisHost": "h:1", "maxRetries": "many"}, "maxRetries"),
        ({"redisHost": "h:1", "maxRetryBackoff": "fast"}, "maxRetryBackoff"),
        ({"redisHost": "h:1", "redisType": "cluster"}, "redisType"),
        ({"redisHost": "h:1", "failover": "true"}, "failover"),
    ],
)
def test_errors_name_the_field(metadata: dict[str, str], field: str) -> None:
    with pytest.raises(ValidationError) as info:
        RedisStateMetadata.model_validate(metadata)
    assert fields_in(info.value) == {field}


def test_state_ttl_default_must_be_an_integer() -> None:
    with pytest.raises(ValidationError) as info:
        RedisStateMetadata.model_validate({"redisHost": "h:1", "ttlInSeconds": "soon"})
    assert fields_in(info.value) == {"ttlInSeconds"}


def test_unknown_names_are_kept_for_the_loader_to_warn_about() -> None:
    m = RedisSettings.model_validate({"redisHost": "h:1", "idleTimeout": "5m"})
    assert m.model_extra == {"idleTimeout": "5m"}


def test_client_settings() -> None:
    m = RedisSettings.model_validate(
        {"redisHost": "h:1234", "readTimeout": "1s", "dialTimeout": "200ms", "poolSize": "3"}
    )
    client = create_client(m)
    pool = client.connection_pool
    kwargs = pool.connection_kwargs
    assert (kwargs["host"], kwargs["port"]) == ("h", 1234)
    assert kwargs["socket_timeout"] == 1.0
    assert kwargs["socket_connect_timeout"] == 0.2
    assert pool.max_connections == 3
