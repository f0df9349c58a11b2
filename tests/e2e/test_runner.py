"""A whole run through the runner: plugins, datasets and outcomes on both databases."""

from __future__ import annotations

import threading
import time
from typing import Any

import sqlalchemy as sa

from connector_sync.connectors.demo import demo_record
from connector_sync.db import Database
from connector_sync.models import connector_syncs, dataset_records, datasets
from connector_sync.repository import Repository
from connector_sync.runner import Runner, RunOptions


def add(repo: Repository, name: str, type: str = "demo", **config: Any) -> int:
    return repo.add_connector(name=name, type=type, config=config, sync_interval=3600)


def stored_records(db: Database, dataset_id: int) -> list[dict[str, Any]]:
    with db.begin() as conn:
        return list(
            conn.execute(
                sa.select(dataset_records.c.data)
                .where(dataset_records.c.dataset_id == dataset_id)
                .order_by(dataset_records.c.seq)
            ).scalars()
        )


def test_run_syncs_due_connectors_and_a_failure_does_not_stop_the_others(
    repo: Repository,
) -> None:
    add(repo, "first", records=7)
    add(repo, "broken", records=10, fail=True)
    add(repo, "second", records=12_345)
    report = Runner(repo.db, RunOptions(batch_size=1000)).run()
    assert report.failed == 1 and len(report.sync_ids) == 3
    syncs = {s["connector_name"]: s for s in repo.history()}
    assert syncs["first"]["status"] == syncs["second"]["status"] == "COMPLETED"
    assert syncs["second"]["records_fetched"] == syncs["second"]["records_processed"] == 12_345
    broken = syncs["broken"]
    assert broken["status"] == "FAILED"
    assert broken["error_type"] == "DemoFailure"
    assert "configured to fail" in broken["error"]
    assert broken["dataset_id"] is None
    records = stored_records(repo.db, syncs["first"]["dataset_id"])
    assert records == [demo_record(i) for i in range(7)]
    assert len(stored_records(repo.db, syncs["second"]["dataset_id"])) == 12_345
    with repo.db.begin() as conn:
        statuses = conn.execute(sa.select(datasets.c.status)).scalars().all()
    assert sorted(statuses) == ["READY", "READY"]  # the failed sync left no dataset
    assert repo.find_connector("broken")["status"] == "ACTIVE"
    # Nothing is due any more: a second run does nothing.
    assert Runner(repo.db).run().sync_ids == []


def test_dataset_schema_lists_fields_and_types(repo: Repository) -> None:
    records = [{"a": 1, "b": "x"}, {"a": 2.5, "b": None, "c": [1]}]
    add(repo, "r", type="records", records=records)
    Runner(repo.db).run()
    [sync] = repo.history()
    [dataset] = repo.datasets_of(sync["connector_id"])
    assert dataset["record_count"] == 2
    with repo.db.begin() as conn:
        schema = conn.execute(
            sa.select(datasets.c.schema).where(datasets.c.id == dataset["id"])
        ).scalar_one()
    assert schema == {"a": ["integer", "number"], "b": ["null", "string"], "c": ["array"]}
    assert stored_records(repo.db, dataset["id"]) == records


def test_state_is_saved_only_when_the_sync_completes(repo: Repository) -> None:
    connector_id = add(repo, "r", type="records", records=[{"n": 1}, {"n": 2}], fail_after=1)
    Runner(repo.db).run()
    assert repo.find_connector("r")["state"] is None  # failed: old (empty) state kept
    Runner(repo.db, RunOptions(connector_ids=[connector_id])).run()
    assert repo.history()[0]["status"] == "FAILED"


def test_completed_sync_saves_plugin_state(repo: Repository) -> None:
    add(repo, "r", type="records", records=[{"n": 1}, {"n": 2}])
    Runner(repo.db).run()
    assert repo.find_connector("r")["state"] == {"last_seen": 1}


def test_manual_run_syncs_a_connector_that_is_not_due(repo: Repository) -> None:
    connector_id = add(repo, "a", records=2)
    Runner(repo.db).run()
    assert repo.due_connectors() == []
    report = Runner(repo.db, RunOptions(connector_ids=[connector_id])).run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert (sync["status"], sync["trigger"]) == ("COMPLETED", "manual")


def test_run_limit(repo: Repository) -> None:
    for name in "abcd":
        add(repo, name, records=1)
    assert len(Runner(repo.db, RunOptions(limit=3)).run().sync_ids) == 3
    assert len(repo.due_connectors()) == 1


