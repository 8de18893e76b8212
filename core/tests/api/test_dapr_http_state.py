"""Dapr's state API over HTTP (`/v1.0/state/...`) against the in-memory store: bodies, headers
and status codes as daprd answers them (dapr-compat.md sections 3.1, 4)."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from grpclib.client import Channel
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.config import AppConfig, RuntimeConfig, embedded_default_components
from layotto.plugin import GetRequest, Kind, StateStore
from layotto.runtime import Runtime
from layotto.testing.runtime import run_sidecar
from layotto_api_test_helpers import assert_error

pytestmark = pytest.mark.anyio

STORE = "/v1.0/state/statestore"


async def save(http: httpx.AsyncClient, *items: dict[str, Any], **params: str) -> httpx.Response:
    return await http.post(STORE, json=list(items), params=params)


# -- save and get ----------------------------------------------------------------------------


async def test_saved_json_values_read_back_as_their_json(http: httpx.AsyncClient) -> None:
    response = await save(
        http,
        {"key": "obj", "value": {"qty": 3, "name": "a<b"}},
        {"key": "str", "value": "hello"},
        {"key": "num", "value": 42},
    )
    assert response.status_code == 204
    got = await http.get(f"{STORE}/obj")
    assert got.status_code == 200
    assert got.headers["content-type"] == "application/json"
    # Go's json.Marshal: keys sorted, `<` escaped.
    assert got.content == b'{"name":"a\\u003cb","qty":3}'
    assert got.json() == {"qty": 3, "name": "a<b"}
    # A string is stored as a JSON string, quotes included, as daprd stores it.
    assert (await http.get(f"{STORE}/str")).content == b'"hello"'
    assert (await http.get(f"{STORE}/num")).content == b"42"


async def test_get_answers_the_etag_header_and_missing_keys_are_204(
    http: httpx.AsyncClient,
) -> None:
    await save(http, {"key": "k", "value": 1})
    got = await http.get(f"{STORE}/k")
    assert got.headers["etag"]
    assert (await http.get(f"{STORE}/missing")).status_code == 204
    assert (await http.get(f"{STORE}/missing")).content == b""


WITH_APP_ID = RuntimeConfig(app=AppConfig(id="orders"), components=embedded_default_components())


@pytest.mark.parametrize("runtime_options", [{"config": WITH_APP_ID}], indirect=True)
async def test_keys_get_the_dapr_app_id_prefix(http: httpx.AsyncClient, runtime: Runtime) -> None:
    """Stored as `<appid>||key`, the value's bytes as the HTTP API encoded them: what daprd
    would read from a shared store."""
    await save(http, {"key": "shared", "value": {"a": 1}})
    store = runtime.components.of_kind(Kind.STATE)["statestore"].component
    assert isinstance(store, StateStore)
    found = await store.get(GetRequest("orders||shared"))
    assert found is not None
    assert found.data == b'{"a":1}'
    assert (await store.get(GetRequest("shared"))) is None


async def test_a_value_saved_over_grpc_reads_back_as_its_bytes(
    http: httpx.AsyncClient, channel: Channel
) -> None:
    stub = pb.RuntimeStub(channel, timeout=10)
    await stub.save_state(
        pb.SaveStateRequest(store_name="statestore", states=[pb.StateItem(key="g", value=b"raw")])
    )
    got = await http.get(f"{STORE}/g")
    assert got.status_code == 200
    assert got.content == b"raw"


async def test_query_metadata_reaches_the_store(http: httpx.AsyncClient) -> None:
    """`metadata.ttlInSeconds` on the query string: the key expires; the read answers the
    store's `ttlExpireTime` as a `metadata.` header."""
    assert (
        await save(http, {"key": "ttl", "value": 1}, **{"metadata.ttlInSeconds": "60"})
    ).status_code == 204
    got = await http.get(f"{STORE}/ttl")
    assert got.status_code == 200
    assert "metadata.ttlexpiretime" in {k.lower() for k in got.headers}


async def test_first_write_without_etag_inserts_only_once(http: httpx.AsyncClient) -> None:
    item = {"key": "once", "value": 1, "options": {"concurrency": "first-write"}}
    assert (await save(http, item)).status_code == 204
    assert_error(await save(http, item), 409, "ERR_STATE_SAVE")


# -- ETags -----------------------------------------------------------------------------------


async def test_save_with_a_stale_etag_is_409(http: httpx.AsyncClient) -> None:
    await save(http, {"key": "e", "value": 1})
    etag = (await http.get(f"{STORE}/e")).headers["etag"]
    assert (await save(http, {"key": "e", "value": 2, "etag": etag})).status_code == 204
    assert_error(
        await save(http, {"key": "e", "value": 3, "etag": etag}),
        409,
        "ERR_STATE_SAVE",
        "failed saving state in state store statestore",
    )
    assert (await http.get(f"{STORE}/e")).content == b"2"


async def test_malformed_etag_is_400(http: httpx.AsyncClient) -> None:
    await save(http, {"key": "bad-etag", "value": 1})
    response = await save(http, {"key": "bad-etag", "value": 2, "etag": "not-a-number"})
    assert_error(response, 400, "ERR_STATE_SAVE")


