"""Streams records into a dataset in batches: COPY on PostgreSQL, executemany on SQLite."""

from __future__ import annotations

import datetime as dt
import decimal
import json
import uuid
from collections.abc import Sequence
from typing import Any

from connector_sync.connectors.base import JSON_TYPE_NAMES
from connector_sync.db import Database
from connector_sync.exceptions import RecordError

# The JSON type of each Python type a plugin's record may hold (as config fields use).
_JSON_TYPE_NAMES: dict[type, str] = {**JSON_TYPE_NAMES, type(None): "null"}


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


# allow_nan=False: NaN and Infinity are not JSON, and a stored dataset is valid JSON.
_encode = json.JSONEncoder(
    separators=(",", ":"), ensure_ascii=False, allow_nan=False, default=_json_default
).encode


class DatasetWriter:
    """Appends records to one BUILDING dataset, each batch in its own short transaction.

    Committing per batch keeps transactions short (SQLite has one writer; a sync
    that held it for its whole read would block every other worker). The dataset
    stays BUILDING until the sync completes, and an abandoned one is deleted, so
    partial data is never READY.
    """

    def __init__(self, database: Database, dataset_id: int) -> None:
        self.db = database
        self.dataset_id = dataset_id
        self.count = 0
        self._seen: set[tuple[str, type]] = set()

    def append(self, records: Sequence[dict[str, Any]]) -> None:
        if not records:
            return
        seen = self._seen
        start = self.count
        lines = []
        for record in records:
            if not isinstance(record, dict):
                raise TypeError(
                    f"a plugin yielded {type(record).__name__}, expected a dict per record"
                )
            seen.update(zip(record, map(type, record.values()), strict=True))
            try:
                lines.append(_encode(record))
            except ValueError as exc:
                reason = "it holds NaN or Infinity, which JSON has no value for"
                raise RecordError(
                    f"record {start + len(lines) + 1} cannot be stored as JSON: "
                    f"{reason if 'float' in str(exc) else exc}; fix it in the source"
                ) from None
        if self.db.is_postgresql:
            self._copy(start, lines)
        else:
            self._executemany(start, lines)
        self.count += len(lines)

    def _copy(self, start: int, lines: list[str]) -> None:
        # COPY text format: JSON escapes every control character, so the only byte
        # COPY treats specially that can remain is the backslash; double it.
        prefix = f"{self.dataset_id}\t"
        payload = "".join(
            f"{prefix}{seq}\t{text.replace(chr(92), chr(92) * 2)}\n"
            for seq, text in enumerate(lines, start + 1)
        )
        import psycopg

        try:
            with self.db.begin() as conn:
                raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
                with (
                    raw.cursor() as cursor,
                    cursor.copy("COPY dataset_records (dataset_id, seq, data) FROM STDIN") as copy,
                ):
                    copy.write(payload)
        except psycopg.errors.UntranslatableCharacter:
            # jsonb has no text for \u0000; SQLite stores it. Name the batch, not the data.
            raise RecordError(
                f"a record among {start + 1}-{start + len(lines)} holds a NUL character "
                "(\\u0000), which PostgreSQL cannot store in jsonb; remove it in the source"
            ) from None

    def _executemany(self, start: int, lines: list[str]) -> None:
        dataset_id = self.dataset_id
        with self.db.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO dataset_records (dataset_id, seq, data) VALUES (?, ?, ?)",
                [(dataset_id, seq, text) for seq, text in enumerate(lines, start + 1)],
            )

    def schema(self) -> dict[str, list[str]]:
        """Field names seen, each with the JSON types its values had."""
        fields: dict[str, set[str]] = {}
        for name, kind in self._seen:
            fields.setdefault(name, set()).add(_JSON_TYPE_NAMES.get(kind, "string"))
        return {name: sorted(kinds) for name, kinds in sorted(fields.items())}
