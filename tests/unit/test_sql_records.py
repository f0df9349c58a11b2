"""sql: rows become records a column at a time, each value as json_safe makes it, and
the (column, type) pairs of what was made are kept for the schema."""

from __future__ import annotations

import datetime as dt
import decimal
import math
import uuid
from typing import Any

from connector_sync.connectors.sql import json_safe, records_of

AT = dt.datetime(2026, 3, 1, 12, 30, tzinfo=dt.UTC)
ROWS: list[tuple[Any, ...]] = [
    (1, 1.5, None, AT, decimal.Decimal("1E-7"), "x", b"\x01", uuid.UUID(int=1), 0.0),
    (2, None, 2.5, None, decimal.Decimal("2.50"), 3, None, None, math.inf),
    (3, math.nan, None, AT, None, None, b"", None, -0.0),
]
COLUMNS = ["id", "f", "g", "at", "dec", "mixed", "raw", "ref", "edge"]


def test_each_value_is_what_json_safe_makes_it() -> None:
    fields: set[tuple[str, type]] = set()
    records = records_of(COLUMNS, ROWS, fields)
    expected = [{c: json_safe(v) for c, v in zip(COLUMNS, row, strict=True)} for row in ROWS]
    assert records == expected
    assert records[2]["f"] == "nan" and records[1]["edge"] == "inf"
    assert records[0]["dec"] == "1E-7" and records[0]["raw"] == "01"
    assert fields == {(c, type(v)) for record in expected for c, v in record.items()}


def test_no_rows_no_records() -> None:
    fields: set[tuple[str, type]] = set()
    assert records_of(COLUMNS, [], fields) == [] and fields == set()
