"""Connections, transactions and schema versions: how connector-sync reaches its database.

PostgreSQL is reached through psycopg directly (a small pool, one connection per
transaction in flight): the store's named queries need nothing more, and SQLAlchemy's
import and engine start-up cost more than an operator command's queries. SQLAlchemy is
imported only where it is used: the SQLite store (Core), alembic's migrations, and
`engine` for whoever asks for one.
"""

from __future__ import annotations

import sys
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from connector_sync import secrets
from connector_sync.exceptions import (
    BadInput,
    DatabaseError,
    DatabaseUnavailable,
    SchemaOutOfDate,
)

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy as sa
    from typing_extensions import TypeIs

#: The alembic revision this code expects. tests/test_migrations.py keeps it equal
#: to the newest file in migrations/versions, so start-up needs no alembic import.
SCHEMA_REVISION = "0008"

SQLITE_BUSY_TIMEOUT_SECONDS = 30.0

#: What every PostgreSQL connection is opened with (the pool's and SQLAlchemy's alike).
PG_CONNECT_ARGS: dict[str, Any] = {
    "connect_timeout": 10,
    "application_name": "connector-sync",
    # Times come back as UTC whatever the server's default time zone.
    "options": "-c timezone=UTC",
}
#: Connections a process keeps open at most (the pool waits for one beyond that), and
#: how long it waits: as SQLAlchemy's default pool did (5 + 10 overflow, 30 s).
PG_POOL_SIZE = 15
PG_POOL_TIMEOUT_SECONDS = 30.0

_DRIVERS = ("postgresql+psycopg", "sqlite", "sqlite+pysqlite")
_URL_FORMS = "postgresql://user@host/db (psycopg 3) or sqlite:///path.db"
_PG_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg", "postgresql+psycopg2")


@dataclass(frozen=True)
class PlainUrl:
    """A database URL in one of the common forms, read without SQLAlchemy: a PostgreSQL
    server (psycopg's connection arguments) or a SQLite file (its path as given)."""

    dialect: str
    #: psycopg.connect's keyword arguments (PostgreSQL).
    connect_args: dict[str, Any]
    #: The file (SQLite).
    sqlite_path: str | None = None


def plain_url(url: str) -> PlainUrl | None:
    """`url` read as SQLAlchemy would read it, for the forms this is sure of; None for any
    other (SQLAlchemy then parses it, and says what is wrong with it)."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return None
    scheme = scheme.lower()
    if scheme in ("sqlite", "sqlite+pysqlite"):
        path = rest.removeprefix("/")
        if not rest.startswith("/") or not path or any(ch in path for ch in "?#%"):
            return None
        return None if path == ":memory:" else PlainUrl("sqlite", {}, path)
    if scheme not in _PG_SCHEMES or "," in rest or "#" in rest:
        return None
    try:
        parts = urlsplit("postgresql://" + rest)
        port = parts.port
    except ValueError:
        return None
    args: dict[str, Any] = {
        "host": parts.hostname and unquote(parts.hostname),
        "port": port,
        "user": parts.username and unquote(parts.username),
        "password": parts.password and unquote(parts.password),
        "dbname": unquote(parts.path.removeprefix("/")) or None,
    }
    args = {key: value for key, value in args.items() if value is not None}
    args.update(parse_qsl(parts.query, keep_blank_values=True))
    return PlainUrl("postgresql", {**args, **PG_CONNECT_ARGS})


def make_url(url: str | sa.URL) -> sa.URL:
    """Parse a URL, sending every PostgreSQL URL to the psycopg 3 driver."""
    import sqlalchemy as sa

    try:
        parsed = sa.make_url(url)
        parsed.port  # noqa: B018 -- parsing the port raises ValueError for `host:abc`
    except (sa.exc.ArgumentError, ValueError) as exc:
        raise BadInput(
            f"database URL is not a valid URL ({secrets.mask_urls(str(exc))}): use {_URL_FORMS}",
            param="database URL",
        ) from None
    if parsed.port is not None and not 0 < parsed.port < 65536:
        raise BadInput(
            f"database URL {safe_url(parsed)}: port {parsed.port} is out of range: "
            "give one from 1 to 65535",
            param="database URL",
        )
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    if parsed.drivername not in _DRIVERS:
        raise BadInput(
            f"database URL {safe_url(parsed)}: driver '{parsed.drivername}' is not supported: "
            f"use {_URL_FORMS}",
            param="database URL",
        )
    if parsed.get_backend_name() == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise BadInput(
            f"database URL {safe_url(parsed)} is a database in memory, gone when the command "
            "ends: give a file, e.g. sqlite:///connector-sync.db",
            param="database URL",
        )
    return parsed


def safe_url(url: str | sa.URL) -> str:
    """The URL as messages and logs may show it: the password masked, and the value of
    every query parameter whose name looks secret (libpq's `?password=`, `?sslpassword=`)."""
    import sqlalchemy as sa

    try:
        rendered = sa.make_url(url).render_as_string(hide_password=True)
    except sa.exc.ArgumentError:
        return "<unparseable URL>"
    # SQLAlchemy hides only the password of the authority; the query goes through the
    # same name rule as every other URL the project shows.
    return secrets.mask_urls(rendered)


def migrations_dir() -> Path:
    """Where the alembic scripts are: inside the installed package, or the source tree."""
    packaged = Path(__file__).with_name("migrations")
    if packaged.is_dir():
        return packaged
    return Path(__file__).resolve().parents[2] / "migrations"


def _configure_sqlite(engine: sa.Engine) -> None:
    from sqlalchemy import event

    # pysqlite's own transaction handling issues a deferred BEGIN lazily, which makes
    # a reader that later writes fail with "database is locked" without waiting. We
    # take over: autocommit at the driver level and BEGIN IMMEDIATE for every
    # transaction, so writers queue on the busy timeout instead (SQLAlchemy's
    # documented pysqlite recipe).
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
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
    import sqlalchemy as sa

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
        connect_args=PG_CONNECT_ARGS,
    )


