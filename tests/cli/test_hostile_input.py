"""Bad input that used to end as "unexpected" (exit 1) is one line and exit 2, and leaves
the database as it was (issue 13, finding 8), on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import sqlalchemy as sa

from connector_sync.db import Database
from support.cli import Cli

TABLES = ("connectors", "connector_syncs", "datasets", "dataset_records")


def row_counts(url: str) -> dict[str, int]:
    with Database(url) as db, db.engine.connect() as conn:
        return {t: conn.execute(sa.text(f"SELECT count(*) FROM {t}")).scalar_one() for t in TABLES}


DEEP = '{"records": ' + "[" * 5000 + "]" * 5000 + "}"
DEEP_BUT_PARSED = '{"records": ' + "[" * 40 + "]" * 40 + "}"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (("add", "x", "--type", "demo", "--config", DEEP), "--config is nested too deeply"),
        (("add", "x", "--type", "demo", "--config", DEEP_BUT_PARSED), "nested more than 32"),
        (("show", "99999999999999999999"), "no connector '99999999999999999999'"),
        (("history", "-c", "99999999999999999999"), "no connector"),
        (("add", "x\ud800", "--type", "demo"), "unpaired surrogate"),
        (("add", "x", "--type", "demo", "--tenant", "t\udcff"), "--tenant"),
        (("add", "x", "--type", "http", "--config", '{"url": "http://h/\\u0000"}'), "NUL"),
        (
            (
                "add",
                "x",
                "--type",
                "http",
                "--config",
                '{"url": "http://h/", "headers": {"a\\u0000": "b"}}',
            ),
            "config key 'headers.a",
        ),
        (("add", "x", "--type", "http", "--config", '{"url": "http://h/\\ud800"}'), "surrogate"),
        (("run", "--every", "1e999"), "--every"),
        (("run", "--every", "1m"), "applies to --loop"),
        (("edit", "keep", "--set", "records=3", "--unset", "records"), "both set and removed"),
        # set inside a key removed: the set was dropped silently (an adversarial pass)
        (("edit", "keep", "--set", "x.y=3", "--unset", "x"), "'x.y' is both set and removed"),
        (("datasets", "show", "99999999999999999999"), "99999999999999999999"),
        (("health", "--max-error-rate", "nan"), "--max-error-rate"),
        (("add", "x", "--type", "demo", "--schedule", "0," * 150 + "0 * * * *"), "schedule is"),
    ],
)
def test_bad_input_is_exit_2_one_line_and_changes_nothing(
    db_url: str, args: tuple[str, ...], says: str
) -> None:
    cli = Cli(db_url)
    assert cli("add", "keep", "--type", "demo").exit_code == 0
    before = row_counts(db_url)
    result = cli(*args)
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("connector-sync: error: ")
    assert says in lines[0]
    assert "Traceback" not in result.output
    assert row_counts(db_url) == before


def test_a_failed_add_does_not_create_the_default_database(
    tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pathlib import Path

    monkeypatch.chdir(str(tmp_path))
    from typer.testing import CliRunner

    from connector_sync.cli import app

    result = CliRunner().invoke(
        app, ["add", "x", "--type", "http", "--config", '{"url": "http://h/\\u0000"}']
    )
    assert result.exit_code == 2
    assert not (Path(str(tmp_path)) / "connector-sync.db").exists()


def test_test_has_an_overall_deadline_even_for_a_plugin_that_hangs(db_url: str) -> None:
    """`test` of a third-party plugin that never answers ends at --timeout, exit 1."""
    import time

    cli = Cli(db_url)
    added = cli("add", "hung", "--type", "sleepy", "--config", '{"seconds": 30}')
    assert added.exit_code == 0
    started = time.monotonic()
    result = cli("test", "hung", "--preview", "1", "--timeout", "1s", "--json")
    assert time.monotonic() - started < 10
    assert result.exit_code == 1
    check = json.loads(result.stdout)
    assert check["ok"] is False and "no answer within 1s" in check["message"]


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///", "sqlite:///:memory:"])
def test_a_database_in_memory_is_refused(url: str) -> None:
    result = Cli(url)("add", "x", "--type", "demo")
    assert result.exit_code == 2 and "in memory" in result.stderr


def test_output_never_replaces_a_fifo_a_link_or_a_folder(sqlite_url: str, tmp_path: Path) -> None:
    cli = Cli(sqlite_url)
    assert cli("demo").exit_code == 0
    fifo, link = tmp_path / "fifo", tmp_path / "link"
    os.mkfifo(fifo)
    link.symlink_to(tmp_path / "target")
    for target in (fifo, link, tmp_path):
        for args in (
            ("datasets", "export", "1", "-o", str(target)),
            ("metrics", "-o", str(target)),
        ):
            result = cli(*args)
            assert result.exit_code == 2, (args, result.output)
    assert fifo.exists() and not fifo.is_file() and link.is_symlink()
    private = tmp_path / "private.jsonl"
    private.write_text("")
    private.chmod(0o600)
    assert cli("datasets", "export", "1", "-o", str(private)).exit_code == 0
    assert private.stat().st_mode & 0o777 == 0o600 and private.stat().st_size > 0


def test_edit_refuses_a_mask_it_cannot_give_back(db_url: str) -> None:
    """A config copied from `show` keeps its secrets; a masked URL whose host changed has
    nothing to keep, and storing it would replace the password with *** (review)."""
    cli = Cli(db_url)
    # (an X-Api-Key, not a token: a token beside credentials in the URL is refused)
    config = '{"url": "http://user:pw@localhost:8901/x?api_key=k1", "headers": {"X-Api-Key": "k"}}'
    assert cli("add", "sec", "--type", "http", "--config", config).exit_code == 0
    shown = json.loads(cli("show", "sec", "--json").stdout)["config"]
    assert cli("edit", "sec", "--config", json.dumps(shown)).exit_code == 0  # kept as is
    moved = dict(shown, url=shown["url"].replace("localhost", "127.0.0.1"))
    result = cli("edit", "sec", "--config", json.dumps(moved))
    assert result.exit_code == 2 and "config field 'url' holds ***" in result.stderr
    from connector_sync.store import open_store

    with open_store(db_url) as store:
        assert store.find_connector("sec").config["url"].startswith("http://user:pw@localhost")


def test_edit_set_keeps_a_masked_secret_or_refuses_it_as_config_does(db_url: str) -> None:
    """`--set token=***` (a value copied from `show`) stored the mask over the token, and
    `show` hid the loss; a key set now follows --config's rule: *** where a secret is
    stored keeps it, *** where none can be kept is refused and changes nothing."""
    from connector_sync.store import open_store

    def stored(name: str) -> dict[str, object]:
        with open_store(db_url) as store:
            return store.find_connector(name).config

    cli = Cli(db_url)
    configs: dict[str, dict[str, object]] = {
        "tok": {"url": "http://localhost:8901/x", "token": "tok", "headers": {"X-Api-Key": "hk"}},
        "pw": {"url": "http://user:pw@localhost:8901/x?api_key=k1"},
    }
    for name, config in configs.items():
        assert cli("add", name, "--type", "http", "--config", json.dumps(config)).exit_code == 0
    for name, kept in (
        ("tok", "token=***"),
        ("tok", 'headers={"X-Api-Key": "***", "Accept": "text/csv"}'),
        ("pw", "url=http://user:***@localhost:8901/x?api_key=***"),
    ):
        result = cli("edit", name, "--set", kept)
        assert result.exit_code == 0, (kept, result.output)
    configs["tok"]["headers"] = {"X-Api-Key": "hk", "Accept": "text/csv"}
    assert {name: stored(name) for name in configs} == configs
    before = row_counts(db_url)
    for name, refused, field in (
        ("pw", "url=http://user:***@127.0.0.1:8901/x", "url"),  # another host: no password
        ("tok", "headers.X-Token=***", "headers.X-Token"),  # a new key: nothing stored there
        ("pw", "token=***", "token"),  # no token stored
    ):
        result = cli("edit", name, "--set", refused)
        assert result.exit_code == 2, (refused, result.output)
        assert result.stderr.strip() == (
            f"connector-sync: error: config field '{field}' holds *** where no stored secret "
            "can be kept: give the secret itself (or an env: reference)"
        )
    assert {name: stored(name) for name in configs} == configs
    assert row_counts(db_url) == before


def test_a_stored_config_that_newer_rules_refuse_keeps_syncing_and_editing(
    db_url: str, tmp_path: Path
) -> None:
    """A local file with a download's `timeout` was accepted before that was refused: such
    a connector keeps syncing, and an edit of something else leaves its config alone
    (review); a config edit must follow the rule."""
    from connector_sync.store import open_store
    from connector_sync.store.base import NewConnector

    data = tmp_path / "orders.csv"
    data.write_text("id\n1\n2\n")
    config = {"path": str(data), "timeout": 5}
    cli = Cli(db_url)
    refused = cli("add", "new", "--type", "file", "--config", json.dumps(config))
    assert refused.exit_code == 2 and "'timeout' applies to a download" in refused.stderr
    with open_store(db_url) as store:  # as an older version stored it
        store.add_connector(NewConnector(name="old", type="file", config=config, sync_interval=60))
    assert cli("run", "--connector", "old").exit_code == 0
    [sync] = json.loads(cli("history", "--json").stdout)
    assert (sync["status"], sync["records_processed"]) == ("COMPLETED", 2)
    assert cli("edit", "old", "--interval", "2h").exit_code == 0
    edited = cli("edit", "old", "--set", "has_header=true")
    assert edited.exit_code == 2 and "'timeout' applies to a download" in edited.stderr
    assert cli("edit", "old", "--unset", "timeout").exit_code == 0


def test_an_export_or_metrics_file_is_never_the_database_itself(tmp_path: Path) -> None:
    """`datasets export 5 -o copy.db` on the database copy.db replaced every connector
    with the records (an adversarial pass)."""
    path = tmp_path / "copy.db"
    cli = Cli(f"sqlite:///{path}")
    assert cli("demo").exit_code == 0
    before = row_counts(cli.url)
    for target in (path, tmp_path / "copy.db-wal", tmp_path / "." / "copy.db"):
        for command in (("datasets", "export", "1"), ("metrics",)):
            result = cli(*command, "-o", str(target))
            assert result.exit_code == 2, (command, result.output)
            assert "is connector-sync's own database: give another file" in result.stderr
    assert row_counts(cli.url) == before
    assert cli("datasets", "export", "1", "-o", str(tmp_path / "out.jsonl")).exit_code == 0
