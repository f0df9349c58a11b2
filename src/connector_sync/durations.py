"""Human durations (30s, 15m, 1h30m, 1d, 2w or plain seconds) for every option that asks for
seconds."""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from typing import Any

from connector_sync.constants import MAX_SECONDS
from connector_sync.exceptions import BadInput

#: Seconds per unit, largest first: the order a duration must write its parts in. A
#: duration is written back in days at most (`2w` reads as, and shows as, `14d`).
UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}
_READ_UNITS = {"w": 7 * 86400, **UNITS}

_NUMBER = r"(?:\d+(?:\.\d*)?|\.\d+)"
_PLAIN = re.compile(_NUMBER)
_WITH_UNITS = re.compile("".join(f"(?:(?P<{unit}>{_NUMBER}){unit})?" for unit in _READ_UNITS))
_HINT = "use seconds (300, 2.5) or numbers with units w, d, h, m, s (30s, 15m, 1h30m, 1d, 2w)"


def parse_duration(text: str) -> float:
    """Seconds in `text`: `300`, `2.5`, `30s`, `15m`, `1h`, `1d`, `2w`, or parts like
    `1h30m` (each unit at most once, largest first).

    Raises:
        BadInput: with a one-line reason, for anything else (empty, negative, `15x`, `nan`).
    """
    stripped = text.strip()
    if _PLAIN.fullmatch(stripped):
        seconds = float(stripped)
    else:
        match = _WITH_UNITS.fullmatch(stripped)
        if not stripped or match is None:
            reason = "is negative" if stripped.startswith("-") else "is not a duration"
            raise BadInput(f"{_quoted(text)} {reason}: {_HINT}")
        seconds = sum(
            float(part) * _READ_UNITS[unit] for unit, part in match.groupdict().items() if part
        )
    if not math.isfinite(seconds):
        raise BadInput(f"{_quoted(text)} is too long a duration: {_HINT}")
    return seconds


def _quoted(text: str) -> str:
    """The bad value as the error shows it: quoted, and cut short if long."""
    return repr(text if len(text) <= 40 else f"{text[:37]}...")


def format_duration(seconds: float) -> str:
    """The shortest spelling parse_duration reads back (90 -> `1m30s`, 61.5 -> `1m1.5s`),
    fractions of a second rounded to the millisecond."""
    if seconds < 0 or not math.isfinite(seconds):
        raise ValueError(f"not a duration: {seconds!r}")
    whole, milliseconds = divmod(round(seconds * 1000), 1000)
    parts = []
    for unit, size in UNITS.items():
        count, whole = divmod(whole, size)
        if unit == "s" and milliseconds:
            parts.append(f"{count}.{milliseconds:03d}".rstrip("0") + unit)
        elif count:
            parts.append(f"{count}{unit}")
    return "".join(parts) or "0s"


def duration_parser(
    *, min: float = 0, max: float = MAX_SECONDS, whole_seconds: bool = False
) -> Callable[[Any], float]:
    """A Typer `parser=` for an option in seconds: reads a duration (or a number given as the
    default), checks it is within [min, max] (and whole, if asked), and reports a bad value
    as a usage error naming the option."""

    def parse(value: Any) -> float:
        import typer

        try:
            seconds = float(value) if isinstance(value, int | float) else parse_duration(value)
        except BadInput as exc:
            raise typer.BadParameter(exc.message) from None
        if not min <= seconds <= max:
            raise typer.BadParameter(
                f"{value!r} is out of range: from {format_duration(min)} to {format_duration(max)}"
            )
        if whole_seconds and seconds != int(seconds):
            raise typer.BadParameter(f"{value!r} is not a whole number of seconds")
        return int(seconds) if whole_seconds else seconds

    return parse


def duration_option(
    *,
    help: str,
    min: float = 0,
    max: float = MAX_SECONDS,
    default: float | None = None,
    envvar: str | None = None,
    whole_seconds: bool = False,
) -> Any:
    """A typer.Option that reads a duration; `default` (the parameter's own) is only shown."""
    import typer

    shown = f" [default: {format_duration(default)}]" if default is not None else ""
    return typer.Option(
        parser=duration_parser(min=min, max=max, whole_seconds=whole_seconds),
        metavar="DURATION",
        envvar=envvar,
        show_default=False,
        help=f"{help.rstrip('.')}: 30s, 15m, 1h, 1d or seconds{shown}.",
    )


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
