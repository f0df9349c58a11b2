"""`csv`: rows of a local CSV file, streamed; the `file` connector fixed to format csv."""

from __future__ import annotations

from typing import ClassVar

from connector_sync.connectors.base import ConfigField
from connector_sync.connectors.file import FileConnector


class CsvConnector(FileConnector):
    """Kept for connectors created before `file`: same config fields as ever."""

    type_name = "csv"
    description = "Rows of a local CSV file with a header line, streamed (see also 'file')."
    config_fields: ClassVar[tuple[ConfigField, ...]] = (
        ConfigField("path", str, required=True, help="path of the CSV file"),
        ConfigField("delimiter", str, default=",", help="field separator, one character"),
        ConfigField("encoding", str, default="utf-8-sig", help="text encoding of the file"),
    )
    fixed_format = "csv"
