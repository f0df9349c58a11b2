"""edit, delete, schedules, datasets, prune, test --preview and tenants, through the real
command line (in process) on a SQLite file and a PostgreSQL database."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from connector_sync.db import Database
from support.cli import Cli
from support.database import count_rows


def ok(cli: Cli, *args: str, env: dict[str, str] | None = None) -> Any:
    result = cli(*args, env=env)
    assert result.exit_code == 0, (args, result.stdout, result.stderr)
    return result


def data(cli: Cli, *args: str, env: dict[str, str] | None = None) -> Any:
    return json.loads(ok(cli, *args, "--json", env=env).stdout)


def refused(cli: Cli, *args: str, code: int = 2) -> str:
    result = cli(*args)
    assert result.exit_code == code, (args, result.stdout, result.stderr)
    assert "Traceback" not in result.stderr
    assert result.stderr.count("\n") == 1, result.stderr  # one line
    return str(result.stderr)


def sql(url: str, statement: str) -> list[Any]:
    with Database(url) as db, db.begin() as conn:
        result = conn.exec_driver_sql(statement)
        return list(result.all()) if result.returns_rows else []


def test_the_typo_story_is_fixed_with_one_edit(cli: Cli, tmp_path: Path) -> None:
    orders = tmp_path / "orders.csv"
    orders.write_text("id,total\n1,9.50\n2,12.00\n", encoding="utf-8")
    typo = json.dumps({"path": str(tmp_path / "ordrs.csv")})
    ok(cli, "add", "orders", "--type", "file", "--config", typo)
    assert cli("run").exit_code == 1  # file not found

    edited = data(cli, "edit", "orders", "--set", f"path={orders}")
    assert edited["changed"] == ["config"]
    assert edited["config"]["path"] == str(orders)
    syncs = data(cli, "run")  # a fix for a failing connector is tried at once
    assert [s["status"] for s in syncs] == ["COMPLETED"]
    exported = ok(cli, "datasets", "export", "--connector", "orders", "--latest").stdout
    assert [json.loads(line) for line in exported.splitlines()] == [
        {"id": "1", "total": "9.50"}, {"id": "2", "total": "12.00"},
    ]  # fmt: skip


def test_edit_checks_the_config_exactly_as_add_does(cli: Cli) -> None:
    ok(cli, "add", "d", "--type", "demo", "--config", '{"records": 5}')
    before = sql(cli.url, "SELECT config, updated_at FROM connectors")
    add_error = refused(cli, "add", "e", "--type", "demo", "--config", '{"records": -1}')
    edit_error = refused(cli, "edit", "d", "--set", "records=-1")
    assert add_error == edit_error
    assert "demo config field 'records' must be 0 or more" in edit_error
    assert "unknown field(s) nope" in refused(cli, "edit", "d", "--set", "nope=1")
    assert "'seed' is not in the config" in refused(cli, "edit", "d", "--unset", "seed")
    assert "nothing to change" in refused(cli, "edit", "d")
    assert "not both" in refused(cli, "add", "x", "--type", "demo", "--interval", "5m",
                                 "--schedule", "@hourly")  # fmt: skip
    assert "one of them" in refused(cli, "edit", "d", "--interval", "5m", "--schedule", "@daily")
    assert "timezone applies to a schedule" in refused(cli, "edit", "d", "--timezone", "UTC")
    # it was dropped without a word, 'nothing changed' (an adversarial pass)
    assert "an interval replaces the schedule" in refused(
        cli, "edit", "d", "--interval", "1d", "--timezone", "UTC"
    )
    assert sql(cli.url, "SELECT config, updated_at FROM connectors") == before


def test_edit_keeps_secrets_masked_and_a_masked_value_keeps_the_stored_one(cli: Cli) -> None:
    secret = "tok-5ecret-99"
    config = {"records": [{"a": 1}], "token": secret}
    ok(cli, "add", "r", "--type", "records", "--config", json.dumps(config))
    shown = ok(cli, "edit", "r", "--set", "fail_after=3")
    assert secret not in shown.stdout + shown.stderr
    document = data(cli, "edit", "r", "--set", "fail_after=4")
    assert document["config"]["token"] == "***"
    # A config copied from `show --json`, secret still ***, keeps the stored secret.
    copied = data(cli, "show", "r")["config"]
    copied["records"] = [{"a": 2}]
    ok(cli, "edit", "r", "--config", json.dumps(copied))
    [(stored,)] = sql(cli.url, "SELECT config FROM connectors")
    stored = stored if isinstance(stored, dict) else json.loads(stored)
    assert stored == {"records": [{"a": 2}], "token": secret, "fail_after": 4}


def test_edit_of_a_connector_in_error_says_so_and_leaves_it_in_error(cli: Cli) -> None:
    ok(cli, "add", "bad", "--type", "demo", "--config", '{"fail": true}')
    sql(cli.url, "UPDATE connectors SET status = 'ERROR', consecutive_failures = 5")
    result = ok(cli, "edit", "bad", "--set", "fail=false")
    assert "still in ERROR" in result.stdout and "connector-sync enable bad" in result.stdout
    assert data(cli, "show", "bad")["status"] == "ERROR"


def test_rename_interval_and_schedule(cli: Cli) -> None:
    ok(cli, "add", "a", "--type", "demo", "--interval", "15m")
    assert data(cli, "show", "a")["sync_interval"] == 900
    ok(cli, "add", "b", "--type", "demo")
    assert "already exists" in refused(cli, "edit", "a", "--rename", "b")
    assert "all digits" in refused(cli, "edit", "a", "--rename", "123")
    renamed = data(cli, "edit", "a", "--rename", "a2", "--interval", "1h", "--keep", "0")
    assert (renamed["name"], renamed["sync_interval"], renamed["keep"]) == ("a2", 3600, 0)

    quarter = data(cli, "edit", "a2", "--schedule", "*/15 * * * *", "--timezone", "Asia/Kolkata")
    when = dt.datetime.fromisoformat(quarter["next_sync_at"].replace("Z", "+00:00"))
    assert when.minute % 15 == 0 and when.second == 0 and when > dt.datetime.now(dt.UTC)
    listed = ok(cli, "list").stdout
    assert "*/15 * * * * (Asia/Kolkata)" in listed
    assert "*/15 * * * *" in ok(cli, "show", "a2").stdout


def test_add_with_a_schedule_is_due_on_the_next_quarter_hour(cli: Cli) -> None:
    before = dt.datetime.now(dt.UTC)
    added = data(cli, "add", "x", "--type", "demo", "--schedule", "*/15 * * * *")
    shown = data(cli, "show", str(added["id"]))
    when = dt.datetime.fromisoformat(shown["next_sync_at"].replace("Z", "+00:00"))
    assert before < when <= before + dt.timedelta(minutes=15)
    assert (when.minute % 15, when.second, when.microsecond) == (0, 0, 0)
    assert shown["schedule"] == "*/15 * * * *" and shown["timezone"] is None
    assert data(cli, "due") == []
    error = refused(cli, "add", "y", "--type", "demo", "--schedule", "61 * * * *")
    assert error.startswith("connector-sync: error: --schedule '61 * * * *'")
    assert "out of range" in error
    assert "IANA" in refused(cli, "add", "y", "--type", "demo", "--schedule", "@daily",
                             "--timezone", "Nowhere/City")  # fmt: skip
    assert "'15x' is not a duration" in refused(cli, "add", "y", "--type", "demo",
                                                "--interval", "15x")  # fmt: skip
    assert count_rows(cli.url, "connectors") == 1


def test_delete_asks_off_a_terminal_for_yes_and_removes_everything(cli: Cli) -> None:
    ok(cli, "add", "gone", "--type", "demo", "--config", '{"records": 7}')
    ok(cli, "add", "stays", "--type", "demo", "--config", '{"records": 2}')
    ok(cli, "run")
    ok(cli, "run", "-c", "gone")
    assert "give --yes" in refused(cli, "delete", "gone")
    assert count_rows(cli.url, "connectors") == 2
    result = data(cli, "delete", "gone", "--yes")
    assert (result["deleted"], result["syncs"], result["datasets"], result["records"]) == (
        True, 2, 2, 14,
    )  # fmt: skip
    assert count_rows(cli.url, "connectors") == 1
    assert count_rows(cli.url, "dataset_records") == 2
    orphans = sql(
        cli.url,
        "SELECT (SELECT count(*) FROM connector_syncs WHERE connector_id NOT IN "
        "(SELECT id FROM connectors)) + (SELECT count(*) FROM datasets WHERE connector_id "
        "NOT IN (SELECT id FROM connectors)) + (SELECT count(*) FROM dataset_records WHERE "
        "dataset_id NOT IN (SELECT id FROM datasets))",
    )
    assert orphans == [(0,)]
    assert "no connector 'gone'" in refused(cli, "delete", "gone", "--yes")


def test_delete_of_a_syncing_connector_needs_force(cli: Cli) -> None:
    ok(cli, "add", "busy", "--type", "demo")
    sql(cli.url, "UPDATE connectors SET status = 'SYNCING', lease_owner = 'host:42', "
                 "lease_token = 't', lease_expires_at = '2999-01-01 00:00:00'")  # fmt: skip
    error = refused(cli, "delete", "busy", "--yes")
    assert "being synced by host:42" in error and "--force" in error
    ok(cli, "delete", "busy", "--yes", "--force")
    assert count_rows(cli.url, "connectors") == 0


def test_delete_keep_data_hides_it_from_list_and_due_and_run(cli: Cli) -> None:
    ok(cli, "add", "old", "--type", "demo")
    ok(cli, "run")
    result = ok(cli, "delete", "old", "--keep-data", "--yes")
    assert "INACTIVE" in result.stdout
    assert data(cli, "list") == []
    assert [c["status"] for c in data(cli, "list", "--all")] == ["INACTIVE"]
    assert data(cli, "due") == []
    assert "INACTIVE" in refused(cli, "run", "-c", "old")
    assert count_rows(cli.url, "datasets") == 1
    ok(cli, "enable", "old")
    assert [c["name"] for c in data(cli, "list")] == ["old"]


def test_datasets_list_show_and_export(cli: Cli, tmp_path: Path) -> None:
    ok(cli, "add", "d", "--type", "demo", "--config", '{"records": 3}')
    ok(cli, "run")
    [listed] = data(cli, "datasets")
    assert (listed["connector_name"], listed["status"], listed["record_count"]) == ("d", "READY", 3)
    assert listed["schema"]["email"] == ["string"]
    dataset_id = str(listed["id"])
    assert data(cli, "datasets", "--connector", "d", "--status", "ready")[0]["id"] == listed["id"]
    assert data(cli, "datasets", "--status", "building") == []
    assert "not a dataset status; use one of BUILDING, READY, FAILED" in refused(
        cli, "datasets", "--status", "x"
    )

    shown = data(cli, "datasets", "show", dataset_id, "--records", "2")
    assert [r["id"] for r in shown["records"]] == [0, 1]
    assert "tags" in ok(cli, "datasets", "show", dataset_id).stdout

    target = tmp_path / "out.csv"
    written = data(cli, "datasets", "export", dataset_id, "-f", "csv", "-o", str(target))
    assert (written["records"], written["format"], written["output"]) == (3, "csv", str(target))
    lines = target.read_text(encoding="utf-8").splitlines()
    assert lines[0].split(",")[:3] == ["active", "balance", "country"] and len(lines) == 4
    assert '"[""newsletter"",""newsletter""]"' in lines[1]  # nested values as JSON text
    assert "no dataset 999" in refused(cli, "datasets", "export", "999")
    assert "--output FILE" in refused(cli, "datasets", "export", dataset_id, "--json")
    assert "--latest" in refused(cli, "datasets", "export", "--connector", "d")
    assert not list(tmp_path.glob(".out.csv.*"))  # no temporary file left behind


def test_prune_dry_run_then_prune(cli: Cli) -> None:
    ok(cli, "add", "p", "--type", "demo", "--keep", "0", "--config", '{"records": 2}')
    for _ in range(4):
        ok(cli, "run", "-c", "p")
    dry = data(cli, "prune", "--keep", "2", "--dry-run")
    assert (dry["dry_run"], len(dry["datasets"]), dry["records"]) == (True, 2, 4)
    assert count_rows(cli.url, "datasets") == 4
    assert "would remove 2 datasets (4 records)" in ok(cli, "prune", "--keep", "2",
                                                        "--dry-run").stdout  # fmt: skip
    assert "removed 2 datasets" in ok(cli, "prune", "--keep", "2").stdout
    assert count_rows(cli.url, "datasets") == 2
    ok(cli, "prune", "--keep", "0", "--older-than", "1s")  # old as they are, the newest stays
    assert count_rows(cli.url, "datasets") >= 1
    history = data(cli, "prune", "--history", "--older-than", "90d")
    assert (history["kind"], history["syncs"]) == ("history", 0)
    assert "--history needs --older-than" in refused(cli, "prune", "--history")
    assert "--keep counts datasets" in refused(cli, "prune", "--history", "--older-than", "1d",
                                               "--keep", "1")  # fmt: skip


def test_test_preview_shows_the_first_records_and_writes_nothing(cli: Cli) -> None:
    config = {"records": [{"n": 1, "key": "tok-preview-7"}, {"n": 2}, {"n": 3}],
              "token": "tok-preview-7"}  # fmt: skip
    ok(cli, "add", "r", "--type", "records", "--config", json.dumps(config))
    checked = data(cli, "test", "r", "--preview", "2")
    assert checked["ok"] is True
    assert checked["preview"] == [{"n": 1, "key": "***"}, {"n": 2}]  # a secret never shown
    text = ok(cli, "test", "r", "-p", "1").stdout
    assert '{"n": 1, "key": "***"}' in text and "tok-preview" not in text
    assert "preview" not in data(cli, "test", "r")
    assert count_rows(cli.url, "connector_syncs") == 0 and count_rows(cli.url, "datasets") == 0


def test_add_and_demo_honour_the_tenant(cli: Cli) -> None:
    ok(cli, "add", "t", "--type", "demo", env={"CONNECTOR_SYNC_TENANT": "acme"})
    assert [c["tenant"] for c in data(cli, "list")] == ["acme"]
    ok(cli, "demo", "--tenant", "lab")
    tenants = {c["tenant"] for c in data(cli, "list", "--tenant", "lab")}
    assert tenants == {"lab"} and len(data(cli, "list", "--tenant", "lab")) == 3
    assert data(cli, "list", "--tenant", "default") == []


@pytest.mark.parametrize("command", [["edit"], ["delete"], ["datasets"], ["prune"]])
def test_every_new_command_has_help_with_an_example(cli: Cli, command: list[str]) -> None:
    text = ok(cli, *command, "--help").stdout
    assert "Example" in text and "--json" in text


def test_an_edit_of_incremental_says_the_saved_cursor_is_kept(cli: Cli, tmp_path: Path) -> None:
    """A new cursor field with the old field's cursor synced nothing, silently (an
    adversarial pass): the edit keeps the state (reset-state is the way) and says so."""
    events = tmp_path / "ev.jsonl"
    events.write_text('{"id": 1, "at": "a"}\n{"id": 2, "at": "b"}\n')
    config = {"path": str(events), "incremental": {"cursor_field": "at"}}
    ok(cli, "add", "ev", "--type", "file", "--config", json.dumps(config))
    ok(cli, "run", "-c", "ev")
    edited = ok(cli, "edit", "ev", "--set", "incremental.cursor_field=id")
    assert (
        """note: its saved incremental state is kept ({"cursor": "b"}); if it no longer fits, """
        "'connector-sync reset-state ev' starts from the beginning"
    ) in " ".join(edited.stdout.split())
    assert "state is kept" not in ok(cli, "edit", "ev", "--interval", "2h").stdout
