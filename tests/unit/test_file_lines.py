"""The file connector splits CSV and JSON Lines files into lines a large chunk at a time:
whatever the line breaks (\\n, \\r\\n, \\r) and wherever a chunk ends (in a quoted field, between
\\r and \\n), it reads what csv and json read line by line, and bounds every line and record."""

from __future__ import annotations

import csv
import json
import random
from pathlib import Path
from typing import Any

import pytest

from connector_sync.connectors.file import FileConnector
from connector_sync.exceptions import PermanentError

# Several chunks of the reader (64 Ki characters each), so chunks end everywhere.
CHARS = 400_000


def read(path: Path, **config: Any) -> list[dict[str, Any]]:
    return list(FileConnector({"path": str(path), **config}).read())


def csv_text(seed: int, line_break: str) -> str:
    """A CSV file of rows with quoted commas, quotes and line breaks in fields."""
    rng = random.Random(seed)
    rows = ["id,text,memo" + line_break]
    n = 0
    while sum(map(len, rows)) < CHARS:
        n += 1
        text = "x" * rng.randrange(0, 300)
        memo = rng.choice(["", "plain", 'say "hi", there', f"two{line_break}lines", "a\r\nb\nc\rd"])
        rows.append(f'{n},{text},"{memo.replace(chr(34), chr(34) * 2)}"{line_break}')
    return "".join(rows)


@pytest.mark.parametrize("line_break", ["\n", "\r\n", "\r"])
@pytest.mark.parametrize("seed", [1, 2])
def test_csv_reads_as_csv_reads_it_line_by_line(tmp_path: Path, line_break: str, seed: int) -> None:
    path = tmp_path / "rows.csv"
    path.write_bytes(csv_text(seed, line_break).encode())
    with path.open(newline="", encoding="utf-8") as handle:
        expected = list(csv.DictReader(handle))
    assert len(expected) > 2000
    assert read(path) == expected


def jsonl_text(seed: int) -> str:
    rng = random.Random(seed)
    lines = []
    while sum(map(len, lines)) < CHARS:
        n = len(lines)
        value = {"n": n, "pad": "y" * rng.randrange(0, 200), "f": n / 7, "u": "ünï €"}
        if n % 97 == 0:
            value["big"] = 10**25 + n  # past 64 bits: must stay exact
        line = json.dumps(value, ensure_ascii=n % 2 == 0)
        lines.append(line + rng.choice(["\n", "\r\n", "\n\n", "\n  \n"]))
    return "".join(lines)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_jsonl_reads_as_json_reads_it_line_by_line(tmp_path: Path, seed: int) -> None:
    text = jsonl_text(seed)
    path = tmp_path / "rows.jsonl"
    path.write_bytes(text.encode())
    expected = [json.loads(line) for line in text.splitlines() if line.strip()]
    got = read(path)
    assert got == expected
    assert [type(r.get("big")) for r in got] == [type(r.get("big")) for r in expected]


def test_jsonl_names_the_line_of_an_error_past_the_first_chunk(tmp_path: Path) -> None:
    lines = [json.dumps({"n": n, "pad": "z" * 90}) for n in range(3000)]
    lines[2500] = '{"n": 2500, "oops"}'
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(PermanentError, match="line 2501: not valid JSON"):
        read(path)
    lines[2500] = '{"n": NaN}'  # json reads it (the sync then names the record)
    path.write_text("\n".join(lines) + "\n")
    assert read(path)[2500]["n"] != read(path)[2500]["n"]  # NaN


def open_record_line(text: str, first_line: int, limit: int) -> int:
    """The line at which a record starting at `first_line` passes `limit` characters."""
    chars = 0
    for number, line in enumerate(text.splitlines(keepends=True)[first_line - 1 :], first_line):
        chars += len(line)
        if chars > limit:
            return number
    raise AssertionError("the record is not that long")


@pytest.mark.parametrize("limit", [1_000, 70_000, 110_000])
def test_a_csv_record_over_lines_and_chunks_fails_at_the_line_that_passes_the_limit(
    tmp_path: Path, limit: int
) -> None:
    head = "id,memo\n" + "".join(f"{n},short\n" for n in range(1, 5000))
    # One field of 119,000 characters over 7,000 lines (csv's own limit is 131,072).
    text = head + '5000,"' + "many short lines\n" * 7_000 + '"\n'
    path = tmp_path / "open.csv"
    path.write_text(text)
    line = open_record_line(text, 5001, limit)
    with pytest.raises(PermanentError, match=f"line {line}: a record is longer than {limit}"):
        read(path, max_record_chars=limit)
    assert len(read(path, max_record_chars=len(text))) == 5000


@pytest.mark.parametrize("suffix", [".csv", ".jsonl"])
def test_a_long_line_past_the_first_chunk_is_named(tmp_path: Path, suffix: str) -> None:
    lines = ["a"] + [json.dumps({"n": n}) if suffix == ".jsonl" else str(n) for n in range(20_000)]
    lines[15_000] = json.dumps({"n": "x" * 5000}) if suffix == ".jsonl" else "x" * 5000
    path = tmp_path / f"long{suffix}"
    path.write_text("\n".join(lines[1 if suffix == ".jsonl" else 0 :]) + "\n")
    number = 15_000 if suffix == ".jsonl" else 15_001
    with pytest.raises(PermanentError, match=f"line {number}: a record is longer than 4000"):
        read(path, max_record_chars=4000)
