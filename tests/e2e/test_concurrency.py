"""Real `connector-sync run` processes against real databases: overlap, crashes, signals.

A subprocess runs on the database's clock, so a test cannot move a ManualClock for it:
where only time must pass (a killed worker's lease expiring) the test moves the
database's stored times instead (support.database.time_passes). Tests marked real_time
wait on purpose: signals and their grace, and the soak.
"""

from __future__ import annotations

import json
import os
import random
import signal
import subprocess
import time
from typing import Any

import pytest

from connector_sync.db import Database
from connector_sync.store import open_store
from connector_sync.store.base import NewConnector
from support.database import query, time_passes
from support.forkserver import forked_command

COMMAND = forked_command  # the command line as a process (support/forkserver.py)


def start_run(url: str, *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [COMMAND(), "--database-url", url, "--log-level", "warning", "run", "--json", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def connector(name: str, type: str, config: dict[str, Any]) -> NewConnector:
    return NewConnector(name=name, type=type, config=config, sync_interval=3600)


def add_many(url: str, count: int, type: str = "demo", **config: Any) -> None:
    with open_store(url) as store:
        for n in range(count):
            store.add_connector(connector(f"c{n:05d}", type, config))


def wait_for(predicate: Any, timeout: float = 20.0) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.05)
    raise AssertionError("condition not reached in time")


def assert_each_synced_exactly_once(url: str, count: int) -> None:
    per_connector = query(
        url,
        "SELECT c.id, count(s.id), sum(CASE WHEN s.status = 'COMPLETED' THEN 1 ELSE 0 END) "
        "FROM connectors c LEFT JOIN connector_syncs s ON s.connector_id = c.id GROUP BY c.id",
    )
    assert len(per_connector) == count
    assert {(total, completed) for _, total, completed in per_connector} == {(1, 1)}
    ready = query(url, "SELECT connector_id, count(*) FROM datasets WHERE status = 'READY' "
                       "GROUP BY connector_id")  # fmt: skip
    assert len(ready) == count and {n for _, n in ready} == {1}
    assert query(url, "SELECT count(*) FROM connectors WHERE status <> 'ACTIVE'") == [(0,)]


@pytest.mark.parametrize(
    ("backend", "processes", "connectors"), [("postgresql", 8, 1000), ("sqlite", 4, 200)]
)
def test_overlapping_runs_sync_each_connector_exactly_once(
    backend: str, processes: int, connectors: int, request: pytest.FixtureRequest
) -> None:
    url = str(request.getfixturevalue("pg_url" if backend == "postgresql" else "sqlite_url"))
    add_many(url, connectors, records=2, delay_ms=2)
    runs = [start_run(url) for _ in range(processes)]
    outputs = [run.communicate(timeout=300) for run in runs]
    for run, (_, stderr) in zip(runs, outputs, strict=True):
        assert run.returncode == 0, stderr
        assert "database is locked" not in stderr
    synced = [s["connector_id"] for stdout, _ in outputs for s in json.loads(stdout)]
    assert len(synced) == len(set(synced)) == connectors
    assert_each_synced_exactly_once(url, connectors)


def test_a_killed_worker_is_recovered_after_its_lease_expires(db_url: str) -> None:
    add_many(db_url, 1, type="sleepy", records=1, seconds=60)
    worker = start_run(db_url, "--lease-seconds", "5", "--heartbeat-seconds", "1")
    wait_for(lambda: query(db_url, "SELECT count(*) FROM connector_syncs "
                                   "WHERE status = 'IN_PROGRESS'") == [(1,)])  # fmt: skip
    [(owner,)] = query(db_url, "SELECT lease_owner FROM connectors")
    assert owner.startswith(f"{os.uname().nodename}:")
    worker.send_signal(signal.SIGKILL)
    worker.communicate()
    # While the lease is live, nobody else may touch the connector.
    immediate = start_run(db_url)
    assert json.loads(immediate.communicate(timeout=60)[0]) == []
    assert query(db_url, "SELECT status FROM connectors") == [("SYNCING",)]
    with Database(db_url) as db, db.begin() as conn:  # the source is fast again
        conn.exec_driver_sql('UPDATE connectors SET config = \'{"records": 2, "seconds": 0}\'')
    time_passes(db_url, 6)  # the lease (5 s from the last heartbeat) has expired
    recovery = start_run(db_url)
    stdout, stderr = recovery.communicate(timeout=60)
    assert recovery.returncode == 0, stderr
    assert [s["status"] for s in json.loads(stdout)] == ["COMPLETED"]
    assert "recovered connector c00000" in stderr
    abandoned = query(db_url, "SELECT status, error, error_type FROM connector_syncs ORDER BY id")
    assert abandoned[0][0] == "FAILED" and abandoned[0][2] == "LeaseExpired"
    assert abandoned[0][1].startswith(f"abandoned: lease of {owner} expired at ")
    assert abandoned[1][0] == "COMPLETED"
    assert query(db_url, "SELECT status, record_count FROM datasets") == [("READY", 2)]
    assert query(db_url, "SELECT count(*) FROM dataset_records") == [(2,)]


@pytest.mark.real_time
def test_sigterm_lets_a_short_sync_finish(db_url: str) -> None:
    add_many(db_url, 1, type="sleepy", records=2, seconds=0.5)
    add_many_named(db_url, "later", "demo", {"records": 1})
    worker = start_run(db_url, "--grace", "10")
    wait_for(lambda: query(db_url, "SELECT count(*) FROM connector_syncs") == [(1,)])
    worker.send_signal(signal.SIGTERM)
    stdout, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 143, stderr
    assert [s["status"] for s in json.loads(stdout)] == ["COMPLETED"]
    assert "SIGTERM received" in stderr
    # The run stopped claiming: the other connector is still due.
    assert query(db_url, "SELECT name FROM connectors WHERE status = 'ACTIVE' "
                         "AND last_sync_at IS NULL") == [("later",)]  # fmt: skip


@pytest.mark.real_time
def test_sigterm_cancels_a_long_sync_after_the_grace(db_url: str) -> None:
    add_many(db_url, 1, type="sleepy", records=1, seconds=60)
    worker = start_run(db_url, "--grace", "1")
    wait_for(lambda: query(db_url, "SELECT count(*) FROM connector_syncs") == [(1,)])
    started = time.monotonic()
    worker.send_signal(signal.SIGTERM)
    stdout, _ = worker.communicate(timeout=30)
    assert time.monotonic() - started < 5
    assert worker.returncode == 143
    [sync] = json.loads(stdout)
    assert sync["status"] == "CANCELLED" and "SIGTERM" in sync["error"]
    assert query(db_url, "SELECT status FROM connectors") == [("ACTIVE",)]
    assert query(db_url, "SELECT count(*) FROM datasets") == [(0,)]


@pytest.mark.real_time
def test_a_second_signal_exits_at_once(db_url: str) -> None:
    add_many(db_url, 1, type="sleepy", records=1, seconds=60)
    worker = start_run(db_url, "--grace", "60")
    wait_for(lambda: query(db_url, "SELECT count(*) FROM connector_syncs") == [(1,)])
    worker.send_signal(signal.SIGINT)
    time.sleep(0.3)
    worker.send_signal(signal.SIGINT)
    worker.communicate(timeout=10)
    assert worker.returncode == 130
    # Left for the lease to expire and a later run to recover.
    assert query(db_url, "SELECT status FROM connector_syncs") == [("IN_PROGRESS",)]


def add_many_named(url: str, name: str, type: str, config: dict[str, Any]) -> None:
    with open_store(url) as store:
        store.add_connector(connector(name, type, config))


@pytest.mark.real_time
def test_soak_of_overlapping_and_killed_runs_leaves_nothing_stuck(pg_url: str) -> None:
    """Start 20 runs 0.3 s apart and SIGKILL some; afterwards nothing is stuck."""
    add_many(pg_url, 40, records=20, delay_ms=5)
    with Database(pg_url) as db, db.begin() as conn:
        conn.exec_driver_sql("UPDATE connectors SET sync_interval = 1")
    rng = random.Random(1234)
    running: list[subprocess.Popen[str]] = []
    for _ in range(20):  # as many runs, and kills, as ten seconds of one every 0.5 s gave
        running.append(start_run(pg_url, "--lease-seconds", "5", "--heartbeat-seconds", "1"))
        time.sleep(0.3)
        if rng.random() < 0.3:
            victim = rng.choice(running)
            victim.send_signal(signal.SIGKILL)
    for process in running:
        process.communicate(timeout=120)
    time_passes(pg_url, 6)  # every lease of a killed worker has expired
    final = start_run(pg_url, "--lease-seconds", "5", "--heartbeat-seconds", "1")
    final.communicate(timeout=120)
    assert query(pg_url, "SELECT count(*) FROM connectors WHERE status <> 'ACTIVE'") == [(0,)]
    assert query(pg_url, "SELECT count(*) FROM connector_syncs "
                         "WHERE status = 'IN_PROGRESS'") == [(0,)]  # fmt: skip
    assert query(pg_url, "SELECT count(*) FROM datasets WHERE status <> 'READY'") == [(0,)]
    never = query(pg_url, "SELECT count(*) FROM connectors c WHERE NOT EXISTS (SELECT 1 FROM "
                          "connector_syncs s WHERE s.connector_id = c.id "
                          "AND s.status = 'COMPLETED')")  # fmt: skip
    assert never == [(0,)]
    partial = query(
        pg_url,
        "SELECT count(*) FROM datasets d WHERE d.record_count <> "
        "(SELECT count(*) FROM dataset_records r WHERE r.dataset_id = d.id)",
    )
    assert partial == [(0,)]