class Closing:
    """Something to close, usable as `with thing:`."""

    def close(self) -> None:
        raise NotImplementedError

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ConnectionPool:
    """psycopg connections shared by a process's threads: one per transaction in flight,
    the idle ones kept for the next (newest first), at most `size` open at once.

    Not psycopg_pool: it connects in background workers and keeps retrying a server
    that does not answer while the caller waits, so a command could not fail at once
    with the server's own reason.
    """

    def __init__(
        self,
        connect: Callable[[], psycopg.Connection[Any]],
        size: int = PG_POOL_SIZE,
        timeout: float = PG_POOL_TIMEOUT_SECONDS,
    ) -> None:
        self._connect = connect
        self._size = size
        self._timeout = timeout
        self._idle: list[psycopg.Connection[Any]] = []
        self._lock = threading.Lock()
        self._slots = threading.BoundedSemaphore(size)

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """A connection for one transaction, given back (or closed, if broken) after it."""
        if not self._slots.acquire(timeout=self._timeout):
            raise DatabaseUnavailable(
                f"all {self._size} database connections of this process stayed busy for "
                f"{self._timeout:g}s",
                transient=True,
            )
        try:
            conn = self._take()
            try:
                yield conn
            finally:
                self._give_back(conn)
        finally:
            self._slots.release()

    def _take(self) -> psycopg.Connection[Any]:
        with self._lock:
            while self._idle:
                conn = self._idle.pop()
                if not conn.closed:
                    return conn
        return self._connect()

    def _give_back(self, conn: psycopg.Connection[Any]) -> None:
        from psycopg.pq import TransactionStatus

        if conn.closed or conn.broken or conn.info.transaction_status != TransactionStatus.IDLE:
            conn.close()
            return
        with self._lock:
            self._idle.append(conn)

    def close(self) -> None:
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            conn.close()


