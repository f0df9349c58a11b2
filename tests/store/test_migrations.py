"""Applying every migration to an empty database gives exactly the models' schema."""

from __future__ import annotations

from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory

from connector_sync.db import SCHEMA_REVISION, Database, migrations_dir
from connector_sync.models import metadata

# On PostgreSQL, migration 0006 replaces this foreign key by a lock per batch and a
# delete trigger (see that migration); SQLite keeps it, as the models declare it.
RECORDS_FOREIGN_KEY = "fk_dataset_records_dataset_id_datasets"


def schema_diff(database: Database) -> list[object]:
    with database.engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = list(compare_metadata(context, metadata))
    if not database.is_postgresql:
        return diff
    return [d for d in diff if not (d[0] == "add_fk" and d[1].name == RECORDS_FOREIGN_KEY)]  # type: ignore[index]


def index_sql(database: Database) -> dict[str, str]:
    """Index definitions as the database reports them (partial predicates included)."""
    with database.engine.connect() as conn:
        if database.is_postgresql:
            rows = conn.exec_driver_sql(
                "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'"
            ).all()
        else:
            rows = conn.exec_driver_sql(
                "SELECT name, sql FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL"
            ).all()
    return {name: sql for name, sql in rows}


def check_constraint_names(url: str) -> set[str]:
    with Database(url) as database, database.engine.connect() as conn:
        inspector = sa.inspect(conn)
        return {
            str(check["name"])
            for table in inspector.get_table_names()
            for check in inspector.get_check_constraints(table)
        }


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'empty.db'}"
    return str(request.getfixturevalue("empty_pg_url"))


def test_upgrade_gives_the_models_schema(empty_url: str) -> None:
    with Database(empty_url) as database:
        assert database.current_revision() is None
        database.upgrade()
        assert database.current_revision() == SCHEMA_REVISION
        assert schema_diff(database) == []
        indexes = index_sql(database)
    due = indexes["ix_connectors_due"]
    assert "auto_sync" in due and "'ACTIVE'" in due  # partial, as the models declare
    # (alembic's comparison does not see a partial index's predicate: asked here)
    last_success = indexes["ix_connectors_last_success"]
    assert "consecutive_failures = 0" in last_success and "'COMPLETED'" in last_success
    assert check_constraint_names(empty_url) == {
        "ck_connectors_status",
        "ck_connectors_sync_interval_positive",
        "ck_connectors_sync_timeout_positive",
        "ck_connectors_keep_not_negative",
        "ck_connector_syncs_status",
        "ck_connector_syncs_trigger",
        "ck_datasets_status",
    }
    one_open = indexes["uq_connector_syncs_one_in_progress"]
    assert "UNIQUE" in one_open.upper() and "IN_PROGRESS" in one_open


def test_downgrade_to_nothing_and_up_again(empty_url: str) -> None:
    with Database(empty_url) as database:
        database.upgrade()
        _downgrade(database)
        assert database.current_revision() is None
        database.upgrade()
        assert schema_diff(database) == []


def _downgrade(database: Database) -> None:
    from alembic import command

    with database.begin() as conn:
        command.downgrade(database.alembic_config(conn), "base")


def test_code_expects_the_newest_migration() -> None:
    script = ScriptDirectory(str(migrations_dir()))
    assert script.get_current_head() == SCHEMA_REVISION


def test_an_upgrade_that_rebuilds_a_table_keeps_the_rows_that_refer_to_it(
    empty_url: str,
) -> None:
    """0003 and 0008 rebuild connectors on SQLite (copy, drop, rename): with foreign keys
    on, the drop deleted every sync and dataset by ON DELETE CASCADE (found while
    adding 0008). Migrations now run with them off, checked before the commit."""
    with Database(empty_url) as database:
        database.upgrade("0002")
        with database.engine.begin() as conn:
            conn.exec_driver_sql(
                "INSERT INTO connectors (id, tenant, name, type, config, status, auto_sync, "
                "sync_interval, max_consecutive_failures, consecutive_failures, created_at, "
                "updated_at) VALUES (1, 'default', 'a', 'demo', '{}', 'ACTIVE', true, 60, 5, "
                "0, '2026-11-30 00:00:00', '2026-11-30 00:00:00')"
            )
            conn.exec_driver_sql(
                "INSERT INTO connector_syncs (connector_id, tenant, status, trigger, attempts, "
                "started_at) VALUES (1, 'default', 'COMPLETED', 'schedule', 1, "
                "'2026-11-30 00:00:00')"
            )
        database.upgrade()
        with database.engine.connect() as conn:
            counts = [
                conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one()
                for table in ("connectors", "connector_syncs")
            ]
            if not database.is_postgresql:
                assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar_one() == 1  # back on
    assert counts == [1, 1]


def test_sqlite_connectors_table_keeps_its_autoincrement(sqlite_url: str) -> None:
    """So a deleted connector's id is never given again (0008), as PostgreSQL's sequence."""
    with Database(sqlite_url) as database, database.engine.connect() as conn:
        database.upgrade()
        sql = conn.exec_driver_sql(
            "SELECT sql FROM sqlite_master WHERE name = 'connectors'"
        ).scalar_one()
    assert "AUTOINCREMENT" in sql
