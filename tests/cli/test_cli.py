"""The command line in-process (Typer's CliRunner) against a real SQLite file and PostgreSQL."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from typer.testing import CliRunner

from connector_sync.db import SCHEMA_REVISION, Database
from support.cli import Cli
from support.database import count_rows


def add_demo(cli: Cli, name: str, *extra: str, config: str = '{"records": 5}') -> int:
    result = cli("add", name, "--type", "demo", "--config", config, "--json", *extra)
    assert result.exit_code == 0, result.stderr
    return int(json.loads(result.stdout)["id"])


def test_add_list_show_due_run_history(cli: Cli) -> None:
    first = add_demo(cli, "alpha")
    add_demo(cli, "beta", "--interval", "120", config='{"records": 3, "seed": 7}')

    listed = json.loads(cli("list", "--json").stdout)
    assert [c["name"] for c in listed] == ["alpha", "beta"]
    keys = {
        "id",
        "name",
        "type",
        "status",
        "auto_sync",
        "sync_interval",
        "last_sync_at",
        "next_sync_at",
    }
    assert keys <= set(listed[0])
    assert listed[1]["sync_interval"] == 120
    assert listed[0]["next_sync_at"].endswith("Z")

    assert [c["name"] for c in json.loads(cli("due", "--json").stdout)] == ["alpha", "beta"]

    result = cli("run", "--json")
    assert result.exit_code == 0, result.stderr
    syncs = json.loads(result.stdout)
    assert [s["status"] for s in syncs] == ["COMPLETED", "COMPLETED"]
    history_keys = {
        "id",
        "connector_id",
        "connector_name",
        "status",
        "started_at",
        "completed_at",
        "records_fetched",
        "records_processed",
        "dataset_id",
        "error",
    }
    assert history_keys <= set(syncs[0])
    assert {s["connector_name"]: s["records_processed"] for s in syncs} == {"alpha": 5, "beta": 3}
    assert count_rows(cli.url, "dataset_records") == 8

    assert json.loads(cli("due", "--json").stdout) == []
    again = cli("run", "--json")
    assert again.exit_code == 0 and json.loads(again.stdout) == []
    assert "Nothing due." in cli("run").stdout

    shown = json.loads(cli("show", str(first), "--json").stdout)
    assert shown["name"] == "alpha" and shown["config"] == {"records": 5}
    assert shown["recent_syncs"][0]["status"] == "COMPLETED"
    assert shown["datasets"][0]["status"] == "READY"
    assert "alpha" in cli("show", "alpha").stdout

    history = json.loads(cli("history", "--connector", "beta", "--json").stdout)
    assert [h["connector_name"] for h in history] == ["beta"]
    table = cli("history").stdout
    assert "alpha" in table and "COMPLETED" in table


def test_run_exit_code_is_1_when_a_sync_fails(cli: Cli) -> None:
    add_demo(cli, "good")
    add_demo(cli, "bad", config='{"records": 4, "fail": true}')
    result = cli("run", "--json")
    assert result.exit_code == 1
    by_name = {s["connector_name"]: s for s in json.loads(result.stdout)}
    assert by_name["good"]["status"] == "COMPLETED"
    assert by_name["bad"]["status"] == "FAILED"
    assert "configured to fail" in by_name["bad"]["error"]
    failed = json.loads(cli("history", "--status", "failed", "--json").stdout)
    assert [f["connector_name"] for f in failed] == ["bad"]


def test_run_connector_syncs_now_even_when_not_due(cli: Cli) -> None:
    add_demo(cli, "a", "--no-auto-sync")
    assert json.loads(cli("due", "--json").stdout) == []
    assert json.loads(cli("run", "--json").stdout) == []
    result = cli("run", "--connector", "a", "--json")
    assert result.exit_code == 0
    [sync] = json.loads(result.stdout)
    assert (sync["connector_name"], sync["status"]) == ("a", "COMPLETED")


def test_enable_and_disable(cli: Cli) -> None:
    add_demo(cli, "a")
    assert cli("disable", "a").exit_code == 0
    [row] = json.loads(cli("list", "--json").stdout)
    assert row["auto_sync"] is False
    assert json.loads(cli("due", "--json").stdout) == []
    assert cli("enable", "a").exit_code == 0
    [row] = json.loads(cli("due", "--json").stdout)
    assert (row["auto_sync"], row["status"]) == (True, "ACTIVE")


def test_test_command_checks_without_writing(cli: Cli, tmp_path: Path) -> None:
    csv_path = tmp_path / "people.csv"
    csv_path.write_text("id,name\n1,Ada\n")
    assert (
        cli(
            "add", "people", "--type", "csv", "--config", json.dumps({"path": str(csv_path)})
        ).exit_code
        == 0
    )
    result = cli("test", "people", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True
    csv_path.unlink()
    failed = cli("test", "people")
    assert failed.exit_code == 1
    assert "not found" in failed.stdout
    assert count_rows(cli.url, "connector_syncs") == 0


def test_types_lists_builtins_and_their_fields(cli: Cli) -> None:
    described = {t["type"]: t for t in json.loads(cli("types", "--json").stdout)}
    assert {"demo", "csv"} <= set(described)
    path = next(f for f in described["csv"]["fields"] if f["name"] == "path")
    assert path["required"] is True
    assert "records" in cli("types").stdout


def test_secret_config_values_are_masked(cli: Cli) -> None:
    config = json.dumps({"records": [], "token": "s3cr3t-value"})
    assert cli("add", "r", "--type", "records", "--config", config).exit_code == 0
    for args in (("show", "r", "--json"), ("show", "r"), ("list", "--json")):
        assert "s3cr3t-value" not in cli(*args).stdout
    assert json.loads(cli("show", "r", "--json").stdout)["config"]["token"] == "***"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("show", "nope"), "no connector 'nope'"),
        (("run", "--connector", "nope"), "no connector 'nope'"),
        (("add", "x", "--type", "nope"), "unknown connector type 'nope'"),
        (("add", "x", "--type", "demo", "--config", "{bad json"), "--config is not valid JSON"),
        (("add", "x", "--type", "csv", "--config", "{}"), "missing required field 'path'"),
        (("add", "x", "--type", "demo", "--config", '{"rows": 1}'), "unknown field(s) rows"),
        (("add", "x", "--type", "demo", "--config", '{"records": "5"}'), "must be integer"),
        (("add", "x", "--type", "demo", "--interval", "0"), "--interval"),
        (("add", "x", "--type", "demo", "--config-file", "/no/such/file"), "cannot read it"),
        (("add", "123", "--type", "demo"), "all digits"),
        (("due", "--limit", "-1"), "--limit"),
        (("run", "--limit", "0"), "--limit"),
        (("history", "--status", "DONE"), "not a sync status; use one of IN_PROGRESS"),
        (("run", "--connector", "existing", "--limit", "1"), "--limit"),
        (("history", "--limit", "-5"), "--limit"),
        (("add", "existing", "--type", "demo"), "already exists"),
        (("frobnicate",), "No such command"),
        # Out of range for the columns, or not numbers at all: refused before any SQL.
        (("add", "x", "--type", "demo", "--interval", "3000000000"), "--interval"),
        (("add", "x", "--type", "demo", "--timeout", "99999999999"), "--timeout"),
        (("add", "x", "--type", "demo", "--max-failures", "99999999999999"), "--max-failures"),
        (("add", "x", "--type", "demo", "--config", '{"records": NaN}'), "NaN is not a JSON"),
        (("add", "x", "--type", "demo", "--config", "null"), "got a JSON null"),
        (("add", "x", "--type", "demo", "--config", "[1]"), "got a JSON array"),
        (("add", "x", "--type", "demo", "--tenant", ""), "--tenant must not be empty"),
        (("add", "x", "--type", "demo", "--tenant", "t" * 201), "use at most 200"),
        (("add", "x" * 201, "--type", "demo"), "NAME is 201 characters long"),
        (("add", " x", "--type", "demo"), 'NAME " x" has spaces at its start or end'),
        (("add", "x\ty", "--type", "demo"), 'NAME "x\\ty" holds a control character'),
        (
            ("add", "x", "--type", "http", "--config", '{"url": "http://h/", "token": "env:MY-T"}'),
            "config field 'token' starts with env: but is not a valid env: reference",
        ),
        (("due", "--limit", "99999999999999999999"), "--limit"),
        (("run", "--timeout", "nan"), "--timeout"),
        (("run", "--lease-seconds", "inf"), "--lease-seconds"),
        (("health", "--overdue-after", "nan"), "--overdue-after"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_changes_nothing(
    cli: Cli, args: tuple[str, ...], message: str
) -> None:
    add_demo(cli, "existing")
    before = cli("list", "--json").stdout
    result = cli(*args)
    assert result.exit_code == 2, (result.stdout, result.stderr)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("connector-sync: error: ")
    assert message in lines[0]
    assert "Traceback" not in result.output
    assert cli("list", "--json").stdout == before
    assert count_rows(cli.url, "connector_syncs") == 0


def test_demo_command(cli: Cli) -> None:
    result = cli("demo")
    assert result.exit_code == 0, result.stderr
    assert "demo-customers" in result.stdout and "COMPLETED" in result.stdout
    assert count_rows(cli.url, "datasets") == 3
    assert cli("demo").exit_code == 0  # again: reuses the connectors, syncs them again
    assert count_rows(cli.url, "connectors") == 3
    assert count_rows(cli.url, "datasets") == 6


def test_demo_says_why_it_left_a_deleted_demo_connector_alone(cli: Cli) -> None:
    """Found by a new user's pass: it said 'being synced by another worker'."""
    assert cli("demo").exit_code == 0
    assert cli("delete", "demo-orders", "--keep-data", "--yes").exit_code == 0
    result = cli("demo")
    assert result.exit_code == 0, result.stderr
    assert "another worker" not in result.output
    assert (
        "note: connector 'demo-orders' is INACTIVE (deleted, its data kept): "
        "'connector-sync enable demo-orders' brings it back; not synced"
    ) in " ".join(result.stdout.split())
    assert count_rows(cli.url, "connectors") == 3  # not added again
    assert count_rows(cli.url, "datasets") == 5  # the other two synced again


