"""`dapr.proto.runtime.v1.Dapr` unary RPCs over a real socket, driven with the Dapr SDK's own
generated stubs (grpcio), against an in-process sidecar on the in-memory components.

Behaviour: dapr-compat.md sections 1.2, 3 and 4 (codes, reasons, rich details)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

import anyio
import grpc
import pytest
from dapr.clients.exceptions import DaprGrpcError
from dapr.proto.common.v1 import common_pb2
from dapr.proto.runtime.v1 import (
    actors_pb2,
    ai_pb2,
    binding_pb2,
    dapr_pb2_grpc,
    jobs_pb2,
    lock_pb2,
    metadata_pb2,
    secret_pb2,
    state_pb2,
    workflow_pb2,
)
from google.protobuf import empty_pb2
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from grpclib.client import Channel
from layotto._proto.spec.proto.runtime import v1 as pb
from layotto.actors.http_server import HttpServer
from layotto.builtin.memory_lock import InMemoryLockMetadata, InMemoryLockStore
from layotto.config import ComponentConfig, RuntimeConfig, embedded_default_components
from layotto.plugin import (
    ComponentContext,
    ComponentSpec,
    GetRequest,
    Kind,
    StateStore,
)
from layotto.plugins import PluginInfo, load_catalog
from layotto.testing.pubsub import serve_app
from layotto.testing.runtime import Sidecar, run_sidecar
from layotto_api_test_helpers import expect, post_orders_request
from layotto_core_test_helpers import EchoApp
from starlette.types import Receive, Scope, Send

pytestmark = pytest.mark.anyio

APP = "shop"
STORE = "statestore"
LOCKS = "lockstore"
SECRETS = "secretstore"


class RecordingLockStore(InMemoryLockStore):
    """The in-memory lock store, remembering every key it was asked to lock."""

    keys: list[str]

    def __init__(self) -> None:
        super().__init__()
        self.keys = []

    @classmethod
    def create(
        cls, metadata: InMemoryLockMetadata, context: ComponentContext
    ) -> RecordingLockStore:
        return cls()

    async def try_lock(self, resource_id: str, owner: str, expire: int) -> bool:
        self.keys.append(resource_id)
        return await super().try_lock(resource_id, owner, expire)


def _catalog() -> Any:
    catalog = load_catalog()
    spec = ComponentSpec(Kind.LOCK, "recording", InMemoryLockMetadata, RecordingLockStore.create)
    catalog.add(PluginInfo("recording", "layotto-tests", "0", (spec,)))
    return catalog


def _config(*extra: ComponentConfig, drop: frozenset[Kind] = frozenset()) -> RuntimeConfig:
    replaced = {c.kind for c in extra}
    base = tuple(
        c for c in embedded_default_components() if c.kind not in replaced and c.kind not in drop
    )
    return RuntimeConfig(components=base + extra).with_overrides(app_id=APP)


CONFIG = _config(
    ComponentConfig(
        name=SECRETS,
        kind=Kind.SECRETSTORES,
        type="in-memory",
        metadata={"secrets": {"db": {"user": "u", "pass": "p"}, "api-key": "k1"}},
    ),
    ComponentConfig(name=LOCKS, kind=Kind.LOCK, type="recording"),
)


@pytest.fixture
def runtime_options() -> Mapping[str, Any]:
    return {"config": CONFIG, "catalog": _catalog()}


def error_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    """The ErrorInfo in `grpc-status-details-bin` (from_call also checks that the details
    repeat the call's code and message)."""
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None, "no grpc-status-details-bin"
    infos = [d for d in status.details if d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR)]
    assert len(infos) == 1
    info = error_details_pb2.ErrorInfo()
    infos[0].Unpack(info)
    return info


def resource_info(err: grpc.aio.AioRpcError) -> error_details_pb2.ResourceInfo | None:
    status = rpc_status.from_call(err)  # type: ignore[arg-type]
    assert status is not None
    for detail in status.details:
        if detail.Is(error_details_pb2.ResourceInfo.DESCRIPTOR):
            info = error_details_pb2.ResourceInfo()
            detail.Unpack(info)
            return info
    return None


def item(key: str, value: bytes, etag: str | None = None, **options: Any) -> Any:
    return common_pb2.StateItem(
        key=key,
        value=value,
        etag=common_pb2.Etag(value=etag) if etag is not None else None,
        options=common_pb2.StateOptions(**options) if options else None,
    )


