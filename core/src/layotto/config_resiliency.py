"""Resiliency policies from the configuration: Dapr `Resiliency` resources in the
`--resources-path` folders and the native config's `resiliency:` section (the same `policies` /
`targets` shape as a resource's `spec`). All of them merge into one `ResiliencySpec`; a policy or
target defined twice, or a target naming a policy that does not exist, stops startup with an
error naming the file and the field (`layotto.resiliency.spec`)."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from layotto.config import _dapr_documents
from layotto.errors import ConfigError
from layotto.resiliency import ResiliencySpec, merge_specs, parse_resiliency_spec

log = logging.getLogger(__name__)

KIND = "Resiliency"


@dataclass(frozen=True, slots=True)
class Loaded:
    """One source of policies: a Dapr resource (`name`: its `metadata.name`) or the native
    section (no name: metadata lists resources only)."""

    source: str
    name: str
    spec: ResiliencySpec


def load_dapr_resiliency(directory: Path, app_id: str = "") -> list[Loaded]:
    """The folder's `Resiliency` documents that apply to `app_id` (Dapr `scopes`), each with
    its source label."""
    found: list[Loaded] = []
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
        found.append(Loaded(source, str(name or ""), parse_resiliency_spec(spec, source)))
    return found


def native_resiliency(section: Any, config_file: Path | None) -> list[Loaded]:
    """The native config's `resiliency:` section (`policies`, `targets`), if any."""
    if section is None:
        return []
    source = f"{config_file}: resiliency"
    if not isinstance(section, dict):
        raise ConfigError(f"{source}: must be a mapping with 'policies' and 'targets'")
    return [Loaded(source, "", parse_resiliency_spec(section, source))]


def merged(loaded: Sequence[Loaded]) -> ResiliencySpec:
    """One spec from all sources; empty when there are none."""
    return merge_specs([(x.source, x.spec) for x in loaded]) if loaded else ResiliencySpec()


def names(loaded: Sequence[Loaded]) -> tuple[str, ...]:
    """What metadata lists as `resiliencies` (daprd: the loaded resources' names)."""
    return tuple(x.name for x in loaded if x.name)
