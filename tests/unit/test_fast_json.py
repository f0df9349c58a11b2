"""orjson where it gives what json gives: records encoded (datasets.encode_batch) and
pages and lines parsed (connectors.jsontext) exactly as the json module would, NaN and
Infinity still a RecordError, integers past 64 bits still exact."""

from __future__ import annotations

import dataclasses
import datetime as dt
import decimal
import json
import math
import uuid
from typing import Any

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from connector_sync.connectors import jsontext
from connector_sync.datasets import encode_batch
from connector_sync.exceptions import RecordError

EXACT = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False, allow_nan=False)

# JSON-like values as plugins yield them, floats of every kind (NaN and infinities too),
# integers past 64 bits, text with surrogates and control characters.
scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True, allow_infinity=True)
    | st.text(max_size=8)
)
values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
)
records = st.dictionaries(st.text(max_size=6), values, max_size=6)


def exactly(record: dict[str, Any]) -> str | None:
    """What the json module writes for the record; None when it refuses it (NaN)."""
    try:
        return EXACT.encode(record)
    except ValueError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.lists(records, min_size=1, max_size=5))
def test_a_batch_is_what_json_writes_or_the_record_error_json_would_cause(
    batch: list[dict[str, Any]],
) -> None:
    expected = [exactly(r) for r in batch]
    if None in expected:
        number = expected.index(None) + 1
        with pytest.raises(RecordError, match=f"record {number + 10} .*NaN or Infinity"):
            encode_batch(batch, start=10)
        return
    lines = encode_batch(batch).lines
    # The same JSON values (orjson writes 1e-7 where json writes 1e-07).
    assert [json.loads(line) for line in lines] == [json.loads(e) for e in expected]  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "record",
    [
        {"x": math.nan},
        {"a": None, "x": math.inf},
        {"a": None, "nested": [1.5, -math.inf]},
        {"a": None, "nested": {"deep": [math.nan]}},
        {"a": None, "set": {math.nan}},
        {"a": None, "tuple": (1, math.nan)},
    ],
)
def test_nan_and_infinity_anywhere_are_a_record_error(record: dict[str, Any]) -> None:
    ok = {"a": None, "b": 1.5}
    with pytest.raises(RecordError, match="record 2 cannot be stored as JSON: it holds NaN"):
        encode_batch([ok, record])


def test_values_json_cannot_write_itself_are_written_as_before() -> None:
    berlin_1900 = dt.timezone(dt.timedelta(minutes=53, seconds=28))  # an offset with seconds
    record = {
        "at": dt.datetime(1900, 1, 1, 12, 0, tzinfo=berlin_1900),
        "utc": dt.datetime(2026, 3, 1, 12, 30, 0, 5, tzinfo=dt.UTC),
        "day": dt.date(2026, 3, 1),
        "time": dt.time(1, 2, 3, tzinfo=dt.UTC),
        "amount": decimal.Decimal("1234.50"),
        "ref": uuid.UUID("a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"),
        "raw": b"\xde\xad",
        "tags": ("x", "y"),
        "big": 2**64,
        "small": -(2**63) - 1,
        1: "a key that is a number",
    }
    [line] = encode_batch([record]).lines
    assert json.loads(line) == {
        "at": "1900-01-01T12:00:00+00:53:28",
        "utc": "2026-03-01T12:30:00.000005+00:00",
        "day": "2026-03-01",
        "time": "01:02:03+00:00",
        "amount": "1234.50",
        "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "raw": "dead",
        "tags": ["x", "y"],
        "big": 18446744073709551616,
        "small": -9223372036854775809,
        "1": "a key that is a number",
    }


def test_what_json_refuses_is_still_refused() -> None:
    @dataclasses.dataclass
    class Point:
        x: int

    with pytest.raises(TypeError, match="Point is not JSON serialisable"):
        encode_batch([{"p": Point(1)}])
    with pytest.raises(TypeError, match="expected a dict per record"):
        encode_batch([["not", "a", "dict"]])  # type: ignore[list-item]


def test_a_lone_surrogate_passes_encoding_for_the_database_to_name() -> None:
    [line] = encode_batch([{"text": "\ud800"}]).lines
    assert line == '{"text":"\ud800"}'


def test_the_schema_pairs_each_field_with_the_types_it_had() -> None:
    batch = encode_batch([{"a": 1, "b": None}, {"a": "x", "b": 2.5}, {"a": 1, "b": None}])
    assert batch.fields == {("a", int), ("a", str), ("b", type(None)), ("b", float)}


