"""Retry policies: constant and exponential (cenkalti/backoff) delays, the retry budget, and
which status codes a `matching` block retries."""

from __future__ import annotations

import random

import pytest
from hypothesis import given
from hypothesis import strategies as st
from layotto.resiliency import RetryPolicy, parse_resiliency_spec


def _policy(raw: dict[str, object], seed: int = 0, rng: random.Random | None = None) -> RetryPolicy:
    spec = parse_resiliency_spec({"policies": {"retries": {"r": raw}}}, "res.yaml")
    return RetryPolicy.from_spec("r", spec.policies.retries["r"], rng=rng or random.Random(seed))


def test_constant_waits_the_duration_every_time() -> None:
    policy = _policy({"policy": "constant", "duration": "20ms"})
    assert [policy.delay(i) for i in range(5)] == [0.02] * 5


def test_constant_defaults_to_five_seconds() -> None:
    assert _policy({}).delay(0) == 5.0


@given(index=st.integers(0, 40), seed=st.integers())
def test_exponential_delay_is_the_capped_interval_randomised_by_half(index: int, seed: int) -> None:
    policy = _policy({"policy": "exponential", "maxInterval": "10s"}, seed)
    interval = min(0.5 * 1.5**index, 10.0)
    assert 0.5 * interval <= policy.delay(index) <= 1.5 * interval


def test_exponential_grows_from_500ms_by_one_and_a_half() -> None:
    # A randomisation of exactly the midpoint shows the underlying interval.
    policy = _policy({"policy": "exponential"}, rng=_Midpoint())
    assert [round(policy.delay(i), 6) for i in range(4)] == [0.5, 0.75, 1.125, 1.6875]


def test_exponential_interval_stops_growing_at_max_interval() -> None:
    policy = _policy({"policy": "exponential", "maxInterval": "2s"}, rng=_Midpoint())
    assert policy.delay(10) == 2.0
    assert policy.delay(10**30) == 2.0


def test_exponential_delays_are_reproducible_with_a_seeded_rng() -> None:
    first = [_policy({"policy": "exponential"}, seed=7).delay(i) for i in range(6)]
    second = [_policy({"policy": "exponential"}, seed=7).delay(i) for i in range(6)]
    assert first == second
    assert len(set(first)) == 6


@pytest.mark.parametrize(
    ("max_retries", "allowed"),
    [(0, []), (1, [0]), (3, [0, 1, 2])],
)
def test_max_retries_bounds_the_retries(max_retries: int, allowed: list[int]) -> None:
    policy = _policy({"maxRetries": max_retries})
    assert [n for n in range(10) if policy.allows(n)] == allowed


def test_minus_one_retries_forever() -> None:
    policy = _policy({"maxRetries": -1})
    assert all(policy.allows(n) for n in (0, 1, 10**9))


def test_no_matching_retries_every_code() -> None:
    policy = _policy({})
    assert all(policy.retries_http_status(c) for c in (404, 429, 500))
    assert all(policy.retries_grpc_code(c) for c in range(17))


def test_matching_retries_only_the_listed_codes() -> None:
    policy = _policy(
        {"matching": {"httpStatusCodes": "429,500-599", "gRPCStatusCodes": "1-4,8-11,13,14"}}
    )
    assert [
        c for c in (400, 404, 428, 429, 430, 499, 500, 503, 599) if policy.retries_http_status(c)
    ] == [
        429,
        500,
        503,
        599,
    ]
    assert [c for c in range(17) if policy.retries_grpc_code(c)] == [
        1,
        2,
        3,
        4,
        8,
        9,
        10,
        11,
        13,
        14,
    ]


def test_matching_only_http_leaves_grpc_unrestricted() -> None:
    policy = _policy({"matching": {"httpStatusCodes": "503"}})
    assert not policy.retries_http_status(500)
    assert policy.retries_grpc_code(5)


def test_only_exponential_policies_have_an_elapsed_time_budget() -> None:
    assert _policy({"policy": "exponential"}).max_elapsed == 15 * 60
    assert _policy({"policy": "constant"}).max_elapsed is None


class _Midpoint(random.Random):
    def random(self) -> float:
        return 0.5
