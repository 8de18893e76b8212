"""Unit tests of the metadata model and the error translation: no server needed."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import grpc
import pytest
from layotto.config import load_config
from layotto.plugin import BackendTimeout, BackendUnavailable, ComponentError, Kind
from layotto_etcd import (
    EtcdConfigMetadata,
    EtcdLockMetadata,
    EtcdSequencerMetadata,
    EtcdSettings,
    parse_duration,
)
from layotto_etcd.client import EtcdClient, prefix_end
from layotto_etcd.errors import translate
from layotto_etcd.plugin import layotto_components
from pydantic import ValidationError


def fields_in(err: ValidationError) -> set[str]:
    return {".".join(str(p) for p in e["loc"]) for e in err.errors()}


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("5s", 5.0), ("500ms", 0.5), ("1m30s", 90.0), ("10", 10.0), (3, 3.0), (" 2s ", 2.0)],
)
def test_durations(raw: object, seconds: float) -> None:
    assert parse_duration(raw) == pytest.approx(seconds)


@pytest.mark.parametrize("raw", ["", "s", "5q", "5 s", "abc", "nan", True, None])
def test_bad_durations(raw: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(raw)


def test_defaults() -> None:
    m = EtcdLockMetadata.model_validate({"endpoints": "127.0.0.1:2379"})
    assert m.endpoints == ["127.0.0.1:2379"]
    assert (m.username, m.password.get_secret_value()) == ("", "")
    assert m.dial_timeout == 5.0
    assert m.request_timeout == 5.0
    assert m.key_prefix_path == "/layotto/"
    assert not m.use_tls
    assert EtcdSequencerMetadata.model_validate({"endpoints": "h:1"}).key_prefix_path == (
        "/layotto/"
    )


def test_strings_and_lists_as_from_dapr_yaml() -> None:
    m = EtcdLockMetadata.model_validate(
        {
            "endpoints": "10.0.0.1:2379, etcd-2.local:2379 ,[::1]:2379",
            "username": "app",
            "password": "s3cret",
            "dialTimeout": "2",
            "requestTimeout": "1500ms",
            "keyPrefixPath": "/my/locks/",
        }
    )
    assert [str(e) for e in m.parsed_endpoints] == [
        "10.0.0.1:2379",
        "etcd-2.local:2379",
        "[::1]:2379",
    ]
    assert (m.dial_timeout, m.request_timeout) == (2.0, 1.5)
    assert m.key_prefix_path == "/my/locks/"
    assert "s3cret" not in repr(m)
    both = EtcdSettings.model_validate({"endpoints": ["a:1,b:2", "c:3"]})
    assert both.endpoints == ["a:1", "b:2", "c:3"]


def test_urls_are_accepted() -> None:
    m = EtcdSettings.model_validate({"endpoints": "http://127.0.0.1:2379,https://etcd:2379/"})
    assert [(e.host, e.port, e.tls) for e in m.parsed_endpoints] == [
        ("127.0.0.1", 2379, False),
        ("etcd", 2379, True),
    ]
    assert m.use_tls


def test_layotto_config_store_entry(tmp_path: Path) -> None:
    """Upstream's `config_store` entry: `address` and `timeout` beside `metadata`."""
    path = tmp_path / "runtime_config.json"
    entry = {"type": "etcd", "address": ["127.0.0.1:2379"], "timeout": "10"}
    path.write_text(json.dumps({"config_store": {"config_demo": entry}}))
    component = load_config(path).components[0]
    assert component.qualified_type == "configuration.etcd"
    m = EtcdConfigMetadata.model_validate(component.metadata)
    assert m.endpoints == ["127.0.0.1:2379"]
    assert m.dial_timeout == 10.0
    assert not m.model_extra  # nothing left over for the loader to warn about


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({}, "endpoints", "Field required"),
        ({"endpoints": ""}, "endpoints", "at least 1"),
        ({"endpoints": "no-port"}, "endpoints", "host:port"),
        ({"endpoints": "h:99999"}, "endpoints", "1..65535"),
        ({"endpoints": "unix://x:1"}, "endpoints", "scheme"),
        ({"endpoints": "h:1", "dialTimeout": "0"}, "dialTimeout", "greater than 0"),
        ({"endpoints": "h:1", "dialTimeout": "soon"}, "dialTimeout", "duration"),
        ({"endpoints": "h:1", "tlsCa": "/no/such/ca.pem"}, "tlsCa", "PEM file"),
        (
            {"endpoints": "h:1", "tlsCert": "-----BEGIN X", "tlsCertKey": "/no/such/key"},
            "tlsCertKey",
            "PEM file",
        ),
    ],
)
def test_bad_metadata_names_the_field(values: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        EtcdLockMetadata.model_validate(values)
    assert field in fields_in(info.value), info.value
    assert text in str(info.value)


@pytest.mark.parametrize(
    ("values", "field", "text"),
    [
        ({"password": "pw-x"}, "password", "username is not"),
        ({"username": "u"}, "password", "password is required"),
        ({"tlsCert": "-----BEGIN CERTIFICATE-----"}, "tlsCertKey", "tlsCert and tlsCertKey"),
        ({"tlsCertKey": "-----BEGIN KEY-----"}, "tlsCertKey", "tlsCert and tlsCertKey"),
    ],
)
def test_pairs(values: dict[str, Any], field: str, text: str) -> None:
    with pytest.raises(ValidationError) as info:
        EtcdLockMetadata.model_validate({"endpoints": "h:1", **values})
    assert fields_in(info.value) == {field}
    assert text in str(info.value)


def test_tls_from_pem_text_and_files(tmp_path: Path) -> None:
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    m = EtcdSettings.model_validate(
        {
            "endpoints": "h:1",
            "tlsCa": str(ca),
            "tlsCert": "-----BEGIN CERTIFICATE-----\nabc",
            "tlsCertKey": "-----BEGIN PRIVATE KEY-----\nsecret-key",
        }
    )
    assert m.use_tls
    assert "secret-key" not in repr(m)
    assert any("secret-key" in s for s in m.secrets())


def test_plugin_declares_three_components() -> None:
    specs = {spec.qualified_type: spec for spec in layotto_components()}
    assert set(specs) == {"configuration.etcd", "lock.etcd", "sequencer.etcd"}
    assert specs["configuration.etcd"].kind is Kind.CONFIGURATION
    assert specs["sequencer.etcd"].metadata_model is EtcdSequencerMetadata


def test_prefix_end() -> None:
    assert prefix_end(b"/app/") == b"/app0"
    assert prefix_end(b"a\xff") == b"b"
    assert prefix_end(b"\xff\xff") == b"\0"


# -- error translation ---------------------------------------------------------------------


class FakeRpcError(grpc.RpcError):  # type: ignore[misc]
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


@pytest.mark.parametrize(
    ("code", "details", "kind", "text"),
    [
        (
            grpc.StatusCode.UNAVAILABLE,
            "failed to connect to all addresses; last error: UNKNOWN: ipv4:10.1.2.3:2379: "
            "Failed to connect to remote host: Connection refused",
            BackendUnavailable,
            "etcd is unavailable (connection refused)",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "Stream removed (Socket closed)",
            BackendUnavailable,
            "connection closed by the server",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "DNS resolution failed for etcd.internal:2379",
            BackendUnavailable,
            "does not resolve",
        ),
        (
            grpc.StatusCode.UNAVAILABLE,
            "etcdserver: no leader",
            BackendUnavailable,
            "etcd is unavailable (no leader)",
        ),
        (grpc.StatusCode.DEADLINE_EXCEEDED, "Deadline Exceeded", BackendTimeout, "in time"),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: authentication failed, invalid user ID or password",
            BackendUnavailable,
            "authentication failed (check metadata.username / metadata.password)",
        ),
        (
            grpc.StatusCode.PERMISSION_DENIED,
            "etcdserver: permission denied",
            ComponentError,
            "permission denied",
        ),
        (
            grpc.StatusCode.INVALID_ARGUMENT,
            "etcdserver: duplicate key given in txn request",
            ComponentError,
            "etcd answered with an error: duplicate key given in txn request",
        ),
        (
            grpc.StatusCode.RESOURCE_EXHAUSTED,
            "etcdserver: too many requests",
            BackendUnavailable,
            "too many requests",
        ),
        (grpc.StatusCode.INTERNAL, "boom at 10.1.2.3", ComponentError, "failed (INTERNAL)"),
    ],
)
def test_translate(code: grpc.StatusCode, details: str, kind: type, text: str) -> None:
    err = translate(FakeRpcError(code, details), "lock store 'l'", ["10.1.2.3"])
    assert isinstance(err, kind), err
    assert text in err.message
    assert err.message.startswith("lock store 'l': ")
    assert "10.1.2.3" not in err.message
    assert "etcd.internal" not in err.message


def test_deadline_without_a_connection_is_unavailable() -> None:
    err = translate(FakeRpcError(grpc.StatusCode.DEADLINE_EXCEEDED, "x"), "w", connected=False)
    assert isinstance(err, BackendUnavailable)
    assert "connect timed out" in err.message


def test_server_messages_are_scrubbed() -> None:
    err = translate(
        FakeRpcError(grpc.StatusCode.FAILED_PRECONDITION, "etcdserver: user pw-123 bad"),
        "w",
        ["pw-123"],
    )
    assert err.message == "w: etcd answered with an error: user *** bad"


@pytest.mark.anyio
async def test_client_not_started() -> None:
    client = EtcdClient(EtcdSettings.model_validate({"endpoints": "h:1"}), "w")
    assert not client.connected
    with pytest.raises(BackendUnavailable, match="not started"):
        await client.status()
    await client.close()
