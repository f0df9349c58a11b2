"""The `sql` connector against a real PostgreSQL database and a real SQLite file, alone
and through the runner."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.connectors.registry import load_plugin
from connector_sync.connectors.sql import APPLICATION_NAME, SqlConnector
from connector_sync.exceptions import ConfigError, PermanentError, TransientError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store import Store
from connector_sync.store.base import HistoryFilter, NewConnector
from support.runs import run_and_read


@pytest.fixture
def source_url(empty_pg_url: str) -> str:
    """A PostgreSQL database of the test's own to read from: the sql connector needs no
    connector-sync schema in its source."""
    return empty_pg_url


@pytest.fixture
def pg(source_url: str) -> Iterator[sa.Engine]:
    """The test's own PostgreSQL database, to create source tables in."""
    engine = sa.create_engine(source_url.replace("postgresql://", "postgresql+psycopg://"))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_source(tmp_path: Path) -> str:
    path = tmp_path / "source.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE items (id INTEGER PRIMARY KEY, name TEXT, price REAL, raw BLOB)")
        conn.executemany(
            "INSERT INTO items VALUES (?, ?, ?, ?)",
            [(n, f"item {n}", n * 1.5, bytes([n, 255])) for n in range(1, 6)],
        )
    conn.close()
    return f"sqlite:///{path}"


# Other test processes read their own databases with the same application name.
OUR_READERS = "application_name = :name AND datname = current_database()"


def readers(pg: sa.Engine) -> int:
    """The sql connector's connections to this test's database, in a new transaction:
    PostgreSQL keeps one snapshot of pg_stat_activity per transaction."""
    query = sa.text(f"SELECT count(*) FROM pg_stat_activity WHERE {OUR_READERS}")
    with pg.connect() as conn:
        return int(conn.execute(query, {"name": APPLICATION_NAME}).scalar_one())


