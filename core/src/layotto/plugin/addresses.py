"""Parsing what component metadata says about where a backend is, the same way in every plugin:
`host:port` addresses, comma-separated lists of them, PEM text."""

from __future__ import annotations

from typing import Any


def split_host_port(address: str, *, example_port: int = 1234) -> tuple[str, int]:
    """`host:port` or `[ipv6]:port` -> (host, port); a ValueError says what is wrong, with an
    example on the backend's usual port."""
    text = address.strip()
    example = f"must be host:port, e.g. 'localhost:{example_port}' or '[::1]:{example_port}'"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise ValueError(example)
        port_text = rest[1:]
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep or ":" in host:
            raise ValueError(example)
    if not host:
        raise ValueError("the host part is empty (expected host:port)")
    if not port_text.isdigit() or not 0 < int(port_text) < 65536:
        raise ValueError(f"port {port_text!r} is not a number in 1..65535")
    return host, int(port_text)


def comma_list(value: Any) -> Any:
    """A pydantic `BeforeValidator`: `"a, b"` or `["a,b", "c"]` -> `["a", "b", "c"]` (Dapr YAML
    gives lists as one comma-separated string); other values pass through for pydantic."""
    if isinstance(value, str):
        return [part for part in (p.strip() for p in value.split(",")) if part]
    if isinstance(value, list | tuple):
        found: list[Any] = []
        for entry in value:
            if isinstance(entry, str):
                found.extend(part for part in (p.strip() for p in entry.split(",")) if part)
            else:
                found.append(entry)
        return found
    return value


def is_pem(value: str) -> bool:
    """Inline PEM text (a certificate or key), as opposed to a file path."""
    return value.lstrip().startswith("-----BEGIN")
