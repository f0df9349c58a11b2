"""The due queries are answered from the partial index ix_connectors_due, and metrics'
connectors in order from ix_connectors_last_success, as the planner itself reports it:
EXPLAIN on PostgreSQL, EXPLAIN QUERY PLAN on SQLite.

The planner is asked with sequential scans made expensive, so the test proves the index
*applies* to each statement (its predicate is implied by the query's), whatever a small
test table would otherwise make cheapest.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import psycopg
import pytest
from sqlalchemy import event

from connector_sync.store import Store, open_store
from connector_sync.store.base import ClaimRequest, NewConnector
from connector_sync.store.postgres import queries

# Every parameter the due queries take: nothing injected (the database's clock), any tenant.
PARAMETERS: dict[str, Any] = {
    "now": None, "due_before": None, "tenant": None, "ids": None, "limit": 5, "seconds": 3600,
    "worker": "host:1", "lease_seconds": 60, "listed": 100,
}  # fmt: skip


def add_connectors(url: str) -> None:
    with open_store(url) as store:
        for n in range(20):
            store.add_connector(
                NewConnector(name=f"c{n}", type="demo", config={}, sync_interval=3600)
            )


@pytest.fixture
def pg(pg_url: str) -> Iterator[psycopg.Cursor[Any]]:
    add_connectors(pg_url)
    with psycopg.connect(pg_url) as conn, conn.cursor() as cursor:
        cursor.execute("SET enable_seqscan = off")
        yield cursor
        conn.rollback()  # EXPLAIN never runs the claim; nothing to keep either way


@pytest.mark.parametrize("name", ["due_connectors", "claim", "due_count", "overdue_connectors"])
def test_postgresql_due_queries_use_the_partial_index(pg: psycopg.Cursor[Any], name: str) -> None:
    pg.execute(f"EXPLAIN {queries()[name]}", PARAMETERS)
    plan = [line for (line,) in pg.fetchall()]
    assert any("ix_connectors_due" in line for line in plan), "\n".join(plan)


def test_postgresql_claim_picks_due_rows_from_the_index(pg: psycopg.Cursor[Any]) -> None:
    """Of the claim's two ways in, the due one reads ix_connectors_due (the named one,
    by id, reads the primary key)."""
    pg.execute(f"EXPLAIN {queries()['claim']}", PARAMETERS)
    plan = "\n".join(line for (line,) in pg.fetchall())
    due_cte = plan.split("CTE due", 1)[1].split("CTE named", 1)[0]
    assert "ix_connectors_due" in due_cte, plan


@contextmanager
def sqlite_plans(url: str, marker: str) -> Iterator[tuple[Store, list[list[Any]]]]:
    """A store on the SQLite file at `url` and, once the block is over, the plans (EXPLAIN
    QUERY PLAN rows: id, parent, detail) of the statements holding `marker` it ran: the
    statements the SQLite store really runs, captured as it runs them."""
    add_connectors(url)
    plans: list[list[Any]] = []
    with open_store(url) as store:
        ran: list[tuple[str, Any]] = []

        def capture(conn: Any, cursor: Any, sql: str, params: Any, *_: Any) -> None:
            if marker in sql:
                ran.append((sql, params))

        event.listen(store.database.engine, "before_cursor_execute", capture)
        yield store, plans
        event.remove(store.database.engine, "before_cursor_execute", capture)
        with store.database.engine.connect() as conn:
            for sql, params in ran:
                explained = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}", params)
                plans.append([(sql.split()[0], *row[1:]) for row in explained])


def test_sqlite_due_query_and_claim_use_the_partial_index(sqlite_url: str) -> None:
    with sqlite_plans(sqlite_url, "next_sync_at <=") as (store, plans):
        assert len(store.due_connectors(limit=5)) == 5
        assert len(store.claim(ClaimRequest(worker="host:1", limit=5, lease_seconds=60))) == 5
    assert [plan[0][0] for plan in plans] == ["SELECT", "UPDATE"]
    for plan in plans:
        assert any("ix_connectors_due" in row[-1] for row in plan), plan


def test_postgresql_metrics_takes_its_connectors_in_order_from_an_index(
    pg: psycopg.Cursor[Any],
) -> None:
    """metrics' connectors most in need of a look: those whose latest sync succeeded come
    from ix_connectors_last_success, not from a sort of every connector."""
    pg.execute(f"EXPLAIN {queries()['connector_gauges']}", PARAMETERS)
    plan = [line for (line,) in pg.fetchall()]
    [at] = [n for n, line in enumerate(plan) if "ix_connectors_last_success" in line]
    assert "->  Limit" in plan[at - 1], "\n".join(plan)  # its order, no sort between


def test_sqlite_metrics_takes_its_connectors_in_order_from_an_index(sqlite_url: str) -> None:
    with sqlite_plans(sqlite_url, "julianday") as (store, plans):
        assert len(store.metrics_snapshot(3600, connector_series=5).per_connector) == 5
    [plan] = plans
    [parent] = [row[1] for row in plan if "ix_connectors_last_success" in row[-1]]
    sorted_there = [row for row in plan if row[1] == parent and "TEMP B-TREE" in row[-1]]
    assert sorted_there == [], plan  # its order, no sort of its own
