"""Results as JSON documents: what `--json` prints and what `serve` answers, one shape;
and JSON objects read with each key once."""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import Any, TextIO


def iso(value: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, or None."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON: times in ISO-8601 UTC, typed rows as objects (a result's own
    `to_document()` where it has one, which decides what is shown), and a number that JSON
    has none for (NaN, an infinity) as null."""
    if isinstance(value, dt.datetime):
        return iso(value)
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if hasattr(value, "to_document"):
        return jsonable(value.to_document())
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


def json_text(document: Any, *, indent: bool = True) -> str:
    """The JSON document of `document`: indented by two (or compact), non-ASCII as it is,
    times in ISO-8601 UTC. A listing of typed rows is encoded by orjson straight from the
    rows (the same text, twenty times faster than jsonable and json.dumps)."""
    if _is_listing(document):
        return json_bytes(document, indent=indent).decode()
    if indent:
        return json.dumps(jsonable(document), indent=2, ensure_ascii=False)
    return json.dumps(jsonable(document), ensure_ascii=False, separators=(",", ":"))


def json_bytes(document: Any, *, indent: bool = True) -> bytes:
    """json_text's UTF-8 bytes (a listing's straight from orjson)."""
    if not _is_listing(document):
        return json_text(document, indent=indent).encode()
    import orjson

    return orjson.dumps(document, option=orjson.OPT_UTC_Z | (orjson.OPT_INDENT_2 if indent else 0))


def _is_listing(document: Any) -> bool:
    """A list of rows whose fields are all plain (ints, text, times, flags), which orjson
    encodes as jsonable would: no `to_document`, no JSON from a source (a number past 64
    bits, which orjson refuses)."""
    from connector_sync.store.base import ConnectorSummary, DatasetSummary, Sync

    plain = {ConnectorSummary, Sync, DatasetSummary}
    return isinstance(document, list) and set(map(type, document)) <= plain


class JsonArray:
    """A JSON array written to `stream` as its items come, in json_text's format:
    `list --all --json` writes 100,000 connectors with flat memory. Use as
    `with JsonArray(sys.stdout) as out: out.add(rows)`; nothing is written when the block
    fails before the first item, nor at all to a None stream (--quiet)."""

    def __init__(self, stream: TextIO | None) -> None:
        self.stream = stream
        self.started = False

    def add(self, rows: Sequence[Any]) -> None:
        stream = self.stream
        if stream is None or not rows:
            return
        # Each chunk as an indented array, its brackets replaced by the whole one's; bytes
        # straight to the stream's buffer when it has one (no decoding and encoding again).
        inner = json_bytes(list(rows))[2:-2]
        head = b",\n" if self.started else b"[\n"
        self.started = True
        buffer = getattr(stream, "buffer", None)
        if buffer is None:
            stream.write((head + inner).decode())
            return
        stream.flush()
        buffer.write(head)
        buffer.write(inner)

    def __enter__(self) -> JsonArray:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if kind is None and self.stream is not None:
            self.stream.write("\n]\n" if self.started else "[]\n")


#: The most characters of a key that a message quotes.
_SHOWN_KEY_CHARS = 40


class RepeatedKey(ValueError):
    """A JSON object that gives a key twice (json.loads keeps the last: which one counts?)."""

    def __init__(self, key: str) -> None:
        self.key = key
        shown = repr(key[:_SHOWN_KEY_CHARS]) + ("…" if len(key) > _SHOWN_KEY_CHARS else "")
        super().__init__(f"the key {shown} is given more than once: give it once")


def unique_keys(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    """json.loads' object_pairs_hook for input: the object, or RepeatedKey."""
    value = dict(pairs)
    if len(value) < len(pairs):
        seen: set[str] = set()
        for key, _ in pairs:
            if key in seen:
                raise RepeatedKey(key)
            seen.add(key)
    return value
