"""Business hours: time zones, ranges across midnight, holidays."""

from datetime import UTC, date, datetime

import pytest
from pydantic import ValidationError

from shared.business_hours import Calendar

NIGHT_SHIFT = Calendar(
    timezone="America/New_York",
    hours={"mon": ["22:00-02:00"], "tue": ["09:00-17:00"]},
    holidays=[date(2026, 12, 1)],
)


def ny(day: int, hour: int, minute: int = 0) -> datetime:
    from zoneinfo import ZoneInfo

    return datetime(2026, 11, day, hour, minute, tzinfo=ZoneInfo("America/New_York"))


@pytest.mark.parametrize(
    ("at", "is_open"),
    [
        (ny(23, 21, 59), False),  # Monday before the night shift
        (ny(23, 22, 0), True),  # Monday 22:00
        (ny(24, 1, 59), True),  # Tuesday 01:59, still Monday's shift
        (ny(24, 2, 0), False),  # the shift ended
        (ny(24, 9, 0), True),
        (ny(24, 17, 0), False),  # the end is exclusive
    ],
)
def test_range_across_midnight(at: datetime, is_open: bool) -> None:
    assert NIGHT_SHIFT.is_open(at) is is_open


def test_time_zone_is_applied_to_utc_instants() -> None:
    # 03:30 UTC on Tuesday is 22:30 Monday in New York (EST, UTC-5).
    assert NIGHT_SHIFT.is_open(datetime(2026, 11, 24, 3, 30, tzinfo=UTC))
    assert not NIGHT_SHIFT.is_open(datetime(2026, 11, 24, 12, 0, tzinfo=UTC))  # 07:00 NY


def test_holiday_closes_the_day_but_not_the_shift_that_started_before() -> None:
    calendar = Calendar(
        timezone="UTC",
        hours={"mon": ["20:00-04:00"], "tue": ["09:00-17:00"]},
        holidays=[date(2026, 12, 1)],  # a Tuesday
    )
    assert calendar.is_open(datetime(2026, 12, 1, 3, 0, tzinfo=UTC))  # Monday's shift runs on
    assert not calendar.is_open(datetime(2026, 12, 1, 10, 0, tzinfo=UTC))


def test_holiday_evening_shift_does_not_start() -> None:
    calendar = Calendar(
        timezone="UTC", hours={"mon": ["20:00-04:00"]}, holidays=[date(2026, 11, 30)]
    )
    assert not calendar.is_open(datetime(2026, 11, 30, 21, 0, tzinfo=UTC))
    assert not calendar.is_open(datetime(2026, 12, 1, 1, 0, tzinfo=UTC))


def test_dst_change_keeps_local_hours() -> None:
    calendar = Calendar(timezone="Europe/London", hours={"mon": ["09:00-17:00"]})
    summer = datetime(2026, 6, 1, 8, 30, tzinfo=UTC)  # 09:30 BST
    winter = datetime(2026, 11, 30, 8, 30, tzinfo=UTC)  # 08:30 GMT
    assert calendar.is_open(summer)
    assert not calendar.is_open(winter)


def test_whole_day_range() -> None:
    calendar = Calendar(hours={"sun": ["00:00-24:00"]})
    assert calendar.is_open(datetime(2026, 11, 29, 23, 59, tzinfo=UTC))


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("timezone", "Mars/Olympus", "unknown time zone"),
        ("hours", {"someday": ["09:00-10:00"]}, "unknown weekday"),
        ("hours", {"mon": ["10:00-10:00"]}, "empty range"),
        ("hours", {"mon": ["25:00-26:00"]}, "bad range"),
    ],
)
def test_invalid_calendars_are_refused(field: str, value: object, message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Calendar.model_validate({field: value})
