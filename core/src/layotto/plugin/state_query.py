"""The state query SPI (Dapr's Alpha query API): the parsed query, its request and response, and
a pure-Python evaluator for stores without a native query language.

The JSON DSL (docs.dapr.io "How-To: Query state")::

    {"filter": {"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"GTE": {"person.id": 1000}}]},
     "sort": [{"key": "state", "order": "DESC"}],
     "page": {"limit": 3, "token": "..."}}

Keys are dotted paths into the stored JSON value. Every part is optional; no filter matches
every JSON document. Parsing errors are `InvalidArgument` naming the offending part.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Final, Literal, TypeAlias

from layotto.errors import InvalidArgument

CompareOp = Literal["EQ", "NEQ", "GT", "GTE", "LT", "LTE", "IN"]
JunctionOp = Literal["AND", "OR"]
COMPARE_OPS: Final[frozenset[str]] = frozenset({"EQ", "NEQ", "GT", "GTE", "LT", "LTE", "IN"})
JUNCTION_OPS: Final[frozenset[str]] = frozenset({"AND", "OR"})
_ORDERS: Final = ("ASC", "DESC")


@dataclass(frozen=True, slots=True)
class Compare:
    """`path op value`; for IN, `value` is the list of accepted values."""

    op: CompareOp
    path: str
    value: object


@dataclass(frozen=True, slots=True)
class Junction:
    op: JunctionOp
    filters: tuple[Filter, ...]


Filter: TypeAlias = Compare | Junction


@dataclass(frozen=True, slots=True)
class Sorting:
    path: str
    descending: bool = False


@dataclass(frozen=True, slots=True)
class Query:
    filter: Filter | None = None
    sort: tuple[Sorting, ...] = ()
    limit: int = 0  # 0: no limit
    token: str = ""  # opaque, as the store issued it; "" starts from the first result


@dataclass(frozen=True, slots=True)
class QueryRequest:
    """`key_prefix`: only stored keys starting with it belong to the caller (the sidecar's
    key-prefix scheme, e.g. `myapp||`); results keep the stored keys, the sidecar strips it."""

    query: Query
    key_prefix: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class QueryItem:
    key: str
    data: bytes
    etag: str | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class QueryResponse:
    """`token` is empty when there are no more results."""

    results: list[QueryItem]
    token: str = ""
    metadata: Mapping[str, str] = field(default_factory=dict)


# -- parsing ---------------------------------------------------------------------------------


def parse_query(text: str) -> Query:
    """The query JSON as Dapr's `QueryStateRequest.query` carries it."""
    try:
        document = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError as err:
        raise InvalidArgument(f"the query is not valid JSON: {err}") from None
    if not isinstance(document, dict):
        raise InvalidArgument("the query must be a JSON object with 'filter', 'sort' and 'page'")
    unknown = sorted(set(document) - {"filter", "sort", "page"})
    if unknown:
        raise InvalidArgument(f"the query has unknown field(s) {unknown}; use filter, sort, page")
    raw_filter = document.get("filter")
    # Dapr treats an empty filter object like an absent one: match everything.
    parsed = None if raw_filter is None or raw_filter == {} else _filter(raw_filter, "filter")
    limit, token = _page(document.get("page"))
    return Query(parsed, _sort(document.get("sort")), limit, token)


def _filter(node: object, where: str) -> Filter:
    if not isinstance(node, dict) or len(node) != 1:
        raise InvalidArgument(f"{where} must be an object with exactly one operator")
    ((op, operand),) = node.items()
    if op in JUNCTION_OPS:
        if not isinstance(operand, list) or len(operand) < 2:
            raise InvalidArgument(f"{where}.{op} must be a list of at least two filters")
        return Junction(
            op,  # checked against JUNCTION_OPS above
            tuple(_filter(sub, f"{where}.{op}[{i}]") for i, sub in enumerate(operand)),
        )
    if op not in COMPARE_OPS:
        known = ", ".join(sorted(COMPARE_OPS | JUNCTION_OPS))
        raise InvalidArgument(f"{where} has unknown operator {op!r}; use one of {known}")
    if not isinstance(operand, dict) or len(operand) != 1:
        raise InvalidArgument(f"{where}.{op} must be an object with exactly one key: value")
    ((path, value),) = operand.items()
    if not path or any(not part for part in path.split(".")):
        raise InvalidArgument(f"{where}.{op} has an invalid key {path!r}")
    if op == "IN" and (not isinstance(value, list) or not value):
        raise InvalidArgument(f"{where}.IN.{path} must be a non-empty list of values")
    if op in ("GT", "GTE", "LT", "LTE") and _rank(value) is None:
        raise InvalidArgument(f"{where}.{op}.{path} must be a number or a string")
    return Compare(op, path, value)  # checked against COMPARE_OPS above


