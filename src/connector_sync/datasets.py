"""Encodes a plugin's records as JSON in batches and streams them into a dataset."""

from __future__ import annotations

import datetime as dt
import decimal
import itertools
import json
import math
import operator
import re
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import orjson

from connector_sync.connectors.base import JSON_VALUE_TYPE_NAMES
from connector_sync.exceptions import RecordError
from connector_sync.store.base import first_line_matching

if TYPE_CHECKING:
    from connector_sync.store.base import Store


def _json_default(value: Any) -> Any:
    """JSON for the values plugins commonly yield that json cannot encode itself."""
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, uuid.UUID):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    if isinstance(value, set | frozenset | tuple):
        return list(value)
    raise TypeError(f"value of type {type(value).__name__} is not JSON serialisable")


# The exact encoder: allow_nan=False, as NaN and Infinity are not JSON and a stored
# dataset is valid JSON. orjson (below) writes what this one writes, faster; this one
# serves the records orjson cannot take, or might have written otherwise.
_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
).encode

# orjson's own datetimes drop an offset's seconds (+05:30:15); isoformat keeps them.
# A dataclass is not a record value (the exact encoder refuses it too).
_ORJSON_OPTIONS = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS
# orjson writes NaN and Infinity as null, silently: a record with a null in its JSON is
# looked at again (`_may_hold_nan`). Values of these types hold no float...
_FLOATLESS = frozenset(
    {str, int, bool, type(None), dt.datetime, dt.date, dt.time, decimal.Decimal, uuid.UUID, bytes}
)
# ...and a record of these (a flat row) holds no float but its own values.
_FLAT = _FLOATLESS | {float}

# A lone surrogate (JSON's "\ud800" decodes to one) is not text: no database encodes it.
_SURROGATE = re.compile("[\ud800-\udfff]")


#: A database's order of a record's keys (`Store.record_key_order`).
KeyOrder = Callable[[list[Any]], list[Any]]


@dataclass
class EncodedBatch:
    """A batch of records as JSON text, with the (field name, value type) pairs seen in
    it, for the dataset's schema."""

    lines: list[str]
    fields: set[tuple[Any, type]]


def encode_batch(
    records: Sequence[dict[str, Any]],
    start: int = 0,
    fields: set[tuple[str, type]] | None = None,
    key_order: KeyOrder | None = None,
) -> EncodedBatch:
    """The records as JSON lines; `start` is how many records came before (for messages).

    `fields` is the plugin's word for its records so far (`ConnectorPlugin.record_fields`):
    their (field, value type) pairs, no float NaN or infinite. Then the batch is encoded
    in one comprehension and no record is looked at for the schema.

    `key_order` is the store's `record_key_order`: records that all have the same keys
    are written with their keys in that order (the database stores the same value, and
    need not sort them).

    Pure, so the runner's reader thread encodes one batch while the sync thread writes
    the one before.

    Raises:
        RecordError: a record holds NaN or Infinity, or is otherwise not JSON.
        TypeError: the plugin yielded something other than a dict.
    """
    if fields is not None:
        rows = _in_key_order(records, key_order)
        try:
            dumps, options = orjson.dumps, _ORJSON_OPTIONS
            texts = [dumps(r, default=_json_default, option=options).decode() for r in rows]
            return EncodedBatch(texts, set(fields))
        except TypeError:  # what orjson refuses: record by record, as below
            pass
    uniform = _encode_uniform(records, key_order)
    if uniform is not None:
        return uniform
    lines: list[str] = []
    add_line = lines.append
    # One key per record shape (its keys, then its values' types) is the cheapest way to
    # keep what the schema needs: records of a source mostly share a few shapes. The
    # dict lives for one batch, so memory stays bounded whatever the shapes.
    shapes: dict[tuple[Any, ...], None] = {}
    dumps, options, floatless = orjson.dumps, _ORJSON_OPTIONS, _FLOATLESS
    for record in records:
        if type(record) is not dict and not isinstance(record, dict):
            raise TypeError(f"a plugin yielded {type(record).__name__}, expected a dict per record")
        kinds = tuple(map(type, record.values()))
        shapes[(*record, *kinds)] = None
        try:
            data = dumps(record, default=_json_default, option=options)
        except TypeError:  # a key that is not a string, an int past 64 bits, a surrogate...
            add_line(_exactly(record, start + len(lines) + 1))
            continue
        if b"null" in data and not floatless.issuperset(kinds) and _may_hold_nan(record, kinds):
            add_line(_exactly(record, start + len(lines) + 1))
        else:
            add_line(data.decode())
    seen: set[tuple[Any, type]] = set()
    for shape in shapes:
        half = len(shape) // 2
        seen.update(zip(shape[:half], shape[half:], strict=True))
    return EncodedBatch(lines, seen)


def _same_keys(records: Sequence[dict[str, Any]]) -> list[Any] | None:
    """The keys of the records when they are plain dicts with the same keys in the same
    order (rows of a file, a table, an API's page); None otherwise."""
    if not records or set(map(type, records)) != {dict}:
        return None
    keys = list(records[0])
    return keys if all(map(keys.__eq__, map(list, records))) else None


