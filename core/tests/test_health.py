"""HealthRegistry and aggregation: the actuator's view of the sidecar."""

from __future__ import annotations

import itertools
import json

import pytest
from hypothesis import given
from hypothesis import strategies as st
from layotto.health import BOTH, STARTUP, HealthRegistry, Probe, aggregate
from layotto.plugin import Health, HealthStatus

READINESS_ONLY = frozenset({Probe.READINESS})
LIVENESS_ONLY = frozenset({Probe.LIVENESS})

statuses = st.lists(st.sampled_from(list(HealthStatus)), max_size=20)


# -- aggregate -----------------------------------------------------------------------------


@given(statuses)
def test_aggregate_is_never_up_when_something_is_down_or_initialising(
    seen: list[HealthStatus],
) -> None:
    result = aggregate(seen)
    if HealthStatus.DOWN in seen:
        assert result is HealthStatus.DOWN
    elif HealthStatus.INIT in seen:
        assert result is HealthStatus.INIT
    else:
        assert result is HealthStatus.UP
    if HealthStatus.DOWN in seen or HealthStatus.INIT in seen:
        assert result is not HealthStatus.UP


@given(statuses)
def test_aggregate_does_not_depend_on_order(seen: list[HealthStatus]) -> None:
    assert aggregate(seen) is aggregate(reversed(seen))
    assert aggregate(iter(seen)) is aggregate(seen)  # a one-shot iterable works too


def test_aggregate_of_nothing_is_up() -> None:
    assert aggregate([]) is HealthStatus.UP


# -- the registry (backend-neutral: run on both backends) ------------------------------------


@pytest.mark.anyio
async def test_a_new_registry_is_initialising() -> None:
    health = HealthRegistry()
    for probe in Probe:
        assert health.status(probe) is HealthStatus.INIT
        assert health.report(probe) == {
            "status": "INIT",
            "components": {STARTUP: {"status": "INIT", "details": {"reason": "starting"}}},
        }


@pytest.mark.anyio
async def test_report_shape_matches_the_actuator_contract() -> None:
    health = HealthRegistry()
    health.set(STARTUP, Health.up(), BOTH)
    health.set("component:statestore", Health.up(), READINESS_ONLY)
    health.set("component:redis", Health.down("connection refused"), READINESS_ONLY)

    report = health.report(Probe.READINESS)
    assert report == {
        "status": "DOWN",
        "components": {
            STARTUP: {"status": "UP"},  # empty details are left out
            "component:statestore": {"status": "UP"},
            "component:redis": {"status": "DOWN", "details": {"reason": "connection refused"}},
        },
    }
    json.dumps(report)  # plain JSON types only
    for entry in report["components"].values():
        assert set(entry) <= {"status", "details"}
        assert entry["status"] in {"INIT", "UP", "DOWN"}


@pytest.mark.anyio
async def test_report_details_are_a_copy() -> None:
    health = HealthRegistry()
    details = {"reason": "x"}
    health.set("a", Health(HealthStatus.DOWN, details))
    report = health.report(Probe.LIVENESS)
    report["components"]["a"]["details"]["reason"] = "changed"
    assert health.report(Probe.LIVENESS)["components"]["a"]["details"] == {"reason": "x"}


@pytest.mark.anyio
async def test_liveness_ignores_readiness_only_indicators() -> None:
    health = HealthRegistry()
    health.set(STARTUP, Health.up(), BOTH)
    health.set("component:redis", Health.down("unreachable"), READINESS_ONLY)
    health.set("component:warming", Health(HealthStatus.INIT), READINESS_ONLY)

    assert health.status(Probe.LIVENESS) is HealthStatus.UP
    assert health.status(Probe.READINESS) is HealthStatus.DOWN
    liveness = health.report(Probe.LIVENESS)
    assert liveness == {"status": "UP", "components": {STARTUP: {"status": "UP"}}}


@pytest.mark.anyio
async def test_readiness_ignores_liveness_only_indicators() -> None:
    health = HealthRegistry()
    health.set(STARTUP, Health.up(), BOTH)
    health.set("deadlock-detector", Health.down("stuck"), LIVENESS_ONLY)
    assert health.status(Probe.READINESS) is HealthStatus.UP
    assert health.status(Probe.LIVENESS) is HealthStatus.DOWN
    assert "deadlock-detector" not in health.report(Probe.READINESS)["components"]


@pytest.mark.anyio
async def test_update_keeps_the_probes_of_an_indicator() -> None:
    health = HealthRegistry()
    health.set(STARTUP, Health.up(), BOTH)
    health.set("component:redis", Health.up(), READINESS_ONLY)
    health.update("component:redis", Health.down("gone"))
    assert health.get("component:redis") == Health.down("gone")
    assert health.status(Probe.LIVENESS) is HealthStatus.UP
    assert health.status(Probe.READINESS) is HealthStatus.DOWN
    assert health.get("never-set") is None


@pytest.mark.anyio
async def test_readiness_listeners_fire_once_per_change() -> None:
    health = HealthRegistry()
    first: list[HealthStatus] = []
    health.on_readiness_change(first.append)
    assert first == [HealthStatus.INIT]  # the current state, at once

    health.set(STARTUP, Health.up(), BOTH)
    assert first == [HealthStatus.INIT, HealthStatus.UP]

    second: list[HealthStatus] = []
    health.on_readiness_change(second.append)
    assert second == [HealthStatus.UP]

    # No change in the aggregate: nobody is told.
    health.set("component:a", Health.up(), READINESS_ONLY)
    health.update("component:a", Health.up())
    health.set("live-only", Health.down("x"), LIVENESS_ONLY)
    assert first == [HealthStatus.INIT, HealthStatus.UP]

    health.update("component:a", Health.down("broken"))
    health.update("component:a", Health.down("still broken"))  # same status: no new event
    health.set("component:b", Health(HealthStatus.INIT), READINESS_ONLY)  # DOWN wins: no event
    assert first == [HealthStatus.INIT, HealthStatus.UP, HealthStatus.DOWN]

    health.update("component:a", Health.up())  # b still INIT
    health.update("component:b", Health.up())
    up, down, init = HealthStatus.UP, HealthStatus.DOWN, HealthStatus.INIT
    assert first == [init, up, down, init, up]
    assert second == [HealthStatus.UP, HealthStatus.DOWN, HealthStatus.INIT, HealthStatus.UP]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["a", "b", "c"]),
            st.sampled_from(list(HealthStatus)),
            st.sampled_from([BOTH, READINESS_ONLY, LIVENESS_ONLY]),
        ),
        max_size=30,
    )
)
def test_listener_events_track_the_readiness_aggregate(
    changes: list[tuple[str, HealthStatus, frozenset[Probe]]],
) -> None:
    health = HealthRegistry()
    events: list[HealthStatus] = []
    health.on_readiness_change(events.append)
    for name, status, probes in changes:
        health.set(name, Health(status), probes)
        # The last event is always the current readiness, and no two in a row are equal.
        assert events[-1] is health.status(Probe.READINESS)
    assert all(a is not b for a, b in itertools.pairwise(events))
