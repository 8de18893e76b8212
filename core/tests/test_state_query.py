"""The state query DSL (`layotto.plugin.state_query`): parsing with errors that name the bad
part, every operator, sorting and paging with opaque tokens (dapr-compat.md 3.1 "Query")."""

from __future__ import annotations

import json

import pytest
from layotto.errors import ErrorCategory, InvalidArgument
from layotto.plugin.state_query import (
    Compare,
    Junction,
    Query,
    QueryItem,
    Sorting,
    evaluate,
    parse_query,
)

DOCS = {
    "a": {"person": {"org": "Dev Ops", "id": 1036}, "city": "Seattle", "state": "WA"},
    "b": {"person": {"org": "Hardware", "id": 1028}, "city": "Portland", "state": "OR"},
    "c": {"person": {"org": "Dev Ops", "id": 1071}, "city": "Sacramento", "state": "CA"},
    "d": {"person": {"org": "Finance", "id": 1007}, "city": "San Diego", "state": "CA"},
    "e": {"person": {"org": "Dev Ops", "id": 1100}, "city": "Spokane", "state": "WA"},
}


def items(docs: dict[str, object] = DOCS) -> list[QueryItem]:
    return [QueryItem(k, json.dumps(v).encode(), str(i)) for i, (k, v) in enumerate(docs.items())]


def run(query: dict[str, object], docs: dict[str, object] = DOCS) -> list[str]:
    return [item.key for item in evaluate(parse_query(json.dumps(query)), items(docs)).results]


# -- parsing -----------------------------------------------------------------------------------


def test_a_full_query_parses_into_its_parts() -> None:
    query = parse_query(
        json.dumps(
            {
                "filter": {"OR": [{"EQ": {"person.org": "Dev Ops"}}, {"IN": {"state": ["CA"]}}]},
                "sort": [{"key": "state", "order": "DESC"}, {"key": "person.id"}],
                "page": {"limit": 3, "token": "t"},
            }
        )
    )
    assert query == Query(
        Junction("OR", (Compare("EQ", "person.org", "Dev Ops"), Compare("IN", "state", ["CA"]))),
        (Sorting("state", descending=True), Sorting("person.id")),
        3,
        "t",
    )


@pytest.mark.parametrize("text", ["", "{}", '{"filter": {}}'])
def test_an_empty_query_matches_every_json_document(text: str) -> None:
    assert parse_query(text) == Query()


@pytest.mark.parametrize(
    ("query", "fragment"),
    [
        ("{not json", "not valid JSON"),
        ("[1]", "must be a JSON object"),
        ('{"filters": {}}', "unknown field(s) ['filters']"),
        ('{"filter": {"LIKE": {"a": 1}}}', "filter has unknown operator 'LIKE'"),
        ('{"filter": {"EQ": {"a": 1}, "NEQ": {"b": 2}}}', "filter must be an object with exactly"),
        ('{"filter": {"EQ": {"a": 1, "b": 2}}}', "filter.EQ must be an object with exactly one"),
        ('{"filter": {"EQ": {"a..b": 1}}}', "filter.EQ has an invalid key 'a..b'"),
        ('{"filter": {"IN": {"a": 1}}}', "filter.IN.a must be a non-empty list"),
        ('{"filter": {"GT": {"a": [1]}}}', "filter.GT.a must be a number or a string"),
        ('{"filter": {"AND": [{"EQ": {"a": 1}}]}}', "filter.AND must be a list of at least two"),
        (
            '{"filter": {"OR": [{"EQ": {"a": 1}}, {"XX": {"b": 1}}]}}',
            "filter.OR[1] has unknown operator 'XX'",
        ),
        ('{"sort": {"key": "a"}}', "sort must be a list"),
        ('{"sort": [{"order": "ASC"}]}', "sort[0] must be an object with a non-empty 'key'"),
        ('{"sort": [{"key": "a", "order": "UP"}]}', "sort[0].order must be ASC or DESC"),
        ('{"page": {"limit": -1}}', "page.limit must be a non-negative integer"),
        ('{"page": {"limit": "3"}}', "page.limit must be a non-negative integer"),
        ('{"page": {"token": 3}}', "page.token must be a string"),
    ],
)
def test_a_bad_query_is_invalid_argument_naming_the_bad_part(query: str, fragment: str) -> None:
    with pytest.raises(InvalidArgument) as info:
        parse_query(query)
    assert info.value.category is ErrorCategory.INVALID_ARGUMENT
    assert fragment in info.value.message


