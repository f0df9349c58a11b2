"""A sql connector may not read connector-sync's own database, where every tenant's configs
and secrets are, unless it says it means to (issue 13, finding 5), on SQLite and
PostgreSQL: refused at `add`, and again at sync time for a URL only an env: reference
names."""

from __future__ import annotations

import json
import os
import socket
from pathlib import Path

import pytest

from support.cli import Cli
from support.database import count_rows

QUERY = "SELECT tenant, name, config FROM connectors"


@pytest.fixture
def cli(db_url: str) -> Cli:
    cli = Cli(db_url)
    secret = '{"url": "https://api.example/x", "token": "acme-literal-token"}'
    assert (
        cli("add", "acme-api", "--type", "http", "--tenant", "acme", "--config", secret).exit_code
        == 0
    )
    return cli


def test_add_refuses_the_tools_own_database_and_changes_nothing(cli: Cli, db_url: str) -> None:
    config = json.dumps({"url": db_url, "query": QUERY})
    result = cli("add", "peek", "--type", "sql", "--tenant", "evil", "--config", config)
    assert result.exit_code == 2
    assert "connector-sync's own database" in result.stderr
    assert "--allow-own-database" in result.stderr
    assert count_rows(db_url, "connectors") == 1


def test_a_reference_to_it_is_refused_when_the_sync_runs(cli: Cli, db_url: str) -> None:
    config = json.dumps({"url": "env:SYNC_SOURCE_URL", "query": QUERY})
    env = {"SYNC_SOURCE_URL": db_url}
    assert (
        cli("add", "peek", "--type", "sql", "--tenant", "evil", "--config", config).exit_code == 0
    )
    result = cli("run", "--connector", "peek", "--tenant", "evil", "--json", env=env)
    assert result.exit_code == 1
    [sync] = json.loads(result.stdout)
    assert sync["status"] == "FAILED" and "own database" in sync["error"]
    assert count_rows(db_url, "dataset_records") == 0
    assert "acme-literal-token" not in result.output


def test_allow_own_database_is_an_explicit_choice(cli: Cli, db_url: str) -> None:
    config = json.dumps({"url": db_url, "query": "SELECT name FROM connectors"})
    added = cli("add", "self", "--type", "sql", "--allow-own-database", "--config", config)
    assert added.exit_code == 0, added.output
    result = cli("run", "--connector", "self", "--json")
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout)[0]["records_processed"] == 2


def spellings(db_url: str, tmp_path: Path) -> list[str]:
    """Other ways to name the same database: what a URL comparison alone let through."""
    if db_url.startswith("sqlite"):
        own = Path(db_url.removeprefix("sqlite:///"))
        link = tmp_path / "hard-link.db"
        os.link(own, link)
        return [f"sqlite:///{link}"]
    name = db_url.rsplit("/", 1)[1]
    return [
        db_url.rsplit("/", 1)[0] + f"/postgres?dbname={name}",
        db_url.replace("127.0.0.1", "0.0.0.0"),
        db_url.replace("127.0.0.1", socket.gethostname()),
    ]


def test_other_spellings_of_the_own_database_are_refused_too(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    for url in spellings(db_url, tmp_path):
        config = json.dumps({"url": url, "query": QUERY})
        result = cli("add", "peek", "--type", "sql", "--config", config)
        assert result.exit_code == 2, url
        assert "own database" in result.stderr
    assert count_rows(db_url, "connectors") == 1


def test_a_file_connector_may_not_read_the_own_sqlite_file(sqlite_url: str) -> None:
    cli = Cli(sqlite_url)
    path = sqlite_url.removeprefix("sqlite:///")
    config = json.dumps({"path": path, "format": "csv", "encoding": "latin-1"})
    result = cli("add", "raw", "--type", "file", "--config", config)
    assert result.exit_code == 2 and "own database file" in result.stderr
