from __future__ import annotations

import importlib.metadata


def runtime_version() -> str:
    try:
        return importlib.metadata.version("layotto")
    except importlib.metadata.PackageNotFoundError:
        return "0+unknown"
