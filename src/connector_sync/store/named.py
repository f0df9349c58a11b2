"""queries.sql by name: the PostgreSQL store's statements, loaded without a database library
(the run's idle check reads one before anything heavy is imported)."""

from __future__ import annotations

import re
from functools import cache
from importlib.resources import files

_QUERY_HEADER = re.compile(r"^-- name: (\w+) --$", re.MULTILINE)


@cache
def queries() -> dict[str, str]:
    """queries.sql, by name (each statement under its `-- name: x --` header), without its
    comment lines: they are for whoever reads the file. psycopg keeps the parsed form of a
    statement only up to 4 KiB; with its comments `finish` was longer and parsed again at
    every sync."""
    text = files("connector_sync.store").joinpath("queries.sql").read_text(encoding="utf-8")
    parts = _QUERY_HEADER.split(text)[1:]
    return {
        name: _without_comment_lines(body).strip().rstrip(";")
        for name, body in zip(parts[::2], parts[1::2], strict=True)
    }


def _without_comment_lines(body: str) -> str:
    # Whole lines only: no statement in queries.sql holds a string literal over several
    # lines, so a line that starts with -- is a comment.
    return "\n".join(line for line in body.splitlines() if not line.lstrip().startswith("--"))