def _in_key_order(
    records: Sequence[dict[str, Any]], key_order: KeyOrder | None
) -> Sequence[dict[str, Any]]:
    """The records with their keys in `key_order`'s order, when they are plain dicts that
    all have the first one's keys (the same JSON values, the keys in another order: only
    for a database that keeps keys in an order of its own); else as they are."""
    if key_order is None or not records or set(map(type, records)) != {dict}:
        return records
    keys = list(records[0])
    ordered = key_order(keys)
    if ordered == keys or set(map(len, records)) != {len(keys)}:
        return records
    try:
        return [{key: record[key] for key in ordered} for record in records]
    except KeyError:  # a record with other keys
        return records


def _encode_uniform(
    records: Sequence[dict[str, Any]], key_order: KeyOrder | None = None
) -> EncodedBatch | None:
    """The batch encoded a column at a time when its records all have the same keys
    (`_same_keys`), each value of a type that holds no NaN or infinite float, or a
    finite float: then every line is what orjson writes, as record by record (below),
    and the schema is each column's types. None: look at each record (containers with
    a null, a NaN, what orjson refuses...)."""
    keys = _same_keys(records)
    if keys is None:
        return None
    width = len(keys)
    values = list(itertools.chain.from_iterable(map(dict.values, records)))
    kinds = list(map(type, values))
    columns = [set(kinds[i::width]) for i in range(width)]
    rows = _in_key_order(records, key_order)
    dumps, options = orjson.dumps, _ORJSON_OPTIONS
    try:
        lines = [dumps(r, default=_json_default, option=options).decode() for r in rows]
    except TypeError:  # a key that is not a string, an int past 64 bits, a surrogate...
        return None
    for column, types in enumerate(columns):
        if _FLOATLESS.issuperset(types):
            continue
        if not _FLAT.issuperset(types):  # containers: orjson's null may be a NaN
            if any(map(operator.contains, lines, itertools.repeat("null"))):
                return None
            break  # no null anywhere: no NaN, nor in the floats of other columns
        floats = values[column::width]
        if types != {float}:
            floats = [v for v in floats if type(v) is float]
        if not all(map(math.isfinite, floats)):
            return None
    pairs = {(key, kind) for key, types in zip(keys, columns, strict=True) for kind in types}
    return EncodedBatch(lines, pairs)


def _may_hold_nan(record: dict[str, Any], kinds: tuple[type, ...]) -> bool:
    """Whether a record with floats (or containers) in it may hold NaN or Infinity."""
    if _FLAT.issuperset(kinds):  # a flat row: only its own float values can
        return not all(math.isfinite(v) for v in record.values() if type(v) is float)
    return True  # containers, or types a default turns into something: ask the exact encoder


def _exactly(record: dict[str, Any], number: int) -> str:
    """The record as the exact encoder writes it.

    Raises:
        RecordError: it holds NaN or Infinity, or is otherwise not JSON (naming `number`).
    """
    try:
        return _encode(record)
    except ValueError as exc:
        reason = "it holds NaN or Infinity, which JSON has no value for"
        raise RecordError(
            f"record {number} cannot be stored as JSON: "
            f"{reason if 'float' in str(exc) else exc}; fix it in the source"
        ) from None


class DatasetWriter:
    """Appends records to one BUILDING dataset, each batch in its own short transaction.

    Committing per batch keeps transactions short (SQLite has one writer; a sync
    that held it for its whole read would block every other worker). The dataset
    stays BUILDING until the sync completes, and an abandoned one is deleted, so
    partial data is never READY.
    """

    def __init__(self, store: Store, dataset_id: int) -> None:
        self.store = store
        self.dataset_id = dataset_id
        self.count = 0
        self._fields: set[tuple[Any, type]] = set()

    def write(self, batch: EncodedBatch) -> None:
        """Write one encoded batch in its own transaction.

        Raises:
            RecordError: naming the first record the database cannot store (a lone
                surrogate; on PostgreSQL, a NUL character). Found only once the
                database refused the batch, so storable batches pay nothing for it.
        """
        if not batch.lines:
            return
        try:
            self.store.append_records(self.dataset_id, self.count, batch.lines)
        except UnicodeEncodeError:
            number = first_line_matching(_SURROGATE, batch.lines, self.count)
            raise RecordError(
                f"record {number} holds a lone surrogate (such as \\ud800), which is not "
                "text a database can store; fix it in the source"
            ) from None
        self.count += len(batch.lines)
        self._fields |= batch.fields

    def schema(self) -> dict[str, list[str]]:
        """Field names seen, each with the JSON types its values had."""
        fields: dict[str, set[str]] = {}
        for name, kind in self._fields:
            fields.setdefault(name, set()).add(JSON_VALUE_TYPE_NAMES.get(kind, "string"))
        return {name: sorted(kinds) for name, kinds in sorted(fields.items())}
