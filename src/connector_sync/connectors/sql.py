"""`sql`: the rows of a query against any SQLAlchemy database, streamed.

Rows come through a server-side cursor (`yield_per`), a batch at a time, and are
turned into JSON-safe values. On PostgreSQL the session is read-only: this connector
reads a source, it never writes to it. It raises only plugin errors, never the
project's DatabaseError, which means *our* database failed.
"""

from __future__ import annotations

import datetime as dt
import decimal
import math
import re
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from connector_sync.connectors.base import CheckResult, ConfigField, ConnectorPlugin
from connector_sync.connectors.incremental import Cursor, Incremental, incremental_field
from connector_sync.exceptions import (
    ConfigError,
    PermanentError,
    PluginError,
    TransientError,
)
from connector_sync.secrets import is_env_ref, redact, secret_values

CURSOR_PARAM = "cursor"
CONNECT_TIMEOUT_SECONDS = 10
APPLICATION_NAME = "connector-sync sql connector"
# An OperationalError is transient (a refused or lost connection, a locked SQLite
# file) unless it is one of these: PostgreSQL SQLSTATE classes that no retry fixes,
# invalid authorization (28), invalid catalog name (3D), syntax or access rule (42),
# data exception (22), feature not supported (0A), invalid transaction state (25),
# or a message that says as much (drivers without SQLSTATEs, failed connections).
_PERMANENT_SQLSTATE_CLASSES = ("28", "3D", "42", "22", "0A", "25")
_PERMANENT_MESSAGES = re.compile(
    r"authentication failed|does not exist|no pg_hba\.conf entry|permission denied"
    r"|no such (table|column|function)|syntax error|unable to open database file"
    # libpq rejecting the URL's options (sslmode=bogus, port=99999); SQLite's
    # "incomplete input" is a syntax error, such as an unclosed comment.
    r"|invalid \w+ value|invalid port number|incomplete input",
    re.IGNORECASE,
)


def source_url(url: str) -> sa.URL:
    """The SQLAlchemy URL, PostgreSQL sent to the psycopg 3 driver as our own database is.

    Raises:
        ConfigError: not a SQLAlchemy URL, a port that is not one, or a dialect that is
            not installed (the message does not repeat the URL: it may hold a password).
            Whether the dialect's driver (DBAPI) is installed is checked on connecting.
    """
    where = "sql config field 'url'"
    if "\0" in url:
        raise ConfigError(f"{where} must not contain a NUL character")
    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        raise ConfigError(
            f"{where} is not a SQLAlchemy database URL "
            "(e.g. postgresql://user:password@host/db or sqlite:///path/to.db)"
        ) from None
    except ValueError:  # SQLAlchemy's int() of the port
        parsed = None
    if parsed is None or (parsed.port is not None and not 0 < parsed.port <= 65535):
        raise ConfigError(f"{where} has an invalid port: give a number from 1 to 65535")
    if parsed.drivername in ("postgresql", "postgres", "postgresql+psycopg2"):
        parsed = parsed.set(drivername="postgresql+psycopg")
    try:
        parsed.get_dialect()
    except (sa.exc.NoSuchModuleError, ImportError):
        raise ConfigError(
            f"{where}: no SQLAlchemy dialect {parsed.drivername} is installed "
            "(e.g. postgresql, sqlite, mysql+pymysql)"
        ) from None
    return parsed


def json_safe(value: Any) -> Any:
    """A database value as JSON can hold it: dates as ISO 8601, Decimal and UUID as
    strings, bytes as hex, intervals as seconds, anything else unknown as its text."""
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    if isinstance(value, dt.datetime | dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, dt.timedelta):
        return value.total_seconds()
    if isinstance(value, decimal.Decimal | uuid.UUID):
        return str(value)
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value).hex()
    if isinstance(value, Mapping):
        return {str(k): json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set | frozenset):
        return [json_safe(v) for v in value]
    return str(value)


