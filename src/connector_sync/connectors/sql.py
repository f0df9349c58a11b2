"""`sql`: the rows of a query on PostgreSQL or SQLite, streamed.

Rows come through a server-side cursor (`yield_per`), a batch at a time, and are
turned into JSON-safe values. It raises only plugin errors, never the project's
DatabaseError, which means *our* database failed.

This connector reads a source and never writes to it, and the database enforces that,
not the query's text: a SQLite file is opened read-only (`mode=ro`) with an authorizer
that allows reads only (no ATTACH, PRAGMA, VACUUM INTO or temporary tables); on
PostgreSQL every transaction is READ ONLY and every statement goes through a
server-side cursor, which holds exactly one SELECT or VALUES. Other databases are
refused. `read_only_statement` is a first filter at `add`, for a clear message, not the
guarantee.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import getpass
import ipaddress
import math
import os
import re
import socket
import sqlite3
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from itertools import repeat
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, parse_qsl, quote, unquote, urlencode, urlsplit

import sqlalchemy as sa
from sqlalchemy.pool import NullPool

from connector_sync.connectors import base
from connector_sync.connectors.base import CheckResult, ConfigField, ConnectorPlugin
from connector_sync.connectors.incremental import Cursor, Incremental, incremental_field
from connector_sync.exceptions import (
    ConfigError,
    PermanentError,
    PluginError,
    TransientError,
)
from connector_sync.policy import Policy
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
    r"|invalid \w+ value|invalid port number|incomplete input"
    # A write refused by the read-only connection: no retry makes it a read.
    r"|readonly database|not authorized|authorization denied",
    re.IGNORECASE,
)
#: The databases this connector can hold to reading (see the module docstring).
READ_ONLY_BACKENDS = ("postgresql", "sqlite")
# What the statement filter skips: comments, string literals, quoted identifiers and
# PostgreSQL's dollar quoting, each replaced by a space before looking for keywords.
_NOT_SQL = re.compile(
    r"--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|`[^`]*`|\[[^\]]*\]"
    r"|\$(\w*)\$.*?\$\1\$",
    re.DOTALL,
)
_READ_KEYWORDS = ("select", "with", "values")
# A statement that writes, inside parentheses (a CTE's body, a subquery) or after them
# (a WITH list followed by DELETE ...).
_NESTED_WRITE = re.compile(r"[()]\s*(insert|update|delete|merge)\b", re.IGNORECASE)
_SELECT_INTO = re.compile(r"\binto\b", re.IGNORECASE)
_LOCKING = re.compile(r"\bfor\s+(update|share|no\s+key\s+update|key\s+share)\b", re.IGNORECASE)
# SQLite authorizer actions a read needs. A table-valued function (json_each) is built
# with an internal UPDATE of sqlite_master, harmless on a file opened read-only.
_SQLITE_READS = frozenset(
    {sqlite3.SQLITE_SELECT, sqlite3.SQLITE_READ, sqlite3.SQLITE_FUNCTION, sqlite3.SQLITE_RECURSIVE}
)
# How often (in SQLite virtual machine steps) a check looks at its deadline.
_SQLITE_PROGRESS_STEPS = 10_000


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


def read_only_statement(query: str) -> None:
    """Raises ConfigError unless `query` is one SELECT, WITH or VALUES statement that
    does not write (a data-modifying CTE, SELECT INTO, FOR UPDATE).

    A first filter for a clear message at `add`, not the guarantee: the database holds
    the connection to reading whatever gets through.
    """
    where = "sql config field 'query'"
    text = _strip_query(_NOT_SQL.sub(" ", query))
    if ";" in text:
        raise ConfigError(f"{where} must be one statement: remove what follows the ';'")
    first = re.match(r"[\s(]*(\w*)", text)
    keyword = first[1].lower() if first else ""
    if keyword not in _READ_KEYWORDS:
        found = f", not {keyword[:20].upper()}" if keyword else ""
        raise ConfigError(
            f"{where} must start with SELECT, WITH or VALUES{found}: this connector only reads"
        )
    nested = _NESTED_WRITE.search(text)
    if nested:
        raise ConfigError(
            f"{where} holds {nested[1].upper()}, which writes: this connector only reads"
        )
    if _SELECT_INTO.search(text):
        raise ConfigError(
            f"{where} uses SELECT ... INTO, which creates a table: this connector only reads"
        )
    locking = _LOCKING.search(text)
    if locking:
        raise ConfigError(
            f"{where} uses FOR {' '.join(locking[1].upper().split())}, which locks rows: "
            "this connector only reads"
        )


def same_database(source: str, own: str) -> bool:
    """Whether the `source` URL names the database at `own` (connector-sync's own).

    The same SQLite file once paths are resolved (relative to the current directory,
    symlinks followed), or the same PostgreSQL host, port and database name (user and
    password aside; localhost, 127.0.0.1, ::1 and a Unix socket count as one host).
    A URL that cannot be parsed is no database at all: False.
    """
    try:
        first, second = source_url(source), source_url(own)
    except ConfigError:
        return False
    if first.get_backend_name() != second.get_backend_name():
        return False
    if first.get_backend_name() == "sqlite":
        paths = [_sqlite_path(first), _sqlite_path(second)]
        if paths[0] is None or paths[1] is None:
            return False
        try:  # one file by identity (device and inode): a hard link is the same file
            return os.path.samefile(paths[0], paths[1])
        except OSError:  # one does not exist (yet): compare where they lead
            return os.path.realpath(paths[0]) == os.path.realpath(paths[1])
    return _server_database(first) == _server_database(second)


def _server_database(url: sa.URL) -> tuple[str, int, str]:
    """(host, port, database) as libpq would connect: query parameters (`?dbname=`,
    `?host=`, `?port=`) win over the URL's parts, and every name or address of this
    machine (loopback, 0.0.0.0, its host name, a Unix socket) is one host."""
    query = {key: str(value) for key, value in url.query.items()}
    host = (query.get("host") or url.host or "").lower()
    port_text = query.get("port") or (str(url.port) if url.port else "")
    port = (
        int(port_text)
        if port_text.isdigit()
        else {"postgresql": 5432}.get(url.get_backend_name(), 0)
    )
    database = query.get("dbname") or url.database or url.username or getpass.getuser()
    return ("localhost" if _this_machine(host) else host, port, database)


def _this_machine(host: str) -> bool:
    """Whether `host` reaches this machine: empty (the default socket), a socket path,
    a loopback or unspecified address, or a name that resolves to one of this machine's."""
    if not host or host.startswith("/") or host == "localhost":
        return True
    try:
        addresses = {str(info[4][0]) for info in socket.getaddrinfo(host, None)}
        mine = {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None)}
    except (OSError, UnicodeError):
        return False
    for address in addresses:
        ip = ipaddress.ip_address(address.split("%")[0])
        if ip.is_loopback or ip.is_unspecified or address in mine:
            return True
    return False


