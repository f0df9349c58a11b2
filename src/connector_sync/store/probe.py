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
from typing import Any

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

    query = queries()["run_has_work"].replace("%(tenant)s", "$1")
    libpq = _bundled_libpq()
    if libpq is not None:
        return _libpq_answer(libpq, url, query, tenant)
    with Database(url) as database:  # no libpq of psycopg's own to load: psycopg itself
        try:
            with database.transaction() as conn:
                row = conn.execute(query.replace("$1", "%(tenant)s"), {"tenant": tenant}).fetchone()
        except DatabaseUnavailable:
            raise
        except DatabaseError:
            return None
    return None if row is None else (row[0], bool(row[1]))


# -- libpq, called directly ----------------------------------------------------------------
#
# psycopg's import alone takes about 0.7x of `connector-sync --version` (170 modules: its
# error classes, asyncio, the type adapters). For this one query, the libpq that psycopg's
# wheel bundles is called through ctypes instead: loading it costs a few milliseconds.

_CONNECTION_OK = 0
_PGRES_TUPLES_OK = 2


def _bundled_libpq() -> Any:
    """The libpq of the psycopg-binary wheel, loaded; None where there is none (psycopg
    built against the system's libpq, another platform): psycopg is used then."""
    import importlib.util

    spec = importlib.util.find_spec("psycopg_binary")
    if spec is None or spec.origin is None:
        return None
    libs = Path(spec.origin).parent.with_name("psycopg_binary.libs")
    found = sorted(libs.glob("libpq-*.so*")) if libs.is_dir() else []
    if not found:
        return None
    import ctypes

    libpq = ctypes.CDLL(str(found[0]))
    pointer, text, texts = ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_char_p)
    for name, result, arguments in (
        ("PQconnectdbParams", pointer, [texts, texts, ctypes.c_int]),
        ("PQstatus", ctypes.c_int, [pointer]),
        ("PQerrorMessage", text, [pointer]),
        ("PQexecParams", pointer,
         [pointer, text, ctypes.c_int, pointer, texts, pointer, pointer, ctypes.c_int]),
        ("PQresultStatus", ctypes.c_int, [pointer]),
        ("PQntuples", ctypes.c_int, [pointer]),
        ("PQgetisnull", ctypes.c_int, [pointer, ctypes.c_int, ctypes.c_int]),
        ("PQgetvalue", text, [pointer, ctypes.c_int, ctypes.c_int]),
        ("PQclear", None, [pointer]),
        ("PQfinish", None, [pointer]),
    ):  # fmt: skip
        function = getattr(libpq, name)
        function.restype, function.argtypes = result, arguments
    return libpq


def _libpq_answer(
    libpq: Any, url: str, query: str, tenant: str | None
) -> tuple[object, ...] | None:
    import ctypes

    plain = plain_url(url)
    assert plain is not None
    args = {key: str(value) for key, value in plain.connect_args.items()}
    keys = (ctypes.c_char_p * (len(args) + 1))(*[k.encode() for k in args], None)
    values = (ctypes.c_char_p * (len(args) + 1))(*[v.encode() for v in args.values()], None)
    conn = libpq.PQconnectdbParams(keys, values, 0)
    try:
        if libpq.PQstatus(conn) != _CONNECTION_OK:
            reason = (libpq.PQerrorMessage(conn) or b"").decode(errors="replace")
            raise Database(url).connect_error(ConnectionError(f"connection failed: {reason}"))
        parameters = (ctypes.c_char_p * 1)(None if tenant is None else tenant.encode())
        result = libpq.PQexecParams(conn, query.encode(), 1, None, parameters, None, None, 0)
        try:
            if libpq.PQresultStatus(result) != _PGRES_TUPLES_OK or libpq.PQntuples(result) != 1:
                return None  # no schema, no table: the run says what is wrong
            revision = None
            if not libpq.PQgetisnull(result, 0, 0):
                revision = libpq.PQgetvalue(result, 0, 0).decode()
            return revision, libpq.PQgetvalue(result, 0, 1) == b"t"
        finally:
            libpq.PQclear(result)
    finally:
        libpq.PQfinish(conn)
