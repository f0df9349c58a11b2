"""connector_sync's log handler."""

from __future__ import annotations

import io
import json
import logging

import pytest

from connector_sync.logs import configure_logging


def test_logs_go_to_stderr_as_it_is_when_they_are_written(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A command run in-process swaps stderr and closes its stand-in afterwards; a thread
    that logs later writes to the stderr of that moment, not to the closed one."""
    ours = logging.getLogger("connector_sync")
    monkeypatch.setattr(ours, "handlers", [])  # restored afterwards, with these two
    monkeypatch.setattr(ours, "propagate", ours.propagate)
    monkeypatch.setattr(ours, "level", ours.level)
    first, second = io.StringIO(), io.StringIO()
    monkeypatch.setattr("sys.stderr", first)
    configure_logging("info", "json")
    logging.getLogger("connector_sync.test").info("while the command ran")
    first.close()
    monkeypatch.setattr("sys.stderr", second)
    logging.getLogger("connector_sync.test").warning("after it")
    [line] = second.getvalue().splitlines()
    assert json.loads(line)["message"] == "after it"
    assert json.loads(line)["level"] == "warning"
