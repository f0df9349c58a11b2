"""Human durations: what parse_duration reads, what it refuses, and the option parser's bounds."""

from __future__ import annotations

import pytest
import typer
from hypothesis import given
from hypothesis import strategies as st

from connector_sync.constants import MAX_SECONDS
from connector_sync.durations import duration_parser, format_duration, parse_duration
from connector_sync.exceptions import BadInput


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("300", 300),
        ("2.5", 2.5),
        ("0", 0),
        (".5", 0.5),
        ("30s", 30),
        ("15m", 900),
        ("1h", 3600),
        ("1d", 86400),
        ("1h30m", 5400),
        ("1.5h", 5400),
        ("1d2h3m4s", 93784),
        ("2w", 14 * 86400),  # the docs' examples use it
        ("1w2d", 9 * 86400),
        ("2m0.5s", 120.5),
        (" 15m ", 900),
    ],
)
def test_reads_seconds_units_and_combinations(text: str, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    ("text", "reason"),
    [
        ("", "is not a duration"),
        ("15x", "is not a duration"),
        ("15M", "is not a duration"),
        ("1m1h", "is not a duration"),
        ("1h1h", "is not a duration"),
        ("1d1w", "is not a duration"),
        ("15 m", "is not a duration"),
        ("m", "is not a duration"),
        ("1e3", "is not a duration"),
        ("nan", "is not a duration"),
        ("inf", "is not a duration"),
        ("-5", "is negative"),
        ("-1m", "is negative"),
        ("9" * 400, "is too long a duration"),
    ],
)
def test_refuses_anything_else_in_one_line_that_says_what_to_write(text: str, reason: str) -> None:
    with pytest.raises(BadInput) as caught:
        parse_duration(text)
    message = caught.value.message
    assert reason in message
    assert "30s, 15m, 1h30m, 1d, 2w" in message
    assert "\n" not in message
    assert len(message) < 200  # a long bad value is cut short, not echoed whole


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (45, "45s"), (90, "1m30s"), (900, "15m"), (5400, "1h30m"), (86400, "1d")],
)
def test_formats_the_shortest_spelling(seconds: float, text: str) -> None:
    assert format_duration(seconds) == text


@given(st.integers(min_value=0, max_value=MAX_SECONDS))
def test_whole_seconds_round_trip(seconds: int) -> None:
    assert parse_duration(format_duration(seconds)) == seconds


@given(st.integers(min_value=0, max_value=MAX_SECONDS * 1000))
def test_milliseconds_round_trip(milliseconds: int) -> None:
    assert parse_duration(format_duration(milliseconds / 1000)) == pytest.approx(
        milliseconds / 1000, abs=1e-6
    )


@given(st.integers(0, 400), st.integers(0, 100), st.integers(0, 100), st.integers(0, 100))
def test_parts_add_up(days: int, hours: int, minutes: int, seconds: int) -> None:
    text = f"{days}d{hours}h{minutes}m{seconds}s"
    assert parse_duration(text) == days * 86400 + hours * 3600 + minutes * 60 + seconds


@given(st.text(max_size=20))
def test_any_text_is_a_duration_or_bad_input(text: str) -> None:
    try:
        seconds = parse_duration(text)
    except BadInput as exc:
        assert "\n" not in exc.message
    else:
        assert 0 <= seconds < float("inf")


def test_option_parser_enforces_bounds_and_names_them() -> None:
    parse = duration_parser(min=1, max=3600)
    assert parse("15m") == 900
    assert parse(900.0) == 900  # a default arrives as a number
    with pytest.raises(typer.BadParameter, match=r"'2h' is out of range: from 1s to 1h"):
        parse("2h")
    with pytest.raises(typer.BadParameter, match="'0' is out of range"):
        parse("0")
    with pytest.raises(typer.BadParameter, match="'soon' is not a duration"):
        parse("soon")


def test_option_parser_for_whole_seconds_returns_an_int() -> None:
    parse = duration_parser(min=1, whole_seconds=True)
    assert parse("1h") == 3600
    assert isinstance(parse("1h"), int)
    with pytest.raises(typer.BadParameter, match="not a whole number of seconds"):
        parse("2.5")


def test_weeks_are_written_back_as_days() -> None:
    assert format_duration(parse_duration("2w")) == "14d"
