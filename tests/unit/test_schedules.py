"""Cron schedules, durations and edit-time scheduling: pure functions, no database."""

from __future__ import annotations

import datetime as dt
from zoneinfo import ZoneInfo

import pytest
from croniter import croniter
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_sync.cli.inputs import config_assignment
from connector_sync.exceptions import BadInput
from connector_sync.export import csv_cell
from connector_sync.scheduling import (
    ScheduleError,
    check_schedule,
    next_slot,
    next_sync_after_edit,
)

UTC = dt.UTC


def at(text: str, tz: str = "UTC") -> dt.datetime:
    return dt.datetime.fromisoformat(text).replace(tzinfo=ZoneInfo(tz))


def test_next_quarter_hour_and_aliases() -> None:
    assert next_slot(at("2026-03-01T10:07:30"), "*/15 * * * *") == at("2026-03-01T10:15:00")
    # On a slot: the next one, never the same instant.
    assert next_slot(at("2026-03-01T10:15:00"), "*/15 * * * *") == at("2026-03-01T10:30:00")
    assert next_slot(at("2026-03-01T10:07:30"), "@hourly") == at("2026-03-01T11:00:00")
    assert next_slot(at("2026-03-01T10:07:30"), "@daily") == at("2026-03-02T00:00:00")


def test_a_schedule_is_read_in_its_time_zone_and_answered_in_utc() -> None:
    slot = next_slot(at("2026-01-15T06:00:00"), "0 9 * * *", "Europe/Berlin")
    assert slot == at("2026-01-15T08:00:00")  # 09:00 in Berlin, winter time
    assert slot.tzinfo == UTC
    summer = next_slot(at("2026-07-15T06:00:00"), "0 9 * * *", "Europe/Berlin")
    assert summer == at("2026-07-15T07:00:00")


def test_missed_slots_give_one_next_time_not_one_per_slot() -> None:
    # Down from 10:00 to 13:02: the connector is due once, now; then 13:15.
    assert next_slot(at("2026-03-01T10:00:00"), "*/15 * * * *") < at("2026-03-01T13:02:00")
    assert next_slot(at("2026-03-01T13:02:00"), "*/15 * * * *") == at("2026-03-01T13:15:00")


@pytest.mark.parametrize(
    ("schedule", "reason"),
    [
        ("61 * * * *", "out of range"),
        ("* * * *", "has 4 fields"),
        ("* * * * * *", "has 6 fields"),
        ("@reboot", "not an alias"),
        ("0 0 31 2 *", "never fires"),
        ("every hour", "has 2 fields"),
    ],
)
def test_bad_schedules_say_why(schedule: str, reason: str) -> None:
    with pytest.raises(ScheduleError, match=reason):
        check_schedule(schedule)


def test_bad_time_zone() -> None:
    with pytest.raises(ScheduleError, match="not an IANA time zone"):
        check_schedule("@hourly", "Mars/Olympus")
    with pytest.raises(ScheduleError, match="not an IANA time zone"):
        check_schedule("@hourly", "../../etc/passwd")


# -- the property the issue asks for: in the future, on the schedule, none skipped ---------

FIELD = st.one_of(
    st.just("*"),
    st.builds(lambda n: f"*/{n}", st.integers(1, 30)),
)
SCHEDULES = st.one_of(
    st.builds(
        lambda minute, hour: f"{minute} {hour} * * *",
        st.one_of(st.integers(0, 59).map(str), FIELD),
        st.one_of(st.integers(0, 23).map(str), FIELD),
    ),
    st.builds(
        lambda minute, weekday: f"{minute} 3 * * {weekday}",
        st.integers(0, 59).map(str),
        st.sampled_from(["*", "1-5", "0,6", "mon"]),
    ),
    st.sampled_from(["@hourly", "@daily", "@weekly", "@monthly", "*/15 * * * *", "0 0 1 1 *"]),
)
ZONES = st.sampled_from(["UTC", "Europe/Berlin", "America/New_York", "Asia/Kolkata", None])
NOWS = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2090, 1, 1), timezones=st.just(UTC)
)


@settings(max_examples=300, deadline=None)
@given(now=NOWS, schedule=SCHEDULES, timezone=ZONES)
def test_next_slot_is_in_the_future_and_on_the_schedule(
    now: dt.datetime, schedule: str, timezone: str | None
) -> None:
    slot = next_slot(now, schedule, timezone)
    assert slot > now
    assert slot.tzinfo == UTC
    local = slot.astimezone(ZoneInfo(timezone or "UTC"))
    # On the schedule: croniter matches the wall-clock time, except a slot that the
    # clock skipped (spring forward), which runs when the clock jumps, at the top of
    # the hour that follows the gap.
    jumped = local.minute == 0 and local.utcoffset() != (local - dt.timedelta(hours=1)).utcoffset()
    assert croniter.match(schedule, local.replace(tzinfo=None)) or jumped
    # None skipped: no slot lies between now and the one returned.
    previous = croniter(schedule, local).get_prev(dt.datetime)
    assert previous <= now or previous.astimezone(UTC) <= now


# -- edits ---------------------------------------------------------------------------------

NOW = at("2026-03-01T12:00:00")


def edited(**kw: object) -> dt.datetime:
    args: dict[str, object] = {
        "now": NOW, "current": NOW + dt.timedelta(hours=1), "last_sync_at": NOW,
        "consecutive_failures": 0, "interval": 3600, "schedule": None, "timezone": None,
        "syncing": False,
    }  # fmt: skip
    args.update(kw)
    return next_sync_after_edit(**args)  # type: ignore[arg-type]


def test_a_shorter_interval_makes_it_due_sooner() -> None:
    assert edited(interval=600) == NOW + dt.timedelta(minutes=10)
    synced_long_ago = NOW - dt.timedelta(days=1)
    assert edited(interval=600, last_sync_at=synced_long_ago) < NOW  # due at once


def test_a_pending_retry_is_not_pushed_later_and_a_new_connector_stays_due() -> None:
    retry = NOW + dt.timedelta(minutes=2)
    assert edited(interval=7200, consecutive_failures=2, current=retry) == retry
    assert edited(last_sync_at=None, current=NOW - dt.timedelta(minutes=5)) < NOW


def test_a_schedule_gives_its_next_slot_and_a_syncing_connector_counts_now() -> None:
    assert edited(schedule="*/15 * * * *") == at("2026-03-01T12:15:00")
    assert edited(syncing=True, interval=60) == NOW + dt.timedelta(seconds=60)


# -- command-line input ----------------------------------------------------------------------


def test_set_values_are_json_when_they_are_json_else_text() -> None:
    assert config_assignment("records=5") == ("records", 5)
    assert config_assignment("path=orders.csv") == ("path", "orders.csv")
    assert config_assignment('path="2024"') == ("path", "2024")
    assert config_assignment("headers.Accept=text/csv") == ("headers.Accept", "text/csv")
    assert config_assignment("x=NaN") == ("x", "NaN")  # not JSON: text
    with pytest.raises(BadInput, match="key=value"):
        config_assignment("novalue")


def test_csv_cells() -> None:
    assert [csv_cell(v) for v in ("a,b", None, 1, 2.5, True, {"k": [1]}, [1, "x"])] == [
        "a,b", "", "1", "2.5", "true", '{"k":[1]}', '[1,"x"]',
    ]  # fmt: skip
