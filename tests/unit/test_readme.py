"""The README's quick start stays true: CI runs its test command, and its commands exist."""

from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def quick_start_commands() -> list[str]:
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Quick start", 1)[1].split("\n## ", 1)[0]
    return [block.strip() for block in re.findall(r"```\n(.*?)```", section, re.S)]


def test_quick_start_has_exactly_two_commands() -> None:
    commands = quick_start_commands()
    assert len(commands) == 2
    assert all("\n" not in command for command in commands)
    assert commands[0].endswith("connector-sync demo")
    assert commands[1].endswith("pytest")


def test_ci_runs_the_readme_test_command() -> None:
    ci_script = (ROOT / ".ci" / "run").read_text()
    assert quick_start_commands()[1] in ci_script.splitlines()


def test_every_command_is_in_the_reference() -> None:
    from connector_sync.cli.app import app, db_app

    reference = (ROOT / "README.md").read_text().split("## Command reference", 1)[1]
    headings = "\n".join(line for line in reference.splitlines() if line.startswith("### "))
    names = [c.name or c.callback.__name__ for c in app.registered_commands if c.callback]
    names += [f"db {c.name}" for c in db_app.registered_commands]
    missing = [name for name in names if f"`{name}" not in headings]
    assert missing == []
