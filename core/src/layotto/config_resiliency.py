"""Resiliency policies from the configuration: Dapr `Resiliency` resources in the
`--resources-path` folders and the native config's `resiliency:` section (the same `policies` /
`targets` shape as a resource's `spec`). All of them merge into one `ResiliencySpec`; a policy or
target defined twice, or a target naming a policy that does not exist, stops startup with an
error naming the file and the field (`layotto.resiliency.spec`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from layotto.config import _dapr_documents
from layotto.errors import ConfigError
from layotto.resiliency import ResiliencySpec, merge_specs, parse_resiliency_spec

log = logging.getLogger(__name__)

KIND = "Resiliency"

Sourced = tuple[str, ResiliencySpec]


def load_dapr_resiliency(directory: Path, app_id: str = "") -> list[Sourced]:
    """The folder's `Resiliency` documents that apply to `app_id` (Dapr `scopes`), each with
    its source label."""
    found: list[Sourced] = []
    for source, doc in _dapr_documents(directory, KIND):
        meta = doc.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        label = f"Resiliency {name!r}" if name else "Resiliency"
        scopes = doc.get("scopes")
        if scopes is not None and not isinstance(scopes, list):
            raise ConfigError(f"{source}: {label}: field 'scopes' must be a list of app ids")
        if scopes and app_id and app_id not in scopes:
            log.info("%s: %s is scoped to %s, not to %r: skipped", source, label, scopes, app_id)
            continue
        spec = doc.get("spec")
        if spec is None:
            log.warning("%s: %s has no 'spec': it defines no policies", source, label)
            continue
        found.append((source, parse_resiliency_spec(spec, source)))
    return found


def native_resiliency(section: Any, config_file: Path | None) -> list[Sourced]:
    """The native config's `resiliency:` section (`policies`, `targets`), if any."""
    if section is None:
        return []
    source = f"{config_file}: resiliency"
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: must be a mapping with 'policies' and 'targets'")
    return [(source, parse_resiliency_spec(section, source))]


def merged(specs: Sequence[Sourced]) -> ResiliencySpec:
    """One spec from all sources; empty when there are none."""
    return merge_specs(specs) if specs else ResiliencySpec()
