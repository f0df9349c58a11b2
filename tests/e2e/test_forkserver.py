"""The tests' fork server (support/forkserver.py) stands in for the installed console
script in the docs' and several e2e tests: a command through it must end as the real one
ends (its output, its exit status, death by a signal), or those tests would check the
harness instead of the command line."""

from __future__ import annotations

import subprocess
import sys
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
