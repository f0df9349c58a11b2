"""`csv`: rows of a local CSV file, streamed one at a time."""

from __future__ import annotations

import csv
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from connector_sync.connectors.base import CheckResult, ConfigField, ConnectorPlugin
from connector_sync.exceptions import PermanentError


class CsvConnector(ConnectorPlugin):
    type_name = "csv"
    description = "Rows of a local CSV file with a header line, streamed."
    config_fields = (
        ConfigField("path", str, required=True, help="path of the CSV file"),
        ConfigField("delimiter", str, default=",", help="field separator, one character"),
        ConfigField("encoding", str, default="utf-8-sig", help="text encoding of the file"),
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if len(self.config["delimiter"]) != 1:
            raise PermanentError("csv config field 'delimiter' must be exactly one character")
        self.path = Path(self.config["path"]).expanduser()

    def check(self) -> CheckResult:
        with self._open() as handle:
            reader = csv.reader(handle, delimiter=self.config["delimiter"], strict=True)
            header = self._header(reader)
        return CheckResult(
            True, f"{self.path}: readable, {len(header)} columns", {"columns": header}
        )

    def read(self) -> Iterator[dict[str, Any]]:
        with self._open() as handle:
            reader = csv.reader(handle, delimiter=self.config["delimiter"], strict=True)
            header = self._header(reader)
            try:
                for row in reader:
                    if not row:
                        continue
                    if len(row) != len(header):
                        raise PermanentError(
                            f"{self.path}: line {reader.line_num}: {len(row)} fields, "
                            f"the header has {len(header)}"
                        )
                    yield dict(zip(header, row, strict=True))
            except csv.Error as exc:
                raise PermanentError(f"{self.path}: line {reader.line_num}: {exc}") from exc
            except UnicodeDecodeError as exc:
                raise PermanentError(
                    f"{self.path}: near line {reader.line_num}: not valid "
                    f"{self.config['encoding']}: {exc.reason}"
                ) from exc

    def _open(self) -> Any:
        try:
            return self.path.open(newline="", encoding=self.config["encoding"])
        except FileNotFoundError:
            raise PermanentError(f"csv file not found: {self.path}") from None
        except LookupError:
            raise PermanentError(
                f"csv config field 'encoding': unknown encoding {self.config['encoding']!r}"
            ) from None
        except OSError as exc:
            raise PermanentError(f"cannot open csv file {self.path}: {exc.strerror}") from None

    def _header(self, reader: Any) -> list[str]:
        try:
            header: list[str] | None = next(reader, None)
        except csv.Error as exc:
            raise PermanentError(f"{self.path}: line 1: {exc}") from exc
        if not header:
            raise PermanentError(f"{self.path}: empty file, expected a header line")
        if len(set(header)) != len(header):
            raise PermanentError(f"{self.path}: line 1: duplicate column names in header")
        return header