def test_recover_command(cli: Cli) -> None:
    result = cli("recover", "--json")
    assert result.exit_code == 0 and json.loads(result.stdout) == []


def test_db_current_on_a_missing_sqlite_file_exits_3_and_does_not_create_it(
    tmp_path: Path,
) -> None:
    path = tmp_path / "absent.db"
    for args in (("db", "current"), ("db", "current", "--json")):
        result = Cli(f"sqlite:///{path}")(*args)
        assert result.exit_code == 3, result.output
        assert result.stdout == ""
        assert result.stderr.strip() == (
            f"connector-sync: error: no connector-sync database at {path}: run 'connector-sync "
            "db upgrade' (or add a connector) to create it, or set DATABASE_URL"
        )
        assert not path.exists()


def test_another_programs_sqlite_file_is_left_as_it_is(tmp_path: Path) -> None:
    """Found by a new user's pass: `status` on another program's file added our schema."""
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE orders (id INTEGER PRIMARY KEY)")
    conn.close()
    cli = Cli(f"sqlite:///{path}")
    for args in (("status", "--json"), ("run",), ("list",), ("add", "x", "--type", "demo")):
        result = cli(*args)
        assert result.exit_code == 3, (args, result.output)
        assert result.stderr.strip() == (
            f"connector-sync: error: database sqlite:///{path} has no connector-sync schema "
            "but other tables (orders): check the database URL, or run 'connector-sync db "
            "upgrade' to add the schema to this file"
        )
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT name FROM sqlite_master").fetchall() == [("orders",)]
        # not even turned to WAL mode (review): the refusal reads it without the engine
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    conn.close()
    assert cli("db", "upgrade").exit_code == 0  # asked: added beside the other tables
    assert cli("status").exit_code == 0