def _sqlite_path(url: sa.URL) -> str | None:
    """The file a SQLite URL names (a `file:` URI's path too); None for memory."""
    uri = _sqlite_file_uri(url)
    if uri is not None:
        if dict(parse_qsl(uri.query)).get("mode") == "memory":
            return None
        database = unquote(uri.path)
    else:
        database = url.database or ""
    return None if database in ("", ":memory:") else database


def _sqlite_file_uri(url: sa.URL) -> SplitResult | None:
    """The `file:` URI a SQLite URL gives as its database (with `?uri=true`), if any."""
    database = url.database or ""
    uri = str(url.query.get("uri", "")).lower() in ("true", "1")
    return urlsplit(database) if uri and database.startswith("file:") else None


def _read_only_sqlite_uri(url: sa.URL) -> str:
    """The SQLite URI that opens the URL's database read-only (`mode=ro`)."""
    uri = _sqlite_file_uri(url)
    if uri is not None:
        query = [(k, v) for k, v in parse_qsl(uri.query, keep_blank_values=True) if k != "mode"]
        return uri._replace(query=urlencode([*query, ("mode", "ro")])).geturl()
    path = _sqlite_path(url)
    return "file::memory:" if path is None else f"file:{quote(os.path.abspath(path))}?mode=ro"


def _sqlite_reads_only(
    action: int, table: str | None, _arg: str | None, _database: str | None, _trigger: str | None
) -> int:
    """A SQLite authorizer that allows what a SELECT needs and refuses everything else."""
    if action in _SQLITE_READS or (action == sqlite3.SQLITE_UPDATE and table == "sqlite_master"):
        return sqlite3.SQLITE_OK
    return sqlite3.SQLITE_DENY


