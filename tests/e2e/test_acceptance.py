"""The installed `connector-sync` command, run as a subprocess, as a scheduler would.

Time passes by moving the database's stored times (support.database.time_passes): a
subprocess cannot share the tests' ManualClock, and sleeping through an interval only
makes the suite slow.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from support.database import count_rows, query, time_passes

COMMAND = Path(sys.executable).parent / "connector-sync"


def cs(url: str, *args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [str(COMMAND), *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=120
    )


def test_command_is_installed() -> None:
    assert COMMAND.exists(), f"{COMMAND} missing: install the package (pip install .)"
    result = subprocess.run([str(COMMAND), "--help"], capture_output=True, text=True)
    assert result.returncode == 0 and "run" in result.stdout


@pytest.mark.postgres
def test_done_when_scenario_on_postgresql(pg_url: str) -> None:
    """Three demo connectors, one failing; runs, re-runs, and the 1-second interval."""
    for n, records in enumerate((100, 250, 1000), 1):
        config = json.dumps({"records": records})
        added = cs(
            pg_url,
            "add",
            f"demo{n}",
            "--type",
            "demo",
            "--config",
            config,
            "--interval",
            "1",
            "--json",
        )
        assert added.returncode == 0, added.stderr
    first = cs(pg_url, "run", "--json")
    assert first.returncode == 0, first.stderr
    syncs = json.loads(first.stdout)
    assert sorted(s["records_processed"] for s in syncs) == [100, 250, 1000]
    assert {s["status"] for s in syncs} == {"COMPLETED"}
    assert count_rows(pg_url, "datasets WHERE status = 'READY'") == 3
    assert count_rows(pg_url, "dataset_records") == 1350

    # The interval is 1 s: each connector is due again one second after its sync.
    again = "next_sync_at = last_sync_at + interval '1 second'"
    assert query(pg_url, f"SELECT count(*) FROM connectors WHERE {again}") == [(3,)]

    # A run started within the interval syncs nothing. Process start-up can take close
    # to a second, so push the next sync out before checking.
    from connector_sync.db import Database

    with Database(pg_url) as db, db.begin() as conn:
        conn.exec_driver_sql("UPDATE connectors SET next_sync_at = now() + interval '1 hour'")
    second = cs(pg_url, "run", "--json")
    assert second.returncode == 0 and json.loads(second.stdout) == []

    time_passes(pg_url, 3600)  # the hour is over: all three are due
    third = cs(pg_url, "run", "--json")
    assert len(json.loads(third.stdout)) == 3

    config = json.dumps({"records": 10, "fail": True})
    assert cs(pg_url, "add", "bad", "--type", "demo", "--config", config).returncode == 0
    time_passes(pg_url, 1)  # the demo connectors' 1-second interval is over
    fourth = cs(pg_url, "run", "--json")
    assert fourth.returncode == 1
    statuses = {s["connector_name"]: s["status"] for s in json.loads(fourth.stdout)}
    assert statuses == {
        "demo1": "COMPLETED",
        "demo2": "COMPLETED",
        "demo3": "COMPLETED",
        "bad": "FAILED",
    }
    assert "configured to fail" in fourth.stderr  # logged on stderr


def test_immediate_second_run_syncs_nothing_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'jobs.db'}"
    assert cs(url, "add", "a", "--type", "demo").returncode == 0
    assert len(json.loads(cs(url, "run", "--json").stdout)) == 1
    assert json.loads(cs(url, "run", "--json").stdout) == []


def test_bad_usage_is_one_line_without_traceback(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'x.db'}"
    result = cs(url, "add", "x", "--type", "demo", "--config", "{nope")
    assert result.returncode == 2
    assert result.stderr.count("\n") == 1 and "Traceback" not in result.stderr
    assert result.stdout == ""


def test_demo_quickstart_in_an_empty_directory(tmp_path: Path) -> None:
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("DATABASE_URL", "CONNECTOR_SYNC_DATABASE_URL")
    }
    result = subprocess.run(
        [str(COMMAND), "demo"], capture_output=True, text=True, env=env, cwd=tmp_path, timeout=120
    )
    assert result.returncode == 0, result.stderr
    assert "COMPLETED" in result.stdout
    assert (tmp_path / "connector-sync.db").exists()