def test_a_file_another_process_is_creating_the_schema_in_is_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two commands starting on a new file at once: the second sees the first's tables
    before its revision, and takes them for ours (review: it refused them once in 20)."""
    url = f"sqlite:///{tmp_path / 'fresh.db'}"
    sqlite3.connect(tmp_path / "fresh.db").close()
    real = Database._foreign_tables

    def the_first_upgrades_meanwhile(self: Database) -> list[str]:
        monkeypatch.setattr(Database, "_foreign_tables", real)  # the first one's check
        with Database(url) as first:
            first.ensure_schema(create=True)
        return real(self)

    monkeypatch.setattr(Database, "_foreign_tables", the_first_upgrades_meanwhile)
    with Database(url) as second:
        second.ensure_schema(create=True)
    monkeypatch.undo()
    with Database(url) as database:
        assert database.current_revision() == SCHEMA_REVISION


def test_a_file_left_with_only_an_empty_alembic_version_is_ours(tmp_path: Path) -> None:
    """As `alembic downgrade base` leaves it (review)."""
    path = tmp_path / "based.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num VARCHAR(32) PRIMARY KEY)")
    conn.close()
    assert Cli(f"sqlite:///{path}")("status").exit_code == 0


def test_db_current_on_an_empty_sqlite_file_says_there_is_no_schema(tmp_path: Path) -> None:
    path = tmp_path / "empty.db"
    path.touch()
    result = Cli(f"sqlite:///{path}")("db", "current", "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout) == {
        "revision": None,
        "expected": SCHEMA_REVISION,
        "current": False,
    }


@pytest.mark.postgres
def test_unmigrated_postgres_exits_3_with_the_fix(empty_pg_url: str) -> None:
    cli = Cli(empty_pg_url)
    result = cli("list")
    assert result.exit_code == 3
    assert "run 'connector-sync db upgrade'" in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert cli("db", "upgrade").exit_code == 0
    current = json.loads(cli("db", "current", "--json").stdout)
    assert current["current"] is True
    assert cli("list").exit_code == 0


@pytest.mark.postgres
def test_unreachable_postgres_exits_3() -> None:
    result = Cli("postgresql://postgres:hunter2@127.0.0.1:1/nowhere")("list")
    assert result.exit_code == 3
    assert result.stderr.startswith("connector-sync: error: cannot connect to database")
    assert "hunter2" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.postgres
def test_a_password_in_the_query_of_the_database_url_is_masked(pg_url: str) -> None:
    """libpq also takes a password in the query string (`?password=`, `?sslpassword=`),
    which SQLAlchemy's hide_password leaves as it is."""
    import sqlalchemy as sa

    query = {"password": "pw-SECRETV", "sslpassword": "ssl-SECRETV", "application_name": "app"}
    url = sa.make_url(pg_url).update_query_dict(query).render_as_string(hide_password=False)
    cli = Cli(url)
    upgrade = cli("db", "upgrade")
    demo = cli("demo")
    unreachable = Cli(url.replace(f":{sa.make_url(pg_url).port or 5432}/", ":1/"))("list")
    assert (upgrade.exit_code, demo.exit_code, unreachable.exit_code) == (0, 0, 3)
    assert "at the latest schema" in upgrade.stderr
    assert "cannot connect to database" in unreachable.stderr
    for result in (upgrade, demo, unreachable):
        assert "SECRETV" not in result.output
        assert "password=***" in result.output and "sslpassword=***" in result.output
        assert "application_name=app" in result.output  # only secret-looking names


