"""`file`: records of a CSV, JSON Lines or JSON array file, local or over http(s), streamed.

Nothing here holds the whole file: CSV and JSON Lines are read row by row, and a JSON
array is parsed record by record from a bounded buffer (`iter_json_array`). No record
is read past `max_record_chars` either, so one endless line fails with memory flat, and
a download stops at `max_response_bytes`, so an endless one does not fill the database.
"""

from __future__ import annotations

import codecs
import csv
import io
import itertools
import json
import os
import re
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from operator import itemgetter
from pathlib import Path, PurePosixPath
from typing import IO, TYPE_CHECKING, Any, ClassVar

import orjson

from connector_sync.connectors.base import (
    DEFAULT_CHECK_TIMEOUT,
    CheckResult,
    ConfigField,
    ConnectorPlugin,
    Deadline,
    check_timeout_field,
    own_sqlite_file,
)
from connector_sync.connectors.httpfields import (
    DEFAULT_MAX_DOWNLOAD_BYTES,
    max_response_bytes_field,
    max_retry_wait_field,
    timeout_field,
)
from connector_sync.connectors.incremental import Cursor, Incremental, incremental_field
from connector_sync.connectors.jsontext import has_long_digits
from connector_sync.exceptions import ConfigError, PermanentError, TransientError
from connector_sync.policy import Policy
from connector_sync.secrets import is_env_ref, redact, secret_values

if TYPE_CHECKING:  # the http module (and httpx) is imported only for a file from a url
    import httpx

    from connector_sync.connectors.http import HttpSession

FORMATS = ("csv", "jsonl", "json")
_EXTENSIONS = {".csv": "csv", ".tsv": "csv", ".jsonl": "jsonl", ".ndjson": "jsonl", ".json": "json"}
#: The longest record (a CSV row, a JSON Lines line, a JSON array element) read, in
#: characters, unless `max_record_chars` says otherwise.
MAX_RECORD_CHARS = 16 * 1024 * 1024
_CHUNK_CHARS = 64 * 1024
#: Characters of a CSV or JSON Lines file read at once (and split into lines in C).
_READ_CHARS = 64 * 1024
_DOWNLOAD_CHUNK_BYTES = 64 * 1024
_NOT_WHITESPACE = re.compile(r"[^ \t\r\n]")
# How close to the end of the buffer a JSON error may be a record cut in two by the
# buffer's edge (`1.` of `1.5`, `tru` of `true`, `"\u12` of `"\u1234"`), not a mistake.
_EDGE_CHARS = 8
_DECODER = json.JSONDecoder()
_BLANK = object()
# Characters of CSV's own syntax, which cannot separate fields.
_NOT_DELIMITERS = {"\n": "a line break", "\r": "a line break", '"': "the quote character"}


#: The settings only a download (`url`) uses.
_DOWNLOAD_ONLY = (
    "headers", "timeout", "max_retries", "retry_backoff", "max_retry_wait", "max_response_bytes",
)  # fmt: skip


