"""Run it from anything, safely (issue 9, items 2 and 3): `run --loop` as a container's PID 1,
a scheduler pointed at the wrong folder or handed an empty DATABASE_URL, quiet and JSON-log
modes, and a dry run. The installed command, as a scheduler starts it."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from support.database import count_rows
from support.forkserver import forked_command

EXECUTABLE = forked_command  # the command line as a process (support/forkserver.py)


def command(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [EXECUTABLE(), *args],
        cwd=cwd,
        env=env if env is not None else {**os.environ},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def finished(*args: str, cwd: Path, env: dict[str, str] | None = None) -> tuple[int, str, str]:
    proc = command(*args, cwd=cwd, env=env)
    out, err = proc.communicate(timeout=60)
    return proc.returncode, out, err


def test_a_loop_runs_max_runs_times(db_url: str, tmp_path: Path) -> None:
    assert finished("--database-url", db_url, "add", "a", "--type", "demo", "--interval", "1s",
                    cwd=tmp_path)[0] == 0  # fmt: skip
    started = time.monotonic()
    code, _, err = finished(
        "--database-url", db_url, "run", "--loop", "--every", "1s", "--max-runs", "3", cwd=tmp_path
    )
    took = time.monotonic() - started
    assert code == 0, err
    assert [line for line in err.splitlines() if " run " in line and "synced" in line] != []
    assert err.count(": 1 synced") + err.count(": 0 synced") == 3  # one log line per run
    assert 2 <= took < 30  # two sleeps of a second between three runs
    assert count_rows(db_url, "connector_syncs") >= 2  # due again after 1s: synced again


def test_sigterm_during_the_sleep_ends_the_loop_within_a_second(
    sqlite_url: str, tmp_path: Path
) -> None:
    assert finished("--database-url", sqlite_url, "add", "a", "--type", "demo",
                    cwd=tmp_path)[0] == 0  # fmt: skip
    loop = command("--database-url", sqlite_url, "run", "--loop", "--every", "1h", cwd=tmp_path)
    deadline = time.monotonic() + 30
    while count_rows(sqlite_url, "datasets") == 0 or _still_syncing(sqlite_url):
        assert time.monotonic() < deadline, "the first run did not finish"
        time.sleep(0.1)
    time.sleep(0.3)  # into the hour-long sleep
    sent = time.monotonic()
    loop.send_signal(signal.SIGTERM)
    loop.communicate(timeout=10)
    assert time.monotonic() - sent < 1.0
    assert loop.returncode == 0  # every sync it started had ended


def _still_syncing(url: str) -> bool:
    from support.database import query

    return bool(query(url, "SELECT 1 FROM connectors WHERE status = 'SYNCING'"))


def test_in_an_empty_folder_under_crons_environment_run_is_exit_3(tmp_path: Path) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    code, out, err = finished("run", cwd=tmp_path, env=env)
    assert code == 3
    assert err.strip() == (
        "connector-sync: error: no connector-sync database at ./connector-sync.db: run "
        "'connector-sync db upgrade' (or add a connector) to create it, or set DATABASE_URL"
    )
    assert out == "" and list(tmp_path.iterdir()) == []  # and it created nothing


@pytest.mark.parametrize("name", ["DATABASE_URL", "CONNECTOR_SYNC_DATABASE_URL"])
def test_an_empty_database_url_is_bad_input(tmp_path: Path, name: str) -> None:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), name: ""}
    code, _, err = finished("run", cwd=tmp_path, env=env)
    assert code == 2
    assert f"{name} is set but empty" in err and len(err.strip().splitlines()) == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize(
    "reader", [("due",), ("list",), ("history",), ("status",), ("health",), ("run", "--dry-run")]
)
def test_read_commands_never_create_the_default_database(
    tmp_path: Path, reader: tuple[str, ...]
) -> None:
    env = {k: v for k, v in os.environ.items() if "DATABASE_URL" not in k}
    code, _, err = finished(*reader, cwd=tmp_path, env=env)
    assert code == 3, err
    assert not (tmp_path / "connector-sync.db").exists()


def test_quiet_prints_nothing_and_json_logs_keep_tables_out_of_the_log(
    sqlite_url: str, tmp_path: Path
) -> None:
    base = ("--database-url", sqlite_url)
    assert finished(*base, "add", "a", "--type", "demo", cwd=tmp_path)[0] == 0
    code, out, err = finished(*base, "--quiet", "run", cwd=tmp_path)
    assert (code, out) == (0, "") and "synced a" in err
    code, out, err = finished(*base, "--log-format", "json", "run", "-c", "a", cwd=tmp_path)
    assert code == 0 and out == ""  # stdout is a pipe: no table mixed into the log
    assert all(json.loads(line)["level"] for line in err.splitlines())
    code, out, _ = finished(*base, "--log-format", "json", "history", "--json", cwd=tmp_path)
    assert code == 0 and len(json.loads(out)) == 2  # asked for: printed


def test_dry_run_shows_what_would_be_claimed_in_order_and_claims_nothing(
    db_url: str, tmp_path: Path
) -> None:
    base = ("--database-url", db_url)
    for name in ("a", "b", "c"):
        assert finished(*base, "add", name, "--type", "demo", cwd=tmp_path)[0] == 0
    code, out, _ = finished(*base, "run", "--dry-run", "--limit", "2", "--json", cwd=tmp_path)
    assert code == 0
    assert [c["name"] for c in json.loads(out)] == ["a", "b"]  # oldest first, --limit kept
    assert count_rows(db_url, "connector_syncs") == 0
    assert {row[0] for row in _statuses(db_url)} == {"ACTIVE"}


def _statuses(url: str) -> list[tuple[str]]:
    from support.database import query

    return [tuple(row) for row in query(url, "SELECT status FROM connectors")]
