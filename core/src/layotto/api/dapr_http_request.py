"""Reading Dapr HTTP requests: bounded bodies, JSON with the offending field named, and the
`metadata.<key>` query parameters every building block takes."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import anyio
from starlette.requests import ClientDisconnect, Request

from layotto.api.dapr_http_json import loads
from layotto.api.http_errors import MALFORMED_REQUEST, HttpError, malformed

# daprd's default --max-body-size (4 MiB), which also bounds its gRPC messages.
MAX_BODY_BYTES = 4 * 1024 * 1024
# A client that stops sending mid-body must not hold a call (and the drain) open forever;
# a full 4 MiB body still fits at about 1 Mbit/s.
BODY_READ_TIMEOUT_SECONDS = 60.0
METADATA_PREFIX = "metadata."
# A quoted int64 as protojson writes one (Python's int() would also take "1_000" or " 1 ").
_INTEGER = re.compile(r"-?[0-9]+")


async def read_body(request: Request) -> bytes:
    chunks: list[bytes] = []
    size = 0
    try:
        with anyio.fail_after(BODY_READ_TIMEOUT_SECONDS):
            async for chunk in request.stream():
                size += len(chunk)
                if size > MAX_BODY_BYTES:
                    raise HttpError(
                        413,
                        MALFORMED_REQUEST,
                        f"the request body is larger than {MAX_BODY_BYTES} bytes",
                    )
                chunks.append(chunk)
    except TimeoutError:
        raise HttpError(
            408,
            MALFORMED_REQUEST,
            f"the request body did not arrive within {BODY_READ_TIMEOUT_SECONDS:.0f} s",
        ) from None
    except ClientDisconnect:
        raise HttpError(
            400, MALFORMED_REQUEST, "the client disconnected while sending the body"
        ) from None
    return b"".join(chunks)


async def read_json(request: Request) -> Any:
    body = await read_body(request)
    try:
        return loads(body)
    except ValueError as err:
        # json.JSONDecodeError and UnicodeDecodeError both say where the body went wrong.
        raise malformed(f"failed deserializing HTTP body: {err}") from None


def query_metadata(request: Request) -> dict[str, str]:
    """`?metadata.ttlInSeconds=60` -> {"ttlInSeconds": "60"}; the first value of a repeated
    parameter, as daprd takes it."""
    metadata: dict[str, str] = {}
    for name, value in request.query_params.multi_items():
        if name.startswith(METADATA_PREFIX) and name[len(METADATA_PREFIX) :] not in metadata:
            metadata[name[len(METADATA_PREFIX) :]] = value
    return metadata


# -- typed fields of a decoded JSON body ---------------------------------------------------


def as_object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise malformed(f"field {where!r} must be a JSON object")
    return value


def as_list(value: Any, where: str) -> list[Any]:
    if not isinstance(value, list):
        raise malformed(f"field {where!r} must be a JSON array")
    return value


def string(obj: Mapping[str, Any], name: str, where: str, *, required: bool = False) -> str:
    """`obj[name]` as a string ("" when absent or null); `where` is the field's path."""
    value = obj.get(name)
    if value is None:
        if required:
            raise malformed(f"field {where!r} is required")
        return ""
    if not isinstance(value, str):
        raise malformed(f"field {where!r} must be a string")
    if required and not value:
        raise malformed(f"field {where!r} must not be empty")
    return value


def optional_string(obj: Mapping[str, Any], name: str, where: str) -> str | None:
    """None when absent or null (an ETag that is not given differs from an empty one)."""
    if obj.get(name) is None:
        return None
    return string(obj, name, where)


def string_map(obj: Mapping[str, Any], name: str, where: str) -> dict[str, str]:
    value = obj.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
        raise malformed(f"field {where!r} must be an object of strings")
    return dict(value)


def integer(obj: Mapping[str, Any], name: str, where: str) -> int | None:
    """A JSON number without a fraction, or a string of one (protojson accepts both)."""
    value = obj.get(name)
    if value is None:
        return None
    if isinstance(value, bool):
        raise malformed(f"field {where!r} must be an integer")
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    raise malformed(f"field {where!r} must be an integer")


def first_of(obj: Mapping[str, Any], *names: str) -> str:
    """The first of `names` present in `obj` (protojson takes a field's JSON name and its proto
    name alike: `resourceId` or `resource_id`); the first name when none is."""
    return next((n for n in names if n in obj), names[0])
