"""Fixtures for the cross-package end-to-end tests (`layotto run` as a real subprocess)."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest

# Loaded under a unique name: the workspace runs with --import-mode=importlib and other test
# folders may have a `support` module too.
_SUPPORT_NAME = "layotto_e2e_support"
if _SUPPORT_NAME not in sys.modules:
    _spec = importlib.util.spec_from_file_location(
        _SUPPORT_NAME, Path(__file__).with_name("support.py")
    )
    assert _spec is not None
    assert _spec.loader is not None
    _module = importlib.util.module_from_spec(_spec)
    sys.modules[_SUPPORT_NAME] = _module
    _spec.loader.exec_module(_module)

from layotto_e2e_support import (  # noqa: E402
    RuntimeProtos,
    Sidecar,
    generate_runtime_protos,
    spawn_sidecar,
)

SidecarFactory = Callable[..., Sidecar]


@pytest.fixture(scope="session")
def runtime_protos(tmp_path_factory: pytest.TempPathFactory) -> RuntimeProtos:
    """Plain grpcio `runtime_pb2` / `runtime_pb2_grpc`, generated once per session."""
    return generate_runtime_protos(tmp_path_factory.mktemp("pb2"))


@pytest.fixture(scope="session")
def pb2(runtime_protos: RuntimeProtos) -> Any:
    return runtime_protos.runtime_pb2


@pytest.fixture(scope="session")
def pb2_grpc(runtime_protos: RuntimeProtos) -> Any:
    return runtime_protos.runtime_pb2_grpc


def _factory() -> Iterator[SidecarFactory]:
    started: list[Sidecar] = []

    def start(args: Sequence[str] = (), env: Mapping[str, str] | None = None) -> Sidecar:
        sidecar = spawn_sidecar(args, env)
        started.append(sidecar)
        return sidecar

    try:
        yield start
    finally:
        for sidecar in started:
            sidecar.kill()


@pytest.fixture
def sidecar_factory() -> Iterator[SidecarFactory]:
    """`start(args=(), env=None) -> Sidecar`; every sidecar started is killed at teardown."""
    yield from _factory()


@pytest.fixture(scope="module")
def module_sidecar_factory() -> Iterator[SidecarFactory]:
    yield from _factory()


@pytest.fixture(scope="module")
def sidecar(module_sidecar_factory: SidecarFactory) -> Sidecar:
    """One default sidecar (embedded in-memory `statestore`) shared by a test module."""
    return module_sidecar_factory()