class Database(Closing):
    """One database: its connections, transactions that turn driver errors into ours, the
    schema.

    Accepts a URL or an Engine; disposes only an engine it created. On PostgreSQL the
    store's transactions (`transaction`) go through psycopg, without SQLAlchemy; `engine`
    and `begin` (SQLAlchemy) are made on first use.
    """

    def __init__(self, url_or_engine: str | sa.URL | sa.Engine) -> None:
        plain = plain_url(url_or_engine) if isinstance(url_or_engine, str) else None
        self._owns_engine = not _is_engine(url_or_engine)
        if plain is not None and plain.dialect == "postgresql":
            self.dialect = "postgresql"
            #: The whole URL, password included: for comparing with a source's, never shown.
            self.url = str(url_or_engine)
            self._pg_connect_args = plain.connect_args
        else:
            engine = url_or_engine if _is_engine(url_or_engine) else create_engine(url_or_engine)
            self.__dict__["engine"] = engine
            self.dialect = engine.dialect.name
            self.url = engine.url.render_as_string(hide_password=False)
            self._pg_connect_args = _pg_args_of(engine) if self.dialect == "postgresql" else {}
        self.is_postgresql = self.dialect == "postgresql"
        self._pool: ConnectionPool | None = None
        self._pool_lock = threading.Lock()

    @cached_property
    def engine(self) -> sa.Engine:
        """The SQLAlchemy engine (made on first use on PostgreSQL)."""
        return create_engine(self.url)

    @cached_property
    def display_url(self) -> str:
        """The URL as it may be shown: the password masked."""
        return safe_url(make_url(self.url))

    def close(self) -> None:
        if self._pool is not None:
            self._pool.close()
        if self._owns_engine and "engine" in self.__dict__:
            self.engine.dispose()

    def connect_error(self, exc: BaseException, *, uncertain: bool = False) -> DatabaseUnavailable:
        """Unreachable; `uncertain` when the connection broke inside a transaction."""
        return DatabaseUnavailable(
            f"cannot connect to database {self.display_url}: {_first_line(exc)}",
            transient=True,
            uncertain=uncertain,
        )

    def driver_error(self, exc: BaseException, *, connection_lost: bool) -> DatabaseError:
        """A driver's own error as ours: unreachable, or transient, or neither."""
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if connection_lost or sqlstate.startswith("08"):
            return self.connect_error(exc, uncertain=True)
        return DatabaseError(_first_line(exc), transient=sqlstate.startswith(_TRANSIENT_SQLSTATES))

    @contextmanager
    def transaction(self) -> Iterator[psycopg.Connection[Any]]:
        """PostgreSQL: a psycopg connection in a transaction, committed when the block ends,
        rolled back on an exception; driver errors become DatabaseError."""
        with self.connection() as conn, conn.transaction():
            yield conn

    @contextmanager
    def connection(self) -> Iterator[psycopg.Connection[Any]]:
        """PostgreSQL: a psycopg connection in autocommit, for one statement (its own
        transaction, without a BEGIN and a COMMIT round trip); driver errors become
        DatabaseError."""
        import psycopg

        with self._connections().connection() as conn:
            try:
                yield conn
            except psycopg.Error as exc:
                raise self.driver_error(exc, connection_lost=conn.broken) from exc

    def _connections(self) -> ConnectionPool:
        with self._pool_lock:
            if self._pool is None:
                self._pool = ConnectionPool(self._connect)
            return self._pool

    def _connect(self) -> psycopg.Connection[Any]:
        import psycopg

        try:
            return psycopg.connect(autocommit=True, **self._pg_connect_args)
        except psycopg.Error as exc:
            raise self.connect_error(exc) from exc

    @contextmanager
    def begin(self) -> Iterator[sa.Connection]:
        """A SQLAlchemy transaction: committed when the block ends, rolled back on an
        exception."""
        import sqlalchemy as sa

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
                    raise self.connect_error(exc, uncertain=True) from exc
                raise DatabaseError(_first_line(exc), transient=_is_transient(exc)) from exc

    # -- schema -------------------------------------------------------------------

    def sqlite_path(self) -> str | None:
        """The SQLite database file, as given (None: not SQLite, or in memory)."""
        if self.dialect != "sqlite":
            return None
        path = self.engine.url.database
        return path if path and path != ":memory:" else None

    def missing_sqlite_file(self) -> bool:
        path = self.sqlite_path()
        return path is not None and not Path(path).exists()

    def refuse_missing_sqlite_file(self) -> None:
        """Raises DatabaseUnavailable, saying how to create it, when the database is a SQLite
        file that does not exist."""
        if self.missing_sqlite_file():
            path = str(self.sqlite_path())
            shown = path if Path(path).is_absolute() or path.startswith(".") else f"./{path}"
            raise DatabaseUnavailable(
                f"no connector-sync database at {shown}: run 'connector-sync db "
                "upgrade' (or add a connector) to create it, or set DATABASE_URL"
            )

    def current_revision(self) -> str | None:
        """The alembic revision stamped in the database, None for an empty database."""
        if self.is_postgresql:
            return self._pg_revision()
        if self.missing_sqlite_file():
            return None  # asking must not create the file
        import sqlalchemy as sa

        with self.begin() as connection:
            if not sa.inspect(connection).has_table("alembic_version"):
                return None
            row = connection.execute(sa.text("SELECT version_num FROM alembic_version")).first()
            return str(row[0]) if row else None

    def _pg_revision(self) -> str | None:
        import psycopg

        with self._connections().connection() as conn:  # autocommit: one round trip
            try:
                row = conn.execute("SELECT version_num FROM alembic_version").fetchone()
            except psycopg.errors.UndefinedTable:
                return None
            except psycopg.Error as exc:
                raise self.driver_error(exc, connection_lost=conn.broken) from exc
        return str(row[0]) if row else None

    def upgrade(self, revision: str = "head") -> None:
        """Apply the migrations (alembic, imported only here: it is slow to import)."""
        from alembic import command

        current = self.current_revision()
        if current is not None and current > SCHEMA_REVISION:
            raise self._newer_than_us(current)

        with self.migrating() as connection:
            command.upgrade(self.alembic_config(connection), revision)

    @contextmanager
    def migrating(self) -> Iterator[sa.Connection]:
        """A transaction to migrate in. On SQLite, with foreign keys off until it ends: a
        migration that rebuilds a table (alembic's batch mode: copy, drop, rename) would
        otherwise delete, by ON DELETE CASCADE, every row that refers to it (0003 rebuilt
        connectors, and took every sync and dataset with it). The references are checked
        before the commit; a broken one rolls the migration back."""
        if self.dialect != "sqlite":
            with self.begin() as connection:
                yield connection
            return
        import sqlalchemy as sa

        try:
            connection = self.engine.connect()
        except sa.exc.DBAPIError as exc:
            raise self.connect_error(exc) from exc
        with connection:
            raw = connection.connection.driver_connection
            assert raw is not None
            raw.execute("PRAGMA foreign_keys = OFF")  # no effect inside a transaction
            try:
                with connection.begin():
                    yield connection
                    broken = connection.exec_driver_sql("PRAGMA foreign_key_check").fetchall()
                    if broken:
                        raise DatabaseError(
                            f"the migration would leave {len(broken)} row(s) referring to rows "
                            f"that are gone (first: {tuple(broken[0])}); nothing was changed"
                        )
            finally:
                raw.execute("PRAGMA foreign_keys = ON")

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
        database and report "nothing due" for ever. A SQLite file that holds other tables
        and no connector-sync schema is refused too; `db upgrade` adds it there if asked.
        """
        if not create:
            self.refuse_missing_sqlite_file()
        others = self._foreign_tables()
        if others:  # another program's SQLite file, given by mistake: not ours to change
            raise SchemaOutOfDate(
                f"database {self.display_url} has no connector-sync schema but other tables "
                f"({', '.join(others)}): check the database URL, or run 'connector-sync db "
                "upgrade' to add the schema to this file"
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

    def _foreign_tables(self) -> list[str]:
        """The first three tables of a SQLite file that holds tables but none of
        connector-sync's (another program's database); nothing for any other file, and
        for PostgreSQL, which never upgrades itself. Read without the engine, which would
        turn the file to WAL mode; a file that cannot be read so is left to the engine."""
        path = self.sqlite_path()
        if path is None or not Path(path).is_file():
            return []
        import sqlite3
        from contextlib import closing

        from connector_sync.models import metadata

        uri = f"{Path(path).absolute().as_uri()}?mode=ro"
        try:
            with closing(sqlite3.connect(uri, uri=True)) as conn:
                rows = conn.execute(
                    "SELECT name FROM sqlite_master WHERE type = 'table'"
                ).fetchall()
        except sqlite3.Error:
            return []
        names = {name for (name,) in rows if not name.startswith("sqlite_")}
        if not names or names & {*metadata.tables, "alembic_version"}:
            return []  # empty, or ours (perhaps being created by another process now)
        return sorted(names)[:3]

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
    import sqlite3

    orig = exc.orig
    if isinstance(orig, sqlite3.OperationalError):
        text = str(orig).lower()
        return "locked" in text or "busy" in text
    sqlstate = getattr(orig, "sqlstate", None) or ""
    return sqlstate.startswith(_TRANSIENT_SQLSTATES)


def _first_line(exc: BaseException) -> str:
    text = str(getattr(exc, "orig", None) or exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _is_engine(value: object) -> TypeIs[sa.Engine]:
    """Whether `value` is a SQLAlchemy Engine (without importing SQLAlchemy to ask)."""
    sa = sys.modules.get("sqlalchemy")
    return sa is not None and isinstance(value, sa.Engine)


def _pg_args_of(engine: sa.Engine) -> dict[str, Any]:
    """psycopg.connect's arguments for the database an engine reaches."""
    _, params = engine.dialect.create_connect_args(engine.url)
    return {**params, **PG_CONNECT_ARGS}