def lock_store(sidecar: Sidecar) -> RecordingLockStore:
    component = sidecar.runtime.components.of_kind(Kind.LOCK)[LOCKS].component
    assert isinstance(component, RecordingLockStore)
    return component


# -- state ---------------------------------------------------------------------------------


async def test_state_round_trip_with_the_appid_key_scheme(
    dapr: dapr_pb2_grpc.DaprStub, stub: pb.RuntimeStub, sidecar: Sidecar
) -> None:
    await dapr.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[item("o1", b"v1")]))
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="o1"))
    assert got.data == b"v1"
    assert got.etag
    # Stored as daprd stores it, `<appid>||key` ...
    store = sidecar.runtime.components.of_kind(Kind.STATE)[STORE].component
    assert isinstance(store, StateStore)
    stored = await store.get(GetRequest(f"{APP}||o1"))
    assert stored is not None
    assert (stored.data, stored.etag) == (b"v1", got.etag)
    # ... so the Layotto API, which has no key prefix, does not see it as `o1` ...
    assert (await stub.get_state(pb.GetStateRequest(store_name=STORE, key="o1"))).data == b""
    # ... and what it writes as `o2` is not Dapr's `o2`.
    await stub.save_state(
        pb.SaveStateRequest(store_name=STORE, states=[pb.StateItem(key="o2", value=b"x")])
    )
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="o2"))
    assert got.data == b""


async def test_missing_key_is_an_empty_response(dapr: dapr_pb2_grpc.DaprStub) -> None:
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="never"))
    assert got == state_pb2.GetStateResponse()


async def test_etag_mismatch_is_aborted_with_rich_details(dapr: dapr_pb2_grpc.DaprStub) -> None:
    await dapr.SaveState(state_pb2.SaveStateRequest(store_name=STORE, states=[item("e", b"1")]))
    etag = (await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="e"))).etag
    err = await expect(
        dapr.SaveState(
            state_pb2.SaveStateRequest(store_name=STORE, states=[item("e", b"2", etag + "0")])
        ),
        grpc.StatusCode.ABORTED,
    )
    info = error_info(err)
    assert info.reason == "DAPR_STATE_ETAG_MISMATCH"
    assert info.domain == "dapr.io"
    resource = resource_info(err)
    assert resource is not None
    assert (resource.resource_type, resource.resource_name) == ("state", STORE)
    await expect(
        dapr.DeleteState(
            state_pb2.DeleteStateRequest(
                store_name=STORE, key="e", etag=common_pb2.Etag(value=etag + "0")
            )
        ),
        grpc.StatusCode.ABORTED,
    )
    # The right ETag writes, then deletes.
    await dapr.SaveState(
        state_pb2.SaveStateRequest(store_name=STORE, states=[item("e", b"2", etag)])
    )
    etag = (await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="e"))).etag
    await dapr.DeleteState(
        state_pb2.DeleteStateRequest(store_name=STORE, key="e", etag=common_pb2.Etag(value=etag))
    )
    assert (await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="e"))).data == b""


async def test_first_write_without_etag_inserts_only_if_absent(
    dapr: dapr_pb2_grpc.DaprStub,
) -> None:
    first = common_pb2.StateOptions.CONCURRENCY_FIRST_WRITE
    request = state_pb2.SaveStateRequest(
        store_name=STORE, states=[item("fw", b"1", concurrency=first)]
    )
    await dapr.SaveState(request)
    await expect(dapr.SaveState(request), grpc.StatusCode.ABORTED)


async def test_bulk_get_and_bulk_delete(dapr: dapr_pb2_grpc.DaprStub) -> None:
    await dapr.SaveState(
        state_pb2.SaveStateRequest(store_name=STORE, states=[item("b1", b"1"), item("b2", b"2")])
    )
    bulk = await dapr.GetBulkState(
        state_pb2.GetBulkStateRequest(store_name=STORE, keys=["b1", "b2", "b3"], parallelism=2)
    )
    assert {i.key: i.data for i in bulk.items} == {"b1": b"1", "b2": b"2", "b3": b""}
    assert all(i.etag for i in bulk.items if i.key != "b3")
    gone = [item("b1", b""), item("b2", b"")]
    await dapr.DeleteBulkState(state_pb2.DeleteBulkStateRequest(store_name=STORE, states=gone))
    bulk = await dapr.GetBulkState(state_pb2.GetBulkStateRequest(store_name=STORE, keys=["b1"]))
    assert bulk.items[0].data == b""


