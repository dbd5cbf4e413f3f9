"""SLA arithmetic (no framework): business hours, deadlines, elapsed working time.

A :class:`Calendar` says when the clock runs: weekly intervals in a time zone,
minus holidays. ``None`` means around the clock. Intervals may cross midnight
(``22:00``-``06:00`` runs into the next day).
"""

from collections.abc import Iterator
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

from shared.events import Priority

WEEKDAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
MAX_SEARCH_DAYS = 366 * 2

FIRST_RESPONSE_TARGETS: dict[Priority, timedelta] = {
    Priority.URGENT: timedelta(minutes=15),
    Priority.HIGH: timedelta(hours=1),
    Priority.NORMAL: timedelta(hours=4),
    Priority.LOW: timedelta(hours=24),
}


class Interval(BaseModel):
    """Working time on one weekday, ``start`` to ``end`` (``end`` <= ``start`` crosses midnight)."""

    start: time
    end: time


class Calendar(BaseModel):
    """Business hours: weekly intervals in a time zone, and holidays (whole local days)."""

    timezone: str = "UTC"
    week: dict[str, list[Interval]] = Field(default_factory=dict)
    holidays: list[date] = Field(default_factory=list)

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"unknown time zone {value!r}") from exc
        return value

    @field_validator("week")
    @classmethod
    def _known_days(cls, value: dict[str, list[Interval]]) -> dict[str, list[Interval]]:
        unknown = set(value) - set(WEEKDAYS)
        if unknown:
            raise ValueError(f"unknown weekday(s) {sorted(unknown)}; use {', '.join(WEEKDAYS)}")
        return value

    def windows(self, day: date) -> list[tuple[datetime, datetime]]:
        """Working windows (UTC) that start on local ``day``."""
        if day in self.holidays:
            return []
        zone = ZoneInfo(self.timezone)
        result = []
        for interval in self.week.get(WEEKDAYS[day.weekday()], []):
            start = datetime.combine(day, interval.start, zone)
            end_day = day if interval.end > interval.start else day + timedelta(days=1)
            end = datetime.combine(end_day, interval.end, zone)
            result.append((start.astimezone(UTC), end.astimezone(UTC)))
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


def add_working_time(start: datetime, working: timedelta, calendar: Calendar | None) -> datetime:
    """Deadline ``working`` after ``start``: wall-clock time, or business hours."""
    return start + working if calendar is None else calendar.add(start, working)


def working_time_between(start: datetime, end: datetime, calendar: Calendar | None) -> timedelta:
    """Time that counts between ``start`` and ``end``."""
    if calendar is None:
        return max(end - start, timedelta())
    return calendar.elapsed(start, end)


def response_due(waiting_since: datetime, priority: Priority) -> datetime:
    """When a first response to a customer waiting since ``waiting_since`` is due by default."""
    return waiting_since + FIRST_RESPONSE_TARGETS[priority]
