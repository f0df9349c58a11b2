"""Engines, transactions and schema versions: how connector-sync reaches its database."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Self

import sqlalchemy as sa
from sqlalchemy import event

from connector_sync import secrets
from connector_sync.exceptions import (
    BadInput,
    DatabaseError,
    DatabaseUnavailable,
    SchemaOutOfDate,
)

#: The alembic revision this code expects. tests/test_migrations.py keeps it equal
#: to the newest file in migrations/versions, so start-up needs no alembic import.
SCHEMA_REVISION = "0005"

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0


_DRIVERS = ("postgresql+psycopg", "sqlite", "sqlite+pysqlite")
_URL_FORMS = "postgresql://user@host/db (psycopg 3) or sqlite:///path.db"


def make_url(url: str | sa.URL) -> sa.URL:
    """Parse a URL, sending every PostgreSQL URL to the psycopg 3 driver."""
    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 -- parsing the port raises ValueError for `host:abc`
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise BadInput(
            f"database URL is not a valid URL ({secrets.mask_urls(str(exc))}): use {_URL_FORMS}",
            param="database URL",
        ) from None
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in _DRIVERS:
        raise BadInput(
            f"database URL {safe_url(parsed)}: driver '{parsed.drivername}' is not supported: "
            f"use {_URL_FORMS}",
            param="database URL",
        )
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL with its password masked, for messages and logs."""
    try:
        return sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"