async def test_transaction_applies_in_order(dapr: dapr_pb2_grpc.DaprStub) -> None:
    ops = [
        state_pb2.TransactionalStateOperation(operationType="upsert", request=item("t", b"1")),
        state_pb2.TransactionalStateOperation(operationType="delete", request=item("t", b"")),
        state_pb2.TransactionalStateOperation(operationType="upsert", request=item("t2", b"2")),
    ]
    await dapr.ExecuteStateTransaction(
        state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=ops)
    )
    assert (await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="t"))).data == b""
    got = await dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="t2"))
    assert got.data == b"2"
    bad = [state_pb2.TransactionalStateOperation(operationType="merge", request=item("t", b"1"))]
    err = await expect(
        dapr.ExecuteStateTransaction(
            state_pb2.ExecuteStateTransactionRequest(storeName=STORE, operations=bad)
        ),
        grpc.StatusCode.UNIMPLEMENTED,
        "operations[0].operationType 'merge'",
    )
    assert error_info(err).reason == "ERR_NOT_SUPPORTED_STATE_OPERATION"


async def test_query_state_errors_carry_daprs_reasons(dapr: dapr_pb2_grpc.DaprStub) -> None:
    """The query itself is covered in test_dapr_state_query.py."""
    err = await expect(
        dapr.QueryStateAlpha1(state_pb2.QueryStateRequest(store_name=STORE, query="{bad")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "not valid JSON",
    )
    assert error_info(err).reason == "ERR_MALFORMED_REQUEST"
    err = await expect(
        dapr.QueryStateAlpha1(state_pb2.QueryStateRequest(store_name="nope", query="{}")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    assert error_info(err).reason == "DAPR_STATE_NOT_FOUND"


async def test_bad_input_is_invalid_argument_naming_the_field(
    dapr: dapr_pb2_grpc.DaprStub,
) -> None:
    await expect(
        dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'key'",
    )
    err = await expect(
        dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="a||b")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'key'",
    )
    assert error_info(err).reason == "DAPR_STATE_ILLEGAL_KEY"
    await expect(
        dapr.SaveState(
            state_pb2.SaveStateRequest(store_name=STORE, states=[item("k", b"", consistency=7)])
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "states[0].options.consistency",
    )
    err = await expect(
        dapr.SaveState(state_pb2.SaveStateRequest(store_name="nope", states=[item("k", b"")])),
        grpc.StatusCode.INVALID_ARGUMENT,
        "state store 'nope' is not found",
    )
    info = error_info(err)
    assert info.reason == "DAPR_STATE_NOT_FOUND"
    assert dict(info.metadata) == {"appID": APP}
    await expect(
        dapr.TryLockAlpha1(
            lock_pb2.TryLockRequest(
                store_name=LOCKS, resource_id="r", lock_owner="o", expiry_in_seconds=0
            )
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'expiry_in_seconds'",
    )
    await expect(
        dapr.TryLockAlpha1(
            lock_pb2.TryLockRequest(store_name=LOCKS, lock_owner="o", expiry_in_seconds=1)
        ),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'resource_id'",
    )


async def test_no_component_of_the_kind_is_failed_precondition() -> None:
    config = _config(drop=frozenset({Kind.STATE, Kind.LOCK, Kind.SECRETSTORES}))
    async with (
        run_sidecar(config) as sidecar,
        grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan,
    ):
        dapr = dapr_pb2_grpc.DaprStub(chan)
        err = await expect(
            dapr.GetState(state_pb2.GetStateRequest(store_name=STORE, key="k")),
            grpc.StatusCode.FAILED_PRECONDITION,
            "state store is not configured",
        )
        assert error_info(err).reason == "DAPR_STATE_NOT_CONFIGURED"
        await expect(
            dapr.TryLockAlpha1(
                lock_pb2.TryLockRequest(
                    store_name=LOCKS, resource_id="r", lock_owner="o", expiry_in_seconds=1
                )
            ),
            grpc.StatusCode.FAILED_PRECONDITION,
            "lock store is not configured",
        )
        await expect(
            dapr.GetSecret(secret_pb2.GetSecretRequest(store_name=SECRETS, key="k")),
            grpc.StatusCode.FAILED_PRECONDITION,
        )


async def test_the_sdk_reads_the_reason_as_the_error_code(dapr: dapr_pb2_grpc.DaprStub) -> None:
    err = await expect(
        dapr.GetState(state_pb2.GetStateRequest(store_name="nope", key="k")),
        grpc.StatusCode.INVALID_ARGUMENT,
    )
    wrapped = DaprGrpcError(err)  # type: ignore[arg-type]
    assert wrapped.error_code() == "DAPR_STATE_NOT_FOUND"
    resource = wrapped.status_details().resource_info
    assert (resource["resource_type"], resource["resource_name"]) == ("state", "nope")


# -- lock ----------------------------------------------------------------------------------


async def test_lock_uses_daprs_key_scheme_and_status_names(
    dapr: dapr_pb2_grpc.DaprStub, stub: pb.RuntimeStub, sidecar: Sidecar
) -> None:
    def try_lock(owner: str) -> Any:
        return dapr.TryLockAlpha1(
            lock_pb2.TryLockRequest(
                store_name=LOCKS, resource_id="res", lock_owner=owner, expiry_in_seconds=10
            )
        )

    def unlock(owner: str) -> Any:
        return dapr.UnlockAlpha1(
            lock_pb2.UnlockRequest(store_name=LOCKS, resource_id="res", lock_owner=owner)
        )

    assert (await try_lock("a")).success
    assert not (await try_lock("b")).success
    assert not (await try_lock("a")).success  # not reentrant
    assert lock_store(sidecar).keys[0] == f"lock||{APP}||res"
    # Layotto's scheme is another key: the same resource is free there.
    layotto = await stub.try_lock(
        pb.TryLockRequest(store_name=LOCKS, resource_id="res", lock_owner="c", expire=10)
    )
    assert layotto.success
    assert lock_store(sidecar).keys[-1] == f"lock|||{APP}||res"
    assert (await unlock("b")).status == lock_pb2.UnlockResponse.LOCK_BELONGS_TO_OTHERS
    assert (await unlock("a")).status == lock_pb2.UnlockResponse.SUCCESS
    assert (await unlock("a")).status == lock_pb2.UnlockResponse.LOCK_DOES_NOT_EXIST


# -- secrets -------------------------------------------------------------------------------


async def test_secrets(dapr: dapr_pb2_grpc.DaprStub) -> None:
    got = await dapr.GetSecret(secret_pb2.GetSecretRequest(store_name=SECRETS, key="db"))
    assert dict(got.data) == {"user": "u", "pass": "p"}
    bulk = await dapr.GetBulkSecret(secret_pb2.GetBulkSecretRequest(store_name=SECRETS))
    assert {k: dict(v.secrets) for k, v in bulk.data.items()} == {
        "db": {"user": "u", "pass": "p"},
        "api-key": {"api-key": "k1"},
    }
    await expect(
        dapr.GetSecret(secret_pb2.GetSecretRequest(store_name=SECRETS, key="missing")),
        grpc.StatusCode.INTERNAL,
        "missing",
    )
    await expect(
        dapr.GetSecret(secret_pb2.GetSecretRequest(store_name="nope", key="db")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "nope",
    )


# -- metadata, unimplemented blocks, shutdown ------------------------------------------------


async def test_set_and_get_metadata(dapr: dapr_pb2_grpc.DaprStub) -> None:
    await dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key="team", value="blue"))
    # The SDK sends Empty for GetMetadataRequest: the same bytes.
    got = await dapr.GetMetadata(metadata_pb2.GetMetadataRequest())
    assert got.id == APP
    assert got.extended_metadata["team"] == "blue"
    assert got.runtime_version
    assert got.actor_runtime.runtime_status == metadata_pb2.ActorRuntime.DISABLED
    components = {c.name: c for c in got.registered_components}
    assert components[STORE].type == "state.in-memory"
    assert {"ETAG", "TRANSACTIONAL"} <= set(components[STORE].capabilities)
    assert components[SECRETS].type == "secretstores.in-memory"
    await expect(
        dapr.SetMetadata(metadata_pb2.SetMetadataRequest(key="", value="x")),
        grpc.StatusCode.INVALID_ARGUMENT,
        "'key'",
    )


OUT_OF_SCOPE = [
    ("GetActorState", actors_pb2.GetActorStateRequest(), "Actors API"),
    ("StartWorkflowBeta1", workflow_pb2.StartWorkflowRequest(), "Workflow API"),
    ("ScheduleJobAlpha1", jobs_pb2.ScheduleJobRequest(), "Jobs API"),
    ("ConverseAlpha2", ai_pb2.ConversationRequestAlpha2(), "Conversation API"),
]


@pytest.mark.parametrize(("method", "request_", "block"), OUT_OF_SCOPE)
async def test_out_of_scope_rpc_is_unimplemented_naming_its_block(
    dapr: dapr_pb2_grpc.DaprStub, method: str, request_: Any, block: str
) -> None:
    err = await expect(getattr(dapr, method)(request_), grpc.StatusCode.UNIMPLEMENTED, method)
    assert block in (err.details() or "")


async def test_shutdown_stops_the_sidecar() -> None:
    async with run_sidecar(CONFIG, _catalog()) as sidecar:
        async with grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan:
            await dapr_pb2_grpc.DaprStub(chan).Shutdown(empty_pb2.Empty(), timeout=5)
        with anyio.fail_after(10):
            await sidecar.stopped.wait()


async def test_the_port_lists_and_serves_the_dapr_service(channel: Channel) -> None:
    from layotto._proto.grpc.health import v1 as health_pb

    reply = await health_pb.HealthStub(channel, timeout=10).check(
        health_pb.HealthCheckRequest(service="dapr.proto.runtime.v1.Dapr")
    )
    assert reply.status == health_pb.HealthCheckResponseServingStatus.SERVING


# -- invoke and bindings: against a real app and a real HTTP server ------------------------


async def test_invoke_service_reaches_the_app_and_returns_its_headers() -> None:
    async with (
        serve_app(EchoApp()) as port,
        run_sidecar(CONFIG, _catalog(), app_port=port, api_token="tok") as sidecar,
        grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan,
    ):
        request = post_orders_request(APP)
        call = dapr_pb2_grpc.DaprStub(chan).InvokeService(
            request, metadata=(("dapr-api-token", "tok"), ("x-trace", "t1")), timeout=10
        )
        response = await call
        headers = dict(await call.initial_metadata())
    echo = json.loads(response.data.value)
    assert echo["method"] == "orders/1"
    assert echo["data"] == "payload"
    assert echo["content_type"] == "text/plain"
    assert (echo["verb"], echo["querystring"]) == ("POST", "a=1")
    assert echo["metadata"]["x-trace"] == "t1"
    assert "dapr-api-token" not in echo["metadata"]  # the sidecar's token stays here
    assert response.content_type == "application/json"
    assert headers["x-reply"] == "app"


async def echo_http(scope: Scope, receive: Receive, send: Send) -> None:
    body = b""
    while True:
        event = await receive()
        body += event.get("body", b"")
        if not event.get("more_body"):
            break
    payload = json.dumps({"method": scope["method"], "path": scope["path"], "body": body.decode()})
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json")],
        }
    )
    await send({"type": "http.response.body", "body": payload.encode()})


async def test_invoke_binding_with_the_http_binding() -> None:
    server = HttpServer(echo_http, "127.0.0.1", 0)
    async with anyio.create_task_group() as tg:
        await tg.start(server.run)
        binding = ComponentConfig(
            name="web",
            kind=Kind.BINDINGS,
            type="http",
            metadata={"url": f"http://127.0.0.1:{server.bound_port}/base"},
        )
        try:
            async with (
                run_sidecar(_config(binding)) as sidecar,
                grpc.aio.insecure_channel(f"{sidecar.host}:{sidecar.grpc_port}") as chan,
            ):
                dapr = dapr_pb2_grpc.DaprStub(chan)
                response = await dapr.InvokeBinding(
                    binding_pb2.InvokeBindingRequest(
                        name="web", operation="create", data=b"hi", metadata={"path": "x"}
                    ),
                    timeout=10,
                )
                err = await expect(
                    dapr.InvokeBinding(
                        binding_pb2.InvokeBindingRequest(name="web", operation="explode")
                    ),
                    grpc.StatusCode.INVALID_ARGUMENT,
                    "explode",
                )
        finally:
            await server.stop()
    assert json.loads(response.data) == {"method": "POST", "path": "/base/x", "body": "hi"}
    assert response.metadata["statusCode"] == "200"
    assert error_info(err).reason == "ERR_INVOKE_OUTPUT_BINDING"