# -- operators -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("filter_", "expected"),
    [
        ({"EQ": {"person.org": "Dev Ops"}}, ["a", "c", "e"]),
        ({"NEQ": {"person.org": "Dev Ops"}}, ["b", "d"]),
        ({"IN": {"state": ["CA", "OR"]}}, ["b", "c", "d"]),
        ({"GT": {"person.id": 1036}}, ["c", "e"]),
        ({"GTE": {"person.id": 1036}}, ["a", "c", "e"]),
        ({"LT": {"person.id": 1036}}, ["b", "d"]),
        ({"LTE": {"person.id": 1036}}, ["a", "b", "d"]),
        ({"GTE": {"city": "Se"}}, ["a", "e"]),  # strings compare as strings
        ({"AND": [{"EQ": {"person.org": "Dev Ops"}}, {"EQ": {"state": "WA"}}]}, ["a", "e"]),
        ({"OR": [{"EQ": {"state": "OR"}}, {"EQ": {"person.org": "Finance"}}]}, ["b", "d"]),
        (
            {
                "OR": [
                    {"AND": [{"EQ": {"state": "WA"}}, {"GT": {"person.id": 1050}}]},
                    {"AND": [{"EQ": {"state": "CA"}}, {"LT": {"person.id": 1050}}]},
                ]
            },
            ["d", "e"],
        ),
    ],
)
def test_every_operator_filters_on_dotted_paths(filter_: object, expected: list[str]) -> None:
    assert run({"filter": filter_}) == expected


def test_missing_fields_mixed_types_and_non_json_values_never_match() -> None:
    docs: dict[str, object] = {
        "num": {"v": 1},
        "str": {"v": "1"},
        "bool": {"v": True},
        "none": {"w": 1},
        "scalar": 5,
    }
    assert run({"filter": {"EQ": {"v": 1}}}, docs) == ["num"]  # not "1", not true
    assert run({"filter": {"EQ": {"v": True}}}, docs) == ["bool"]
    assert run({"filter": {"NEQ": {"v": 1}}}, docs) == ["bool", "str"]  # missing: no match
    assert run({"filter": {"GT": {"v": 0}}}, docs) == ["num"]  # "1" and true don't compare
    raw = [QueryItem("raw", b"\xff not json"), *items({"ok": {"v": 1}})]
    assert [i.key for i in evaluate(Query(), raw).results] == ["ok"]


# -- sort and page -------------------------------------------------------------------------


def test_sort_by_several_keys_with_missing_values_last() -> None:
    assert run({"sort": [{"key": "state", "order": "DESC"}, {"key": "person.id"}]}) == [
        "a",  # WA 1036
        "e",  # WA 1100
        "b",  # OR
        "d",  # CA 1007
        "c",  # CA 1071
    ]
    docs: dict[str, object] = {"x": {"n": 2}, "y": {}, "z": {"n": 1}}
    assert run({"sort": [{"key": "n"}]}, docs) == ["z", "x", "y"]
    assert run({"sort": [{"key": "n", "order": "DESC"}]}, docs) == ["x", "z", "y"]


def test_pages_follow_opaque_tokens_until_the_token_is_empty() -> None:
    sort = [{"key": "person.id"}]
    pages: list[list[str]] = []
    token = ""
    while True:
        query = parse_query(json.dumps({"sort": sort, "page": {"limit": 2, "token": token}}))
        response = evaluate(query, items())
        pages.append([i.key for i in response.results])
        token = response.token
        if not token:
            break
        assert not token.isdigit(), "the token should not look like an offset to rely on"
    assert pages == [["d", "b"], ["a", "c"], ["e"]]
    # An exact last page ends without a token.
    assert evaluate(Query(limit=5), items()).token == ""


def test_a_token_the_store_did_not_issue_is_invalid_argument() -> None:
    for token in ("garbage!", "b2Zmc2V0Oi0x", "bm9wZToz"):  # not base64; offset:-1; nope:3
        with pytest.raises(InvalidArgument, match=r"page\.token"):
            evaluate(Query(token=token), items())
