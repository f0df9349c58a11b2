"""Hostile `sql` connectors: the source stays unchanged, whatever the query tries.

Writes are refused twice: by the config check at `add` (a light filter), and by the
database itself at sync time (SQLite opened read-only, PostgreSQL in a read-only
transaction through a server-side cursor), which the tests reach by bypassing the
filter. Each runs on a SQLite source and a PostgreSQL source.
"""

from __future__ import annotations

import hashlib
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.connectors.sql import SqlConnector, same_database
from connector_sync.exceptions import ConfigError, PermanentError, PluginError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store.base import HistoryFilter, NewConnector, Store

# Each would change the source, or write a file next to it, if it ran.
HOSTILE = {
    "drop": "DROP TABLE t",
    "update_returning": "UPDATE t SET x = x + 1 RETURNING x",
    "insert": "INSERT INTO t (x) VALUES (99)",
    "attach": "ATTACH DATABASE '{dir}/attached.db' AS stolen",
    "multi_statement": "SET TRANSACTION READ WRITE; DROP TABLE t",
    "writing_cte": "WITH d AS (DELETE FROM t RETURNING *) SELECT * FROM d",
    "select_then_drop": "SELECT * FROM t; DROP TABLE t",
    "vacuum_into": "VACUUM INTO '{dir}/copy.db'",
    "select_into": "SELECT * INTO copied FROM t",
}
# What a check's `SELECT * FROM (<query>) LIMIT 1` would run if the query closed the
# parenthesis itself.
ESCAPING_THE_SUBQUERY = "SELECT 1 AS a) AS x; SET TRANSACTION READ WRITE; DROP TABLE t; SELECT (1"


@dataclass
class Source:
    """A source database with a table `t` and a way to tell whether anything changed."""

    url: str
    dir: Path
    fingerprint: Callable[[], Any]

    def query(self, name: str) -> str:
        return HOSTILE[name].format(dir=self.dir)


def sqlite_fingerprint(path: Path) -> Callable[[], Any]:
    def fingerprint() -> Any:
        files = sorted(p.name for p in path.parent.iterdir() if not p.name.endswith("-shm"))
        wal = path.with_name(path.name + "-wal")
        wal_bytes = wal.read_bytes() if wal.exists() else b""
        return files, hashlib.sha256(path.read_bytes()).hexdigest(), wal_bytes

    return fingerprint


def pg_fingerprint(url: str) -> Callable[[], Any]:
    def fingerprint() -> Any:
        engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
        try:
            with engine.connect() as conn:
                tables = conn.exec_driver_sql(
                    "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY 1"
                ).scalars()
                counts = {
                    t: conn.exec_driver_sql(f'SELECT count(*) FROM "{t}"').scalar() for t in tables
                }
                total = conn.exec_driver_sql("SELECT sum(x) FROM t").scalar()
        finally:
            engine.dispose()
        return counts, total

    return fingerprint


@pytest.fixture(params=["sqlite", "postgresql"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Source]:
    directory = tmp_path / "source"
    directory.mkdir()
    if request.param == "sqlite":
        path = directory / "source.db"
        with sqlite3.connect(path) as conn:
            conn.execute("CREATE TABLE t (x INTEGER)")
            conn.executemany("INSERT INTO t VALUES (?)", [(1,), (2,), (3,)])
        conn.close()
        yield Source(f"sqlite:///{path}", directory, sqlite_fingerprint(path))
        return
    url = str(request.getfixturevalue("empty_pg_url"))
    engine = sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))
    with engine.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE t (x integer); INSERT INTO t VALUES (1), (2), (3)")
    engine.dispose()
    yield Source(url, directory, pg_fingerprint(url))


def bypassing_validation(url: str, query: str) -> SqlConnector:
    """A plugin that runs `query` as it is, as if the config check had let it through."""
    plugin = SqlConnector({"url": url, "query": "SELECT x FROM t"})
    plugin.query = query
    return plugin


# -- the filter at add -------------------------------------------------------------------

