"""`bindings.cron`: the schedule grammar and next-firing rules (robfig/cron v3 as Dapr uses
it: optional seconds, descriptors, `@every`, CRON_TZ), and the binding firing in real time."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import anyio
import pytest
from layotto.builtin.binding_cron import (
    CronBinding,
    CronBindingMetadata,
    go_time_string,
)
from layotto.builtin.cron_schedule import Every, parse_schedule
from layotto.plugin import BindingEvent, ComponentContext
from pydantic import ValidationError

pytestmark = pytest.mark.anyio

UTC_TZ = "CRON_TZ=UTC "
NY = ZoneInfo("America/New_York")


def at(text: str, zone: ZoneInfo | None = None) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=zone or UTC)


def fires(spec: str, start: str, count: int = 1, zone: ZoneInfo | None = None) -> list[str]:
    schedule = parse_schedule(spec)
    moment = at(start, zone)
    found = []
    for _ in range(count):
        nxt = schedule.next_after(moment)
        assert nxt is not None
        assert nxt.tzinfo is UTC
        found.append(nxt.astimezone(zone or UTC).replace(tzinfo=None).isoformat())
        moment = nxt
    return found


@pytest.mark.parametrize(
    ("spec", "start", "expected"),
    [
        # 6 fields: seconds first ("15 * * * * *" fires at second 15 of every minute).
        ("15 * * * * *", "2024-05-01T10:00:00", ["2024-05-01T10:00:15", "2024-05-01T10:01:15"]),
        ("0 30 * * * *", "2024-05-01T10:29:59", ["2024-05-01T10:30:00", "2024-05-01T11:30:00"]),
        # 5 fields: standard cron, second 0.
        ("*/15 * * * *", "2024-05-01T10:07:00", ["2024-05-01T10:15:00", "2024-05-01T10:30:00"]),
        ("0 9 * * mon-fri", "2024-05-03T09:00:00", ["2024-05-06T09:00:00", "2024-05-07T09:00:00"]),
        ("0 0 1,15 * *", "2024-05-02T00:00:00", ["2024-05-15T00:00:00", "2024-06-01T00:00:00"]),
        ("30 2 * jan,jul *", "2024-05-01T00:00:00", ["2024-07-01T02:30:00"]),
        ("5/20 * * * *", "2024-05-01T10:00:00", ["2024-05-01T10:05:00", "2024-05-01T10:25:00"]),
        ("0 10-12/2 * * *", "2024-05-01T10:00:00", ["2024-05-01T12:00:00", "2024-05-02T10:00:00"]),
        ("0 0 29 2 *", "2024-03-01T00:00:00", ["2028-02-29T00:00:00"]),
        # Day of month OR day of week when neither is a star; AND when one is.
        ("0 0 13 * fri", "2024-09-01T00:00:00", ["2024-09-06T00:00:00", "2024-09-13T00:00:00"]),
        ("0 0 * * 0", "2024-05-01T00:00:00", ["2024-05-05T00:00:00"]),
        ("0 0 ? * SUN", "2024-05-01T00:00:00", ["2024-05-05T00:00:00"]),
        ("0 0 */2 * 1", "2024-05-01T00:00:00", ["2024-05-03T00:00:00", "2024-05-05T00:00:00"]),
        # Descriptors.
        ("@hourly", "2024-05-01T10:00:00", ["2024-05-01T11:00:00"]),
        ("@daily", "2024-05-01T10:00:00", ["2024-05-02T00:00:00"]),
        ("@midnight", "2024-05-01T10:00:00", ["2024-05-02T00:00:00"]),
        ("@weekly", "2024-05-01T10:00:00", ["2024-05-05T00:00:00"]),
        ("@monthly", "2024-05-01T10:00:00", ["2024-06-01T00:00:00"]),
        ("@yearly", "2024-05-01T10:00:00", ["2025-01-01T00:00:00"]),
        ("@annually", "2024-12-31T23:59:59", ["2025-01-01T00:00:00"]),
    ],
)
def test_next_firings(spec: str, start: str, expected: list[str]) -> None:
    assert fires(UTC_TZ + spec, start, len(expected)) == expected


def test_strictly_after_and_fraction_dropped() -> None:
    schedule = parse_schedule(UTC_TZ + "* * * * * *")
    assert schedule.next_after(at("2024-05-01T10:00:00.700")) == at("2024-05-01T10:00:01")


def test_every() -> None:
    schedule = parse_schedule("@every 1m30s")
    assert isinstance(schedule, Every)
    assert schedule.next_after(at("2024-05-01T10:00:00.250")) == at("2024-05-01T10:01:30")
    assert parse_schedule("@every 250ms").next_after(at("2024-05-01T10:00:00")) == at(
        "2024-05-01T10:00:01"
    )  # rounded up to a second, as robfig
    assert parse_schedule("@every 2.7s").next_after(at("2024-05-01T10:00:00")) == at(
        "2024-05-01T10:00:02"
    )


def test_time_zone_and_dst() -> None:
    ny = "CRON_TZ=America/New_York "
    # 09:00 New York is 13:00 UTC in summer, 14:00 in winter.
    assert fires(ny + "0 9 * * *", "2024-07-01T00:00:00") == ["2024-07-01T13:00:00"]
    assert fires("TZ=America/New_York 0 9 * * *", "2024-12-01T00:00:00") == ["2024-12-01T14:00:00"]
    # Spring forward (2024-03-10 02:00 -> 03:00): 02:30 does not exist, it fires at 03:30.
    assert fires(ny + "30 2 * * *", "2024-03-09T12:00:00", 2, NY) == [
        "2024-03-10T03:30:00",
        "2024-03-11T02:30:00",
    ]
    # Fall back (2024-11-03 02:00 -> 01:00): 01:30 exists twice, it fires once.
    assert fires(ny + "30 1 * * *", "2024-11-02T12:00:00", 2, NY) == [
        "2024-11-03T01:30:00",
        "2024-11-04T01:30:00",
    ]
    # Started inside the repeated hour (second 01:10): no burst of past firings.
    second_pass = datetime(2024, 11, 3, 1, 10, tzinfo=NY, fold=1)
    nxt = parse_schedule(ny + "* * * * *").next_after(second_pass)
    assert nxt is not None
    assert nxt.astimezone(UTC) > second_pass.astimezone(UTC)
    assert nxt.astimezone(UTC) - second_pass.astimezone(UTC) <= timedelta(hours=1)


def test_never_fires() -> None:
    assert parse_schedule(UTC_TZ + "0 0 30 2 *").next_after(at("2024-01-01T00:00:00")) is None


@pytest.mark.parametrize(
    "spec",
    [
        "",
        "* * * *",
        "* * * * * * *",
        "60 * * * *",
        "* 24 * * *",
        "* * 0 * *",
        "* * * 13 *",
        "* * * * 7",
        "* * * foo *",
        "*/0 * * * *",
        "5-1 * * * *",
        "@often",
        "@every",
        "@every soon",
        "@every -5s",
        "CRON_TZ=Mars/Base * * * * *",
    ],
)
def test_bad_schedules(spec: str) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - the message varies by mistake
        parse_schedule(spec)
    with pytest.raises(ValidationError):
        CronBindingMetadata.model_validate({"schedule": spec})


def test_go_time_string() -> None:
    assert go_time_string(at("2024-05-01T10:00:00.500")) == "2024-05-01 10:00:00.5 +0000 UTC"
    assert go_time_string(at("2024-05-01T10:00:00")) == "2024-05-01 10:00:00 +0000 UTC"


@pytest.mark.parametrize("anyio_backend", ["asyncio", "trio"])
async def test_fires_in_real_time(anyio_backend: str) -> None:
    metadata = CronBindingMetadata.model_validate({"schedule": "@every 1s", "direction": "input"})
    assert not metadata.model_extra
    binding = CronBinding.create(metadata, ComponentContext("tick", "app"))
    assert isinstance(binding, CronBinding)
    got: list[BindingEvent] = []
    failed_once: list[bool] = []

    async def handler(event: BindingEvent) -> None:
        got.append(event)
        if not failed_once:
            failed_once.append(True)
            raise RuntimeError("not processed: the next tick still comes")

    with anyio.move_on_after(2.6):
        await binding.read(handler)
    assert 2 <= len(got) <= 3  # the first at the next whole second, then one a second
    for event in got:
        assert event.data == b""
        assert event.metadata["timeZone"] in ("Local", "UTC")
        assert event.metadata["readTimeUTC"].endswith(" +0000 UTC")