def _sort(node: object) -> tuple[Sorting, ...]:
    if node is None:
        return ()
    if not isinstance(node, list):
        raise InvalidArgument("sort must be a list of {key, order}")
    result: list[Sorting] = []
    for index, entry in enumerate(node):
        where = f"sort[{index}]"
        if not isinstance(entry, dict) or not isinstance(entry.get("key"), str) or not entry["key"]:
            raise InvalidArgument(f"{where} must be an object with a non-empty 'key'")
        order = entry.get("order") or "ASC"
        if order not in _ORDERS:
            raise InvalidArgument(f"{where}.order must be ASC or DESC, got {order!r}")
        result.append(Sorting(entry["key"], order == "DESC"))
    return tuple(result)


def _page(node: object) -> tuple[int, str]:
    if node is None:
        return 0, ""
    if not isinstance(node, dict):
        raise InvalidArgument("page must be an object with 'limit' and 'token'")
    limit = node.get("limit", 0)
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 0:
        raise InvalidArgument(f"page.limit must be a non-negative integer, got {limit!r}")
    token = node.get("token") or ""
    if not isinstance(token, str):
        raise InvalidArgument("page.token must be a string")
    return limit, token


# -- evaluation ------------------------------------------------------------------------------

_MISSING: Final = object()


def lookup(document: object, path: str) -> object:
    """The value at a dotted path, or `_MISSING`."""
    current: object = document
    for part in path.split("."):
        if not isinstance(current, dict) or part not in current:
            return _MISSING
        current = current[part]
    return current


def _rank(value: object) -> tuple[int, float | str] | None:
    """Ordering key: numbers before strings; other types (bool, null, containers) are not
    ordered. bool is excluded on purpose: in JSON `true` is not the number 1."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return (0, value)
    if isinstance(value, str):
        return (1, value)
    return None


def _equal(a: object, b: object) -> bool:
    # Python says True == 1; JSON does not.
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    return a == b


def matches(node: Filter, document: object) -> bool:
    """A missing field matches no comparison, NEQ included (as SQL's NULL)."""
    if isinstance(node, Junction):
        results = (matches(sub, document) for sub in node.filters)
        return all(results) if node.op == "AND" else any(results)
    found = lookup(document, node.path)
    if found is _MISSING:
        return False
    if node.op == "EQ":
        return _equal(found, node.value)
    if node.op == "NEQ":
        return not _equal(found, node.value)
    if node.op == "IN":
        assert isinstance(node.value, list)
        return any(_equal(found, v) for v in node.value)
    left, right = _rank(found), _rank(node.value)
    if left is None or right is None or left[0] != right[0]:
        return False  # numbers and strings don't compare with each other
    if node.op == "GT":
        return left > right
    if node.op == "GTE":
        return left >= right
    if node.op == "LT":
        return left < right
    return left <= right


def _sort_key(document: object, path: str) -> tuple[int, float | str]:
    # Only called on documents whose value at `path` is ordered; the fallback keeps mypy exact.
    return _rank(lookup(document, path)) or (2, "")


def encode_token(offset: int) -> str:
    return base64.urlsafe_b64encode(f"offset:{offset}".encode()).decode()


def decode_token(token: str) -> int:
    """The offset an `encode_token` token carries; anything else is INVALID_ARGUMENT."""
    if not token:
        return 0
    try:
        text = base64.urlsafe_b64decode(token.encode()).decode()
        kind, _, number = text.partition(":")
        offset = int(number)
    except (binascii.Error, UnicodeDecodeError, ValueError):
        offset = -1
        kind = ""
    if kind != "offset" or offset < 0:
        raise InvalidArgument(f"page.token {token!r} is not a token this state store issued")
    return offset


def evaluate(query: Query, entries: Iterable[QueryItem]) -> QueryResponse:
    """Filter, sort and page `entries` (the store's live items). Values that are not JSON
    never match. Pages are offsets into the sorted results: stable while the data is."""
    offset = decode_token(query.token)
    selected: list[tuple[object, QueryItem]] = []
    for item in entries:
        try:
            document: object = json.loads(item.data)
        except (ValueError, UnicodeDecodeError):
            continue
        if query.filter is None or matches(query.filter, document):
            selected.append((document, item))
    selected.sort(key=lambda pair: pair[1].key)  # the tiebreak: a total, repeatable order
    for sorting in reversed(query.sort):  # stable sorts, least significant key first
        ordered = [pair for pair in selected if _rank(lookup(pair[0], sorting.path))]
        unordered = [pair for pair in selected if not _rank(lookup(pair[0], sorting.path))]
        ordered.sort(key=lambda pair: _sort_key(pair[0], sorting.path), reverse=sorting.descending)
        selected = ordered + unordered  # missing values last in either direction
    end = len(selected) if query.limit == 0 else offset + query.limit
    page = [item for _, item in selected[offset:end]]
    return QueryResponse(page, encode_token(end) if end < len(selected) else "")
