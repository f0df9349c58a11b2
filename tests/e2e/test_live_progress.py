"""Live progress through real `connector-sync run` processes: `status` sees the records of
a long sync grow (the heartbeat writes them), and a run on a terminal (a real pty) shows a
progress display that a pipe or --json never gets."""

from __future__ import annotations

import json
import os
import pty
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import Cli

COMMAND = str(Path(sys.executable).parent / "connector-sync")


def running(cli: Cli) -> list[dict[str, object]]:
    result = cli("status", "--json")
    assert result.exit_code == 0, result.stderr
    syncing: list[dict[str, object]] = json.loads(result.stdout)["syncing"]
    return syncing


def wait_for(predicate, seconds: float = 60.0):  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = predicate()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"not within {seconds}s")


def test_status_shows_the_records_of_a_million_record_sync_growing(db_url: str) -> None:
    cli = Cli(db_url)
    config = {"records": 1_000_000, "delay_ms": 0.01}  # slowed down: minutes in all
    assert cli("add", "big", "--type", "demo", "--config", json.dumps(config)).exit_code == 0
    worker = subprocess.Popen(
        [COMMAND, "--database-url", db_url, "run", "-c", "big", "--batch-size", "1000",
         "--heartbeat-seconds", "0.3", "--grace", "0"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        first = wait_for(lambda: [s for s in running(cli) if int(s["records_processed"]) > 0])
        time.sleep(1.5)
        [second] = running(cli)
        [before] = first
        assert second["sync_id"] == before["sync_id"]
        assert int(second["records_processed"]) > int(before["records_processed"])
        assert float(second["elapsed"]) > float(before["elapsed"])
        assert float(second["rate"]) > 0
        assert second["worker"] == f"{os.uname().nodename}:{worker.pid}"
        table = cli("status").stdout
        assert "Syncing now" in table and "big" in table
    finally:
        worker.send_signal(signal.SIGTERM)
        _, stderr = worker.communicate(timeout=60)
    assert worker.returncode == 128 + signal.SIGTERM, stderr
    assert running(cli) == []


def run_on_a_pty(*args: str) -> str:
    """Run connector-sync with stdout and stderr on a pseudo-terminal; all it wrote."""
    leader, follower = pty.openpty()
    env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": "120"}
    process = subprocess.Popen([COMMAND, *args], stdout=follower, stderr=follower, env=env)
    os.close(follower)
    chunks: list[bytes] = []
    while True:
        ready, _, _ = select.select([leader], [], [], 0.2)
        if ready:
            try:
                chunk = os.read(leader, 65536)
            except OSError:  # the process closed the terminal
                break
            if not chunk:
                break
            chunks.append(chunk)
        elif process.poll() is not None:
            break
    process.wait(timeout=60)
    os.close(leader)
    return b"".join(chunks).decode("utf-8", "replace")


def test_a_run_on_a_terminal_shows_live_progress_and_a_pipe_does_not(sqlite_url: str) -> None:
    cli = Cli(sqlite_url)
    config = {"records": 1200, "delay_ms": 0.5}  # about 0.6 s: six refreshes of the display
    assert cli("add", "slow", "--type", "demo", "--config", json.dumps(config)).exit_code == 0
    shown = run_on_a_pty("--database-url", sqlite_url, "run", "-c", "slow", "--batch-size", "100")
    assert "records/s" in shown and "slow" in shown
    assert "Syncs in this run" in shown  # the table follows the display
    quiet = run_on_a_pty("--database-url", sqlite_url, "run", "-c", "slow", "--json")
    assert "records/s" not in quiet
    assert json.loads(quiet[quiet.index("[") :].replace("\r\n", "\n"))[0]["status"] == "COMPLETED"
    piped = subprocess.run(
        [COMMAND, "--database-url", sqlite_url, "run", "-c", "slow", "--batch-size", "100"],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert piped.returncode == 0, piped.stderr
    assert "records/s" not in piped.stdout + piped.stderr
    assert "Syncs in this run" in piped.stdout
