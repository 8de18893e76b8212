"""Cron schedules as Dapr's `bindings.cron` reads them (robfig/cron v3 with an optional seconds
field and descriptors), and the next time each one fires.

Accepted:
- 5 fields `minute hour day-of-month month day-of-week`, or 6 with `second` first;
- per field: `*` or `?`, `n`, `a-b`, a step `/s` after any of them (`n/s` means `n-max/s`),
  comma lists; month names `jan`-`dec` and day names `sun`-`sat` in any case; days of week
  0-6 (Sunday = 0);
- day of month and day of week: when either field is `*` (or `?`) both must match, else either
  may (as Vixie cron and robfig);
- descriptors `@yearly` (`@annually`), `@monthly`, `@weekly`, `@daily` (`@midnight`),
  `@hourly`, and `@every <duration>` (Go notation; whole seconds, at least one; a fixed
  interval from the last firing);
- a leading `CRON_TZ=<zone>` or `TZ=<zone>` (an IANA zone) for the fields' wall clock; the
  default is the machine's local time zone.

Wall-clock rules at DST changes: a time that does not exist (spring forward) fires at the
same wall time after the jump (02:30 -> 03:30); a time that exists twice (fall back) fires
once, at its first occurrence.

Written here rather than taken from a library: the usual Python cron libraries read a sixth
field as seconds *last* (or not at all) and know no `@every`, so none parses Dapr's schedules
as Dapr does.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta, tzinfo
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from layotto.plugin.durations import parse_duration

# Searching further than this for a matching time means it never comes (robfig's limit).
YEARS_AHEAD = 5

_MONTHS = {
    name: i + 1
    for i, name in enumerate(
        ["jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec"]
    )
}
_DAYS = {name: i for i, name in enumerate(["sun", "mon", "tue", "wed", "thu", "fri", "sat"])}
_DESCRIPTORS = {
    "@yearly": "0 0 0 1 1 *",
    "@annually": "0 0 0 1 1 *",
    "@monthly": "0 0 0 1 * *",
    "@weekly": "0 0 0 * * 0",
    "@daily": "0 0 0 * * *",
    "@midnight": "0 0 0 * * *",
    "@hourly": "0 0 * * * *",
}
_NUMBER = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class _Bounds:
    name: str
    low: int
    high: int
    names: dict[str, int] | None = None


_SECOND = _Bounds("second", 0, 59)
_MINUTE = _Bounds("minute", 0, 59)
_HOUR = _Bounds("hour", 0, 23)
_DOM = _Bounds("day of month", 1, 31)
_MONTH = _Bounds("month", 1, 12, _MONTHS)
_DOW = _Bounds("day of week", 0, 6, _DAYS)


def _value(text: str, bounds: _Bounds) -> int:
    if bounds.names is not None and text.lower() in bounds.names:
        return bounds.names[text.lower()]
    if not _NUMBER.fullmatch(text):
        raise ValueError(f"{bounds.name}: {text!r} is not a number")
    number = int(text)
    if not bounds.low <= number <= bounds.high:
        raise ValueError(f"{bounds.name}: {number} is outside {bounds.low}-{bounds.high}")
    return number


def _field(text: str, bounds: _Bounds) -> tuple[frozenset[int], bool]:
    """The values a field matches, and whether it is a star (for the day-matching rule)."""
    values: set[int] = set()
    star = False
    for part in text.split(","):
        span, slash, step_text = part.partition("/")
        if span in ("*", "?"):
            start, end = bounds.low, bounds.high
            part_star = True
        else:
            low, dash, high = span.partition("-")
            start = _value(low, bounds)
            end = _value(high, bounds) if dash else start
            part_star = False
            if slash and not dash:
                end = bounds.high  # "n/s" means "n-max/s"
        step = 1
        if slash:
            if not _NUMBER.fullmatch(step_text) or int(step_text) == 0:
                raise ValueError(f"{bounds.name}: {step_text!r} is not a positive step")
            step = int(step_text)
        if start > end:
            raise ValueError(f"{bounds.name}: {part!r} runs backwards")
        values.update(range(start, end + 1, step))
        star = star or (part_star and step == 1)
    return frozenset(values), star


def _zone(name: str) -> tzinfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown time zone {name!r}") from None


def local_zone() -> tuple[tzinfo, str]:
    """The machine's time zone with its DST rules, and its name ("Local" as Go says)."""
    configured = os.environ.get("TZ", "").lstrip(":")
    if configured:
        try:
            return ZoneInfo(configured), "Local"
        except (ZoneInfoNotFoundError, ValueError):
            pass
    try:
        with open("/etc/localtime", "rb") as handle:
            return ZoneInfo.from_file(handle, key="localtime"), "Local"
    except (OSError, ValueError):
        return UTC, "UTC"