def json_safe(value: Any) -> Any:
    """A database value as JSON can hold it: dates as ISO 8601, Decimal and UUID as
    strings, bytes as hex, intervals as seconds, NaN and infinities as their text,
    anything else unknown as its text."""
    kind = type(value)
    if kind in _AS_IS:  # most values: one lookup, no conversion
        return value
    convert = _CONVERT.get(kind)
    if convert is not None:
        return convert(value)
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return _finite_or_text(value)
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


def _finite_or_text(value: float) -> float | str:
    return value if math.isfinite(value) else str(value)


_AS_IS = frozenset({type(None), bool, int, str})
# The exact types of the usual values, each with its conversion (subclasses take the
# isinstance path of json_safe).
_CONVERT: dict[type, Callable[[Any], Any]] = {
    float: _finite_or_text,
    dt.datetime: dt.datetime.isoformat,
    dt.date: dt.date.isoformat,
    dt.time: dt.time.isoformat,
    dt.timedelta: dt.timedelta.total_seconds,
    decimal.Decimal: str,
    uuid.UUID: str,
    bytes: bytes.hex,
}


def records_of(
    columns: list[str], rows: Sequence[Sequence[Any]], fields: set[tuple[str, type]]
) -> list[dict[str, Any]]:
    """Rows as records of `json_safe` values, converted a column at a time: a column of
    one type (or of one type and NULLs) in one pass of its conversion, not a call of
    json_safe per value. Adds the records' (column, value type) pairs to `fields`."""
    if not rows:
        return []
    values = [_json_safe_column(column) for column in zip(*rows, strict=True)]
    for name, column in zip(columns, values, strict=True):
        fields.update(zip(repeat(name), set(map(type, column))))
    return list(map(dict, map(zip, repeat(columns), zip(*values, strict=True))))


def _json_safe_column(column: tuple[Any, ...]) -> Sequence[Any]:
    kinds = set(map(type, column))
    if kinds <= _AS_IS:
        return column
    if kinds == {float} or kinds == {float, type(None)}:
        if all(math.isfinite(value) for value in column if value is not None):
            return column
        return [json_safe(v) for v in column]
    known = kinds - {type(None)}
    convert = _CONVERT.get(known.pop()) if len(known) == 1 else None
    if convert is None:
        return list(map(json_safe, column))
    if type(None) in kinds:
        return [None if v is None else convert(v) for v in column]
    return list(map(convert, column))


