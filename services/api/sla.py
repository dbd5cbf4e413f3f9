"""SLA arithmetic (no framework): deadlines and elapsed working time.

A :class:`~shared.business_hours.Calendar` says when the clock runs; ``None`` means
around the clock.
"""

from datetime import datetime, timedelta

from shared.business_hours import Calendar


def add_working_time(start: datetime, working: timedelta, calendar: Calendar | None) -> datetime:
    """Deadline ``working`` after ``start``: wall-clock time, or business hours."""
    return start + working if calendar is None else calendar.add(start, working)


def working_time_between(start: datetime, end: datetime, calendar: Calendar | None) -> timedelta:
    """Time that counts between ``start`` and ``end``."""
    if calendar is None:
        return max(end - start, timedelta())
    return calendar.elapsed(start, end)
