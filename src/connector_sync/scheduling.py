"""Scheduling arithmetic: pure functions, no I/O, no clock of their own."""

from __future__ import annotations

import datetime as dt
import math
import random
from collections.abc import Callable

#: First retry delay after a failure, in seconds; it doubles with every further failure.
DEFAULT_BACKOFF_BASE = 60.0
#: Whatever a source asks for (Retry-After), a failed connector is due again within its
#: interval or this many seconds, whichever is longer: a source cannot park it for years.
MAX_RETRY_DELAY_FLOOR = 86400.0
#: A retry comes up to this fraction earlier than the exponential delay, at random,
#: so connectors that failed together do not all retry in the same second.
DEFAULT_JITTER = 0.25


def failure_backoff(
    failures: int,
    interval: float,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds until a connector that has failed `failures` times in a row is due again.

    min(interval, base * 2**(failures - 1)), shortened by up to `jitter` of itself.
    Never more than the interval (a failing connector is retried at least as often
    as a healthy one is synced) and always more than zero.
    """
    if failures < 1:
        raise ValueError("failures must be at least 1")
    if interval <= 0 or base <= 0:
        raise ValueError("interval and base must be positive")
    if not 0 <= jitter < 1:
        raise ValueError("jitter must be in [0, 1)")
    exponent = min(failures - 1, 62)  # 2**62 * base is beyond any interval
    delay = min(float(interval), base * 2.0**exponent)
    return delay * (1.0 - jitter * rand())


def next_sync_at(
    finished_at: dt.datetime,
    interval: float,
    failures: int = 0,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> dt.datetime:
    """When a connector whose sync ended at `finished_at` is due again.

    After a success (`failures` == 0) one interval later; after the n-th failure in a
    row, the failure backoff later (never later than one interval).
    """
    if failures == 0:
        if interval <= 0:
            raise ValueError("interval must be positive")
        return finished_at + dt.timedelta(seconds=interval)
    delay = failure_backoff(failures, interval, base=base, jitter=jitter, rand=rand)
    return finished_at + dt.timedelta(seconds=delay)


def retry_delay(
    failures: int,
    interval: float,
    retry_after: float = 0.0,
    *,
    base: float = DEFAULT_BACKOFF_BASE,
    jitter: float = DEFAULT_JITTER,
    rand: Callable[[], float] = random.random,
) -> float:
    """Seconds until a connector whose `failures`-th sync in a row failed is due again.

    The failure backoff, or longer when the source asked for longer (`retry_after`, e.g.
    HTTP Retry-After); never more than max(interval, MAX_RETRY_DELAY_FLOOR), whatever the
    source sent (a NaN, an infinity or a negative number counts as not asked).
    """
    delay = failure_backoff(failures, interval, base=base, jitter=jitter, rand=rand)
    if math.isfinite(retry_after) and retry_after > delay:
        delay = retry_after
    return min(delay, max(float(interval), MAX_RETRY_DELAY_FLOOR))


# -- cron schedules (croniter, imported when a schedule is used: it is slow to import) --

#: The @-aliases a schedule may be instead of five fields.
CRON_ALIASES = ("@yearly", "@annually", "@monthly", "@weekly", "@daily", "@midnight", "@hourly")
#: The time zone a schedule without one is read in.
DEFAULT_TIMEZONE = "UTC"


class ScheduleError(ValueError):
    """A cron expression or time zone that cannot be used; the message says why."""


def zone(timezone: str | None) -> dt.tzinfo:
    """The IANA time zone `timezone` (UTC for None).

    Raises:
        ScheduleError: no such time zone.
    """
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    name = timezone or DEFAULT_TIMEZONE
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):  # ValueError: a path-like or empty name
        raise ScheduleError(
            f"'{name}' is not an IANA time zone; e.g. UTC, Europe/Berlin, America/New_York"
        ) from None


def check_schedule(schedule: str, timezone: str | None = None) -> None:
    """Raises ScheduleError, with croniter's reason, unless `schedule` is five cron fields
    (minute hour day-of-month month day-of-week) or an @-alias that fires at some time, and
    `timezone` is an IANA time zone."""
    from croniter import CroniterError

    text = schedule.strip()
    if text.startswith("@"):
        if text.lower() not in CRON_ALIASES:
            raise ScheduleError(f"'{text}' is not an alias; use one of {', '.join(CRON_ALIASES)}")
    elif len(text.split()) != 5:
        raise ScheduleError(
            f"'{text}' has {len(text.split())} fields; give 5 (minute hour day month weekday), "
            "e.g. '*/15 * * * *', or an alias such as @hourly"
        )
    try:
        next_slot(dt.datetime.now(dt.UTC), text, timezone)
    except CroniterError as exc:
        reason = "it never fires" if "find next date" in str(exc) else str(exc)
        raise ScheduleError(f"'{text}' is not a usable cron expression: {reason}") from None


def next_slot(after: dt.datetime, schedule: str, timezone: str | None = None) -> dt.datetime:
    """The first time strictly after `after` that `schedule` names, read in `timezone`
    (UTC for None); UTC-aware.

    A connector that missed slots (its worker was down, its sync ran long) is due once,
    at the next slot after the time it is asked from, not once per missed slot. Daylight
    saving follows croniter: a slot the clock skips runs when the clock jumps; in the
    hour that repeats, each repeated slot runs.
    """
    from croniter import croniter

    local = after.astimezone(zone(timezone))
    slots = croniter(schedule.strip(), local)
    slot: dt.datetime = slots.get_next(dt.datetime)
    while slot <= after:  # never the past, whatever a daylight-saving change does
        slot = slots.get_next(dt.datetime)
    return slot.astimezone(dt.UTC)


def next_sync_after_edit(
    *,
    now: dt.datetime,
    current: dt.datetime | None,
    last_sync_at: dt.datetime | None,
    consecutive_failures: int,
    interval: int,
    schedule: str | None,
    timezone: str | None,
    syncing: bool,
) -> dt.datetime:
    """When a connector whose interval, schedule or time zone was just edited is due.

    A schedule: its next slot after now. An interval: one interval after the last sync
    (so a shortened interval makes it due sooner, at once if that time has passed); a
    connector never synced stays due now; a pending retry after a failure is not pushed
    later. A connector being synced counts its sync as the last one (now).
    """
    if schedule is not None:
        return next_slot(now, schedule, timezone)
    if syncing:
        return now + dt.timedelta(seconds=interval)
    if last_sync_at is None:
        return min(current or now, now)
    due = last_sync_at + dt.timedelta(seconds=interval)
    if consecutive_failures and current is not None:
        return min(current, due)
    return due
