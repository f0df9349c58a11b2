"""Writing a dataset's records out: JSON Lines as stored, or CSV with a column per field.

Both take the records as chunks of JSON text (Store.read_records) and hold one chunk
at a time, so memory stays flat however large the dataset.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Iterable, Sequence
from typing import Any, TextIO

FORMATS = ("jsonl", "csv")

_compact = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode


def write_jsonl(chunks: Iterable[list[str]], out: TextIO) -> int:
    """One record per line, each as the database gives it back; returns how many."""
    count = 0
    for chunk in chunks:
        out.write("\n".join(chunk))
        out.write("\n")
        count += len(chunk)
    return count


def csv_cell(value: Any) -> str:
    """A field's value in a CSV cell: text as it is, null (or no such field) empty,
    numbers and booleans as JSON spells them, objects and arrays as JSON text."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return _compact(value)


def write_csv(chunks: Iterable[list[str]], columns: Sequence[str], out: TextIO) -> int:
    """A header of `columns` (the union of the records' top-level fields), then a row per
    record; returns how many records."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(columns)
    count = 0
    loads = json.loads
    for chunk in chunks:
        for text in chunk:
            record = loads(text)
            writer.writerow([csv_cell(record.get(name)) for name in columns])
        count += len(chunk)
    return count
