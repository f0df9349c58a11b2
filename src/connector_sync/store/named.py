"""queries.sql by name: the PostgreSQL store's statements, loaded without a database library
(the run's idle check reads one before anything heavy is imported)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_QUERY_HEADER = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """queries.sql, by name (each statement under its `-- name: x --` header)."""
    text = files("connector_sync.store").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)[1:]
    return {
        name: body.strip().rstrip(";") for name, body in zip(parts[::2], parts[1::2], strict=True)
    }
