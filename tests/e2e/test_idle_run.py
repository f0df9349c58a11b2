"""The installed `connector-sync run` when nothing is due: answered before the runner is
imported, with the same output and exit codes as a run that went the whole way, and
never in place of one that has something to do (a due connector, an expired lease, a
schema to upgrade, a database that is not there)."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys
from pathlib import Path

import pytest

from connector_sync.db import SCHEMA_REVISION, Database
from connector_sync.store import open_store
from connector_sync.store.base import NewConnector

COMMAND = [sys.executable, "-m", "connector_sync"]


def run(url: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*COMMAND, "--database-url", url, "run", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def add_later(url: str, name: str) -> None:
    later = dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)
    with open_store(url) as store:
        store.add_connector(NewConnector(name, "demo", {"records": 1}, 3600, next_sync_at=later))


def test_nothing_due_says_so_and_exits_0(db_url: str) -> None:
    add_later(db_url, "later")
    text = run(db_url)
    assert (text.returncode, text.stdout, text.stderr) == (0, "Nothing due.\n", "")
    document = run(db_url, "--json")
    assert (document.returncode, json.loads(document.stdout)) == (0, [])


def test_a_due_connector_or_an_expired_lease_is_still_synced_or_recovered(db_url: str) -> None:
    with open_store(db_url) as store:
        store.add_connector(NewConnector("due", "demo", {"records": 2}, 3600))
    synced = run(db_url, "--json")
    assert synced.returncode == 0, synced.stderr
    assert [s["connector_name"] for s in json.loads(synced.stdout)] == ["due"]
    with Database(db_url) as database, database.begin() as conn:  # its worker died
        conn.exec_driver_sql(
            "UPDATE connectors SET status = 'SYNCING', lease_owner = 'gone:1', "
            "lease_token = 't', lease_expires_at = created_at"
        )
    recovered = run(db_url)
    assert recovered.returncode == 0, recovered.stderr
    assert "recovered connector due: abandoned: lease of gone:1" in recovered.stderr


def test_a_sqlite_file_at_an_older_revision_is_upgraded_first(sqlite_url: str) -> None:
    from alembic import command

    with Database(sqlite_url) as database, database.begin() as conn:
        command.downgrade(database.alembic_config(conn), "0004")
    assert run(sqlite_url).stdout == "Nothing due.\n"
    with Database(sqlite_url) as database:
        assert database.current_revision() == SCHEMA_REVISION


def test_a_missing_sqlite_file_is_exit_3_and_stays_missing(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.db"
    result = run(f"sqlite:///{missing}")
    assert result.returncode == 3
    assert "no connector-sync database at" in result.stderr
    assert not missing.exists()


@pytest.mark.postgres
def test_an_unreachable_server_is_exit_3_with_the_reason() -> None:
    result = run("postgresql://nobody:secret@127.0.0.1:1/nothing")
    assert result.returncode == 3
    assert result.stderr.startswith(
        "connector-sync: error: cannot connect to database "
        "postgresql+psycopg://nobody:***@127.0.0.1:1/nothing: connection failed: "
    )
    assert "secret" not in result.stderr
