"""Logging to stderr, as plain lines or JSON lines."""

from __future__ import annotations

import datetime as dt
import json
import logging
import sys
from typing import Any

_HANDLER_NAME = "connector-sync-stderr"


class JsonLineFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": dt.datetime.fromtimestamp(record.created, dt.UTC)
            .isoformat()
            .replace("+00:00", "Z"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, ensure_ascii=False)


class _StderrHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to `sys.stderr` as it is when a record comes, as logging's own last-resort
    handler does, not as it was when logging was configured: a command run in-process
    (Typer's CliRunner, a program embedding the CLI) swaps stderr and closes its stand-in
    afterwards, and a server thread still logging then would write to a closed file."""

    @property
    def stream(self) -> Any:
        return sys.stderr

    @stream.setter
    def stream(self, value: Any) -> None:
        """StreamHandler sets it; the property above ignores what it was given."""


def configure_logging(level: str = "info", fmt: str = "plain") -> None:
    """Send connector_sync's logs to stderr; safe to call more than once."""
    logger = logging.getLogger("connector_sync")
    logger.setLevel(level.upper())
    for handler in list(logger.handlers):
        if handler.get_name() == _HANDLER_NAME:
            logger.removeHandler(handler)
    handler = _StderrHandler()
    handler.set_name(_HANDLER_NAME)
    if fmt == "json":
        handler.setFormatter(JsonLineFormatter())
    else:
        handler.setFormatter(
            logging.Formatter("%(asctime)s %(levelname)s %(message)s", "%Y-%m-%dT%H:%M:%S%z")
        )
    logger.addHandler(handler)
    logger.propagate = False