# -- parsing ------------------------------------------------------------------------------

json_texts = st.recursive(
    scalars.filter(lambda v: not isinstance(v, float) or math.isfinite(v)),
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3)
    ),
    max_leaves=8,
).map(lambda v: json.dumps(v, ensure_ascii=False))


@settings(max_examples=300, deadline=None)
@given(json_texts)
def test_loads_reads_what_json_reads(text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    try:
        expected = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        with pytest.raises((ValueError, UnicodeDecodeError)):
            jsontext.loads(data)
        return
    got = jsontext.loads(data)
    assert json.dumps(got) == json.dumps(expected)  # NaN-proof, type-exact for ints/floats


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (b'{"id": 18446744073709551616}', {"id": 18446744073709551616}),
        (b'{"id": -9223372036854775809}', {"id": -9223372036854775809}),
        (b'{"id":18446744073709551616}', {"id": 18446744073709551616}),
        (b'{"ids":[1,18446744073709551616]}', {"ids": [1, 18446744073709551616]}),
        (b'{"ids": [\n18446744073709551616]}', {"ids": [18446744073709551616]}),
        # A long run of digits in a string (a uuid, an id) before the long integer.
        (
            b'{"ref": "00000000000000000000000000000001", "id": 18446744073709551616}',
            {"ref": "00000000000000000000000000000001", "id": 18446744073709551616},
        ),
        (b'{"ref": "x 18446744073709551616"}', {"ref": "x 18446744073709551616"}),
        (b'{"x": 1.00000000000000000000001}', {"x": 1.00000000000000000000001}),
        (b'{"x": NaN, "y": -Infinity}', {"x": math.nan, "y": -math.inf}),
        (b'{"s": "\\ud800"}', {"s": "\ud800"}),
        ('{"s": "ünï"}'.encode("utf-16"), {"s": "ünï"}),
    ],
)
def test_loads_takes_json_s_reading_where_orjson_s_differs(text: bytes, expected: Any) -> None:
    got = jsontext.loads(text)
    assert json.dumps(got) == json.dumps(expected)
    assert [type(v) for v in got.values()] == [type(v) for v in expected.values()]


@pytest.mark.parametrize(
    ("text", "long"),
    [
        (b'{"id": 18446744073709551616}', True),
        (b"18446744073709551616", True),
        (b'{"a":[0,-18446744073709551616]}', True),
        (b'{"note": "call 18446744073709551616"}', True),  # as a number would be: json reads it
        (b'{"ref": "00000000000000000000000000000001"}', False),
        (b'{"ref": "id18446744073709551616", "n": 1234567890123456789}', True),
        (b'{"ref": "id18446744073709551616", "n": 123456789012345678}', False),
    ],
)
def test_only_long_runs_where_a_number_may_be_count(text: bytes, long: bool) -> None:
    assert jsontext.has_long_digits(text) is long


digit_texts = st.lists(
    st.one_of(
        st.integers(min_value=-(2**70), max_value=2**70),
        st.from_regex(r"\A[a-z\- :,.]?[0-9]{17,22}\Z").map(str),
        st.floats(allow_nan=False, allow_infinity=False),
    ),
    max_size=4,
).map(lambda values: json.dumps(values, separators=(",", ":") if len(values) % 2 else (", ", ": ")))


@settings(max_examples=300, deadline=None)
@given(digit_texts)
def test_long_digits_in_strings_next_to_long_integers_read_as_json_reads_them(text: str) -> None:
    assert json.dumps(jsontext.loads(text.encode())) == json.dumps(json.loads(text))


def test_loads_raises_what_json_raises() -> None:
    with pytest.raises(json.JSONDecodeError, match="Expecting property name"):
        jsontext.loads(b"{")


def test_a_plugin_s_record_fields_give_the_same_lines_and_schema() -> None:
    rows = [{"id": str(n), "name": f"ünï {n}", "note": 'say "hi"\n'} for n in range(50)]
    fields = {("id", str), ("name", str), ("note", str)}
    generic, fast = encode_batch(rows), encode_batch(rows, fields=fields)
    assert fast.lines == generic.lines
    assert fast.fields == generic.fields == fields


def test_the_demo_records_have_the_fields_the_demo_declares() -> None:
    from connector_sync.connectors.demo import DemoConnector

    plugin = DemoConnector({"records": 500, "seed": 7})
    records = list(plugin.read())
    assert encode_batch(records).fields == plugin.record_fields
    assert encode_batch(records, fields=plugin.record_fields).lines == encode_batch(records).lines


