"""The tests' fork server (support/forkserver.py) stands in for the installed console
script in the docs' and several e2e tests: a command through it must end as the real one
ends (its output, its exit status, after a signal), or those tests would check the
harness instead of the command line."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from support.forkserver import forked_command

REAL = str(Path(sys.executable).parent / "connector-sync")


def both(args: list[str], cwd: Path) -> list[tuple[int, str, str]]:
    """The real command's (status, stdout, stderr), then the forked one's, on fresh files."""
    results = []
    for executable in (REAL, forked_command()):
        for leftover in cwd.glob("connector-sync.db*"):
            leftover.unlink()
        done = subprocess.run(
            [executable, *args], cwd=cwd, capture_output=True, text=True, timeout=60
        )
        results.append((done.returncode, done.stdout, done.stderr))
    return results


@pytest.mark.parametrize(
    "args",
    [
        ["--version"],
        ["add", "a", "--type", "demo", "--config", "{not json"],  # exits 2
        ["list"],  # no database file: exits 3
        ["deploy", "crontab", "--every", "5m", "--executable", "/bin/cs", "--workdir", "/srv"],
    ],
    ids=["version", "bad-input", "no-database", "output"],
)
def test_a_forked_command_ends_as_the_console_script_does(args: list[str], tmp_path: Path) -> None:
    real, forked = both(args, tmp_path)
    assert forked == real
    assert real[0] in {0, 2, 3}


def test_a_forked_run_stopped_by_sigterm_ends_as_the_console_script_does(tmp_path: Path) -> None:
    ended = []
    for executable in (REAL, forked_command()):
        folder = tmp_path / Path(executable).parent.name
        folder.mkdir()
        subprocess.run(
            [executable, "add", "hung", "--type", "sleepy", "--config", '{"seconds": 60}'],
            cwd=folder,
            check=True,
            capture_output=True,
        )
        run = subprocess.Popen(
            [executable, "run", "--grace", "0"],
            cwd=folder,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        deadline = time.monotonic() + 30
        while not list(folder.glob("connector-sync.db*")) or _syncs(folder) == 0:
            assert time.monotonic() < deadline, "the sync did not start"
            time.sleep(0.05)
        run.send_signal(signal.SIGTERM)
        out, err = run.communicate(timeout=30)
        ended.append((run.returncode, "SIGTERM received" in err, "CANCELLED" in out))
    real, forked = ended
    assert forked == real
    # The run's own status after it cancelled the sync (128 + 15), not death by SIGTERM.
    assert real == (143, True, True)


def _syncs(folder: Path) -> int:
    import sqlite3

    with sqlite3.connect(folder / "connector-sync.db") as db:
        try:
            return int(db.execute("SELECT count(*) FROM connector_syncs").fetchone()[0])
        except sqlite3.OperationalError:  # the schema is being made
            return 0
