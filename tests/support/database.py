"""Reading and moving a test database directly, behind the store's back: what a test
checks, and time passing for subprocesses, which cannot share a ManualClock."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa

from connector_sync.db import Database
from connector_sync.models import connectors, dataset_records


def count_rows(url: str, table: str) -> int:
    with Database(url) as db, db.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())


def query(url: str, sql: str) -> list[Any]:
    with Database(url) as db, db.begin() as conn:
        return list(conn.exec_driver_sql(sql).all())


def stored_records(db: Database, dataset_id: int) -> list[dict[str, Any]]:
    """A dataset's records, in order."""
    with db.begin() as conn:
        return list(
            conn.execute(
                sa.select(dataset_records.c.data)
                .where(dataset_records.c.dataset_id == dataset_id)
                .order_by(dataset_records.c.seq)
            ).scalars()
        )


def time_passes(url: str, seconds: float) -> None:
    """As if `seconds` had passed: every connector's next sync, last sync and lease
    expiry moves that far into the past. For `connector-sync` subprocesses, which run
    on the database's clock and cannot share the tests' ManualClock."""
    c = connectors.c
    moved = ("next_sync_at", "last_sync_at", "lease_expires_at")
    earlier = dt.timedelta(seconds=seconds)

    def moved_back(row: sa.Row[Any]) -> dict[str, Any]:
        times = {f"new_{name}": getattr(row, name) for name in moved}
        return {"row_id": row.id, **{k: v and v - earlier for k, v in times.items()}}

    with Database(url) as db, db.begin() as conn:
        rows = conn.execute(sa.select(c.id, *(c[name] for name in moved))).all()
        if rows:
            conn.execute(
                sa.update(connectors)
                .where(c.id == sa.bindparam("row_id"))
                .values({name: sa.bindparam(f"new_{name}") for name in moved}),
                [moved_back(row) for row in rows],
            )
