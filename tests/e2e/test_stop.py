"""Stopping a run leaves no trace of the syncs it never started: connectors it claimed ahead
are given back (still due, no CANCELLED row), so a loop stopped by SIGTERM between syncs
exits 0 (review of issue 9: a clean stop counted its claimed-ahead connectors as cancelled
and exited 143)."""

from __future__ import annotations

import threading
import time

import sqlalchemy as sa

from connector_sync.runner import Runner, RunOptions
from connector_sync.store import open_store
from connector_sync.store.base import NewConnector


def test_a_stopped_run_gives_back_what_it_claimed_ahead(db_url: str) -> None:
    with open_store(db_url) as store:
        for n in range(30):
            config = {"records": 20, "delay_ms": 5}
            store.add_connector(
                NewConnector(name=f"c{n:02}", type="demo", config=config, sync_interval=3600)
            )
        runner = Runner(store, RunOptions(attempts=1, grace=5))
        done = threading.Thread(target=runner.run)
        done.start()
        deadline = time.monotonic() + 30
        while _count(store, "status = 'COMPLETED'") < 5:  # batches have grown past one
            assert time.monotonic() < deadline
            time.sleep(0.02)
        runner.control.request_stop(5, "cancelled: worker received SIGTERM", 15)
        done.join(30)
        assert not done.is_alive()
        assert _count(store, "status = 'CANCELLED'") == 0  # nothing started was cut short
        with store.database.begin() as conn:
            statuses = {row[0] for row in conn.execute(sa.text("SELECT status FROM connectors"))}
        assert statuses == {"ACTIVE"}  # none left SYNCING
        synced = _count(store, "status = 'COMPLETED'")
        assert 5 <= synced < 30
        assert len(store.due_connectors()) == 30 - synced  # the rest still due


def _count(store: object, where: str) -> int:
    with store.database.begin() as conn:  # type: ignore[attr-defined]
        return int(
            conn.execute(
                sa.text(f"SELECT count(*) FROM connector_syncs WHERE {where}")
            ).scalar_one()
        )