def read(config: dict[str, Any], state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(SqlConnector(config, state).read())


def test_postgresql_values_become_json_safe(pg: sa.Engine, source_url: str) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql(
            """
            CREATE TABLE source (
                id integer, amount numeric(12, 2), day date, at timestamptz, ref uuid,
                raw bytea, doc jsonb, tags text[], wait interval, ratio float8, ok boolean,
                note text
            );
            INSERT INTO source VALUES (
                1, 1234.50, '2026-03-01', '2026-03-01 12:30:00+00',
                'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '\\xdeadbeef', '{"k": [1, 2.5]}',
                '{x,y}', '90 minutes', 'NaN', true, NULL
            )
            """
        )
    [row] = read({"url": source_url, "query": "SELECT * FROM source"})
    assert row == {
        "id": 1,
        "amount": "1234.50",
        "day": "2026-03-01",
        "at": "2026-03-01T12:30:00+00:00",
        "ref": "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        "raw": "deadbeef",
        "doc": {"k": [1, 2.5]},
        "tags": ["x", "y"],
        "wait": 5400.0,
        "ratio": "nan",
        "ok": True,
        "note": None,
    }


def big_cross_join(pg: sa.Engine) -> str:
    """A query of 10^9 rows that PostgreSQL streams: only a cursor gets its first row fast."""
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE TABLE thousand AS SELECT g FROM generate_series(1, 1000) g")
    return "SELECT a.g AS a, b.g AS b, c.g AS c FROM thousand a, thousand b, thousand c"


def test_rows_stream_through_a_server_side_cursor(pg: sa.Engine, source_url: str) -> None:
    reader = SqlConnector(
        {"url": source_url, "query": big_cross_join(pg), "batch_size": 100}
    ).read()
    started = time.monotonic()
    first = [next(reader) for _ in range(250)]
    assert time.monotonic() - started < 5
    assert first[0] == {"a": 1, "b": 1, "c": 1}
    with pg.connect() as conn:
        [(state, query)] = conn.execute(
            sa.text(f"SELECT state, query FROM pg_stat_activity WHERE {OUR_READERS}"),
            {"name": APPLICATION_NAME},
        ).all()
    assert state == "idle in transaction"
    assert query.startswith("FETCH FORWARD")  # rows come from a cursor, a batch at a time
    reader.close()  # abandoning the read closes the connection
    # The server ends a backend a moment after its client hangs up: wait for it, briefly.
    deadline = time.monotonic() + 5
    while (left := readers(pg)) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert left == 0


def test_check_limits_the_query_to_one_row(pg: sa.Engine, source_url: str) -> None:
    plugin = SqlConnector({"url": source_url, "query": big_cross_join(pg) + " ;"})
    started = time.monotonic()
    result = plugin.check()
    assert time.monotonic() - started < 5  # the 10^9 rows were not produced
    assert result.ok
    assert result.details == {"columns": ["a", "b", "c"], "rows": 1}
    assert "connected; the query returns columns a, b, c" in result.message


def test_the_source_session_is_read_only(pg: sa.Engine, source_url: str) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql("CREATE SEQUENCE counter")
    with pytest.raises(PermanentError, match="read-only transaction"):
        read({"url": source_url, "query": "SELECT nextval('counter')"})


def test_postgresql_incremental_binds_the_cursor(pg: sa.Engine, source_url: str) -> None:
    with pg.begin() as conn:
        conn.exec_driver_sql(
            "CREATE TABLE events (id serial, at timestamptz);"
            "INSERT INTO events (at) VALUES ('2026-01-01 10:00+00'), ('2026-01-02 10:00+00')"
        )
    config = {
        "url": source_url,
        "query": "SELECT id, at FROM events WHERE at > :cursor ORDER BY at",
        "incremental": {"cursor_field": "at", "initial_value": "1970-01-01T00:00:00+00:00"},
    }
    first = SqlConnector(config)
    assert [r["id"] for r in first.read()] == [1, 2]
    assert first.state == {"cursor": "2026-01-02T10:00:00+00:00"}
    with pg.begin() as conn:
        conn.exec_driver_sql("INSERT INTO events (at) VALUES ('2026-01-03 10:00+00')")
    second = SqlConnector(config, first.state)
    assert list(second.read()) == [{"id": 3, "at": "2026-01-03T10:00:00+00:00"}]
    assert second.state == {"cursor": "2026-01-03T10:00:00+00:00"}


def test_sqlite_source_and_incremental(sqlite_source: str) -> None:
    rows = read({"url": sqlite_source, "query": "SELECT * FROM items ORDER BY id"})
    assert rows[0] == {"id": 1, "name": "item 1", "price": 1.5, "raw": "01ff"}
    assert len(rows) == 5
    config = {
        "url": sqlite_source,
        "query": "SELECT id, name FROM items WHERE id > :cursor ORDER BY id",
        "incremental": {"cursor_field": "id", "initial_value": 3},
    }
    first = SqlConnector(config)
    assert [r["id"] for r in first.read()] == [4, 5]
    assert first.state == {"cursor": 5}
    with sqlite3.connect(sqlite_source.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO items (id, name) VALUES (6, 'six')")
    conn.close()
    second = SqlConnector(config, first.state)
    assert list(second.read()) == [{"id": 6, "name": "six"}]
    assert SqlConnector(config, second.state).check().details["rows"] == 0


def test_errors_are_classified_and_never_show_the_password(source_url: str, tmp_path: Path) -> None:
    refused = "postgresql://postgres:hunter2@127.0.0.1:1/db"
    with pytest.raises(TransientError) as raised:
        read({"url": refused, "query": "SELECT 1"})
    assert raised.value.message.startswith(
        "postgresql+psycopg://postgres:***@127.0.0.1:1/db: connection failed"
    )
    assert "hunter2" not in raised.value.message
    missing_db = sa.make_url(source_url).set(database="no_such_db", password="hunter2")
    with pytest.raises(PermanentError, match='database "no_such_db" does not exist') as raised:
        read({"url": missing_db.render_as_string(hide_password=False), "query": "SELECT 1"})
    assert "hunter2" not in raised.value.message
    with pytest.raises(PermanentError, match='relation "nope" does not exist'):
        SqlConnector({"url": source_url, "query": "SELECT * FROM nope"}).check()
    with pytest.raises(PermanentError, match="syntax error at end of input"):
        read({"url": source_url, "query": "SELECT 1 +"})
    with pytest.raises(PermanentError, match="SQLite database file not found"):
        read({"url": f"sqlite:///{tmp_path / 'nope.db'}", "query": "SELECT 1"})
    assert not (tmp_path / "nope.db").exists()
    with pytest.raises(PermanentError, match="returns column 'id' twice"):
        read({"url": source_url, "query": "SELECT 1 AS id, 2 AS id"})


def test_postgresql_urls_use_psycopg_3(source_url: str) -> None:
    for scheme in ("postgresql", "postgres", "postgresql+psycopg2"):
        url = source_url.replace("postgresql://", f"{scheme}://")
        plugin = SqlConnector({"url": url, "query": "SELECT 1 AS one"})
        assert plugin.url.drivername == "postgresql+psycopg"
        assert list(plugin.read()) == [{"one": 1}]


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "not a url"}, "'url' is not a SQLAlchemy database URL"),
        ({"url": "mysql://u:hunter2@h/db"}, "mysql is not supported: connector-sync reads only"),
        ({"query": " ; "}, "'query' is empty"),
        ({"query": "SELECT * FROM t WHERE id > :cursor"}, "uses :cursor, but 'incremental'"),
        ({"incremental": {"cursor_field": "id", "initial_value": 0}}, "must use :cursor"),
        (
            {"query": "SELECT 1 WHERE 1 > :cursor", "incremental": {"cursor_field": "id"}},
            "missing required field 'incremental.initial_value'",
        ),
        ({"query": "SELECT :a, :b"}, "bind parameter\\(s\\) :a, :b; only :cursor"),
        ({"batch_size": 0}, "'batch_size' must be 1 or more"),
    ],
)
def test_config_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    full = {"url": "sqlite:///x.db", "query": "SELECT 1", **config}
    with pytest.raises(ConfigError, match=message) as raised:
        list(SqlConnector(full).read())
    assert "hunter2" not in raised.value.message


