"""A thin etcd v3 client on `grpc.aio` with aetcd's generated stubs (`aetcd.rpc`).

`aetcd.Client` itself dials one `host:port`, without TLS, and authenticates once, so a token
that expires (or that etcd forgets when it restarts) breaks it for good. This client keeps the
same stubs and adds what a sidecar needs:

- every endpoint of the cluster on one channel (gRPC `round_robin` over all of them; names are
  resolved once when the component starts);
- TLS with a CA and an optional client certificate;
- authentication, renewed once and the call retried when etcd rejects the token;
- a deadline on every call, and errors translated where they happen (`errors.translate`);
- reconnect backoff capped at one second, so a restarted etcd is used again at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc  # type: ignore[import-untyped]
from aetcd import rpc  # type: ignore[import-untyped]
from layotto.plugin import BackendUnavailable, ComponentError, LayottoError

from layotto_etcd.errors import is_token_error, translate
from layotto_etcd.settings import Endpoint, EtcdSettings

# etcd's default --max-txn-ops: a transaction may hold at most this many operations.
MAX_TXN_OPS = 128

CHANNEL_OPTIONS: list[tuple[str, Any]] = [
    ("grpc.lb_policy_name", "round_robin"),
    # gRPC's default backoff grows to 120 s: a restarted etcd would go unused for minutes.
    ("grpc.initial_reconnect_backoff_ms", 100),
    ("grpc.min_reconnect_backoff_ms", 100),
    ("grpc.max_reconnect_backoff_ms", 1000),
    # Notice a silently dead peer under a watch stream (etcd allows pings every 5 s).
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 0),
    ("grpc.http2.max_pings_without_data", 0),
    # Ranges over a big configuration namespace may exceed gRPC's 4 MiB default.
    ("grpc.max_receive_message_length", -1),
]


def prefix_end(prefix: bytes) -> bytes:
    """The `range_end` that makes a range cover every key starting with `prefix`."""
    data = bytearray(prefix)
    for index in reversed(range(len(data))):
        if data[index] < 0xFF:
            data[index] += 1
            return bytes(data[: index + 1])
    return b"\0"  # every key from `prefix` on


def closed_under_us() -> bool:
    """grpc.aio raises CancelledError in calls whose channel is closed. When the task itself
    was not cancelled, that is what happened (the component was closed meanwhile)."""
    task = asyncio.current_task()
    return task is not None and task.cancelling() == 0


def _pem(value: str) -> bytes:
    if value.lstrip().startswith("-----BEGIN"):
        return value.encode()
    return Path(value.strip()).read_bytes()


class EtcdClient:
    """One gRPC channel to the cluster. `what` names the component in error messages."""

    def __init__(self, settings: EtcdSettings, what: str) -> None:
        self.settings = settings
        self.what = what
        self._secrets = settings.secrets()
        self._channel: Any = None
        self._stubs: dict[str, Any] = {}
        self._token: str | None = None
        self._auth_lock = asyncio.Lock()

    # -- lifecycle -----------------------------------------------------------------------

    async def connect(self, deadline: float) -> None:
        """Open the channel, authenticate, and ask etcd for its status within `deadline` s."""
        async with asyncio.timeout(deadline):
            target, options = await self._target()
            try:
                credentials = self._credentials()
            except OSError as err:
                raise ComponentError(
                    f"{self.what}: cannot read a TLS file ({type(err).__name__}) "
                    "(check metadata.tlsCa / tlsCert / tlsCertKey)"
                ) from None
            if credentials is None:
                channel = grpc.aio.insecure_channel(target, options=options)
            else:
                channel = grpc.aio.secure_channel(target, credentials, options=options)
            self._channel = channel
            self._stubs = {
                "KV": rpc.KVStub(channel),
                "Lease": rpc.LeaseStub(channel),
                "Watch": rpc.WatchStub(channel),
                "Maintenance": rpc.MaintenanceStub(channel),
                "Auth": rpc.AuthStub(channel),
            }
            if self.settings.username:
                await self._authenticate(deadline)
            await self.status(deadline=deadline)
            if not self.settings.username:
                await self._check_auth_not_required(deadline)

    async def close(self) -> None:
        channel, self._channel = self._channel, None
        self._stubs = {}
        if channel is not None:
            await channel.close(None)

    @property
    def connected(self) -> bool:
        channel = self._channel
        if channel is None:
            return False
        return bool(channel.get_state(False) == grpc.ChannelConnectivity.READY)

    async def _target(self) -> tuple[str, list[tuple[str, Any]]]:
        endpoints = self.settings.parsed_endpoints
        options = list(CHANNEL_OPTIONS)
        names = [e.host for e in endpoints if not e.is_ip]
        if self.settings.use_tls and names and len(endpoints) > 1:
            # One channel, several addresses: verify the certificate against the first name.
            options.append(("grpc.ssl_target_name_override", names[0]))
        if len(endpoints) == 1:
            return str(endpoints[0]), options
        v4: list[str] = []
        v6: list[str] = []
        for endpoint in endpoints:
            for host, family in await self._resolve(endpoint):
                entry = f"[{host}]:{endpoint.port}" if family == 6 else f"{host}:{endpoint.port}"
                bucket = v6 if family == 6 else v4
                if entry not in bucket:
                    bucket.append(entry)
        if v4:
            return "ipv4:" + ",".join(v4), options
        if v6:
            return "ipv6:" + ",".join(v6), options
        raise BackendUnavailable(
            f"{self.what}: etcd is unavailable (no endpoint resolves) (check metadata.endpoints)"
        )

    @staticmethod
    async def _resolve(endpoint: Endpoint) -> list[tuple[str, int]]:
        if endpoint.is_ip:
            return [(endpoint.host, 6 if endpoint.is_ipv6 else 4)]
        loop = asyncio.get_running_loop()
        try:
            infos = await loop.getaddrinfo(endpoint.host, endpoint.port, type=socket.SOCK_STREAM)
        except OSError:
            return []
        found: list[tuple[str, int]] = []
        for family, _, _, _, address in infos:
            host = str(address[0])
            item = (host, 6 if family == socket.AF_INET6 else 4)
            if item not in found:
                found.append(item)
        return found

    def _credentials(self) -> Any:
        if not self.settings.use_tls:
            return None
        s = self.settings
        key = s.tls_cert_key.get_secret_value()
        return grpc.ssl_channel_credentials(
            root_certificates=_pem(s.tls_ca) if s.tls_ca else None,
            private_key=_pem(key) if key else None,
            certificate_chain=_pem(s.tls_cert) if s.tls_cert else None,
        )

    # -- authentication ------------------------------------------------------------------

    def _metadata(self) -> tuple[tuple[str, str], ...] | None:
        return (("token", self._token),) if self._token else None

    async def _authenticate(self, deadline: float) -> None:
        request = rpc.AuthenticateRequest(
            name=self.settings.username, password=self.settings.password.get_secret_value()
        )
        try:
            reply = await self._stub("Auth").Authenticate(request, timeout=deadline)
        except grpc.RpcError as err:
            raise self.translate(err) from None
        self._token = str(reply.token)

    async def _check_auth_not_required(self, deadline: float) -> None:
        """Without credentials every call would fail later if etcd has auth enabled: say so at
        startup. (AuthStatus needs no token; etcd before 3.5 lacks it, which is fine.)"""
        try:
            reply = await self._stub("Auth").AuthStatus(rpc.AuthStatusRequest(), timeout=deadline)
        except grpc.RpcError as err:
            if err.code() == grpc.StatusCode.UNIMPLEMENTED:
                return
            raise self.translate(err) from None
        if reply.enabled:
            raise BackendUnavailable(
                f"{self.what}: etcd requires authentication "
                "(set metadata.username / metadata.password)"
            )

    async def _renew_token(self, rejected: str | None) -> None:
        async with self._auth_lock:
            if self._token == rejected:  # nobody renewed it while we waited
                await self._authenticate(self.settings.dial_timeout)

    # -- calls ---------------------------------------------------------------------------

    def _stub(self, service: str) -> Any:
        try:
            return self._stubs[service]
        except KeyError:
            raise BackendUnavailable(f"{self.what} is not started (or already closed)") from None

    def closed(self) -> LayottoError:
        return BackendUnavailable(f"{self.what}: the etcd connection was closed")

    def translate(self, err: BaseException) -> LayottoError:
        return translate(err, self.what, self._secrets, connected=self.connected)

    async def unary(
        self, service: str, method: str, request: Any, *, deadline: float | None = None
    ) -> Any:
        """One unary call with a deadline; a rejected token is renewed and the call retried
        once. Failures come out as LayottoErrors."""
        if deadline is None:
            deadline = self.settings.request_timeout
        for attempt in range(2):
            call = getattr(self._stub(service), method)
            token = self._token
            try:
                return await call(request, timeout=deadline, metadata=self._metadata())
            except (grpc.RpcError, grpc.aio.UsageError) as err:
                if attempt == 0 and self.settings.username and is_token_error(err):
                    await self._renew_token(token)
                    continue
                raise self.translate(err) from err
            except asyncio.CancelledError:
                if closed_under_us():
                    raise self.closed() from None
                raise
        raise AssertionError("unreachable")

    def open_stream(self, service: str, method: str) -> Any:
        """A bidirectional stream call (for Watch): `await call.write(...)`, `await call.read()`."""
        return getattr(self._stub(service), method)(metadata=self._metadata())

    async def renew_token_after(self, err: BaseException, token: str | None) -> bool:
        """For streams: True when `err` was a rejected token and it has been renewed."""
        if self.settings.username and is_token_error(err):
            await self._renew_token(token)
            return True
        return False

    async def renew_token_after_watch_refused(self, reason: str, token: str | None) -> bool:
        """For Watch: True when etcd canceled the watch as not permitted and the token has
        been renewed. etcd checks a watch's permission against the token the stream was opened
        with, and an expired or forgotten token (etcd restarted) comes back as the cancel
        reason "permission denied" rather than as an "invalid auth token" error."""
        text = reason.lower()
        if self.settings.username and ("permission denied" in text or "auth token" in text):
            await self._renew_token(token)
            return True
        return False

    @property
    def token(self) -> str | None:
        return self._token

    # -- the operations the components use ---------------------------------------------

    async def status(self, *, deadline: float | None = None) -> Any:
        return await self.unary("Maintenance", "Status", rpc.StatusRequest(), deadline=deadline)

    async def txn(
        self,
        compare: Sequence[Any] = (),
        success: Sequence[Any] = (),
        failure: Sequence[Any] = (),
    ) -> Any:
        request = rpc.TxnRequest(
            compare=list(compare), success=list(success), failure=list(failure)
        )
        return await self.unary("KV", "Txn", request)

    async def range(
        self,
        key: bytes,
        range_end: bytes = b"",
        *,
        revision: int = 0,
        keys_only: bool = False,
        deadline: float | None = None,
    ) -> Any:
        request = rpc.RangeRequest(
            key=key, range_end=range_end, revision=revision, keys_only=keys_only
        )
        return await self.unary("KV", "Range", request, deadline=deadline)

    async def lease_grant(self, ttl: int) -> int:
        reply = await self.unary("Lease", "LeaseGrant", rpc.LeaseGrantRequest(TTL=ttl))
        if reply.error:
            raise ComponentError(f"{self.what}: etcd refused a lease: {reply.error}")
        return int(reply.ID)

    async def lease_revoke(self, lease_id: int) -> None:
        """Best effort: a lease that cannot be revoked expires on its own."""
        if not lease_id:
            return
        with contextlib.suppress(LayottoError):
            await self.unary("Lease", "LeaseRevoke", rpc.LeaseRevokeRequest(ID=lease_id))


# -- request builders (aetcd's protobuf messages) ----------------------------------------


def op_put(key: bytes, value: bytes = b"", *, lease: int = 0, ignore_value: bool = False) -> Any:
    return rpc.RequestOp(
        request_put=rpc.PutRequest(key=key, value=value, lease=lease, ignore_value=ignore_value)
    )


def op_range(key: bytes, range_end: bytes = b"", *, keys_only: bool = False) -> Any:
    return rpc.RequestOp(
        request_range=rpc.RangeRequest(key=key, range_end=range_end, keys_only=keys_only)
    )


def op_delete(key: bytes, range_end: bytes = b"") -> Any:
    return rpc.RequestOp(request_delete_range=rpc.DeleteRangeRequest(key=key, range_end=range_end))


def cmp_create(key: bytes, equal: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.CREATE, result=rpc.Compare.EQUAL, create_revision=equal
    )


def cmp_value(key: bytes, equal: bytes) -> Any:
    return rpc.Compare(key=key, target=rpc.Compare.VALUE, result=rpc.Compare.EQUAL, value=equal)


def cmp_version_greater(key: bytes, than: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.VERSION, result=rpc.Compare.GREATER, version=than
    )


def cmp_mod(key: bytes, equal: int) -> Any:
    return rpc.Compare(
        key=key, target=rpc.Compare.MOD, result=rpc.Compare.EQUAL, mod_revision=equal
    )


def cmp_range_mod_below(key: bytes, range_end: bytes, below: int) -> Any:
    """True when no key in [key, range_end) was modified at or after revision `below`."""
    return rpc.Compare(
        key=key,
        range_end=range_end,
        target=rpc.Compare.MOD,
        result=rpc.Compare.LESS,
        mod_revision=below,
    )


def watch_create(key: bytes, range_end: bytes, start_revision: int) -> Any:
    return rpc.WatchRequest(
        create_request=rpc.WatchCreateRequest(
            key=key, range_end=range_end, start_revision=start_revision, progress_notify=True
        )
    )