def migrations_dir() -> Path:
    """Where the alembic scripts are: inside the installed package, or the source tree."""
    packaged = Path(__file__).with_name("migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _configure_sqlite(engine: sa.Engine) -> None:
    # pysqlite's own transaction handling issues a deferred BEGIN lazily, which makes
    # a reader that later writes fail with "database is locked" without waiting. We
    # take over: autocommit at the driver level and BEGIN IMMEDIATE for every
    # transaction, so writers queue on the busy timeout instead (SQLAlchemy's
    # documented pysqlite recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: sqlite3.Connection, _record: Any) -> None:
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute(f"PRAGMA busy_timeout = {int(SQLITE_BUSY_TIMEOUT_SECONDS * 1000)}")
        cursor.execute("PRAGMA journal_mode = WAL")
        cursor.execute("PRAGMA synchronous = NORMAL")
        cursor.execute("PRAGMA foreign_keys = ON")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(connection: sa.Connection) -> None:
        connection.exec_driver_sql("BEGIN IMMEDIATE")


def create_engine(url: str | sa.URL) -> sa.Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        engine = sa.create_engine(
            parsed,
            hide_parameters=True,  # statement errors never echo a config or its secrets
            connect_args={"timeout": SQLITE_BUSY_TIMEOUT_SECONDS, "check_same_thread": False},
        )
        _configure_sqlite(engine)
        return engine
    return sa.create_engine(
        parsed,
        hide_parameters=True,
        # No pre-ping round trip per checkout: the runner retries a statement that
        # meets a dropped connection (a transient DatabaseError), and every other
        # command is a fresh process with a fresh pool.
        connect_args={
            "connect_timeout": 10,
            "application_name": "connector-sync",
            # Times come back as UTC whatever the server's default time zone.
            "options": "-c timezone=UTC",
        },
    )


class Closing:
    """Something to close, usable as `with thing:`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class Database(Closing):
    """One database: the engine, transactions that turn driver errors into ours, the schema.

    Accepts a URL or an Engine; disposes only an engine it created.
    """

    def __init__(self, url_or_engine: str | sa.URL | sa.Engine) -> None:
        if isinstance(url_or_engine, sa.Engine):
            self.engine = url_or_engine
            self._owns_engine = False
        else:
            self.engine = create_engine(url_or_engine)
            self._owns_engine = True
        self.dialect = self.engine.dialect.name
        self.is_postgresql = self.dialect == "postgresql"
        self.display_url = safe_url(self.engine.url)
        #: The whole URL, password included: for comparing with a source's, never shown.
        self.url = self.engine.url.render_as_string(hide_password=False)

    def close(self) -> None:
        if self._owns_engine:
            self.engine.dispose()

    def connect_error(self, exc: BaseException) -> DatabaseUnavailable:
        return DatabaseUnavailable(
            f"cannot connect to database {self.display_url}: {_first_line(exc)}", transient=True
        )

    def driver_error(self, exc: BaseException, *, connection_lost: bool) -> DatabaseError:
        """A driver's own error as ours: unreachable, or transient, or neither."""
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if connection_lost or sqlstate.startswith("08"):
            return self.connect_error(exc)
        return DatabaseError(_first_line(exc), transient=sqlstate.startswith(_TRANSIENT_SQLSTATES))

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A transaction: committed when the block ends, rolled back on an exception."""
        try:
            connection = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self.connect_error(exc) from exc
        with connection:
            try:
                with connection.begin():
                    yield connection
            except sa.exc.OperationalError as exc:
                if connection.invalidated or connection.closed or exc.connection_invalidated:
                    raise self.connect_error(exc) from exc
                raise DatabaseError(_first_line(exc), transient=_is_transient(exc)) from exc

    # -- schema -------------------------------------------------------------------

    def sqlite_path(self) -> str | None:
        """The SQLite database file, as given (None: not SQLite, or in memory)."""
        path = self.engine.url.database
        return path if self.dialect == "sqlite" and path and path != ":memory:" else None

    def missing_sqlite_file(self) -> bool:
        path = self.sqlite_path()
        return path is not None and not Path(path).exists()

    def current_revision(self) -> str | None:
        """The alembic revision stamped in the database, None for an empty database."""
        if self.missing_sqlite_file():
            return None  # asking must not create the file
        with self.begin() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            row = connection.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return str(row[0]) if row else None

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations (alembic, imported only here: it is slow to import)."""
        from alembic import command

        current = self.current_revision()
        if current is not None and current > SCHEMA_REVISION:
            raise self._newer_than_us(current)

        with self.begin() as connection:
            command.upgrade(self.alembic_config(connection), revision)

    def alembic_config(self, connection: sa.Connection | None = None) -> Any:
        from alembic.config import Config

        config = Config()
        config.set_main_option("script_location", str(migrations_dir()))
        # alembic's ini-style options interpolate `%`: a percent-encoded password needs %%.
        url = self.engine.url.render_as_string(hide_password=False)
        config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
        config.attributes["connection"] = connection
        return config

    def ensure_schema(self, *, create: bool = False) -> None:
        """Make sure the schema is current: SQLite upgrades itself, PostgreSQL says how.

        A SQLite file that does not exist is created only with `create` (`add`, `demo`):
        a scheduled `run` pointed at the wrong folder must fail loudly, not start an empty
        database and report "nothing due" for ever.
        """
        if not create and self.missing_sqlite_file():
            path = str(self.sqlite_path())
            shown = path if Path(path).is_absolute() or path.startswith(".") else f"./{path}"
            raise DatabaseUnavailable(
                f"no connector-sync database at {shown}: run 'connector-sync db "
                "upgrade' (or add a connector) to create it, or set DATABASE_URL"
            )
        revision = self.current_revision()
        if revision == SCHEMA_REVISION:
            return
        if self.dialect == "sqlite" and (revision is None or revision < SCHEMA_REVISION):
            self.upgrade()
            return
        if revision is None:
            state = "has no connector-sync schema"
        elif revision > SCHEMA_REVISION:
            raise self._newer_than_us(revision)
        else:
            state = f"is at schema revision {revision}, this version needs {SCHEMA_REVISION}"
        raise SchemaOutOfDate(
            f"database {self.display_url} {state}: run 'connector-sync db upgrade'"
        )

    def _newer_than_us(self, revision: str) -> SchemaOutOfDate:
        return SchemaOutOfDate(
            f"database {self.display_url} is at schema revision {revision}, newer than "
            f"this connector-sync ({SCHEMA_REVISION}): upgrade connector-sync"
        )


# SQLSTATEs worth retrying: serialization failure, deadlock, the connection classes,
# and the server shutting down or restarting.
_TRANSIENT_SQLSTATES = ("40001", "40P01", "08", "57P01", "57P02", "57P03")


def _is_transient(exc: sa.exc.OperationalError) -> bool:
    """Whether running the same transaction again may succeed."""
    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate.startswith(_TRANSIENT_SQLSTATES)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__