SOURCE_URLS = ["sqlite:///source.db", "postgresql://app@127.0.0.1:5432/shop"]


@pytest.mark.parametrize("url", SOURCE_URLS, ids=["sqlite", "postgresql"])
@pytest.mark.parametrize("name", [*HOSTILE, "escaping_the_subquery"])
def test_add_refuses_anything_but_one_select_with_one_clear_line(url: str, name: str) -> None:
    query = HOSTILE.get(name, ESCAPING_THE_SUBQUERY).format(dir="/tmp")
    with pytest.raises(ConfigError) as raised:
        SqlConnector.validate_config({"url": url, "query": query})
    message = raised.value.message
    assert message.startswith("sql config field 'query' ")
    assert "\n" not in message and len(message) < 200


@pytest.mark.parametrize("url", SOURCE_URLS, ids=["sqlite", "postgresql"])
@pytest.mark.parametrize(
    "query",
    [
        "SELECT * FROM t",
        "  select x from t where note = 'DROP TABLE t; DELETE' ;",
        "WITH recent AS (SELECT * FROM t WHERE x > 1) SELECT * FROM recent",
        "VALUES (1), (2)",
        "(SELECT x FROM t) UNION (SELECT 2)",
        'SELECT "update", updated_at, "into" FROM t -- no; writes here',
        "SELECT x /* ; DELETE */ FROM t",
    ],
)
def test_add_accepts_reads_whatever_their_strings_and_comments_say(url: str, query: str) -> None:
    SqlConnector.validate_config({"url": url, "query": query})


# -- the database refuses, whatever reaches it ---------------------------------------------


def test_the_source_refuses_every_write_when_the_filter_is_bypassed(source: Source) -> None:
    before = source.fingerprint()
    for name in [*HOSTILE, "escaping_the_subquery"]:
        query = HOSTILE.get(name, ESCAPING_THE_SUBQUERY).format(dir=source.dir)
        for step in ("read", "check"):
            plugin = bypassing_validation(source.url, query)
            with pytest.raises(PermanentError) as raised:
                list(plugin.read()) if step == "read" else plugin.check()
            assert "\n" not in raised.value.message
            assert source.fingerprint() == before, f"{name} changed the source in {step}"
    reader = SqlConnector({"url": source.url, "query": "SELECT x FROM t"})
    assert [row["x"] for row in reader.read()] == [1, 2, 3]


def test_stored_hostile_configs_each_fail_their_sync_and_change_nothing(
    store: Store, source: Source
) -> None:
    """Configs written straight to the connectors table, as if `add` had not checked them."""
    before = source.fingerprint()
    for name in HOSTILE:
        config = {"url": source.url, "query": source.query(name)}
        store.add_connector(NewConnector(name=name, type="sql", config=config, sync_interval=3600))
    config = {"url": source.url, "query": "SELECT x FROM t"}
    store.add_connector(NewConnector(name="reader", type="sql", config=config, sync_interval=3600))
    Runner(store, RunOptions(attempts=1)).run()
    syncs = {s.connector_name: s for s in store.history(HistoryFilter())}
    assert syncs.pop("reader").status == "COMPLETED"
    assert {name: s.status for name, s in syncs.items()} == {name: "FAILED" for name in HOSTILE}
    assert source.fingerprint() == before


def test_the_tools_own_database_is_not_written_by_its_sql_connector(
    store: Store, db_url: str
) -> None:
    store.add_connector(NewConnector(name="victim", type="demo", config={}, sync_interval=60))
    for query in ("DROP TABLE dataset_records", "UPDATE connectors SET name = 'x' RETURNING id"):
        plugin = bypassing_validation(db_url, query)
        started = time.monotonic()
        with pytest.raises(PluginError):
            list(plugin.read())
        assert time.monotonic() - started < 5  # refused, not waiting on a lock
    assert store.find_connector("victim").name == "victim"
    with store.database.begin() as conn:
        assert conn.exec_driver_sql("SELECT count(*) FROM dataset_records").scalar() == 0


