"""The pluggy hooks a plugin implements. Hooks return data and do no I/O."""

from __future__ import annotations

import pluggy

from layotto.plugin.component import ComponentSpec

PROJECT_NAME = "layotto"

hookspec = pluggy.HookspecMarker(PROJECT_NAME)
hookimpl = pluggy.HookimplMarker(PROJECT_NAME)


@hookspec
def layotto_components() -> list[ComponentSpec]:  # type: ignore[empty-body]
    """Every component type this plugin provides."""
