"""The idle run's question (store/probe.py), asked with the bare driver: "nothing" only when
the schema is current, nothing is due and no lease has expired; libpq itself or psycopg
on PostgreSQL, sqlite3 on SQLite."""

from __future__ import annotations

import datetime as dt
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from connector_sync.db import SCHEMA_REVISION
from connector_sync.store import Store, open_store, probe
from connector_sync.store.base import NewConnector


@pytest.fixture(params=["sqlite", "postgresql", "postgresql-psycopg"])
def url(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each database; PostgreSQL asked through the bundled libpq, and through psycopg (what
    is used where no libpq of psycopg's own is found)."""
    if request.param == "postgresql-psycopg":
        monkeypatch.setattr(probe, "_bundled_libpq", lambda: None)
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with open_store(url) as store:
        yield store


def later() -> dt.datetime:
    return dt.datetime.now(dt.UTC) + dt.timedelta(hours=1)


def test_the_libpq_of_psycopgs_wheel_is_found() -> None:
    assert probe._bundled_libpq() is not None


def test_nothing_to_do_without_connectors_or_with_none_due(store: Store, url: str) -> None:
    assert probe.nothing_to_do(url)
    store.add_connector(NewConnector("later", "demo", {}, 3600, next_sync_at=later()))
    assert probe.nothing_to_do(url)


def test_a_due_connector_is_work_within_its_tenant_only(store: Store, url: str) -> None:
    store.add_connector(NewConnector("now", "demo", {}, 3600, tenant="a"))
    assert not probe.nothing_to_do(url)
    assert not probe.nothing_to_do(url, "a")
    assert probe.nothing_to_do(url, "b")


def test_an_expired_lease_is_work(store: Store, url: str) -> None:
    store.add_connector(NewConnector("held", "demo", {}, 3600, next_sync_at=later()))
    with store.database.begin() as conn:
        conn.exec_driver_sql(
            "UPDATE connectors SET status = 'SYNCING', lease_owner = 'gone:1', "
            "lease_token = 't', lease_expires_at = next_sync_at"
        )
    assert probe.nothing_to_do(url)  # the lease has not expired yet
    with store.database.begin() as conn:
        conn.exec_driver_sql("UPDATE connectors SET lease_expires_at = created_at")
    assert not probe.nothing_to_do(url)


def test_an_old_schema_is_not_nothing(store: Store, url: str) -> None:
    with store.database.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '0001'")
    try:
        assert not probe.nothing_to_do(url)
    finally:
        with store.database.begin() as conn:
            conn.exec_driver_sql(f"UPDATE alembic_version SET version_num = '{SCHEMA_REVISION}'")


@pytest.mark.parametrize("dialect", ["sqlite", "postgresql"])
def test_an_empty_database_is_not_nothing(
    dialect: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if dialect == "sqlite":
        sqlite3.connect(tmp_path / "empty.db").close()
        url = f"sqlite:///{tmp_path / 'empty.db'}"
    else:
        url = str(request.getfixturevalue("empty_pg_url"))
    assert not probe.nothing_to_do(url)


def test_a_missing_sqlite_file_is_not_created(tmp_path: Path) -> None:
    assert not probe.nothing_to_do(f"sqlite:///{tmp_path}/missing.db")
    assert not (tmp_path / "missing.db").exists()
