"""queries.sql as the PostgreSQL store sends it: each statement without the file's comment
lines, short enough for psycopg to keep its parsed form (a longer one is parsed again at
every call: `finish` runs once per sync)."""

from __future__ import annotations

from psycopg._queries import MAX_CACHED_STATEMENT_LENGTH

from connector_sync.store.named import queries


def test_statements_go_without_comment_lines_and_within_psycopgs_parse_cache() -> None:
    for name, text in queries().items():
        assert text and not text.startswith(("--", "\n")), name
        assert not any(line.lstrip().startswith("--") for line in text.splitlines()), name
        assert len(text.encode()) <= MAX_CACHED_STATEMENT_LENGTH, name
