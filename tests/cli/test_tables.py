"""Tables at any terminal width: the error and the connector name are whole or wrapped
between words, never cut (the issue: at 120-134 columns errors came out as fragments).

The layout does not depend on the database, so these run on the SQLite file only.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator

import pytest

from conftest import Cli
from connector_sync import render
from connector_sync.db import Database
from connector_sync.store import open_store
from connector_sync.store.base import ClaimRequest

NAMES = ("orders-api-eu-west-production", "customers", "café-ünïcode-names-too")
ERRORS = {
    "orders-api-eu-west-production": "GET http://127.0.0.1:8765/status/404?page=2&per_page=100:"
    ' HTTP 404 Not Found: {"message": "File not found"} (gave up after 3 attempts)',
    "café-ünïcode-names-too": "demo connector configured to fail (fail: true) after 50 records",
}
WIDTHS = (60, 72, 80, 100, 120, 134, 160, 200, 250)


@pytest.fixture
def cli(sqlite_url: str) -> Iterator[Cli]:
    cli = Cli(sqlite_url)
    for name in NAMES:
        failing = name in ERRORS
        config = {"records": 3, "fail": failing}
        assert cli("add", name, "--type", "demo", "--config", json.dumps(config)).exit_code == 0
    for _ in range(2):
        cli("run", "-c", NAMES[0], "-c", NAMES[2])
    cli("run", "-c", NAMES[1])
    with Database(sqlite_url) as db, db.begin() as conn:  # the errors real sources send
        for name, error in ERRORS.items():
            conn.exec_driver_sql(
                "UPDATE connector_syncs SET error = ? WHERE error IS NOT NULL AND connector_id = "
                "(SELECT id FROM connectors WHERE name = ?)",
                (error, name),
            )
            conn.exec_driver_sql(
                "UPDATE connectors SET last_sync_error = ? WHERE name = ?", (error, name)
            )
    with open_store(sqlite_url) as store:  # one sync in flight, for status
        store.claim(ClaimRequest(worker="host:1", limit=1, lease_seconds=600, connector_ids=[2]))
    yield cli


@pytest.fixture
def width() -> Iterator[None]:
    before = render.console.width
    yield
    render.console.width = before


def words_whole(output: str, texts: list[str]) -> list[str]:
    """The words of `texts` not found whole on one line of `output`."""
    lines = output.splitlines()
    return [w for text in texts for w in text.split() if not any(w in line for line in lines)]


@pytest.mark.parametrize("columns", WIDTHS)
@pytest.mark.usefixtures("width")
def test_no_error_or_name_is_cut_at_any_width(cli: Cli, columns: int) -> None:
    render.console.width = columns
    commands = {
        "history": ("history",),
        "health": ("health", "--failures-warn", "1"),
        "list": ("list",),
        "status": ("status",),
        "show": ("show", NAMES[0]),
    }
    for label, command in commands.items():
        result = cli(*command)
        assert result.exit_code in (0, 1), result.stderr
        output = result.stdout
        assert "…" not in output, f"{label} at {columns}: something was cut short"
        texts = {
            "health": [*ERRORS, *ERRORS.values()],
            "history": [*NAMES, *ERRORS.values()],
            "status": ["customers"],  # the sync in flight
            "show": [NAMES[0]],  # its error is a cell of its own that may fold a long URL
        }.get(label, list(NAMES))
        assert words_whole(output, texts) == [], f"{label} at {columns} columns:\n{output}"
        table_lines = [line for line in output.splitlines() if line[:1] in "┏┃┡│└"]
        assert all(len(line) <= columns for line in table_lines), (
            f"{label} wider than {columns}:\n{output}"
        )
        if columns >= 100 and label != "show":  # from 100 columns on, every one is a table
            assert table_lines, f"{label} printed no table at {columns}:\n{output}"


@pytest.mark.usefixtures("width")
def test_a_wide_terminal_keeps_the_errors_in_the_table(cli: Cli) -> None:
    render.console.width = 250
    output = cli("history").stdout
    error_line = next(line for line in output.splitlines() if "HTTP 404 Not Found" in line)
    assert error_line.startswith("│")  # in its column, not below the table
    assert "Trigger" in output and "Dataset" in output


@pytest.mark.usefixtures("width")
def test_a_narrow_terminal_moves_errors_below_whole(cli: Cli) -> None:
    render.console.width = 80
    output = cli("history").stdout
    below = [line for line in output.splitlines() if line.startswith("sync ")]
    assert below and all(line.split(": ", 1)[1] in ERRORS.values() for line in below)
    assert "Trigger" not in output  # a secondary column made room first


@pytest.mark.usefixtures("width")
def test_history_shows_how_long_a_sync_in_flight_has_run(cli: Cli) -> None:
    render.console.width = 134
    output = cli("history", "--status", "in_progress").stdout
    row = next(line for line in output.splitlines() if "IN_PROGRESS" in line)
    assert re.search(r"│ +\d+\.\ds\+ │", row)  # elapsed so far, e.g. "0.3s+"
    [sync] = json.loads(cli("history", "--status", "in_progress", "--json").stdout)
    assert sync["duration"] is None and sync["elapsed"] >= 0
    status = json.loads(cli("status", "--json").stdout)
    [running] = status["syncing"]
    assert running["connector_name"] == "customers" and running["worker"] == "host:1"
    assert {"elapsed", "records_processed", "rate", "typical_duration"} <= set(running)