class SqlConnector(ConnectorPlugin):
    type_name = "sql"
    description = "Rows of a SQL query on any SQLAlchemy database, streamed."
    config_fields = (
        ConfigField(
            "url",
            str,
            required=True,
            help="SQLAlchemy URL, e.g. postgresql://user:password@host/db (password masked)",
        ),
        ConfigField("query", str, required=True, help="a SELECT; with incremental, use :cursor"),
        ConfigField("batch_size", int, default=1000, minimum=1, help="rows fetched per round trip"),
        incremental_field("{cursor_field, initial_value}: bound as :cursor in the query"),
    )

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        result = super().validate_config(config)
        name = cls.type_name
        if not is_env_ref(result["url"]):
            source_url(result["url"])
        query = result["query"]
        if not is_env_ref(query):
            if not _strip_query(query):
                raise ConfigError(f"{name} config field 'query' is empty")
            binds = set(sa.text(query).compile().params)
            incremental = Incremental.from_config(name, result["incremental"])
            if incremental is None and CURSOR_PARAM in binds:
                raise ConfigError(
                    f"{name} config field 'query' uses :cursor, but 'incremental' is not set"
                )
            if incremental is not None:
                if CURSOR_PARAM not in binds:
                    raise ConfigError(
                        f"{name} config field 'query' must use :cursor when 'incremental' is "
                        "set, e.g. ... WHERE updated_at > :cursor ORDER BY updated_at"
                    )
                if incremental.initial_value is None:
                    raise ConfigError(
                        f"{name} config is missing required field 'incremental.initial_value' "
                        "(the :cursor of the first sync)"
                    )
            other = sorted(binds - {CURSOR_PARAM})
            if other:
                raise ConfigError(
                    f"{name} config field 'query' has bind parameter(s) "
                    f"{', '.join(':' + b for b in other)}; only :cursor is supplied "
                    "(write a literal colon as \\:)"
                )
        return result

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.url = source_url(self.config["url"])
        self.query = _strip_query(self.config["query"])
        self.incremental = Incremental.from_config(self.type_name, self.config["incremental"])
        self.cursor = Cursor(self.incremental, self.state) if self.incremental else None
        self.secrets = secret_values(self.secret_fields(), self.config, self.config)
        if self.url.password:
            self.secrets.add(str(self.url.password))
        self.label = self.url.render_as_string(hide_password=True)

    def check(self) -> CheckResult:
        # The query as a subquery with LIMIT 1 (TOP 1, … per dialect): the database
        # may stop after one row instead of producing the whole result. The line break
        # ends a `-- comment` on the query's last line before the closing parenthesis.
        subquery = sa.text(self.query + "\n").columns().subquery("connector_sync_check")
        probe: sa.Select[Any] = sa.select(sa.literal_column("*")).select_from(subquery).limit(1)
        with self._connection() as connection:
            try:
                result = connection.execute(probe, self._params())
                columns = list(result.keys())
                rows = result.fetchall()
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(exc) from exc
        return CheckResult(
            True,
            f"{self.label}: connected; the query returns columns {', '.join(columns)} "
            f"({len(rows)} row seen, checked with LIMIT 1)",
            {"columns": columns, "rows": len(rows)},
        )

    def read(self) -> Iterator[dict[str, Any]]:
        cursor = self.cursor
        with self._connection() as connection:
            try:
                result = connection.execution_options(yield_per=self.config["batch_size"]).execute(
                    sa.text(self.query), self._params()
                )
                columns = list(result.keys())
                self._check_columns(columns)
                for number, row in enumerate(result, 1):  # fetched a batch at a time
                    record = dict(zip(columns, map(json_safe, row), strict=True))
                    if cursor is not None:
                        cursor.advance(cursor.value_of(record, f"{self.label}: row {number}"))
                    yield record
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(exc) from exc

    # -- helpers -------------------------------------------------------------------

    def _params(self) -> dict[str, Any]:
        if self.cursor is None:
            return {}
        return {CURSOR_PARAM: self.cursor.start}

    def _check_columns(self, columns: list[str]) -> None:
        seen: set[str] = set()
        for column in columns:
            if column in seen:
                raise PermanentError(
                    f"{self.label}: the query returns column '{column}' twice; give one an alias"
                )
            seen.add(column)

    @contextmanager
    def _connection(self) -> Iterator[sa.Connection]:
        """A connection on an engine of its own (no pool), both closed when the block ends."""
        engine = self._engine()
        try:
            try:
                connection = engine.connect()
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(exc) from exc
            with connection:
                yield connection
        finally:
            engine.dispose()

    def _engine(self) -> sa.Engine:
        url = self.url
        connect_args: dict[str, Any] = {}
        if url.get_backend_name() == "postgresql":
            connect_args = {
                "connect_timeout": CONNECT_TIMEOUT_SECONDS,
                "application_name": APPLICATION_NAME,
                "options": "-c default_transaction_read_only=on",
            }
        elif url.get_backend_name() == "sqlite" and url.database not in (None, "", ":memory:"):
            # SQLite would create a missing file and then report "no such table".
            path = Path(url.database or "")
            if not url.query.get("uri") and not path.exists():
                raise PermanentError(f"{self.label}: SQLite database file not found: {path}")
        try:
            return sa.create_engine(url, poolclass=NullPool, connect_args=connect_args)
        except (sa.exc.NoSuchModuleError, ImportError) as exc:
            raise ConfigError(
                f"sql config field 'url': no SQLAlchemy driver for {url.drivername} "
                f"is installed ({_first_line(exc)})"
            ) from None
        except sa.exc.ArgumentError as exc:
            raise ConfigError(
                f"sql config field 'url': {redact(_first_line(exc), self.secrets)}"
            ) from None

    def _error(self, exc: sa.exc.SQLAlchemyError) -> PluginError:
        """The plugin error for a database failure: transient only for lost connections."""
        orig = getattr(exc, "orig", None)
        detail = redact(_first_line(orig or exc), self.secrets)
        message = f"{self.label}: {detail}"
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            sqlstate = getattr(orig, "sqlstate", None) or ""
            permanent = sqlstate.startswith(_PERMANENT_SQLSTATE_CLASSES) or bool(
                _PERMANENT_MESSAGES.search(detail)
            )
            return PermanentError(message) if permanent else TransientError(message)
        return PermanentError(message)


def _strip_query(query: str) -> str:
    """The query without trailing semicolons (it becomes a subquery in `check`)."""
    return query.strip().rstrip(";").strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