class FileConnector(ConnectorPlugin):
    type_name = "file"
    description = "Records of a CSV, JSON Lines or JSON array file (local or http), streamed."
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField("path", str, help="local file path (give path or url)"),
        ConfigField("url", str, help="http(s) URL of the file (give path or url)"),
        ConfigField("format", str, help="csv | jsonl | json; guessed from the extension"),
        ConfigField("delimiter", str, help="csv field separator; ',' (tab for .tsv)"),
        ConfigField("encoding", str, default="utf-8-sig", help="text encoding; a BOM is skipped"),
        ConfigField("has_header", bool, default=True, help="csv: the first row names columns"),
        ConfigField("headers", dict, help="url: request headers; Authorization-like are secret"),
        timeout_field("url: seconds to wait for data"),
        ConfigField(
            "max_retries", int, default=4, minimum=0, help="url: tries again to start the download"
        ),
        ConfigField(
            "retry_backoff", float, default=1.0, minimum=0, help="url: first retry wait, seconds"
        ),
        max_retry_wait_field(),
        max_response_bytes_field(DEFAULT_MAX_DOWNLOAD_BYTES, "url: most bytes the file may have"),
        incremental_field("{cursor_field, initial_value}: skip records not past the cursor"),
        ConfigField(
            "max_record_chars",
            int,
            default=MAX_RECORD_CHARS,
            minimum=1,
            help="longest record (CSV row, JSON line or element), characters; 16 Mi",
        ),
        check_timeout_field(),
    )
    #: A subclass fixed to one format (the `csv` alias) sets this.
    fixed_format: ClassVar[str | None] = None

    @classmethod
    def refuse_own_database(cls, config: Mapping[str, Any], own_database_url: str) -> None:
        """The tool's own SQLite file (or its -wal, -shm, -journal) read as a file would
        show every connector's secrets, and closing it drops SQLite's locks."""
        path = config.get("path")
        own = own_sqlite_file(own_database_url)
        if not isinstance(path, str) or is_env_ref(path) or own is None:
            return
        for suffix in ("", "-wal", "-shm", "-journal"):
            try:
                same = os.path.samefile(Path(path).expanduser(), own + suffix)
            except OSError:  # either does not exist: not the same file
                continue
            if same:
                raise ConfigError(
                    f"{cls.type_name} config field 'path' is connector-sync's own database "
                    "file, which holds every connector's config and secrets: read another file"
                )

    @classmethod
    def validate_config(cls, config: Mapping[str, Any]) -> dict[str, Any]:
        result = super().validate_config(config)
        name = cls.type_name
        path, url = result.get("path"), result.get("url")
        if (path is None) == (url is None):
            raise ConfigError(f"{name} config needs exactly one of 'path' and 'url'")
        if path is not None:
            cls._check_path(path)
        if url is not None:
            from connector_sync.connectors.http import check_http_url

            check_http_url(name, "url", url)
        fmt = result.get("format")
        if fmt is not None and not is_env_ref(fmt) and fmt not in FORMATS:
            raise ConfigError(
                f"{name} config field 'format' must be one of {', '.join(FORMATS)}, got {fmt!r}"
            )
        location = str(path if path is not None else url)
        if fmt is None and cls.fixed_format is None and not is_env_ref(location):
            cls._guess_format(location)
        delimiter = result.get("delimiter")
        if delimiter is not None and not is_env_ref(delimiter):
            if len(delimiter) != 1:
                raise ConfigError(f"{name} config field 'delimiter' must be exactly one character")
            if delimiter in _NOT_DELIMITERS:
                raise ConfigError(
                    f"{name} config field 'delimiter' must not be {_NOT_DELIMITERS[delimiter]}, "
                    "which CSV itself uses; e.g. ',', ';' or a tab"
                )
        encoding = result["encoding"]
        if not is_env_ref(encoding):
            cls._check_encoding(encoding)
        if result.get("headers") is not None:
            from connector_sync.connectors.http import check_headers

            check_headers(name, result["headers"])
        Incremental.from_config(name, result.get("incremental"))
        return result

    @classmethod
    def check_new_config(cls, config: Mapping[str, Any]) -> None:
        """A download's settings with a local file would be ignored without a word; and
        credentials in a download's URL would replace an Authorization header."""
        if config.get("path") is not None:
            for field in _DOWNLOAD_ONLY:
                if config.get(field) is not None:
                    raise ConfigError(
                        f"{cls.type_name} config field '{field}' applies to a download "
                        "('url'), not to a local 'path': remove it"
                    )
        from connector_sync.connectors.http import check_one_authorization

        check_one_authorization(cls.type_name, config)

    @classmethod
    def _check_path(cls, path: str) -> None:
        """Raises ConfigError for a path no file can have (an env:NAME reference passes)."""
        if is_env_ref(path):
            return
        where = f"{cls.type_name} config field 'path'"
        if not path.strip():
            raise ConfigError(f"{where} must not be empty: give the file's path")
        if "\0" in path:
            raise ConfigError(f"{where} must not contain a NUL character")
        try:
            Path(path).expanduser()
        except RuntimeError:  # ~user of an unknown user, or no home directory
            home = path.split("/", 1)[0]
            raise ConfigError(
                f"{where} starts with {home}, whose home directory is unknown; give the full path"
            ) from None
        Policy.from_environment().check_path(path, where)

    @classmethod
    def _check_encoding(cls, encoding: str) -> None:
        """Raises ConfigError unless `encoding` is a codec that decodes bytes to text."""
        where = f"{cls.type_name} config field 'encoding'"
        try:
            codecs.lookup(encoding)
        except (LookupError, ValueError):  # ValueError: a NUL in the name
            raise ConfigError(f"{where}: unknown encoding {encoding!r}") from None
        try:  # as _open will use it; rot13, hex and the like are not text encodings
            io.TextIOWrapper(io.BytesIO(), encoding=encoding)
            codecs.getincrementaldecoder(encoding)().decode(b"", final=True)
        except (LookupError, UnicodeError):
            raise ConfigError(
                f"{where}: {encoding!r} is not a text encoding; e.g. utf-8, latin-1, cp1252"
            ) from None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        config = self.config
        self.url: str | None = config.get("url")
        self.path = Path(config["path"]).expanduser() if config.get("path") else None
        location = config.get("path") or self.url or ""
        self.format = self.fixed_format or config.get("format") or self._guess_format(location)
        delimiter = config.get("delimiter")
        self.delimiter: str = delimiter or ("\t" if _extension(location) == ".tsv" else ",")
        self.encoding: str = config["encoding"]
        self.has_header: bool = config.get("has_header", True)
        self.max_record_chars: int = config.get("max_record_chars", MAX_RECORD_CHARS)
        self.incremental = Incremental.from_config(self.type_name, config.get("incremental"))
        self.cursor = Cursor(self.incremental, self.state) if self.incremental else None
        self.secrets = secret_values(self.secret_fields(), config, config)
        self.label = str(self.path) if self.path else redact(self.url or "", self.secrets)

    @classmethod
    def _guess_format(cls, location: str) -> str:
        """The format a path's or URL's extension names.

        Raises:
            ConfigError: no extension we know.
        """
        guessed = _EXTENSIONS.get(_extension(location))
        if guessed is None:
            name = PurePosixPath(_location_path(location)).name or location
            raise ConfigError(
                f"{cls.type_name} config: cannot guess the format of {name} "
                f"from its extension; set 'format' to one of {', '.join(FORMATS)}"
            )
        return guessed

    # -- the plugin contract -------------------------------------------------------

    def check(self) -> CheckResult:
        deadline = Deadline.after(self.config.get("check_timeout", DEFAULT_CHECK_TIMEOUT))
        with self._open(deadline) as handle:
            if self.format == "csv":
                try:
                    columns, _ = self._csv_header(*self._csv_reader(handle))
                except UnicodeError as exc:
                    raise PermanentError(
                        f"{self.label}: not valid {self.encoding}: {_reason(exc)}; set 'encoding'"
                    ) from None
                return CheckResult(
                    True,
                    f"{self.label}: readable csv, {len(columns)} columns",
                    {"columns": columns},
                )
            first = next(self._records(handle), None)
        if first is None:
            return CheckResult(True, f"{self.label}: readable {self.format}, no records")
        fields = list(first[1])
        return CheckResult(
            True,
            f"{self.label}: readable {self.format}, the first record has {len(fields)} fields",
            {"fields": fields},
        )

    def read(self) -> Iterator[dict[str, Any]]:
        cursor = self.cursor
        with self._open() as handle:
            if cursor is None:
                if self.format == "jsonl":  # whole chunks of records, no line numbers
                    yield from self._jsonl_objects(handle)
                else:
                    yield from map(itemgetter(1), self._records(handle))
                return
            for line, record in self._records(handle):
                value = cursor.value_of(record, f"{self.label}: line {line}")
                if cursor.is_new(value):
                    cursor.advance(value)
                    yield record

    # -- opening -------------------------------------------------------------------

    @contextmanager
    def _open(self, deadline: Deadline | None = None) -> Iterator[IO[str]]:
        """The file as text (newlines kept as they are, as csv wants); a download stops
        at the deadline."""
        if self.path is not None:
            where = f"{self.type_name} config field 'path'"
            try:
                handle = Policy.from_environment().open_text(self.path, where, self.encoding)
            except FileNotFoundError:
                raise PermanentError(f"{self.format} file not found: {self.path}") from None
            except IsADirectoryError:
                raise PermanentError(f"{self.path} is a directory, not a file") from None
            except LookupError:
                raise PermanentError(
                    f"{self.type_name} config field 'encoding': unknown encoding {self.encoding!r}"
                ) from None
            except OSError as exc:
                raise PermanentError(f"cannot open {self.path}: {exc.strerror}") from None
            with handle:
                yield handle
            return
        assert self.url is not None
        from connector_sync.connectors.http import HttpSession, RetryPolicy

        config = self.config
        session = HttpSession(
            timeout=config["timeout"],
            headers=config["headers"],
            retry=RetryPolicy(
                config["max_retries"], config["retry_backoff"], config["max_retry_wait"]
            ),
            secrets=self.secrets,
            max_response_bytes=config["max_response_bytes"],
            body_name="file",
            deadline=deadline,
        )
        with session, session.stream(self.url) as response:
            raw = _ResponseReader(response, session, self.url)
            with io.TextIOWrapper(
                io.BufferedReader(raw, _DOWNLOAD_CHUNK_BYTES), encoding=self.encoding, newline=""
            ) as handle:
                yield handle

    # -- formats -------------------------------------------------------------------

    def _records(self, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) pairs; the line is where the record starts."""
        try:
            if self.format == "csv":
                yield from self._csv_records(handle)
            elif self.format == "jsonl":
                yield from self._jsonl_records(handle)
            else:
                for line, value in iter_json_array(handle, self.label, self.max_record_chars):
                    yield line, _expect_object(value, self.label, line)
        except UnicodeError as exc:  # csv and jsonl name the line themselves
            raise PermanentError(
                f"{self.label}: not valid {self.encoding}: {_reason(exc)}; set 'encoding'"
            ) from None

    def _csv_reader(self, handle: IO[str]) -> tuple[Any, _Lines]:
        """A csv reader, and the lines it reads (which bound each record's length)."""
        lines = _Lines(handle, self.max_record_chars, self.label, spanning=True)
        return csv.reader(lines.each(), delimiter=self.delimiter, strict=True), lines

    def _csv_header(self, reader: Any, lines: _Lines) -> tuple[list[str], list[str] | None]:
        """The column names, and the first row when it is a record (no header line)."""
        try:
            first: list[str] | None = next(reader, None)
        except csv.Error as exc:
            raise PermanentError(f"{self.label}: line 1: {exc}") from exc
        lines.record_done(1, reader.line_num)
        if not first:
            raise PermanentError(f"{self.label}: empty file, expected a header line")
        if not self.has_header:
            return [f"column_{n}" for n in range(1, len(first) + 1)], first
        if len(set(first)) != len(first):
            raise PermanentError(f"{self.label}: line 1: duplicate column names in header")
        return first, None

    def _csv_records(self, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        reader, lines = self._csv_reader(handle)
        columns, first_record = self._csv_header(reader, lines)
        if first_record is not None:
            yield 1, dict(zip(columns, first_record, strict=True))
        width = len(columns)
        self.record_fields = {(column, str) for column in columns}  # all text
        start = reader.line_num + 1
        try:
            for row in reader:
                end = reader.line_num
                if end != start:  # a quoted field went on over lines: bound the record
                    lines.record_done(start, end)
                else:
                    lines.done = end
                if len(row) == width:
                    yield start, dict(zip(columns, row, strict=True))
                elif row:
                    raise PermanentError(
                        f"{self.label}: line {end}: {len(row)} fields, "
                        f"{'the header has' if self.has_header else 'the first row has'} {width}"
                    )
                start = end + 1
        except csv.Error as exc:
            raise PermanentError(f"{self.label}: line {reader.line_num}: {exc}") from exc
        except UnicodeError as exc:
            raise PermanentError(
                f"{self.label}: near line {reader.line_num + 1}: not valid {self.encoding}: "
                f"{_reason(exc)}"
            ) from None

    def _jsonl_records(self, handle: IO[str]) -> Iterator[tuple[int, dict[str, Any]]]:
        for first, chunk in self._jsonl_chunks(handle):
            records = _jsonl_objects_fast(chunk)
            if records is not None:
                yield from zip(itertools.count(first), records)
            else:
                yield from self._jsonl_lines(chunk, first)

    def _jsonl_objects(self, handle: IO[str]) -> Iterator[dict[str, Any]]:
        """The records alone: a chunk that orjson reads whole is handed on as one list."""
        for first, chunk in self._jsonl_chunks(handle):
            records = _jsonl_objects_fast(chunk)
            if records is not None:
                yield from records
            else:
                yield from map(itemgetter(1), self._jsonl_lines(chunk, first))

    def _jsonl_chunks(self, handle: IO[str]) -> Iterator[tuple[int, list[str]]]:
        """(number of the first line, lines) a chunk at a time."""
        lines = _Lines(handle, self.max_record_chars, self.label)
        try:
            for chunk in lines.chunks():
                yield lines.number - len(chunk) + 1, chunk
        except UnicodeError as exc:
            raise PermanentError(
                f"{self.label}: near line {lines.number + 1}: not valid {self.encoding}: "
                f"{_reason(exc)}"
            ) from None

    def _jsonl_lines(self, chunk: list[str], first: int) -> Iterator[tuple[int, dict[str, Any]]]:
        """(line number, record) for the lines of a chunk, one line at a time: blank lines
        skipped, orjson where it reads as json does (see jsontext), json for the rest, and
        an error naming its line."""
        exact = self._jsonl_value
        fast = not has_long_digits("".join(chunk).encode("utf-8", "surrogatepass"))
        for number, line in enumerate(chunk, first):
            if fast:
                try:
                    value = orjson.loads(line)
                except orjson.JSONDecodeError:  # blank, NaN, a lone surrogate, an error
                    value = exact(line, number)
            else:
                value = exact(line, number)
            if value is _BLANK:
                continue
            if type(value) is not dict:
                value = _expect_object(value, self.label, number)
            yield number, value

    def _jsonl_value(self, line: str, number: int) -> Any:
        """A JSON Lines line as the json module reads it (_BLANK for a blank line).

        Raises:
            PermanentError: not one JSON value, naming the line and the column.
        """
        start = len(line) - len(line.lstrip())
        if start == len(line):
            return _BLANK
        try:
            value, end = _DECODER.raw_decode(line, start)
        except json.JSONDecodeError as exc:
            raise PermanentError(
                f"{self.label}: line {number}: not valid JSON ({exc.msg} at column {exc.colno})"
            ) from None
        rest = line[end:].lstrip()
        if rest:
            raise PermanentError(
                f"{self.label}: line {number}: not valid JSON (extra data at column "
                f"{len(line) - len(rest) + 1}); JSON Lines holds one value per line"
            )
        return value


def _location_path(location: str) -> str:
    """The path part of a file path or of an http(s) URL (no query string)."""
    if location.startswith(("http://", "https://")):
        import httpx

        try:
            return httpx.URL(location).path
        except httpx.InvalidURL:
            return ""
    return location


def _extension(location: str) -> str:
    return PurePosixPath(_location_path(location)).suffix.lower()


def _reason(exc: UnicodeError) -> str:
    """What is wrong with the text: a decode error's reason, or what the codec said
    (a utf-16 file without its byte order mark raises a bare UnicodeError)."""
    return exc.reason if isinstance(exc, UnicodeDecodeError) else str(exc)


def _too_long(label: str, where: str, limit: int) -> PermanentError:
    return PermanentError(
        f"{label}: {where}: a record is longer than {limit} characters (max_record_chars); "
        "raise max_record_chars if the file really holds records this long"
    )


class _Lines:
    """The lines of a text file, each with its line break, split from a large chunk at a
    time (in C, as the file object splits them: at \\n, \\r\\n and \\r).

    No line is longer than `limit` characters, nor is a CSV record spanning lines (the
    csv reader says where its rows end: `done`, `record_done`). Memory holds a chunk and
    at most `limit` characters more.
    """

    def __init__(self, handle: IO[str], limit: int, label: str, *, spanning: bool = False) -> None:
        self._handle = handle
        self._limit = limit
        self._label = label
        #: Whether a record may go on over lines (CSV): then the reader reports where
        #: each ends, and a record still open is bounded before reading on.
        self._spanning = spanning
        #: Lines handed out so far: the number of the last line of the current chunk.
        self.number = 0
        #: The last line of the last record the reader made of the lines.
        self.done = 0
        self._chunk: list[str] = []
        self._first = 1  # the number of the current chunk's first line
        self._open_chars = 0  # characters of the open record in the chunks before

    def each(self) -> Iterator[str]:
        """Line after line (for csv.reader)."""
        return itertools.chain.from_iterable(self.chunks())

    def chunks(self) -> Iterator[list[str]]:
        """The lines, a list at a time."""
        pending: list[str] = []  # the line that goes on into the next chunk, in pieces
        pending_chars = 0
        while True:
            if self._spanning:
                self._bound_open_record()
            text = self._handle.read(_READ_CHARS)
            if not text:
                if pending_chars:
                    yield self._hand_out(["".join(pending)])
                return
            # After the last line break, but not after a last \\r: it may be half a \\r\\n.
            end = len(text) - (text[-1] == "\r")
            cut = max(text.rfind("\n", 0, end), text.rfind("\r", 0, end)) + 1
            if not cut:  # the line goes on: keep its pieces, not more than the limit
                pending.append(text)
                pending_chars += len(text)
                if pending_chars > self._limit:
                    raise self._too_long(self.number + 1)
                continue
            pending.append(text[:cut])
            whole = "".join(pending)
            pending, pending_chars = [text[cut:]], len(text) - cut
            lines = io.StringIO(whole, newline="").readlines()
            if len(whole) > self._limit:  # then one of the lines may be too
                longest = max(lines, key=len)
                if len(longest) > self._limit:
                    raise self._too_long(self.number + lines.index(longest) + 1)
            yield self._hand_out(lines)

    def record_done(self, start: int, end: int) -> None:
        """The reader made a record of lines start..end; raises PermanentError if its
        text is longer than the limit, naming the line where it passed it."""
        stop = end - self._first + 1
        if start >= self._first:
            self._check(0, self._chunk[start - self._first : stop], start)
        else:  # it began in a chunk before: _open_chars counted that part
            self._check(self._open_chars, self._chunk[:stop], self._first)
        self.done = end

    def _hand_out(self, lines: list[str]) -> list[str]:
        self._chunk, self._first = lines, self.number + 1
        self.number += len(lines)
        return lines

    def _bound_open_record(self) -> None:
        """Before reading on: a record still open (a quoted field going on over lines)
        must not be longer than the limit so far."""
        start = self.done + 1
        if start > self.number:  # every line handed out is in a record
            self._open_chars = 0
        elif start >= self._first:
            self._open_chars = self._check(0, self._chunk[start - self._first :], start)
        else:
            self._open_chars = self._check(self._open_chars, self._chunk, self._first)

    def _check(self, chars: int, lines: list[str], first: int) -> int:
        """`chars` plus the lengths of `lines` (the first numbered `first`); raises at the
        line that takes it past the limit."""
        total = chars + sum(map(len, lines))
        if total > self._limit:
            for number, line in enumerate(lines, first):
                chars += len(line)
                if chars > self._limit:
                    raise self._too_long(number)
        return total

    def _too_long(self, number: int) -> PermanentError:
        return _too_long(self._label, f"line {number}", self._limit)


def _expect_object(value: Any, label: str, line: int) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise PermanentError(
            f"{label}: line {line}: a record must be a JSON object, got {type(value).__name__}"
        )
    return value


def _jsonl_objects_fast(chunk: list[str]) -> list[dict[str, Any]] | None:
    """The records of a chunk of JSON Lines read in one call when every line is a JSON
    object that orjson reads as json does (no blank line, no NaN, no run of 19 digits);
    None: read it line by line (`_jsonl_lines`), which also names a bad line."""
    if has_long_digits("".join(chunk).encode("utf-8", "surrogatepass")):
        return None
    try:
        records = list(map(orjson.loads, chunk))
    except orjson.JSONDecodeError:
        return None
    return records if set(map(type, records)) == {dict} else None


class _ResponseReader(io.RawIOBase):
    """A streamed HTTP response body as a raw binary file, read chunk by chunk."""

    def __init__(self, response: httpx.Response, session: HttpSession, url: str) -> None:
        from connector_sync.connectors.http import RetryableError

        self._retryable = RetryableError
        self._chunks = session.iter_body(response)
        self._session = session
        self._url = url
        self._pending = b""
        self._received = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if not self._pending:
            try:
                self._pending = next(self._chunks, b"")
            except self._retryable as error:  # the connection failed mid-body
                raise TransientError(
                    f"{error.message} after {self._received} bytes of the body"
                ) from error
        size = min(len(buffer), len(self._pending))
        buffer[:size] = self._pending[:size]
        self._pending = self._pending[size:]
        self._received += size
        return size


def iter_json_array(
    handle: IO[str], label: str, max_record_chars: int = MAX_RECORD_CHARS
) -> Iterator[tuple[int, Any]]:
    """(line number, element) for each element of the JSON array in `handle`, streamed.

    Reads `handle` in chunks and decodes one element at a time with
    `json.JSONDecoder.raw_decode`, so memory holds one chunk and one element, never
    the array.

    Raises:
        PermanentError: the text is not one JSON array, or an element is longer than
            `max_record_chars`; names the line.
    """
    return _JsonArrayReader(handle, label, max_record_chars).elements()


class _JsonArrayReader:
    def __init__(self, handle: IO[str], label: str, max_record_chars: int) -> None:
        self.handle = handle
        self.label = label
        self.max_record_chars = max_record_chars
        self.decoder = json.JSONDecoder()
        self.buffer = ""
        self.pos = 0
        self.eof = False
        # Line numbers are counted incrementally: `counted_line` is the line at
        # buffer position `counted_pos`.
        self.counted_line = 1
        self.counted_pos = 0

    def elements(self) -> Iterator[tuple[int, Any]]:
        char = self._next_char()
        if char == "":
            raise PermanentError(f"{self.label}: empty file, expected a JSON array")
        if char != "[":
            raise self._error(f"expected a JSON array ('['), found {char!r}")
        self.pos += 1
        if self._next_char() == "]":
            self.pos += 1
            self._expect_end()
            return
        while True:
            yield self._element()
            char = self._next_char()
            if char == ",":
                self.pos += 1
                if self._next_char() == "]":
                    raise self._error("not valid JSON (a trailing comma before ']')")
            elif char == "]":
                self.pos += 1
                self._expect_end()
                return
            elif char == "":
                raise self._error("unexpected end of file: the JSON array is not closed")
            else:
                raise self._error(f"not valid JSON (expected ',' or ']', found {char!r})")

    def _element(self) -> tuple[int, Any]:
        while True:
            try:
                value, end = self.decoder.raw_decode(self.buffer, self.pos)
            except json.JSONDecodeError as exc:
                cut = exc.pos + _EDGE_CHARS >= len(self.buffer) or exc.msg.startswith(
                    "Unterminated string"
                )
                if cut and not self.eof:
                    self._fill(len(self.buffer))  # then decode again from the start
                    continue
                raise self._error(f"not valid JSON ({exc.msg})", exc.pos) from None
            if end + _EDGE_CHARS >= len(self.buffer) and not self.eof:
                self._fill(len(self.buffer))  # a number or literal at the edge may go on
                continue
            line = self._line(self.pos)
            self.pos = end
            return line, value

    def _next_char(self) -> str:
        """The next character that is not whitespace (not consumed); '' at the end."""
        while True:
            match = _NOT_WHITESPACE.search(self.buffer, self.pos)
            if match is not None:
                self.pos = match.start()
                return match[0]
            self.pos = len(self.buffer)
            if not self._fill():
                return ""

    def _expect_end(self) -> None:
        char = self._next_char()
        if char:
            raise self._error(f"unexpected {char!r} after the end of the JSON array")

    def _fill(self, at_least: int = _CHUNK_CHARS) -> bool:
        """Read more text into the buffer, dropping what is consumed; False at the end.

        Positions into the buffer from before the call are void afterwards.
        """
        if self.eof:
            return False
        self._line(self.pos)
        self.buffer = self.buffer[self.pos :]
        self.counted_pos -= self.pos
        self.pos = 0
        if len(self.buffer) > self.max_record_chars:
            raise _too_long(self.label, f"line {self._line(0)}", self.max_record_chars)
        try:
            chunk = self.handle.read(max(at_least, _CHUNK_CHARS))
        except UnicodeError as exc:
            raise self._error(f"not valid text in the file's encoding: {_reason(exc)}") from None
        if not chunk:
            self.eof = True
            return False
        self.buffer += chunk
        return True

    def _line(self, pos: int) -> int:
        if pos >= self.counted_pos:
            self.counted_line += self.buffer.count("\n", self.counted_pos, pos)
            self.counted_pos = pos
            return self.counted_line
        return self.counted_line - self.buffer.count("\n", pos, self.counted_pos)

    def _error(self, message: str, pos: int | None = None) -> PermanentError:
        line = self._line(self.pos if pos is None else pos)
        return PermanentError(f"{self.label}: line {line}: {message}")