def test_unknown_type_fails_that_sync_only(repo: Repository) -> None:
    add(repo, "ok", records=1)
    add(repo, "gone", type="broken")  # its module does not exist
    report = Runner(repo.db).run()
    assert report.failed == 1
    syncs = {s["connector_name"]: s for s in repo.history()}
    assert syncs["ok"]["status"] == "COMPLETED"
    assert syncs["gone"]["status"] == "FAILED"
    assert "failed to load" in syncs["gone"]["error"]


def test_a_worker_that_lost_its_lease_records_nothing(repo: Repository, db_url: str) -> None:
    connector_id = add(repo, "victim", type="records", records=[])
    # Reconfigure as the lease thief now that we know the id.
    with repo.db.begin() as conn:
        conn.execute(
            sa.text("UPDATE connectors SET type = 'steal', config = :cfg WHERE id = :id"),
            {
                "cfg": f'{{"database_url": "{db_url}", "connector_id": {connector_id}}}',
                "id": connector_id,
            },
        )
    options = RunOptions(lease_seconds=30, heartbeat_seconds=0.05, batch_size=1)
    report = Runner(repo.db, options).run()
    assert report.lost == ["victim"] and report.sync_ids == []
    with repo.db.begin() as conn:
        sync_status = conn.execute(sa.select(connector_syncs.c.status)).scalar_one()
        lease_token = conn.execute(
            sa.text("SELECT lease_token FROM connectors WHERE id = :id"), {"id": connector_id}
        ).scalar_one()
    assert sync_status == "IN_PROGRESS"  # left for the new owner / recovery
    assert lease_token == "thief"


def test_transient_failure_is_retried_within_the_run(repo: Repository, tmp_path: Any) -> None:
    counter = tmp_path / "tries"
    add(repo, "flaky", type="flaky", fail_times=2, counter_file=str(counter), records=4)
    report = Runner(repo.db, RunOptions(attempts=3, retry_wait=0.01)).run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert (sync["status"], sync["attempts"]) == ("COMPLETED", 3)
    # Only the successful try's records are in the dataset: earlier tries were discarded.
    assert stored_records(repo.db, sync["dataset_id"]) == [{"n": n, "try": 3} for n in range(4)]


def test_transient_failure_gives_up_after_the_attempts(repo: Repository, tmp_path: Any) -> None:
    add(repo, "flaky", type="flaky", counter_file=str(tmp_path / "tries"))
    report = Runner(repo.db, RunOptions(attempts=2, retry_wait=0.01)).run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert (sync["status"], sync["attempts"], sync["error_type"]) == ("FAILED", 2, "TransientError")
    assert "try 2" in sync["error"]


def test_permanent_failure_is_not_retried(repo: Repository) -> None:
    add(repo, "bad", records=4, fail=True)
    report = Runner(repo.db, RunOptions(attempts=5, retry_wait=0.01)).run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert (sync["status"], sync["attempts"]) == ("FAILED", 1)


def test_a_hung_plugin_times_out_and_the_run_goes_on(repo: Repository) -> None:
    repo.add_connector(name="hung", type="sleepy", config={"seconds": 30}, sync_interval=60,
                       sync_timeout=1)  # fmt: skip
    add(repo, "fine", records=3)
    started = time.monotonic()
    report = Runner(repo.db).run()
    assert time.monotonic() - started < 10
    syncs = {s["connector_name"]: s for s in repo.syncs_by_id(report.sync_ids)}
    assert syncs["hung"]["status"] == "FAILED"
    assert syncs["hung"]["error"] == "timed out after 1s"
    assert syncs["fine"]["status"] == "COMPLETED"
    assert repo.find_connector("hung")["status"] == "ACTIVE"


def test_run_timeout_option_applies_to_connectors_without_their_own(repo: Repository) -> None:
    add(repo, "slow", type="sleepy", records=100, seconds=0.05)
    report = Runner(repo.db, RunOptions(timeout=1, batch_size=1)).run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert sync["status"] == "FAILED" and sync["error"] == "timed out after 1s"
    assert 0 < sync["records_fetched"] < 100
    assert repo.datasets_of(sync["connector_id"]) == []  # the partial dataset is gone


def test_concurrency_runs_syncs_in_parallel(repo: Repository) -> None:
    for n in range(8):
        add(repo, f"slow{n}", type="sleepy", records=1, seconds=0.5)
    report = Runner(repo.db, RunOptions(concurrency=4)).run()
    syncs = repo.syncs_by_id(report.sync_ids)
    assert len(syncs) == 8 and report.failed == 0
    assert len({s["connector_id"] for s in syncs}) == 8
    # Overlap, read from the recorded times rather than a stopwatch: some sync
    # started while at least two others were still running.
    overlaps = [
        sum(o["started_at"] <= s["started_at"] < o["completed_at"] for o in syncs if o is not s)
        for s in syncs
    ]
    assert max(overlaps) >= 2


