"""Whether a run would do anything, asked with the bare driver (sqlite3, psycopg) before
SQLAlchemy, the runner or the plugins are imported: cron starts `run` every few minutes on
every worker, and most of those runs find nothing due.

The answer is "nothing" only when that is certain: the schema is the one this code needs,
no connector is due and no lease has expired (what a run recovers and claims, in the
same predicates). Anything else, an error included, answers "maybe", and the run goes the
whole way, which reports every problem as it always has.
"""

from __future__ import annotations

import datetime as dt
from contextlib import closing
from pathlib import Path

from connector_sync.constants import DUE_INDEX_PREDICATE_SQLITE
from connector_sync.db import SCHEMA_REVISION, Database, plain_url
from connector_sync.exceptions import DatabaseError, DatabaseUnavailable

#: The same question on SQLite: times are naive UTC text in one fixed format, so they
#: compare as strings (models.UTCDateTime), against this host's clock.
_SQLITE_RUN_HAS_WORK = f"""
SELECT (SELECT version_num FROM alembic_version LIMIT 1),
       EXISTS (SELECT 1 FROM connectors
               WHERE {DUE_INDEX_PREDICATE_SQLITE} AND next_sync_at <= :now
                 AND (:tenant IS NULL OR tenant = :tenant))
       OR EXISTS (SELECT 1 FROM connectors
                  WHERE status = 'SYNCING' AND lease_expires_at < :now
                    AND (:tenant IS NULL OR tenant = :tenant))
"""


def nothing_to_do(url: str, tenant: str | None = None) -> bool:
    """True when a run on `url` (within `tenant`) would recover and claim nothing.

    Raises:
        DatabaseUnavailable: the PostgreSQL server does not answer (the whole run would
            only wait for it again).
    """
    plain = plain_url(url)
    if plain is None:
        return False
    if plain.sqlite_path is not None:
        answer = _sqlite_answer(plain.sqlite_path, tenant)
    else:
        answer = _postgres_answer(url, tenant)
    return answer == (SCHEMA_REVISION, False)


def _sqlite_answer(path: str, tenant: str | None) -> tuple[object, ...] | None:
    import sqlite3

    file = Path(path)
    if not file.is_file():
        return None  # the run says there is no database there
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S.%f")
    try:
        # mode=rw: asking never creates the file.
        with closing(sqlite3.connect(f"{file.absolute().as_uri()}?mode=rw", uri=True)) as conn:
            row = conn.execute(_SQLITE_RUN_HAS_WORK, {"now": now, "tenant": tenant}).fetchone()
    except sqlite3.Error:
        return None
    return None if row is None else (row[0], bool(row[1]))


def _postgres_answer(url: str, tenant: str | None) -> tuple[object, ...] | None:
    from connector_sync.store.named import queries

    with Database(url) as database:
        try:
            with database.transaction() as conn:
                row = conn.execute(queries()["run_has_work"], {"tenant": tenant}).fetchone()
        except DatabaseUnavailable:
            raise
        except DatabaseError:
            return None
    return None if row is None else (row[0], bool(row[1]))
