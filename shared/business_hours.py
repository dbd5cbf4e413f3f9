"""Business hours: weekly opening times in a time zone, with holidays (no framework).

One calendar for every use: the responder's rules ask :meth:`Calendar.is_open`, the
api's SLA clocks count working time with :meth:`Calendar.add` and
:meth:`Calendar.elapsed`.

A range may cross midnight (``22:00-02:00`` on Monday runs until Tuesday 02:00).
A holiday closes the ranges that *start* on that local date; a night shift that
began the evening before still runs into it.
"""

import functools
from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, field_validator

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SEARCH_DAYS = 366 * 2

HoursRange = Annotated[str, Field(pattern=r"^\d{2}:\d{2}-\d{2}:\d{2}$", examples=["09:00-18:00"])]


def _parse_clock(text: str) -> time:
    hours, minutes = (int(part) for part in text.split(":"))
    if hours == 24 and minutes == 0:
        return time.max
    return time(hours, minutes)


@functools.lru_cache(maxsize=256)
def parse_range(text: str) -> tuple[time, time]:
    """``"09:00-18:00"`` as (start, end); ``24:00`` is the end of the day (parsed once per
    text: every bot decision reads the calendar)."""
    start, end = text.split("-")
    return _parse_clock(start), _parse_clock(end)


class Calendar(BaseModel):
    """When a team is at work: weekly ranges in ``timezone``, minus ``holidays``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    timezone: str = "UTC"
    hours: dict[str, list[HoursRange]] = Field(
        default_factory=dict, description="Weekday (mon..sun) to opening ranges; absent: closed."
    )
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as error:
            raise ValueError(f"unknown time zone {value!r}") from error
        return value

    @field_validator("hours")
    @classmethod
    def _valid_hours(cls, value: dict[str, list[str]]) -> dict[str, list[str]]:
        for day, ranges in value.items():
            if day not in WEEKDAYS:
                raise ValueError(f"unknown weekday {day!r}; use one of {', '.join(WEEKDAYS)}")
            for text in ranges:
                try:
                    start, end = parse_range(text)
                except ValueError as error:
                    raise ValueError(f"{day}: bad range {text!r} ({error})") from error
                if start == end:
                    raise ValueError(f"{day}: empty range {text!r}")
        return value

    def is_open(self, at: datetime) -> bool:
        """Whether ``at`` (timezone-aware) falls inside business hours."""
        local = at.astimezone(ZoneInfo(self.timezone))
        today, clock = local.date(), local.time()
        for start, end in self._ranges(today):
            if start < end and start <= clock < end:
                return True
            if start > end and clock >= start:  # crosses midnight: the evening part
                return True
        yesterday = today - timedelta(days=1)
        return any(start > end and clock < end for start, end in self._ranges(yesterday))

    def windows(self, day: date) -> list[tuple[datetime, datetime]]:
        """Working windows (UTC) that start on local ``day``."""
        zone = ZoneInfo(self.timezone)
        result = []
        for start, end in self._ranges(day):
            begin = datetime.combine(day, start, zone)
            if end == time.max:
                finish = datetime.combine(day + timedelta(days=1), time(0), zone)
            elif end <= start:
                finish = datetime.combine(day + timedelta(days=1), end, zone)
            else:
                finish = datetime.combine(day, end, zone)
            result.append((begin.astimezone(UTC), finish.astimezone(UTC)))
        return result

    def _windows_from(self, moment: datetime) -> Iterator[tuple[datetime, datetime]]:
        # Start a day early: yesterday's window may cross midnight into ``moment``.
        local_day = moment.astimezone(ZoneInfo(self.timezone)).date() - timedelta(days=1)
        for offset in range(MAX_SEARCH_DAYS):
            yield from self.windows(local_day + timedelta(days=offset))

    def add(self, start: datetime, working: timedelta) -> datetime:
        """The moment ``working`` time of business hours after ``start``."""
        remaining = working
        for window_start, window_end in self._windows_from(start):
            begin = max(window_start, start)
            if begin >= window_end:
                continue
            available = window_end - begin
            if remaining <= available:
                return begin + remaining
            remaining -= available
        raise ValueError("the calendar has no working time in the next two years")

    def elapsed(self, start: datetime, end: datetime) -> timedelta:
        """Business time between ``start`` and ``end``."""
        total = timedelta()
        if end <= start:
            return total
        for window_start, window_end in self._windows_from(start):
            if window_start >= end:
                break
            begin, finish = max(window_start, start), min(window_end, end)
            if finish > begin:
                total += finish - begin
        return total

    def _ranges(self, day: date) -> list[tuple[time, time]]:
        if day in self.holidays:
            return []
        return [parse_range(text) for text in self.hours.get(WEEKDAYS[day.weekday()], [])]


ALWAYS_OPEN = Calendar(hours={day: ["00:00-24:00"] for day in WEEKDAYS})