def test_stop_cancels_in_flight_syncs_after_the_grace(repo: Repository) -> None:
    add(repo, "slow", type="sleepy", records=50, seconds=0.1)
    runner = Runner(repo.db, RunOptions(batch_size=1))
    threading.Timer(0.5, runner.control.request_stop, (0.3, "cancelled: test stop")).start()
    report = runner.run()
    [sync] = repo.syncs_by_id(report.sync_ids)
    assert (sync["status"], sync["error"]) == ("CANCELLED", "cancelled: test stop")
    connector = repo.find_connector("slow")
    assert connector["status"] == "ACTIVE" and [c["name"] for c in repo.due_connectors()] == [
        "slow"
    ]
    assert repo.datasets_of(connector["id"]) == []


def test_stop_lets_a_sync_that_finishes_within_the_grace_complete(repo: Repository) -> None:
    add(repo, "quick", type="sleepy", records=3, seconds=0.2)
    add(repo, "next", records=1)
    runner = Runner(repo.db, RunOptions(batch_size=1))
    threading.Timer(0.2, runner.control.request_stop, (5.0, "stop")).start()
    report = runner.run()
    assert [s["status"] for s in repo.syncs_by_id(report.sync_ids)] == ["COMPLETED"]
    assert [c["name"] for c in repo.due_connectors()] == ["next"]  # never claimed


def test_queued_manual_syncs_keep_their_leases_alive(repo: Repository) -> None:
    """Connectors claimed together for a manual run are heartbeated while they wait."""
    first = add(repo, "first", type="sleepy", records=1, seconds=3.0)
    second = add(repo, "second", records=1)
    options = RunOptions(connector_ids=[first, second], lease_seconds=1.5, heartbeat_seconds=0.1)
    stolen: list[Any] = []
    threading.Timer(2.2, lambda: stolen.extend(repo.recover_expired_leases())).start()
    report = Runner(repo.db, options).run()
    time.sleep(0.1)
    assert stolen == []
    assert [s["status"] for s in repo.syncs_by_id(report.sync_ids)] == ["COMPLETED", "COMPLETED"]


def test_quick_syncs_are_claimed_in_batches_within_the_limit(repo: Repository) -> None:
    for n in range(30):
        add(repo, f"c{n}", records=1)
    report = Runner(repo.db, RunOptions(limit=20)).run()
    syncs = repo.syncs_by_id(report.sync_ids)
    assert len(syncs) == 20 and {s["status"] for s in syncs} == {"COMPLETED"}
    assert len(repo.due_connectors()) == 10
    # Claimed together: several syncs share one claim transaction's start time.
    assert len({s["started_at"] for s in syncs}) < 20


def test_connectors_claimed_ahead_are_released_when_the_run_stops(repo: Repository) -> None:
    for n in range(12):
        add(repo, f"c{n}", type="sleepy", records=1, seconds=0.05)
    runner = Runner(repo.db)
    threading.Timer(0.6, runner.control.request_stop, (0.0, "cancelled: test stop")).start()
    report = runner.run()
    statuses = [s["status"] for s in repo.syncs_by_id(report.sync_ids)]
    assert set(statuses) <= {"COMPLETED", "CANCELLED"}
    with repo.db.begin() as conn:
        open_syncs = conn.execute(
            sa.select(sa.func.count()).where(connector_syncs.c.status == "IN_PROGRESS")
        ).scalar_one()
    assert open_syncs == 0
    assert all(c["status"] == "ACTIVE" for c in repo.list_connectors())
    assert len(repo.due_connectors()) == 12 - statuses.count("COMPLETED")


def test_copy_and_executemany_store_identical_datasets(sqlite_url: str, pg_url: str) -> None:
    """The two bulk paths (PostgreSQL COPY, SQLite executemany) store the same records."""
    tricky = [
        {"text": 'tab\there, "quotes", back\\slash, a literal \\n, newline\n, é ☃'},
        {"nested": {"list": [1, 2.5, None, True]}, "empty": ""},
    ]
    stored = []
    for url in (sqlite_url, pg_url):
        with Database(url) as db:
            repo = Repository(db)
            add(repo, "demo", records=1234)
            add(repo, "tricky", type="records", records=tricky)
            report = Runner(db, RunOptions(batch_size=100)).run()
            by_name = {s["connector_name"]: s for s in repo.syncs_by_id(report.sync_ids)}
            stored.append(
                [stored_records(db, by_name[name]["dataset_id"]) for name in ("demo", "tricky")]
            )
    assert stored[0] == stored[1]
    assert stored[0][1] == tricky and len(stored[0][0]) == 1234
