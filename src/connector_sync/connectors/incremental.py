"""Incremental sync: the `incremental` config object and the cursor a read advances.

A connector configured with `incremental: {cursor_field, initial_value}` reads only
what is newer than its saved cursor. The plugin's `state["cursor"]` holds the largest
cursor value it has yielded; the runner saves that state only when the sync completes,
so a failed sync reads the same records again next time.

Cursor values are strings or numbers. Numbers, and strings that spell a plain decimal
number (CSV has no other kind of value), compare as numbers; other strings compare
as strings, which orders ISO-8601 timestamps written in one format and time zone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from connector_sync.connectors.base import ConfigField, printable, validate_fields
from connector_sync.exceptions import ConfigError, PermanentError

CursorValue = str | int | float

_NUMBER = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?")
# What a stored cursor cannot hold: a NUL (PostgreSQL's jsonb refuses it) or a lone
# surrogate (not text at all).
_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")
#: How much of each field name a message shows.
_SHOWN_NAME_CHARS = 40
_FIELDS = (
    ConfigField("cursor_field", str, required=True, help="record field that grows"),
    ConfigField("initial_value", str, help="cursor to start from before any sync"),
    ConfigField("cursor_param", str, help="query parameter that carries the cursor"),
)


def incremental_field(help: str) -> ConfigField:
    """The `incremental` config field, described for one connector type."""
    return ConfigField("incremental", dict, help=help)


@dataclass(frozen=True)
class Incremental:
    """What `incremental` configures: which field is the cursor and where it starts."""

    cursor_field: str
    initial_value: CursorValue | None = None
    #: The query parameter that sends the cursor (http only).
    cursor_param: str | None = None

    @classmethod
    def from_config(
        cls, type_name: str, value: Mapping[str, Any] | None, *, param: bool = False
    ) -> Incremental | None:
        """The validated `incremental` object, None when the connector reads everything.

        `param` says whether the type sends the cursor as a query parameter (and needs
        `cursor_param`); other types reject that key.

        Raises:
            ConfigError: naming the key that is missing, unknown or of the wrong type.
        """
        if value is None:
            return None
        if not isinstance(value, Mapping):
            raise ConfigError(f"{type_name} config field 'incremental' must be a JSON object")
        fields = _FIELDS if param else _FIELDS[:2]
        # initial_value may be a string or a number; ConfigField knows one type per field.
        initial = value.get("initial_value")
        rest = {k: v for k, v in value.items() if k != "initial_value"}
        checked = validate_fields(type_name, fields, rest, within="incremental")
        if initial is not None and not _is_cursor_value(initial):
            raise ConfigError(
                f"{type_name} config field 'incremental.initial_value' must be a string "
                f"or a number, got {type(initial).__name__}"
            )
        if param and checked["cursor_param"] is None:
            raise ConfigError(
                f"{type_name} config is missing required field 'incremental.cursor_param' "
                "(the query parameter that sends the cursor, e.g. updated_since)"
            )
        if not checked["cursor_field"].strip():
            raise ConfigError(f"{type_name} config field 'incremental.cursor_field' is empty")
        return cls(checked["cursor_field"], initial, checked.get("cursor_param"))


class Cursor:
    """The cursor of one read: where it started and the largest value yielded since."""

    def __init__(self, spec: Incremental, state: dict[str, Any]) -> None:
        self.field = spec.cursor_field
        self._state = state
        saved = state.get("cursor")
        self.start: CursorValue | None = saved if saved is not None else spec.initial_value
        self._start_key = None if self.start is None else cursor_key(self.start)
        self._max_key = self._start_key

    def value_of(self, record: Mapping[str, Any], where: str) -> CursorValue:
        """The record's cursor value.

        Raises:
            PermanentError: the record has no such field, or not a string or number in it.
        """
        value = record.get(self.field)
        if value is None:
            raise PermanentError(
                f"{where}: the record has no value for cursor field '{self.field}' "
                f"(fields: {', '.join(map(_shown_name, list(record)[:20]))})"
            )
        if not _is_cursor_value(value):
            raise PermanentError(
                f"{where}: cursor field '{self.field}' is {type(value).__name__}, "
                "expected a string or a number"
            )
        if isinstance(value, str) and _UNSTORABLE.search(value):
            raise PermanentError(
                f"{where}: cursor field '{self.field}' holds a NUL character or a lone "
                "surrogate, which cannot be saved as the cursor; fix it in the source"
            )
        cursor: CursorValue = value
        return cursor

    def is_new(self, value: CursorValue) -> bool:
        """Whether `value` is past the cursor this read started from."""
        return self._start_key is None or cursor_key(value) > self._start_key

    def advance(self, value: CursorValue) -> None:
        """Record that a record with this cursor value was yielded."""
        key = cursor_key(value)
        if self._max_key is None or key > self._max_key:
            self._max_key = key
            self._state["cursor"] = value


def cursor_key(value: CursorValue) -> tuple[int, Decimal | str]:
    """How cursor values order: numbers (and numeric strings) first, by value; then text."""
    if isinstance(value, str):
        text = value.strip()
        if _NUMBER.fullmatch(text):
            return (0, Decimal(text))
        return (1, value)
    return (0, Decimal(str(value)))


def _shown_name(name: object) -> str:
    """A source's field name as a message may hold it: escaped (`printable`) and cut."""
    text = str(name)
    return printable(text[:_SHOWN_NAME_CHARS]) + ("…" if len(text) > _SHOWN_NAME_CHARS else "")


def _is_cursor_value(value: object) -> bool:
    if isinstance(value, bool):
        return False
    if isinstance(value, float):
        return value == value and value not in (float("inf"), float("-inf"))
    return isinstance(value, str | int)
