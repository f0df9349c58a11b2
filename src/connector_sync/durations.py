"""Durations as people write and read them: `24h`, `10m`, `90` (seconds) in; `10m 03s` out."""

from __future__ import annotations

import math
import re

from connector_sync.constants import MAX_SECONDS
from connector_sync.exceptions import BadInput

_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*([smhdw]?)\s*", re.IGNORECASE)


def parse_duration(text: str, what: str = "duration") -> float:
    """Seconds from `90`, `90s`, `10m`, `1.5h`, `24h`, `7d` or `2w`; more than zero, at
    most ten years (MAX_SECONDS).

    Raises:
        BadInput: anything else (the message names `what`).
    """
    match = _DURATION.fullmatch(text)
    seconds = float(match[1]) * _UNITS[match[2].lower()] if match else math.nan
    if not match or not 0 < seconds < math.inf:
        raise BadInput(
            f"{what} {text!r} is not a duration: give seconds or a number with s, m, h, d or w "
            "(e.g. 90, 10m, 24h)",
            param=what,
        )
    if seconds > MAX_SECONDS:
        raise BadInput(f"{what} {text!r} is longer than ten years: give less", param=what)
    return seconds


def human_seconds(seconds: float) -> str:
    """`4.2s`, `42s`, `10m 03s`, `10m`, `2h 05m`, `24h`, `3d 4h`: a duration as people read it."""
    if seconds < 10:
        return f"{seconds:.1f}s"
    whole = int(seconds)
    # Days only from two days on: a day's window reads better as 24h.
    days, rest = divmod(whole, 86400) if whole >= 172800 else (0, whole)
    hours, rest = divmod(rest, 3600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h" if hours else f"{days}d"
    if hours:
        return f"{hours}h {minutes:02d}m" if minutes else f"{hours}h"
    if minutes:
        return f"{minutes}m {secs:02d}s" if secs else f"{minutes}m"
    return f"{secs}s"