def test_masked_config_hides_the_url_password() -> None:
    plugin = load_plugin("sql")
    assert plugin is SqlConnector
    shown = plugin.mask_config({"url": "postgresql://app:hunter2@db:5432/shop", "query": "q"})
    assert shown == {"url": "postgresql://app:***@db:5432/shop", "query": "q"}


def test_end_to_end_through_the_runner(store: Store, sqlite_source: str) -> None:
    config = {
        "url": sqlite_source,
        "query": "SELECT id, name FROM items WHERE id > :cursor ORDER BY id",
        "incremental": {"cursor_field": "id", "initial_value": 0},
        "batch_size": 2,
    }
    connector_id = store.add_connector(
        NewConnector(name="shop", type="sql", config=config, sync_interval=60)
    )
    _, records = run_and_read(store, batch_size=2)
    assert len(store.history(HistoryFilter())) == 1
    assert records == [{"id": n, "name": f"item {n}"} for n in range(1, 6)]
    assert store.find_connector("shop").state == {"cursor": 5}

    with sqlite3.connect(sqlite_source.removeprefix("sqlite:///")) as conn:
        conn.execute("INSERT INTO items (id, name) VALUES (6, 'six'), (7, 'seven')")
    conn.close()
    _, records = run_and_read(store, connector_ids=[connector_id])
    assert records == [{"id": 6, "name": "six"}, {"id": 7, "name": "seven"}]
    assert store.find_connector("shop").state == {"cursor": 7}


def test_a_failed_source_fails_the_sync_with_a_clear_error(store: Store) -> None:
    config = {"url": "postgresql://u:hunter2@127.0.0.1:1/db", "query": "SELECT 1"}
    store.add_connector(NewConnector(name="down", type="sql", config=config, sync_interval=60))
    Runner(store, RunOptions(attempts=1)).run()
    [sync] = store.history(HistoryFilter())
    assert sync.status == "FAILED"
    assert sync.error_type == "TransientError"
    assert sync.error is not None
    assert "connection failed" in sync.error and "hunter2" not in sync.error


def test_check_runs_a_query_that_ends_in_a_line_comment(
    source_url: str, sqlite_source: str
) -> None:
    for url in (source_url, sqlite_source):
        plugin = SqlConnector({"url": url, "query": "SELECT 1 AS one -- the answer"})
        assert plugin.check().details == {"columns": ["one"], "rows": 1}
        assert list(plugin.read()) == [{"one": 1}]


def test_connection_options_libpq_rejects_are_permanent(source_url: str) -> None:
    url = sa.make_url(source_url).update_query_dict({"sslmode": "bogus"})
    plugin = SqlConnector({"url": url.render_as_string(hide_password=False), "query": "SELECT 1"})
    with pytest.raises(PermanentError, match='invalid sslmode value: "bogus"') as raised:
        plugin.check()
    assert not isinstance(raised.value, TransientError)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgresql://app:hunter2@127.0.0.1:notaport/db", "'url' has an invalid port"),
        ("postgresql://app:hunter2@127.0.0.1:99999/db", "'url' has an invalid port"),
        ("postgress://app:hunter2@127.0.0.1/db", "no SQLAlchemy dialect postgress is installed"),
    ],
)
def test_urls_that_cannot_connect_are_rejected_by_validation(url: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as raised:
        SqlConnector.validate_config({"url": url, "query": "SELECT 1"})
    assert "hunter2" not in raised.value.message
