"""Results as JSON documents: what `--json` prints and what `serve` answers, one shape."""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Mapping
from dataclasses import fields, is_dataclass
from typing import Any


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
