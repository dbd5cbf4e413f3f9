"""SLA arithmetic (no framework): deadlines and elapsed working time.

A :class:`~shared.business_hours.Calendar` says when the clock runs; ``None`` means
around the clock.
"""

from datetime import datetime, timedelta

from shared.business_hours import Calendar
from shared.events import Priority

FIRST_RESPONSE_TARGETS: dict[Priority, timedelta] = {
    Priority.URGENT: timedelta(minutes=15),
    Priority.HIGH: timedelta(hours=1),
    Priority.NORMAL: timedelta(hours=4),
    Priority.LOW: timedelta(hours=24),
}


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