def test_a_sqlite_source_in_wal_mode_is_read_without_being_written(tmp_path: Path) -> None:
    path = tmp_path / "wal.db"
    writer = sqlite3.connect(path)
    writer.execute("PRAGMA journal_mode=wal")
    writer.execute("CREATE TABLE t (x INTEGER)")
    writer.execute("INSERT INTO t VALUES (7)")
    writer.commit()  # the writer stays open, as the tool's own database would be
    try:
        fingerprint = sqlite_fingerprint(path)
        before = fingerprint()
        url = f"sqlite:///{path}"
        assert list(SqlConnector({"url": url, "query": "SELECT x FROM t"}).read()) == [{"x": 7}]
        with pytest.raises(PermanentError):
            list(bypassing_validation(url, "DELETE FROM t RETURNING x").read())
        assert fingerprint() == before
    finally:
        writer.close()


# -- the own-database test the CLI applies -------------------------------------------------


def test_same_database_names_the_same_sqlite_file_however_it_is_spelled(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    own = tmp_path / "own.db"
    own.touch()
    (tmp_path / "link.db").symlink_to(own)
    monkeypatch.chdir(tmp_path)
    own_url = f"sqlite:///{own}"
    for spelling in (
        "sqlite:///own.db",
        f"sqlite:///{tmp_path}/./sub/../own.db",
        "sqlite:///link.db",
    ):
        assert same_database(spelling, own_url), spelling
    assert same_database(f"sqlite:///file:{own}?mode=ro&uri=true", own_url)
    assert not same_database("sqlite:///other.db", own_url)
    assert not same_database("sqlite://", own_url)
    assert not same_database("postgresql://postgres@127.0.0.1/own", own_url)


def test_same_database_names_the_same_postgresql_database_on_the_same_server() -> None:
    own = "postgresql+psycopg://tool:secret@127.0.0.1:5432/connector_sync"
    for spelling in (
        "postgresql://reader:other@127.0.0.1/connector_sync",
        "postgres://localhost:5432/connector_sync",
        "postgresql+psycopg2://x@LOCALHOST/connector_sync",
    ):
        assert same_database(spelling, own), spelling
    assert not same_database("postgresql://tool@127.0.0.1:5433/connector_sync", own)
    assert not same_database("postgresql://tool@127.0.0.1/other", own)
    assert not same_database("postgresql://tool@db.example.com/connector_sync", own)
    assert not same_database("not a url", own)


def test_reads_that_sqlite_builds_with_internal_steps_still_work(tmp_path: Path) -> None:
    # A table-valued function is built with an internal write the authorizer lets by.
    url = f"sqlite:///{tmp_path / 'empty.db'}"
    sqlite3.connect(tmp_path / "empty.db").close()
    rows = SqlConnector({"url": url, "query": "SELECT value FROM json_each('[1, 2]')"}).read()
    assert [row["value"] for row in rows] == [1, 2]


def test_a_sqlite_uri_asking_for_read_write_is_still_opened_read_only(tmp_path: Path) -> None:
    path = tmp_path / "uri.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x INTEGER)")
    conn.close()
    fingerprint = sqlite_fingerprint(path)
    before = fingerprint()
    plugin = bypassing_validation(f"sqlite:///file:{path}?mode=rwc&uri=true", "DELETE FROM t")
    with pytest.raises(PermanentError, match=r"readonly database|not authorized"):
        list(plugin.read())
    assert fingerprint() == before


def test_check_stops_a_query_running_past_check_timeout(source: Source) -> None:
    endless = (
        "WITH RECURSIVE r(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM r) SELECT count(*) FROM r"
    )
    plugin = SqlConnector({"url": source.url, "query": endless, "check_timeout": 0.5})
    started = time.monotonic()
    with pytest.raises(PluginError, match=r"not done within 0.5s \(check_timeout\)"):
        plugin.check()
    assert time.monotonic() - started < 3
