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
