"""Shared fixtures for the core unit tests.

Backend-neutral code runs on both anyio backends: mark an async test `@pytest.mark.anyio` and it
runs once on asyncio and once on trio.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest


def _load_helpers(name: str, path: Path) -> None:
    """Load a helpers module under a unique name: the workspace runs with --import-mode=importlib,
    so test folders are not on sys.path (and other folders may have a `helpers` module too)."""
    if name in sys.modules:
        return
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)


_load_helpers("layotto_core_test_helpers", Path(__file__).with_name("helpers.py"))
_load_helpers("layotto_api_test_helpers", Path(__file__).parent / "api" / "helpers.py")


@pytest.fixture(params=["asyncio", "trio"])
def anyio_backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)
