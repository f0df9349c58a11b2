"""Scheduling arithmetic (next due time, failure backoff, how long a source may push a
retry out) and the ManualClock the other layers move: pure, no database."""

from __future__ import annotations

import datetime as dt
import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_sync.scheduling import (
    MAX_RETRY_DELAY_FLOOR,
    failure_backoff,
    next_sync_at,
    retry_delay,
)
from connector_sync.store.base import ManualClock


@given(
    failures=st.integers(min_value=1, max_value=10_000),
    interval=st.integers(min_value=1, max_value=10**8),
    base=st.floats(min_value=0.001, max_value=10**5),
    rand=st.floats(min_value=0, max_value=0.999999),
)
def test_backoff_is_positive_capped_by_interval_and_jittered_down(
    failures: int, interval: int, base: float, rand: float
) -> None:
    delay = failure_backoff(failures, interval, base=base, rand=lambda: rand)
    exact = min(interval, base * 2.0 ** min(failures - 1, 62))
    assert 0 < delay <= interval
    assert exact * 0.75 - 1e-9 <= delay <= exact + 1e-9


@given(failures=st.integers(min_value=1, max_value=40), interval=st.integers(1, 10**6))
def test_backoff_never_shrinks_as_failures_grow(failures: int, interval: int) -> None:
    no_jitter = {"jitter": 0.0}
    assert failure_backoff(failures + 1, interval, **no_jitter) >= failure_backoff(
        failures, interval, **no_jitter
    )


def test_backoff_rejects_nonsense() -> None:
    with pytest.raises(ValueError):
        failure_backoff(0, 60)
    with pytest.raises(ValueError):
        failure_backoff(1, 0)


UTC_TIMES = st.datetimes(
    min_value=dt.datetime(2000, 1, 1), max_value=dt.datetime(2200, 1, 1), timezones=st.just(dt.UTC)
)


@given(finished=UTC_TIMES, interval=st.integers(1, 10**8))
def test_next_sync_after_success_is_one_interval_later(
    finished: dt.datetime, interval: int
) -> None:
    assert next_sync_at(finished, interval) - finished == dt.timedelta(seconds=interval)


@given(
    finished=UTC_TIMES,
    interval=st.integers(1, 10**8),
    failures=st.integers(1, 1000),
    rand=st.floats(0, 0.999999),
)
def test_next_sync_after_failure_is_soon_but_never_beyond_one_interval(
    finished: dt.datetime, interval: int, failures: int, rand: float
) -> None:
    due = next_sync_at(finished, interval, failures, rand=lambda: rand)
    assert finished < due <= finished + dt.timedelta(seconds=interval)


@given(
    failures=st.integers(1, 1000),
    interval=st.integers(1, 10**8),
    retry_after=st.floats(allow_nan=True, allow_infinity=True),
    rand=st.floats(0, 0.999999),
)
def test_retry_delay_honours_a_longer_retry_after_within_a_cap(
    failures: int, interval: int, retry_after: float, rand: float
) -> None:
    backoff = failure_backoff(failures, interval, rand=lambda: rand)
    delay = retry_delay(failures, interval, retry_after, rand=lambda: rand)
    cap = max(interval, MAX_RETRY_DELAY_FLOOR)
    assert 0 < delay <= cap
    if math.isfinite(retry_after) and retry_after > backoff:
        assert delay == min(retry_after, cap)  # the source asked for longer
    else:
        assert delay == backoff  # NaN, infinity, negative or shorter: our backoff


def test_retry_delay_caps_what_a_source_asks_for() -> None:
    no_jitter = {"jitter": 0.0}
    assert retry_delay(1, 3600, 900, **no_jitter) == 900
    assert retry_delay(1, 3600, 10**12, **no_jitter) == MAX_RETRY_DELAY_FLOOR
    assert retry_delay(1, 10**7, 10**12, **no_jitter) == 10**7  # a long interval caps it
    assert retry_delay(1, 3600, -5, **no_jitter) == 60


def test_manual_clock_stands_still_until_moved() -> None:
    start = dt.datetime(2026, 1, 1, 12, 0, tzinfo=dt.UTC)
    clock = ManualClock(start)
    assert clock() == clock() == start
    assert clock.advance(90.5) == clock() == start + dt.timedelta(seconds=90.5)
    default = ManualClock()()
    assert default.tzinfo is not None and default.microsecond == 0
    assert abs(default - dt.datetime.now(dt.UTC)) < dt.timedelta(seconds=5)