# -- a batch of rows: records with the same keys in the same order ------------------------

row_values = st.one_of(
    scalars,
    st.lists(scalars, max_size=2),
    st.dictionaries(st.text(max_size=2), scalars, max_size=2),
    st.sampled_from([dt.date(2026, 3, 1), decimal.Decimal("1.50"), uuid.UUID(int=7), b"\x01"]),
    st.sampled_from([math.nan, math.inf, -math.inf, 0.5]),
)


def record_by_record(record: dict[str, Any], number: int) -> str | None:
    """The record's line as a batch of differently shaped records gets it (each record
    looked at by itself); None when that is a RecordError."""
    try:
        return encode_batch([record, {"\0other": 0}], start=number - 1).lines[0]
    except RecordError:
        return None


@settings(max_examples=300, deadline=None)
@given(st.integers(min_value=1, max_value=4).flatmap(
    lambda width: st.lists(st.lists(row_values, min_size=width, max_size=width), min_size=1,
                           max_size=6)
))  # fmt: skip
@example([[1.5, None], [None, 2.5]])
@example([[1.5, None], [None, math.inf]])
@example([[None, [1]], [math.nan, [1]]])
@example([["x", [1]], ["y", [-math.inf]]])
def test_rows_are_encoded_as_each_record_by_itself(rows: list[list[Any]]) -> None:
    keys = [f"k{n}" for n in range(len(rows[0]))]
    batch = [dict(zip(keys, row, strict=True)) for row in rows]
    expected = [record_by_record(r, n) for n, r in enumerate(batch, 1)]
    if None in expected:
        number = expected.index(None) + 1
        with pytest.raises(RecordError, match=f"record {number} .*NaN or Infinity"):
            encode_batch(batch)
        return
    encoded = encode_batch(batch)
    assert encoded.lines == expected
    assert encoded.fields == {(k, type(v)) for r in batch for k, v in r.items()}


def test_a_nan_among_rows_is_a_record_error_naming_it() -> None:
    rows = [{"a": 1.5, "b": None, "c": [1]} for _ in range(5)]
    rows[3] = {"a": math.nan, "b": None, "c": [1]}
    with pytest.raises(RecordError, match="record 14 cannot be stored as JSON: it holds NaN"):
        encode_batch(rows, start=10)
    rows[3] = {"a": 1.5, "b": None, "c": [math.inf]}
    with pytest.raises(RecordError, match="record 14 cannot be stored as JSON: it holds NaN"):
        encode_batch(rows, start=10)
    rows[3] = {"a": 2.5, "b": None, "c": [2]}
    assert encode_batch(rows).lines[3] == '{"a":2.5,"b":null,"c":[2]}'


# -- a database's own key order -----------------------------------------------------------


def test_records_with_the_same_keys_are_written_in_the_database_s_key_order() -> None:
    from connector_sync.store.postgres import jsonb_key_order

    rows = [{"year": 2013, "day": n, "ünï": "x", "dest": None, "a": 1.5} for n in range(3)]
    fields = {(k, type(v)) for r in rows for k, v in r.items()}
    plain = encode_batch(rows)
    # Shorter first, then by bytes ("ünï" has 5).
    jsonb_order = [["a", "day", "dest", "year", "ünï"]] * 3
    for known in (None, fields):
        ordered = encode_batch(rows, fields=known, key_order=jsonb_key_order)
        assert [list(json.loads(line)) for line in ordered.lines] == jsonb_order
        assert [json.loads(line) for line in ordered.lines] == rows
        assert ordered.fields == plain.fields
    # The plugin's fields: the same keys in another order are put in order too.
    rows[2] = {"a": 1.5, "dest": None, "ünï": "x", "day": 2, "year": 2013}
    ordered = encode_batch(rows, fields=fields, key_order=jsonb_key_order)
    assert [list(json.loads(line)) for line in ordered.lines] == jsonb_order
    other_keys = [{"b": 1, "a": 2}, {"b": 1, "c": 2}]  # not one set of keys: left alone
    lines = encode_batch(other_keys, key_order=jsonb_key_order).lines
    assert lines == ['{"b":1,"a":2}', '{"b":1,"c":2}']
    with pytest.raises(RecordError, match="record 2 cannot be stored as JSON: it holds NaN"):
        encode_batch([{"b": 1.5, "a": 1}, {"b": math.nan, "a": 1}], key_order=jsonb_key_order)
    assert jsonb_key_order(["bb", 1, "a"]) == ["bb", 1, "a"]  # keys that are not text: as they are
