"""`bindings.cron`: an input binding that fires on a schedule, as Dapr's components-contrib
`bindings/cron` (for the embedded and development case: no backend needed).

Metadata `schedule` (required): a cron expression, see `cron_schedule` (`"@every 15m"`,
`"0 30 * * * *"`, `"*/5 * * * *"`, `"CRON_TZ=Europe/Paris 0 9 * * mon-fri"`).

Each firing hands the handler an event with empty data and Dapr's metadata: `timeZone` (the
schedule's zone; "Local" for the machine's) and `readTimeUTC` (when it fired, in Go's
`time.Time.String()` form). A tick is not redelivered: when the app did not process it, the
failure is logged and the next tick comes on schedule. Ticks are not run side by side: one
that falls while the app is still handling the previous one is skipped.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

import anyio
from pydantic import Field, field_validator

from layotto.builtin.cron_schedule import Schedule, parse_schedule
from layotto.errors import LayottoError
from layotto.plugin import (
    BindingEvent,
    BindingHandler,
    Component,
    ComponentContext,
    ComponentMetadata,
    InputBinding,
)

log = logging.getLogger(__name__)

# Long waits are taken in slices, so a wall-clock change (NTP, a suspended machine) moves the
# next firing instead of leaving the binding asleep on an old estimate.
MAX_SLEEP = 30.0


class CronBindingMetadata(ComponentMetadata):
    schedule: str = Field(min_length=1)
    # Read by the sidecar (which side of the binding it uses); declared so it is not "unknown".
    direction: str = ""

    @field_validator("schedule")
    @classmethod
    def _check(cls, value: str) -> str:
        parse_schedule(value)
        return value.strip()


def go_time_string(moment: datetime) -> str:
    """`2024-05-01 10:00:00.5 +0000 UTC`, as Go's `time.Time.String()` prints a UTC time."""
    utc = moment.astimezone(UTC)
    fraction = f"{utc.microsecond:06d}".rstrip("0")
    return f"{utc:%Y-%m-%d %H:%M:%S}{'.' + fraction if fraction else ''} +0000 UTC"


class CronBinding(InputBinding):
    def __init__(self, metadata: CronBindingMetadata, context: ComponentContext) -> None:
        self.name = context.name
        self.spec = metadata.schedule
        self.schedule: Schedule = parse_schedule(metadata.schedule)

    @classmethod
    def create(cls, metadata: CronBindingMetadata, context: ComponentContext) -> Component:
        return cls(metadata, context)

    async def read(self, handler: BindingHandler) -> None:
        after = datetime.now(UTC)
        while True:
            fire = self.schedule.next_after(after)
            if fire is None:
                log.warning("binding %r: schedule %r never fires again", self.name, self.spec)
                return
            await _sleep_until(fire)
            fired = datetime.now(UTC)
            event = BindingEvent(
                b"",
                {"timeZone": self.schedule.zone_name, "readTimeUTC": go_time_string(fired)},
            )
            try:
                await handler(event)
            except Exception as err:
                log.warning(
                    "binding %r: the tick at %s was not processed (%s)",
                    self.name,
                    go_time_string(fired),
                    _describe(err),
                )
            # The next tick after the one that fired, or after now when the app took longer.
            after = max(fire, datetime.now(UTC))


async def _sleep_until(moment: datetime) -> None:
    """Sleep until the wall clock reads `moment`, in slices of at most MAX_SLEEP."""
    for _ in iter(int, 1):
        wait = (moment - datetime.now(UTC)).total_seconds()
        if wait <= 0:
            return
        await anyio.sleep(min(wait, MAX_SLEEP))


def _describe(err: Any) -> str:
    if isinstance(err, LayottoError):
        return err.message
    return type(err).__name__