class SqlConnector(ConnectorPlugin):
    type_name = "sql"
    description = "Rows of a SQL query on PostgreSQL or SQLite (read-only), streamed."
    config_fields = (
        ConfigField(
            "url",
            str,
            required=True,
            help="PostgreSQL or SQLite URL, e.g. postgresql://user:pw@host/db (password masked)",
        ),
        ConfigField(
            "query",
            str,
            required=True,
            help="one SELECT, WITH or VALUES statement; with incremental, use :cursor",
        ),
        ConfigField("batch_size", int, default=1000, minimum=1, help="rows fetched per round trip"),
        ConfigField(
            "allow_own_database",
            bool,
            default=False,
            help="read connector-sync's own database, where every connector's config and "
            "secrets are (add --allow-own-database): off unless you mean it",
        ),
        incremental_field("{cursor_field, initial_value}: bound as :cursor in the query"),
        base.check_timeout_field(),
    )

    @classmethod
    def refuse_own_database(cls, config: Mapping[str, Any], own_database_url: str) -> None:
        url = config.get("url")
        if config.get("allow_own_database") or not isinstance(url, str) or is_env_ref(url):
            return
        if same_database(url, own_database_url):
            raise ConfigError(
                f"{cls.type_name} config field 'url' is connector-sync's own database, which "
                "holds every connector's config and secrets: read another database, or say "
                "you mean it with allow_own_database (add --allow-own-database)"
            )

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        result = super().validate_config(config)
        name = cls.type_name
        if not is_env_ref(result["url"]):
            _check_source(source_url(result["url"]))
        query = result["query"]
        if not is_env_ref(query):
            if not _strip_query(query):
                raise ConfigError(f"{name} config field 'query' is empty")
            read_only_statement(query)
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
        deadline = base.Deadline.after(self.config["check_timeout"])
        with self._connection(deadline) as connection:
            try:
                result = connection.execute(probe, self._params())
                columns = list(result.keys())
                rows = result.fetchall()
            except sa.exc.SQLAlchemyError as exc:
                if deadline.passed():
                    raise deadline.error(self.label) from None
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
                number, size = 0, self.config["batch_size"]
                fields = self.record_fields = set()  # json_safe: no float NaN or infinite
                while rows := result.fetchmany(size):  # a batch at a time, as fetched
                    records = records_of(columns, rows, fields)
                    if cursor is None:
                        yield from records
                        continue
                    for number, record in enumerate(records, number + 1):  # noqa: B020
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
    def _connection(self, deadline: base.Deadline | None = None) -> Iterator[sa.Connection]:
        """A read-only connection on an engine of its own (no pool), both closed when the
        block ends; every statement on it goes through a server-side cursor.

        With a deadline (a check), the database stops a statement that runs past it.
        """
        engine = self._engine(deadline)
        try:
            try:
                connection = engine.connect()
                if self.url.get_backend_name() == "sqlite":
                    raw: Any = connection.connection.driver_connection
                    raw.set_authorizer(_sqlite_reads_only)
                    if deadline is not None:
                        raw.set_progress_handler(deadline.passed, _SQLITE_PROGRESS_STEPS)
            except sa.exc.SQLAlchemyError as exc:
                raise self._error(exc) from exc
            if self.url.get_backend_name() == "postgresql":
                _uuid_as_text(connection.connection.driver_connection)
            with connection:
                # BEGIN READ ONLY on PostgreSQL; a server-side cursor (DECLARE) holds one
                # SELECT or VALUES, never a second statement after a semicolon.
                yield connection.execution_options(postgresql_readonly=True, stream_results=True)
        finally:
            engine.dispose()

    def _engine(self, deadline: base.Deadline | None) -> sa.Engine:
        url = self.url
        _check_source(url)
        connect_args: dict[str, Any] = {}
        creator: Callable[[], sqlite3.Connection] | None = None
        if url.get_backend_name() == "postgresql":
            options = [str(url.query.get("options", "")), "-c default_transaction_read_only=on"]
            connect_timeout = CONNECT_TIMEOUT_SECONDS
            if deadline is not None:
                options.append(f"-c statement_timeout={max(1, int(deadline.left() * 1000))}")
                connect_timeout = max(1, min(connect_timeout, math.ceil(deadline.left())))
            connect_args = {
                "connect_timeout": connect_timeout,
                "application_name": APPLICATION_NAME,
                "options": " ".join(filter(None, options)),
            }
        else:
            path = _sqlite_path(url)
            # SQLite would create a missing file and then report "no such table".
            if path is not None and not Path(path).exists():
                raise PermanentError(f"{self.label}: SQLite database file not found: {path}")
            creator = functools.partial(sqlite3.connect, _read_only_sqlite_uri(url), uri=True)
        try:
            if creator is not None:
                return sa.create_engine(url, poolclass=NullPool, creator=creator)
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
        detail = base.printable(redact(_first_line(orig or exc), self.secrets))
        message = f"{self.label}: {detail}"
        if isinstance(exc, sa.exc.OperationalError | sa.exc.InterfaceError):
            sqlstate = getattr(orig, "sqlstate", None) or ""
            permanent = sqlstate.startswith(_PERMANENT_SQLSTATE_CLASSES) or bool(
                _PERMANENT_MESSAGES.search(detail)
            )
            return PermanentError(message) if permanent else TransientError(message)
        return PermanentError(message)


def _uuid_as_text(connection: Any) -> None:
    """Have psycopg hand over a uuid as PostgreSQL writes it, which is str(UUID) (no UUID
    object made, then turned into the same text)."""
    from psycopg.types.string import TextLoader

    connection.adapters.register_loader("uuid", TextLoader)


def _check_source(url: sa.URL) -> None:
    """Raises ConfigError for a database this connector cannot hold to reading, or a
    SQLite file the file policy refuses (see connector_sync.policy)."""
    if url.get_backend_name() not in READ_ONLY_BACKENDS:
        raise ConfigError(
            f"sql config field 'url': {url.drivername} is not supported: connector-sync "
            f"reads only databases it can open read-only ({', '.join(READ_ONLY_BACKENDS)})"
        )
    path = _sqlite_path(url) if url.get_backend_name() == "sqlite" else None
    if path is not None:
        Policy.from_environment().check_path(path, "sql config field 'url'")


def _strip_query(query: str) -> str:
    """The query without trailing semicolons (it becomes a subquery in `check`)."""
    return query.strip().rstrip(";").strip()


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return " ".join(text.splitlines()[0].split()) if text else type(exc).__name__