async def test_delete_honours_if_match(http: httpx.AsyncClient) -> None:
    await save(http, {"key": "d", "value": 1})
    etag = (await http.get(f"{STORE}/d")).headers["etag"]
    await save(http, {"key": "d", "value": 2})
    stale = await http.delete(f"{STORE}/d", headers={"If-Match": etag})
    assert_error(stale, 409, "ERR_STATE_DELETE", "failed deleting state with key d")
    current = (await http.get(f"{STORE}/d")).headers["etag"]
    assert (await http.delete(f"{STORE}/d", headers={"If-Match": current})).status_code == 204
    assert (await http.get(f"{STORE}/d")).status_code == 204
    # Deleting a missing key without an ETag succeeds.
    assert (await http.delete(f"{STORE}/d")).status_code == 204


# -- bulk and transactions -------------------------------------------------------------------


async def test_bulk_get_embeds_values_as_raw_json(
    http: httpx.AsyncClient, channel: Channel
) -> None:
    await save(http, {"key": "b1", "value": {"x": 1}}, {"key": "b2", "value": "two"})
    # Bytes written raw over gRPC are not JSON: they come back as a string.
    stub = pb.RuntimeStub(channel, timeout=10)
    await stub.save_state(
        pb.SaveStateRequest(store_name="statestore", states=[pb.StateItem(key="b3", value=b"raw")])
    )
    response = await http.post(
        f"{STORE}/bulk", json={"keys": ["b1", "b2", "b3", "nope"], "parallelism": 2}
    )
    assert response.status_code == 200
    items = response.json()
    assert [i["key"] for i in items] == ["b1", "b2", "b3", "nope"]
    assert items[0]["data"] == {"x": 1}
    assert items[0]["etag"]
    assert items[1]["data"] == "two"
    assert items[2]["data"] == "raw"
    assert items[3] == {"key": "nope"}


async def test_transaction_applies_upserts_and_deletes(http: httpx.AsyncClient) -> None:
    await save(http, {"key": "t-old", "value": 1})
    response = await http.post(
        f"{STORE}/transaction",
        json={
            "operations": [
                {"operation": "upsert", "request": {"key": "t-new", "value": {"v": 1}}},
                {"operation": "delete", "request": {"key": "t-old"}},
            ],
            "metadata": {"partitionKey": "p"},
        },
    )
    assert response.status_code == 204
    assert (await http.get(f"{STORE}/t-new")).json() == {"v": 1}
    assert (await http.get(f"{STORE}/t-old")).status_code == 204


async def test_transaction_rejects_unknown_operations_and_stale_etags(
    http: httpx.AsyncClient,
) -> None:
    bad = await http.post(
        f"{STORE}/transaction",
        json={"operations": [{"operation": "merge", "request": {"key": "x"}}]},
    )
    assert_error(bad, 400, "ERR_NOT_SUPPORTED_STATE_OPERATION", "merge")
    await save(http, {"key": "t-etag", "value": 1})
    stale = await http.post(
        f"{STORE}/transaction",
        json={
            "operations": [
                {"operation": "upsert", "request": {"key": "t-etag", "value": 2, "etag": "999"}}
            ]
        },
    )
    assert_error(stale, 409, "ERR_STATE_TRANSACTION")
    assert (await http.get(f"{STORE}/t-etag")).content == b"1"


# -- request errors --------------------------------------------------------------------------


async def test_unknown_store_is_400_with_the_dapr_reason(http: httpx.AsyncClient) -> None:
    response = await http.get("/v1.0/state/nostore/k")
    assert_error(response, 400, "ERR_STATE_STORE_NOT_FOUND", "nostore")
    assert response.json()["details"][0]["reason"] == "DAPR_STATE_NOT_FOUND"
    assert response.json()["details"][0]["domain"] == "dapr.io"


@pytest.mark.parametrize(
    ("body", "fragment"),
    [
        (b"{not json", "failed deserializing HTTP body"),
        (b'{"key": "k"}', "must be a JSON array"),
        (b'[{"value": 1}]', "[0].key"),
        (b'[{"key": 5}]', "[0].key"),
        (b'[{"key": "k", "etag": 5}]', "[0].etag"),
        (b'[{"key": "k", "options": {"concurrency": "x"}}]', "[0].options.concurrency"),
        (b'[{"key": "k", "metadata": {"a": 1}}]', "[0].metadata"),
        (b'[{"key": "k", "value": NaN}]', "failed deserializing HTTP body"),
    ],
)
async def test_malformed_save_is_400_naming_the_field(
    http: httpx.AsyncClient, body: bytes, fragment: str
) -> None:
    response = await http.post(STORE, content=body)
    assert_error(response, 400, "ERR_MALFORMED_REQUEST", fragment)


async def test_illegal_key_is_400(http: httpx.AsyncClient) -> None:
    assert_error(await save(http, {"key": "a||b", "value": 1}), 400, "ERR_MALFORMED_REQUEST")


async def test_no_state_store_configured_is_500() -> None:
    async with (
        run_sidecar(RuntimeConfig()) as sidecar,
        httpx.AsyncClient(base_url=sidecar.http_url, timeout=10) as http,
    ):
        response = await http.get("/v1.0/state/statestore/k")
        assert_error(response, 500, "ERR_STATE_STORE_NOT_CONFIGURED")
