"""A whole run through the runner: plugins, datasets and outcomes on both databases.

Tests marked real_time wait for real time on purpose: sync timeouts, a stop's grace and
heartbeats run on the monotonic clock, which a ManualClock does not move.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.connectors.demo import demo_record
from connector_sync.models import connector_syncs, datasets
from connector_sync.runner import Runner, RunOptions
from connector_sync.store import Store, open_store
from connector_sync.store.base import HistoryFilter, ManualClock, NewConnector, RecoveredLease
from support.database import stored_records


def add(store: Store, name: str, type: str = "demo", **config: Any) -> int:
    return store.add_connector(
        NewConnector(name=name, type=type, config=config, sync_interval=3600)
    )


def history(store: Store) -> list[Any]:
    return store.history(HistoryFilter())


def test_run_syncs_due_connectors_and_a_failure_does_not_stop_the_others(
    store: Store,
) -> None:
    add(store, "first", records=7)
    add(store, "broken", records=10, fail=True)
    add(store, "second", records=12_345)
    report = Runner(store, RunOptions(batch_size=1000)).run()
    assert report.failed == 1 and len(report.sync_ids) == 3
    syncs = {s.connector_name: s for s in history(store)}
    assert syncs["first"].status == syncs["second"].status == "COMPLETED"
    assert syncs["second"].records_fetched == syncs["second"].records_processed == 12_345
    broken = syncs["broken"]
    assert broken.status == "FAILED"
    assert broken.error_type == "DemoFailure"
    assert "configured to fail" in broken.error
    assert broken.dataset_id is None
    records = stored_records(store.database, syncs["first"].dataset_id)
    assert records == [demo_record(i) for i in range(7)]
    assert len(stored_records(store.database, syncs["second"].dataset_id)) == 12_345
    with store.database.begin() as conn:
        statuses = conn.execute(sa.select(datasets.c.status)).scalars().all()
    assert sorted(statuses) == ["READY", "READY"]  # the failed sync left no dataset
    assert store.find_connector("broken").status == "ACTIVE"
    # Nothing is due any more: a second run does nothing.
    assert Runner(store).run().sync_ids == []


def test_runs_follow_the_store_clock_interval_and_failure_backoff(
    clocked_store: Store, clock: ManualClock
) -> None:
    """What is due when comes from the store's clock: a run syncs nothing until the clock
    reaches the backoff of a failed connector, or the interval of a healthy one."""
    store = clocked_store
    add(store, "ok", records=1)
    add(store, "bad", records=2, fail=True)
    assert Runner(store).run().failed == 1
    bad = store.find_connector("bad")
    backoff = (bad.next_sync_at - bad.last_sync_at).total_seconds()
    assert 45 <= backoff <= 60  # the first failure's backoff: 60 s, less up to 25 % jitter
    clock.advance(backoff - 1)
    assert Runner(store).run().sync_ids == []
    clock.advance(1)
    again = store.syncs_by_id(Runner(store).run().sync_ids)
    assert [(s.connector_name, s.status) for s in again] == [("bad", "FAILED")]
    assert store.find_connector("bad").consecutive_failures == 2
    clock.advance(3600 - backoff)  # an interval after the first run: both are due
    synced = store.syncs_by_id(Runner(store).run().sync_ids)
    assert sorted((s.connector_name, s.status) for s in synced) == [
        ("bad", "FAILED"),
        ("ok", "COMPLETED"),
    ]


def test_dataset_schema_lists_fields_and_types(store: Store) -> None:
    records = [{"a": 1, "b": "x"}, {"a": 2.5, "b": None, "c": [1]}]
    add(store, "r", type="records", records=records)
    Runner(store).run()
    [sync] = history(store)
    [dataset] = store.datasets_of(sync.connector_id)
    assert dataset.record_count == 2
    with store.database.begin() as conn:
        schema = conn.execute(
            sa.select(datasets.c.schema).where(datasets.c.id == dataset.id)
        ).scalar_one()
    assert schema == {"a": ["integer", "number"], "b": ["null", "string"], "c": ["array"]}
    assert stored_records(store.database, dataset.id) == records


def test_state_is_saved_only_when_the_sync_completes(store: Store) -> None:
    connector_id = add(store, "r", type="records", records=[{"n": 1}, {"n": 2}], fail_after=1)
    Runner(store).run()
    assert store.find_connector("r").state is None  # failed: old (empty) state kept
    Runner(store, RunOptions(connector_ids=[connector_id])).run()
    assert history(store)[0].status == "FAILED"


def test_completed_sync_saves_plugin_state(store: Store) -> None:
    add(store, "r", type="records", records=[{"n": 1}, {"n": 2}])
    Runner(store).run()
    assert store.find_connector("r").state == {"last_seen": 1}


def test_manual_run_syncs_a_connector_that_is_not_due(store: Store) -> None:
    connector_id = add(store, "a", records=2)
    Runner(store).run()
    assert store.due_connectors() == []
    report = Runner(store, RunOptions(connector_ids=[connector_id])).run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert (sync.status, sync.trigger) == ("COMPLETED", "manual")


def test_run_limit(store: Store) -> None:
    for name in "abcd":
        add(store, name, records=1)
    assert len(Runner(store, RunOptions(limit=3)).run().sync_ids) == 3
    assert len(store.due_connectors()) == 1


def test_unknown_type_fails_that_sync_only(store: Store) -> None:
    add(store, "ok", records=1)
    add(store, "gone", type="broken")  # its module does not exist
    report = Runner(store).run()
    assert report.failed == 1
    syncs = {s.connector_name: s for s in history(store)}
    assert syncs["ok"].status == "COMPLETED"
    assert syncs["gone"].status == "FAILED"
    assert "failed to load" in syncs["gone"].error


@pytest.mark.real_time
def test_a_worker_that_lost_its_lease_records_nothing(store: Store, db_url: str) -> None:
    connector_id = add(store, "victim", type="records", records=[])
    # Reconfigure as the lease thief now that we know the id.
    with store.database.begin() as conn:
        conn.execute(
            sa.text("UPDATE connectors SET type = 'steal', config = :cfg WHERE id = :id"),
            {
                "cfg": f'{{"database_url": "{db_url}", "connector_id": {connector_id}}}',
                "id": connector_id,
            },
        )
    options = RunOptions(lease_seconds=30, heartbeat_seconds=0.05, batch_size=1)
    report = Runner(store, options).run()
    assert report.lost == ["victim"] and report.sync_ids == []
    with store.database.begin() as conn:
        sync_status = conn.execute(sa.select(connector_syncs.c.status)).scalar_one()
        lease_token = conn.execute(
            sa.text("SELECT lease_token FROM connectors WHERE id = :id"), {"id": connector_id}
        ).scalar_one()
    assert sync_status == "IN_PROGRESS"  # left for the new owner / recovery
    assert lease_token == "thief"


def test_transient_failure_is_retried_within_the_run(store: Store, tmp_path: Any) -> None:
    counter = tmp_path / "tries"
    add(store, "flaky", type="flaky", fail_times=2, counter_file=str(counter), records=4)
    report = Runner(store, RunOptions(attempts=3, retry_wait=0.01)).run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert (sync.status, sync.attempts) == ("COMPLETED", 3)
    # Only the successful try's records are in the dataset: earlier tries were discarded.
    assert stored_records(store.database, sync.dataset_id) == [{"n": n, "try": 3} for n in range(4)]


def test_transient_failure_gives_up_after_the_attempts(store: Store, tmp_path: Any) -> None:
    add(store, "flaky", type="flaky", counter_file=str(tmp_path / "tries"))
    report = Runner(store, RunOptions(attempts=2, retry_wait=0.01)).run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert (sync.status, sync.attempts, sync.error_type) == ("FAILED", 2, "TransientError")
    assert "try 2" in sync.error


def test_permanent_failure_is_not_retried(store: Store) -> None:
    add(store, "bad", records=4, fail=True)
    report = Runner(store, RunOptions(attempts=5, retry_wait=0.01)).run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert (sync.status, sync.attempts) == ("FAILED", 1)


@pytest.mark.real_time
def test_a_hung_plugin_times_out_and_the_run_goes_on(store: Store) -> None:
    store.add_connector(
        NewConnector(
            name="hung", type="sleepy", config={"seconds": 30}, sync_interval=60, sync_timeout=1
        )
    )
    add(store, "fine", records=3)
    started = time.monotonic()
    report = Runner(store).run()
    assert time.monotonic() - started < 10
    syncs = {s.connector_name: s for s in store.syncs_by_id(report.sync_ids)}
    assert syncs["hung"].status == "FAILED"
    assert syncs["hung"].error == "timed out after 1s"
    assert syncs["fine"].status == "COMPLETED"
    assert store.find_connector("hung").status == "ACTIVE"


@pytest.mark.real_time
def test_run_timeout_option_applies_to_connectors_without_their_own(store: Store) -> None:
    add(store, "slow", type="sleepy", records=100, seconds=0.05)
    report = Runner(store, RunOptions(timeout=1, batch_size=1)).run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert sync.status == "FAILED" and sync.error == "timed out after 1s"
    assert 0 < sync.records_fetched < 100
    assert store.datasets_of(sync.connector_id) == []  # the partial dataset is gone


@pytest.mark.real_time
def test_concurrency_runs_syncs_in_parallel(store: Store) -> None:
    for n in range(8):
        add(store, f"slow{n}", type="sleepy", records=1, seconds=0.5)
    report = Runner(store, RunOptions(concurrency=4)).run()
    syncs = store.syncs_by_id(report.sync_ids)
    assert len(syncs) == 8 and report.failed == 0
    assert len({s.connector_id for s in syncs}) == 8
    # Overlap, read from the recorded times rather than a stopwatch: some sync
    # started while at least two others were still running.
    overlaps = [
        sum(o.started_at <= s.started_at < o.completed_at for o in syncs if o is not s)
        for s in syncs
    ]
    assert max(overlaps) >= 2


@pytest.mark.real_time
def test_stop_cancels_in_flight_syncs_after_the_grace(store: Store) -> None:
    add(store, "slow", type="sleepy", records=50, seconds=0.1)
    runner = Runner(store, RunOptions(batch_size=1))
    threading.Timer(0.5, runner.control.request_stop, (0.3, "cancelled: test stop")).start()
    report = runner.run()
    [sync] = store.syncs_by_id(report.sync_ids)
    assert (sync.status, sync.error) == ("CANCELLED", "cancelled: test stop")
    connector = store.find_connector("slow")
    assert connector.status == "ACTIVE" and [c.name for c in store.due_connectors()] == ["slow"]
    assert store.datasets_of(connector.id) == []


@pytest.mark.real_time
def test_stop_lets_a_sync_that_finishes_within_the_grace_complete(store: Store) -> None:
    add(store, "quick", type="sleepy", records=3, seconds=0.2)
    add(store, "next", records=1)
    runner = Runner(store, RunOptions(batch_size=1))
    threading.Timer(0.2, runner.control.request_stop, (5.0, "stop")).start()
    report = runner.run()
    assert [s.status for s in store.syncs_by_id(report.sync_ids)] == ["COMPLETED"]
    assert [c.name for c in store.due_connectors()] == ["next"]  # never claimed


@pytest.mark.real_time
def test_queued_manual_syncs_keep_their_leases_alive(store: Store) -> None:
    """Connectors claimed together for a manual run are heartbeated while they wait."""
    first = add(store, "first", type="sleepy", records=1, seconds=1.5)
    second = add(store, "second", records=1)
    options = RunOptions(connector_ids=[first, second], lease_seconds=0.8, heartbeat_seconds=0.1)
    stolen: list[RecoveredLease] = []  # looked for once the lease would have expired twice
    thief = threading.Timer(1.2, lambda: stolen.extend(store.recover_expired_leases()))
    thief.start()
    report = Runner(store, options).run()
    thief.join()
    assert stolen == []
    assert [s.status for s in store.syncs_by_id(report.sync_ids)] == ["COMPLETED", "COMPLETED"]


def test_quick_syncs_are_claimed_in_batches_within_the_limit(store: Store) -> None:
    for n in range(30):
        add(store, f"c{n}", records=1)
    report = Runner(store, RunOptions(limit=20)).run()
    syncs = store.syncs_by_id(report.sync_ids)
    assert len(syncs) == 20 and {s.status for s in syncs} == {"COMPLETED"}
    assert len(store.due_connectors()) == 10
    # Claimed together: several syncs share one claim transaction's start time.
    assert len({s.started_at for s in syncs}) < 20


@pytest.mark.real_time
def test_connectors_claimed_ahead_are_released_when_the_run_stops(store: Store) -> None:
    for n in range(12):
        add(store, f"c{n}", type="sleepy", records=1, seconds=0.05)
    runner = Runner(store)
    threading.Timer(0.6, runner.control.request_stop, (0.0, "cancelled: test stop")).start()
    report = runner.run()
    statuses = [s.status for s in store.syncs_by_id(report.sync_ids)]
    assert set(statuses) <= {"COMPLETED", "CANCELLED"}
    with store.database.begin() as conn:
        open_syncs = conn.execute(
            sa.select(sa.func.count()).where(connector_syncs.c.status == "IN_PROGRESS")
        ).scalar_one()
    assert open_syncs == 0
    assert all(c.status == "ACTIVE" for c in store.list_connectors())
    assert len(store.due_connectors()) == 12 - statuses.count("COMPLETED")


def test_copy_and_executemany_store_identical_datasets(sqlite_url: str, pg_url: str) -> None:
    """The two bulk paths (PostgreSQL COPY, SQLite executemany) store the same records."""
    tricky = [
        {"text": 'tab\there, "quotes", back\\slash, a literal \\n, newline\n, é ☃'},
        {"nested": {"list": [1, 2.5, None, True]}, "empty": ""},
    ]
    stored = []
    for url in (sqlite_url, pg_url):
        with open_store(url) as store:
            add(store, "demo", records=1234)
            add(store, "tricky", type="records", records=tricky)
            report = Runner(store, RunOptions(batch_size=100)).run()
            by_name = {s.connector_name: s for s in store.syncs_by_id(report.sync_ids)}
            stored.append(
                [
                    stored_records(store.database, by_name[name].dataset_id)
                    for name in ("demo", "tricky")
                ]
            )
    assert stored[0] == stored[1]
    assert stored[0][1] == tricky and len(stored[0][0]) == 1234
