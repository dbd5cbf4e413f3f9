"""Business-hours arithmetic: intervals, time zones, midnight, holidays."""

from datetime import UTC, date, datetime, timedelta

import pytest
from pydantic import ValidationError

from services.api.sla import add_working_time, working_time_between
from shared.business_hours import Calendar

WEEKDAYS_9_TO_5 = Calendar(
    timezone="Europe/Paris",
    hours={day: ["09:00-17:00"] for day in ("mon", "tue", "wed", "thu", "fri")},
    holidays=[date(2026, 12, 25)],
)


def paris(*args: int) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(*args, tzinfo=ZoneInfo("Europe/Paris")).astimezone(UTC)  # type: ignore[misc]


def test_around_the_clock_is_wall_time() -> None:
    start = datetime(2026, 11, 28, 23, 50, tzinfo=UTC)
    assert add_working_time(start, timedelta(hours=1), None) == start + timedelta(hours=1)


def test_deadline_within_the_same_working_day() -> None:
    assert WEEKDAYS_9_TO_5.add(paris(2026, 11, 24, 10, 0), timedelta(hours=2)) == paris(
        2026, 11, 24, 12, 0
    )


def test_deadline_rolls_over_the_night_and_the_weekend() -> None:
    friday_4pm = paris(2026, 11, 27, 16, 0)
    assert WEEKDAYS_9_TO_5.add(friday_4pm, timedelta(hours=2)) == paris(2026, 11, 30, 10, 0)


def test_message_before_opening_starts_counting_at_opening() -> None:
    assert WEEKDAYS_9_TO_5.add(paris(2026, 11, 24, 6, 30), timedelta(minutes=15)) == paris(
        2026, 11, 24, 9, 15
    )


def test_holidays_do_not_count() -> None:
    thursday_christmas_eve_4pm = paris(2026, 12, 24, 16, 0)
    # One hour on Thursday, Friday is Christmas, then the weekend: Monday 10:00.
    assert WEEKDAYS_9_TO_5.add(thursday_christmas_eve_4pm, timedelta(hours=2)) == paris(
        2026, 12, 28, 10, 0
    )


def test_interval_across_midnight() -> None:
    night_shift = Calendar(timezone="UTC", hours={"mon": ["22:00-06:00"]})
    monday_11pm = datetime(2026, 11, 23, 23, 0, tzinfo=UTC)
    assert night_shift.add(monday_11pm, timedelta(hours=3)) == datetime(
        2026, 11, 24, 2, 0, tzinfo=UTC
    )
    tuesday_1am = datetime(2026, 11, 24, 1, 0, tzinfo=UTC)
    assert night_shift.add(tuesday_1am, timedelta(hours=6)) == datetime(
        2026, 11, 30, 23, 0, tzinfo=UTC
    )


def test_elapsed_business_time_skips_closed_hours() -> None:
    friday_4pm, monday_10am = paris(2026, 11, 27, 16, 0), paris(2026, 11, 30, 10, 0)
    assert working_time_between(friday_4pm, monday_10am, WEEKDAYS_9_TO_5) == timedelta(hours=2)
    assert working_time_between(monday_10am, friday_4pm, WEEKDAYS_9_TO_5) == timedelta()


def test_calendar_refuses_unknown_zone_and_weekday() -> None:
    with pytest.raises(ValidationError, match="unknown time zone"):
        Calendar(timezone="Mars/Olympus")
    with pytest.raises(ValidationError, match="unknown weekday"):
        Calendar(hours={"someday": []})