def test_sqlite_default_file_is_created_on_request_and_migrated(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A read finds no default file and says how to create one, without creating it."""
    from connector_sync.cli import app

    monkeypatch.chdir(tmp_path)
    missing = CliRunner().invoke(app, ["list", "--json"])
    assert missing.exit_code == 3
    assert "no connector-sync database at ./connector-sync.db" in missing.stderr
    assert not (tmp_path / "connector-sync.db").exists()
    created = CliRunner().invoke(app, ["db", "upgrade"])
    assert created.exit_code == 0, created.stderr
    result = CliRunner().invoke(app, ["list", "--json"])
    assert result.exit_code == 0, result.stderr
    assert json.loads(result.stdout) == []
    assert (tmp_path / "connector-sync.db").exists()


def test_database_url_from_environment(sqlite_url: str) -> None:
    from typer.testing import CliRunner

    from connector_sync.cli import app

    result = CliRunner().invoke(
        app, ["add", "env", "--type", "demo"], env={"DATABASE_URL": sqlite_url}
    )
    assert result.exit_code == 0, result.stderr
    assert count_rows(sqlite_url, "connectors") == 1


def test_status_and_health(cli: Cli, db_url: str) -> None:
    add_demo(cli, "good")
    bad = add_demo(cli, "bad", config='{"fail": true}')
    assert cli("health").exit_code == 0
    cli("run")
    summary = json.loads(cli("status", "--json").stdout)
    assert summary["connectors"] == {"ACTIVE": 2}
    assert summary["syncs_last_24h"] == {"COMPLETED": 1, "FAILED": 1}
    assert summary["records_last_24h"] == 5
    assert "due now" in cli("status").stdout

    from connector_sync.db import Database

    with Database(db_url) as db, db.begin() as conn:  # park it, and strand a lease
        conn.exec_driver_sql(
            f"UPDATE connectors SET status = 'ERROR', consecutive_failures = 5 WHERE id = {bad}"
        )
        conn.exec_driver_sql(
            "UPDATE connectors SET status = 'SYNCING', lease_owner = 'gone:1', "
            "lease_expires_at = '2020-01-01 00:00:00' WHERE name = 'good'"
        )
    result = cli("health", "--json")
    assert result.exit_code == 1
    problems = {p["problem"]: p for p in json.loads(result.stdout)}
    assert set(problems) == {"ERROR", "LEASE_EXPIRED"}
    assert "connector-sync enable bad" in problems["ERROR"]["detail"]
    assert "gone:1" in problems["LEASE_EXPIRED"]["detail"]
    assert cli("recover").exit_code == 0
    assert cli("enable", "bad").exit_code == 0
    assert cli("health").exit_code == 0


@pytest.mark.real_time
def test_add_timeout_and_max_failures_then_run_options(cli: Cli) -> None:
    result = cli("add", "hung", "--type", "sleepy", "--config", '{"seconds": 30}',
                 "--timeout", "1", "--max-failures", "1")  # fmt: skip
    assert result.exit_code == 0, result.stderr
    result = cli("run", "--json", "--concurrency", "2", "--attempts", "1")
    assert result.exit_code == 1
    [sync] = json.loads(result.stdout)
    assert sync["error"] == "timed out after 1s"
    [connector] = json.loads(cli("list", "--json").stdout)
    assert connector["status"] == "ERROR"  # parked after its single allowed failure
    bad = cli("run", "--heartbeat-seconds", "30", "--lease-seconds", "10")
    assert bad.exit_code == 2 and "--heartbeat-seconds" in bad.stderr


@pytest.mark.parametrize(
    "url",
    [
        "mysql://root@localhost/db",
        "not a url",
        "",
        "postgresql://u:pw-secret@127.0.0.1:notaport/x",
        "postgresql://u:pw-secret@127.0.0.1:99999/x",  # libpq would say so at connect: exit 3
        "postgresql://u:pw-secret@127.0.0.1:0/x",
        "postgresql+asyncpg://u:pw-secret@127.0.0.1/x",
        "sqlite+aiosqlite:///x.db",
    ],
)
def test_unsupported_database_url_is_bad_input(url: str, tmp_path: Path) -> None:
    result = Cli(url)("list", env={"DATABASE_URL": f"sqlite:///{tmp_path}/fallback.db"})
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("connector-sync: error: --database-url")
    assert len(result.stderr.strip().splitlines()) == 1
    assert "pw-secret" not in result.output
    assert list(tmp_path.iterdir()) == []  # an empty URL does not fall back to another


def test_a_config_key_given_twice_is_bad_input(cli: Cli) -> None:
    """json keeps the last of two: which one did the user mean? (serve refuses it too)"""
    result = cli("add", "x", "--type", "demo", "--config", '{"records": 5, "records": 6}')
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "connector-sync: error: --config: the key 'records' is given more than once: give it once"
    )
    assert count_rows(cli.url, "connectors") == 0
    assert cli("add", "y", "--type", "demo", "--config", '{"records": 5}').exit_code == 0
    result = cli("edit", "y", "--set", 'fail={"a": 1, "a": 2}')
    assert result.exit_code == 2
    assert "--set 'fail': the key 'a' is given more than once" in result.stderr
    assert json.loads(cli("show", "y", "--json").stdout)["config"] == {"records": 5}


@pytest.mark.parametrize("variable", ["DATABASE_URL", "CONNECTOR_SYNC_DATABASE_URL"])
def test_a_bad_database_url_from_the_environment_is_named_by_its_variable(
    variable: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    from connector_sync.cli import app

    for name in ("DATABASE_URL", "CONNECTOR_SYNC_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)
    result = CliRunner().invoke(app, ["list"], env={variable: "mysql://root@localhost/db"})
    assert result.exit_code == 2
    assert result.stderr.startswith(f"connector-sync: error: {variable} mysql://")
    result = CliRunner().invoke(app, ["--database-url", "mysql://root@localhost/db", "list"])
    assert result.stderr.startswith("connector-sync: error: --database-url mysql://")


def test_non_utf8_config_file_is_bad_input(cli: Cli, tmp_path: Path) -> None:
    config = tmp_path / "config.json"
    config.write_bytes(b'{"records": "caf\xe9"}')
    result = cli("add", "x", "--type", "demo", "--config-file", str(config))
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        f"connector-sync: error: --config-file {config} is not UTF-8 (byte 16): save it as UTF-8"
    )
    assert count_rows(cli.url, "connectors") == 0


def test_names_and_errors_are_shown_as_text_never_as_markup(cli: Cli, tmp_path: Path) -> None:
    """Rich markup in user data ("[/]" closes nothing) must neither crash nor style output."""
    assert add_demo(cli, "x[/]") > 0
    missing = tmp_path / "[bold]missing[/].csv"
    config = json.dumps({"path": str(missing)})
    assert cli("add", "y[red]", "--type", "csv", "--config", config).exit_code == 0
    assert cli("run").exit_code == 1
    for args in (("list",), ("history",), ("show", "x[/]"), ("status",), ("test", "y[red]")):
        result = cli(*args)
        assert "Traceback" not in result.output and "MarkupError" not in result.output
        assert result.exit_code in (0, 1), (args, result.output)
    assert "x[/]" in cli("list").stdout
    assert f"csv file not found: {missing}" in cli("history").stdout
    assert "[bold]missing[/]" in cli("test", "y[red]").stdout


def test_messages_stay_on_one_line_when_piped(cli: Cli) -> None:
    name = "a-connector-name-long-enough-to-push-the-message-past-eighty-columns"
    result = cli("add", name, "--type", "demo")
    assert result.stdout == f"added connector {name} (id 1), due now\n"
    result = cli("reset-state", name)
    assert len(result.stdout.splitlines()) == 1, result.stdout


@pytest.mark.parametrize("kind", ["sqlite", "postgresql"])
def test_percent_encoded_url_upgrades(
    kind: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    """alembic's config interpolates `%`: a percent-encoded password or path must still work."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path}/100%25.db"
    else:  # trust auth ignores the password; the URL still carries an encoded one
        empty_pg_url = str(request.getfixturevalue("empty_pg_url"))
        url = empty_pg_url.replace("postgres@", "postgres:p%40ss@")
        assert "p%40ss@" in url
    cli = Cli(url)
    result = cli("db", "upgrade")
    assert result.exit_code == 0, result.output
    assert "p%40ss" not in result.output and "p@ss" not in result.output
    assert json.loads(cli("db", "current", "--json").stdout)["current"] is True


def test_upgrade_of_a_newer_database_exits_3(sqlite_url: str) -> None:
    with Database(sqlite_url) as database, database.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0099'")
    result = Cli(sqlite_url)("db", "upgrade")
    assert result.exit_code == 3
    assert result.stderr.strip().endswith(
        f"is at schema revision 0099, newer than this connector-sync ({SCHEMA_REVISION}): "
        "upgrade connector-sync"
    )


def test_records_json_cannot_hold_fail_the_sync_clearly(
    cli: Cli, db_url: str, tmp_path: Path
) -> None:
    """NaN is not JSON (a READY dataset must hold valid JSON on both databases); NUL
    fits SQLite's text but not PostgreSQL's jsonb, and says so instead of a driver error."""
    nan = tmp_path / "nan.jsonl"
    nan.write_text('{"id": 1, "x": 1.5}\n{"id": 2, "x": NaN}\n')
    nul = tmp_path / "nul.jsonl"
    nul.write_text('{"id": 1, "text": "a\\u0000b"}\n')
    for name, path in (("nan", nan), ("nul", nul)):
        config = json.dumps({"path": str(path)})
        assert cli("add", name, "--type", "file", "--config", config).exit_code == 0
    result = cli("run", "--json")
    by_name = {s["connector_name"]: s for s in json.loads(result.stdout)}
    assert by_name["nan"]["status"] == "FAILED"
    assert by_name["nan"]["error"] == (
        "record 2 cannot be stored as JSON: it holds NaN or Infinity, which JSON has no "
        "value for; fix it in the source"
    )
    assert by_name["nan"]["error_type"] == "RecordError"
    if db_url.startswith("sqlite"):
        assert by_name["nul"]["status"] == "COMPLETED"
        assert result.exit_code == 1
    else:
        assert by_name["nul"]["status"] == "FAILED"
        assert by_name["nul"]["error"] == (
            "record 1 holds a NUL character (\\u0000), which PostgreSQL cannot "
            "store in jsonb; remove it in the source"
        )
        assert by_name["nul"]["attempts"] == 1  # permanent: not retried
    with Database(db_url) as database, database.begin() as conn:
        statuses = conn.exec_driver_sql("SELECT status FROM datasets ORDER BY id").scalars().all()
    assert "BUILDING" not in statuses
    assert statuses.count("READY") == (1 if db_url.startswith("sqlite") else 0)


def test_an_unexpected_error_line_holds_no_statement_parameters_or_passwords() -> None:
    import sqlalchemy as sa

    from connector_sync.cli.errors import _safe_text

    driver = ValueError('integer out of range\nCONTEXT: {"token": "tok-SECRET"}')
    wrapped = sa.exc.DataError("INSERT INTO connectors ...", {"token": "tok-SECRET"}, driver)
    assert _safe_text(wrapped) == "integer out of range"
    plain = RuntimeError("cannot reach postgresql://u:hunter2@db/x")
    assert _safe_text(plain) == "cannot reach postgresql://u:***@db/x"


def test_version(cli: Cli) -> None:
    from importlib.metadata import version

    result = cli("--version")
    assert result.exit_code == 0
    assert result.stdout == f"connector-sync {version('connector-sync')}\n"
    assert version("connector-sync") == "0.1.0"  # the README's global options table says so


@pytest.mark.parametrize(
    "name",
    [
        "\u0641\u0631\u0648\u0634\u200c\u0647\u0627",
        "team\u00a0a",
        "\U0001f469\u200d\U0001f4bb-feed",
        "Größe/日本",
    ],
)
def test_names_in_any_script_are_accepted(cli: Cli, name: str) -> None:
    """Joiners (ZWNJ in Persian, ZWJ in emoji) and inner no-break spaces are text."""
    assert cli("add", name, "--type", "demo", "--tenant", name).exit_code == 0
    [row] = json.loads(cli("list", "--json").stdout)
    assert (row["name"], row["tenant"]) == (name, name)


def test_every_health_flag_reads_its_environment_variable() -> None:
    """As the alerts page says (--overdue-after had none: a new user's pass)."""
    import typer

    from connector_sync.cli import app

    health = typer.main.get_command(app).commands["health"]  # type: ignore[attr-defined]
    for param in health.params:
        if param.opts[0] == "--json":
            continue
        expected = "CONNECTOR_SYNC_" + param.opts[0].removeprefix("--").replace("-", "_").upper()
        names = param.envvar if isinstance(param.envvar, list) else [param.envvar]
        assert expected in names, (param.opts, param.envvar)
