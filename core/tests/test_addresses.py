"""layotto.plugin.addresses: what every plugin's metadata parsing shares."""

from __future__ import annotations

import pytest
from layotto.plugin.addresses import comma_list, is_pem, split_host_port


@pytest.mark.parametrize(
    ("address", "host", "port"),
    [
        ("localhost:6379", "localhost", 6379),
        (" [::1]:7000 ", "::1", 7000),
        ("10.0.0.5:1", "10.0.0.5", 1),
        ("broker-0.kafka:65535", "broker-0.kafka", 65535),
    ],
)
def test_split_host_port(address: str, host: str, port: int) -> None:
    assert split_host_port(address) == (host, port)


@pytest.mark.parametrize(
    ("address", "says"),
    [
        ("localhost", "must be host:port, e.g. 'localhost:9092'"),
        ("::1:80", "must be host:port"),
        ("[::1]80", "must be host:port"),
        (":80", "the host part is empty"),
        ("h:0", "not a number in 1..65535"),
        ("h:65536", "not a number in 1..65535"),
        ("h:http", "not a number in 1..65535"),
    ],
)
def test_split_host_port_says_what_is_wrong(address: str, says: str) -> None:
    with pytest.raises(ValueError, match=r".") as info:
        split_host_port(address, example_port=9092)
    assert says in str(info.value)


def test_comma_list() -> None:
    assert comma_list("a, b,,c ") == ["a", "b", "c"]
    assert comma_list(["a,b", " c", 5]) == ["a", "b", "c", 5]
    assert comma_list(None) is None


def test_is_pem() -> None:
    assert is_pem("\n -----BEGIN CERTIFICATE-----\n...")
    assert not is_pem("/etc/ssl/ca.pem")