class Schedule:
    """When a schedule fires: `next_after(t)` is the first firing strictly after `t` (an aware
    datetime, in UTC), None when there is none within five years."""

    zone_name: str

    def next_after(self, moment: datetime) -> datetime | None:
        raise NotImplementedError


@dataclass(frozen=True)
class Every(Schedule):
    """`@every d`: fixed intervals, whole seconds (as robfig: the firing time keeps no
    fraction of a second from the moment it is counted from)."""

    interval: timedelta
    zone_name: str = "Local"

    def next_after(self, moment: datetime) -> datetime | None:
        return moment.replace(microsecond=0) + self.interval


@dataclass(frozen=True)
class Fields(Schedule):
    seconds: frozenset[int]
    minutes: frozenset[int]
    hours: frozenset[int]
    days: frozenset[int]
    months: frozenset[int]
    weekdays: frozenset[int]  # 0 = Sunday
    days_star: bool
    weekdays_star: bool
    zone: tzinfo
    zone_name: str

    def _day_matches(self, t: datetime) -> bool:
        day = t.day in self.days
        weekday = (t.isoweekday() % 7) in self.weekdays
        if self.days_star or self.weekdays_star:
            return day and weekday
        return day or weekday

    def next_wall(self, wall: datetime) -> datetime | None:
        """The first matching wall-clock time (naive) after `wall` (naive)."""
        t = wall.replace(microsecond=0) + timedelta(seconds=1)
        limit = t.year + YEARS_AHEAD
        while t.year <= limit:
            if t.month not in self.months:
                year, month = (t.year + 1, 1) if t.month == 12 else (t.year, t.month + 1)
                t = datetime(year, month, 1)
                continue
            if not self._day_matches(t):
                t = datetime(t.year, t.month, t.day) + timedelta(days=1)
                continue
            if t.hour not in self.hours:
                t = datetime(t.year, t.month, t.day, t.hour) + timedelta(hours=1)
                continue
            if t.minute not in self.minutes:
                t = t.replace(second=0) + timedelta(minutes=1)
                continue
            if t.second not in self.seconds:
                t += timedelta(seconds=1)
                continue
            return t
        return None

    def next_after(self, moment: datetime) -> datetime | None:
        after = moment.astimezone(UTC)
        wall = moment.astimezone(self.zone).replace(tzinfo=None)
        while True:
            candidate = self.next_wall(wall)
            if candidate is None:
                return None
            # fold=0 first: the earlier of a doubled wall time (and a missing one maps
            # forward). Compare in UTC: aware datetimes of one zone compare wall clocks.
            for fold in (0, 1):
                fire = candidate.replace(tzinfo=self.zone, fold=fold).astimezone(UTC)
                if fire > after:
                    return fire
            wall = candidate


def parse_schedule(spec: str) -> Schedule:
    """A Schedule from Dapr's `schedule` metadata; a ValueError says what is wrong."""
    text = " ".join(spec.split())
    if not text:
        raise ValueError("the schedule is empty")
    zone: tzinfo | None = None
    zone_name = ""
    head, _, rest = text.partition(" ")
    if head.startswith(("CRON_TZ=", "TZ=")):
        zone_name = head.partition("=")[2]
        zone = _zone(zone_name)
        text = rest
    if zone is None:
        zone, zone_name = local_zone()
    lowered = text.lower()
    if lowered.startswith("@every"):
        amount = text[len("@every") :].strip()
        try:
            interval = parse_duration(amount)
        except ValueError as err:
            raise ValueError(f"@every: {err}") from None
        if interval <= 0:
            raise ValueError("@every needs a positive duration")
        # As robfig: below a second rounds up to one, fractions of a second are dropped.
        return Every(timedelta(seconds=max(1, int(interval))), zone_name)
    if text.startswith("@"):
        expanded = _DESCRIPTORS.get(lowered)
        if expanded is None:
            raise ValueError(f"unknown descriptor {text!r}")
        text = expanded
    fields = text.split(" ")
    if len(fields) == 5:
        fields.insert(0, "0")
    if len(fields) != 6:
        raise ValueError(
            f"expected 5 or 6 fields (second optional, then minute hour day month weekday), "
            f"got {len(fields)}"
        )
    seconds, _ = _field(fields[0], _SECOND)
    minutes, _ = _field(fields[1], _MINUTE)
    hours, _ = _field(fields[2], _HOUR)
    days, days_star = _field(fields[3], _DOM)
    months, _ = _field(fields[4], _MONTH)
    weekdays, weekdays_star = _field(fields[5], _DOW)
    return Fields(
        seconds, minutes, hours, days, months, weekdays, days_star, weekdays_star, zone, zone_name
    )
