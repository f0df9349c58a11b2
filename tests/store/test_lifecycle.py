"""The Store contract for a connector's life, on SQLite and PostgreSQL alike: schedules,
edits (also during a sync), retention, pruning, deletion, reading datasets back."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync import operations
from connector_sync.db import Database
from connector_sync.exceptions import AlreadyExists, ConnectorBusy, LeaseLost, NotFound
from connector_sync.runner import Runner, RunOptions
from connector_sync.store import Store, open_store
from connector_sync.store.base import (
    Claim,
    ClaimRequest,
    Completion,
    ListFilter,
    ManualClock,
    NewConnector,
    PruneRequest,
)

UTC = dt.UTC
START = dt.datetime(2026, 3, 2, 10, 7, 30, tzinfo=UTC)

ORPHANS = {
    "syncs without a connector": "SELECT count(*) FROM connector_syncs s "
    "WHERE NOT EXISTS (SELECT 1 FROM connectors c WHERE c.id = s.connector_id)",
    "datasets without a connector": "SELECT count(*) FROM datasets d "
    "WHERE NOT EXISTS (SELECT 1 FROM connectors c WHERE c.id = d.connector_id)",
    "records without a dataset": "SELECT count(*) FROM dataset_records r "
    "WHERE NOT EXISTS (SELECT 1 FROM datasets d WHERE d.id = r.dataset_id)",
}


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def store(db_url: str, clock: ManualClock) -> Iterator[Store]:
    with open_store(db_url, clock=clock) as opened:
        yield opened


def sql(store: Store, statement: str) -> list[Any]:
    with store.database.begin() as conn:
        return list(conn.exec_driver_sql(statement).all())


def count(store: Store, statement: str) -> int:
    return int(sql(store, statement)[0][0])


def add(store: Store, name: str, **kw: Any) -> int:
    kw.setdefault("type", "demo")
    kw.setdefault("config", {"records": 3})
    kw.setdefault("sync_interval", 3600)
    return operations.add_connector(store, NewConnector(name=name, **kw))


def sync(store: Store, *ids: int) -> None:
    report = Runner(store, RunOptions(connector_ids=list(ids))).run()
    assert report.failed == 0 and not report.lost


def claim(store: Store, connector_id: int) -> Claim:
    [claimed] = store.claim(
        ClaimRequest(worker="w:1", limit=1, lease_seconds=60, connector_ids=[connector_id])
    )
    return claimed


def completion(records: int = 0, **kw: Any) -> Completion:
    values: dict[str, Any] = {
        "duration": 0.1, "records_fetched": records, "records_processed": records, "attempts": 1,
        "schema": {}, "state": None, "next_sync_in": 3600,
    }  # fmt: skip
    values.update(kw)
    return Completion(**values)


def ready_datasets(store: Store, connector_id: int) -> list[int]:
    where = ListFilter(connector_id=connector_id, status="READY", limit=None)
    return [d.id for d in store.list_datasets(where)]


# -- schedules ---------------------------------------------------------------------------


def test_a_cron_connector_is_due_at_its_next_slot_and_missed_slots_run_once(
    store: Store, clock: ManualClock
) -> None:
    connector_id = add(store, "quarterly", schedule="*/15 * * * *")
    connector = store.find_connector("quarterly")
    assert connector.next_sync_at == START.replace(minute=15, second=0)
    assert (connector.schedule, connector.timezone) == ("*/15 * * * *", None)
    assert store.due_connectors() == []

    clock.advance(8 * 60)  # 10:15:30
    report = Runner(store).run()
    assert len(report.sync_ids) == 1
    assert store.find_connector("quarterly").next_sync_at == START.replace(minute=30, second=0)

    clock.current = START.replace(hour=13, minute=2)  # down for hours: 11 slots missed
    assert len(Runner(store).run().sync_ids) == 1
    assert len(Runner(store).run().sync_ids) == 0  # not once per missed slot
    assert store.find_connector(str(connector_id)).next_sync_at == START.replace(
        hour=13, minute=15, second=0
    )


def test_a_schedule_in_a_time_zone(store: Store) -> None:
    add(store, "berlin", schedule="0 9 * * *", timezone="Europe/Berlin")
    # 09:00 in Berlin on 3 March (winter time) is 08:00 UTC, the next day from 10:07 UTC.
    assert store.find_connector("berlin").next_sync_at == dt.datetime(2026, 3, 3, 8, tzinfo=UTC)


# -- edits -----------------------------------------------------------------------------------


def test_edit_moves_next_sync_at_with_the_interval_and_the_schedule(
    store: Store, clock: ManualClock
) -> None:
    connector_id = add(store, "edited")
    sync(store, connector_id)
    synced_at = START
    assert store.find_connector("edited").next_sync_at == synced_at + dt.timedelta(hours=1)

    def edit(**changes: Any) -> dt.datetime | None:
        changed = operations.ConnectorChanges(**changes)
        return operations.edit_connector(store, "edited", None, changed).connector.next_sync_at

    clock.advance(60)
    assert edit(sync_interval=600) == synced_at + dt.timedelta(minutes=10)  # sooner
    assert edit(sync_interval=7200) == synced_at + dt.timedelta(hours=2)
    assert edit(schedule="*/15 * * * *") == START.replace(minute=15, second=0)
    assert edit(timezone="Asia/Kolkata") == START.replace(minute=15, second=0)  # :15 there too
    back = operations.edit_connector(
        store, "edited", None, operations.ConnectorChanges(sync_interval=900)
    ).connector
    assert (back.schedule, back.timezone, back.sync_interval) == (None, None, 900)
    assert back.next_sync_at == synced_at + dt.timedelta(minutes=15)
    before = store.find_connector("edited")
    operations.edit_connector(store, "edited", None, operations.ConnectorChanges(keep=3))
    after = store.find_connector("edited")
    assert (after.keep, after.next_sync_at, after.status) == (3, before.next_sync_at, "ACTIVE")


def test_an_edit_during_a_sync_wins_over_what_the_sync_was_claimed_with(
    store: Store, clock: ManualClock
) -> None:
    interval_id = add(store, "interval")
    cron_id = add(store, "cron", schedule="0 * * * *")
    untouched_id = add(store, "untouched")

    claimed = claim(store, interval_id)
    operations.edit_connector(
        store, "interval", None, operations.ConnectorChanges(sync_interval=60)
    )
    clock.advance(30)
    outcome = store.complete(claimed, completion(next_sync_in=3600))
    assert outcome is not None
    assert outcome.next_sync_at == clock() + dt.timedelta(seconds=60)  # the new interval

    claimed = claim(store, cron_id)
    edited = operations.edit_connector(
        store, "cron", None, operations.ConnectorChanges(schedule="30 * * * *")
    )
    assert edited.notes == ["a sync is running now: the change takes effect at the next sync"]
    store.complete(claimed, completion(next_sync_at=START.replace(hour=11, minute=0, second=0)))
    assert store.find_connector("cron").next_sync_at == START.replace(minute=30, second=0)

    claimed = claim(store, untouched_id)
    operations.edit_connector(store, "untouched", None, operations.ConnectorChanges(keep=2))
    store.complete(claimed, completion(next_sync_in=1234))  # config edits change no time
    assert store.find_connector("untouched").next_sync_at == clock() + dt.timedelta(seconds=1234)
    assert store.find_connector("untouched").keep == 2  # and the finish kept the edit


def test_rename_to_a_taken_name_changes_nothing(store: Store) -> None:
    add(store, "one")
    add(store, "two")
    with pytest.raises(AlreadyExists, match="'two' already exists"):
        operations.edit_connector(store, "one", None, operations.ConnectorChanges(rename="two"))
    assert store.find_connector("one").name == "one"


# -- datasets: incremental, retention, pruning ----------------------------------------------


def test_an_incremental_sync_that_finds_nothing_new_stores_no_dataset(store: Store) -> None:
    connector_id = add(store, "inc", type="records", config={"records": [{"a": 1}, {"a": 2}]})
    sync(store, connector_id)
    [first] = ready_datasets(store, connector_id)
    assert store.find_connector("inc").state == {"last_seen": 1}

    operations.edit_connector(
        store, "inc", None, operations.ConnectorChanges(set_values=[("records", [])])
    )
    sync(store, connector_id)
    [latest, _] = store.history(ListFilter(connector_id=connector_id))
    assert (latest.status, latest.records_processed, latest.dataset_id) == ("COMPLETED", 0, None)
    assert ready_datasets(store, connector_id) == [first]  # the last good data stays
    assert count(store, "SELECT count(*) FROM datasets") == 1

    # Without a saved cursor, an empty source is an empty dataset: that is its content.
    empty_id = add(store, "empty", type="records", config={"records": []})
    sync(store, empty_id)
    [dataset] = store.list_datasets(ListFilter(connector_id=empty_id))
    assert (dataset.status, dataset.record_count) == ("READY", 0)


def test_with_keep_3_ten_syncs_leave_three_ready_datasets(store: Store) -> None:
    kept = add(store, "kept", keep=3, config={"records": 4})
    everything = add(store, "everything", keep=0)
    for _ in range(10):
        sync(store, kept, everything)
    history = store.history(ListFilter(connector_id=kept, limit=None))
    newest_three = [s.dataset_id for s in history[:3]]
    assert ready_datasets(store, kept) == newest_three
    assert len(ready_datasets(store, everything)) == 10
    assert count(store, f"SELECT count(*) FROM dataset_records r JOIN datasets d "
                        f"ON d.id = r.dataset_id WHERE d.connector_id = {kept}") == 12  # fmt: skip
    # The syncs whose datasets went link none now; history itself is kept.
    assert [s.dataset_id for s in history[3:]] == [None] * 7
    assert all(count(store, query) == 0 for query in ORPHANS.values())


def test_prune_dry_run_changes_nothing_and_never_removes_the_newest_ready(
    store: Store, clock: ManualClock
) -> None:
    ids = [add(store, name, keep=0) for name in ("a", "b")]
    for _ in range(4):
        sync(store, *ids)
        clock.advance(86400)
    before = sql(store, "SELECT id, status FROM datasets ORDER BY id")

    dry = store.prune(PruneRequest(keep=1, dry_run=True))
    assert sorted(p.id for p in dry) == sorted(
        d for cid in ids for d in ready_datasets(store, cid)[1:]
    )
    assert {p.reason for p in dry} == {"keep"}
    assert sql(store, "SELECT id, status FROM datasets ORDER BY id") == before

    # Older than anything: still the newest READY dataset of each connector stays.
    everything_old = store.prune(PruneRequest(keep=0, older_than=clock() + dt.timedelta(days=9)))
    assert len(everything_old) == 6 and {p.reason for p in everything_old} == {"age"}
    assert [len(ready_datasets(store, cid)) for cid in ids] == [1, 1]
    latest = store.history(ListFilter(connector_id=ids[0], status="COMPLETED", limit=1))[0]
    assert ready_datasets(store, ids[0]) == [latest.dataset_id]
    assert all(count(store, query) == 0 for query in ORPHANS.values())


def test_prune_finishes_a_removal_that_was_cut_short(store: Store) -> None:
    connector_id = add(store, "cut", keep=0, config={"records": 30})
    sync(store, connector_id)
    sync(store, connector_id)
    oldest = min(ready_datasets(store, connector_id))
    # A removal cut short after the datasets were chosen and marked, records still there:
    marked = store.mark_datasets_to_prune(PruneRequest(keep=1, connector_id=connector_id))
    assert [(p.id, p.reason) for p in marked] == [(oldest, "keep")]
    assert store.find_dataset(oldest).status == "FAILED"  # readers no longer take it
    again = store.prune(PruneRequest())
    assert [(p.id, p.reason) for p in again] == [(oldest, "unfinished")]
    assert count(store, "SELECT count(*) FROM datasets WHERE status = 'FAILED'") == 0
    assert count(store, "SELECT count(*) FROM dataset_records") == 30


def test_a_completion_prunes_only_when_retention_has_something_to_remove(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The finish transaction tells whether the connector's retention would choose
    anything (more READY datasets than its keep, FAILED ones a removal left); the prune
    runs only then, and then removes what a prune of the connector would."""
    pruned: list[list[int]] = []
    apply_retention = store.apply_retention

    def watched(connector_id: int) -> list[Any]:
        found = apply_retention(connector_id)
        pruned.append(sorted(p.id for p in found))
        return found

    monkeypatch.setattr(store, "apply_retention", watched)
    kept = add(store, "kept", keep=3)
    for _ in range(3):
        sync(store, kept)
    assert pruned == []  # three READY, three kept: nothing asked
    first = min(ready_datasets(store, kept))
    sync(store, kept)
    assert pruned == [[first]] and len(ready_datasets(store, kept)) == 3

    operations.edit_connector(store, "kept", None, operations.ConnectorChanges(keep=1))
    older = sorted(ready_datasets(store, kept))
    sync(store, kept)  # a lower keep takes effect at the next completion
    assert pruned[-1] == older and len(ready_datasets(store, kept)) == 1

    everything = add(store, "everything", keep=0)
    for _ in range(3):
        sync(store, everything)
    assert len(pruned) == 2  # no limit: nothing asked
    # A removal cut short (chosen and marked FAILED, never deleted): the next completion
    # of the connector finishes it, even with no limit of its own.
    [cut] = store.mark_datasets_to_prune(PruneRequest(keep=2, connector_id=everything))
    sync(store, everything)
    assert pruned[-1] == [cut.id]
    assert count(store, "SELECT count(*) FROM datasets WHERE status = 'FAILED'") == 0
    assert len(ready_datasets(store, everything)) == 3
    assert all(count(store, query) == 0 for query in ORPHANS.values())


def test_purge_deletes_records_in_batches(store: Store) -> None:
    connector_id = add(store, "big", config={"records": 95})
    sync(store, connector_id)
    [dataset_id] = ready_datasets(store, connector_id)
    assert store.max_record_seq(dataset_id) == 95
    assert store.delete_record_range(dataset_id, 0, 10) == 10
    assert store.purge_records(dataset_id, batch=7) == 85
    assert store.max_record_seq(dataset_id) == 0


def test_prune_history_keeps_the_latest_completed_sync_and_syncs_with_datasets(
    store: Store, clock: ManualClock
) -> None:
    connector_id = add(store, "h", keep=1)
    for _ in range(3):
        sync(store, connector_id)
        clock.advance(86400)
    syncs = store.history(ListFilter(connector_id=connector_id, limit=None))
    cutoff = clock() + dt.timedelta(days=1)
    dry = store.prune_history(cutoff, dry_run=True)
    assert [(h.connector_name, h.syncs) for h in dry] == [("h", 2)]
    assert len(store.history(ListFilter(connector_id=connector_id, limit=None))) == 3
    store.prune_history(cutoff)
    [left] = store.history(ListFilter(connector_id=connector_id, limit=None))
    assert left.id == syncs[0].id and left.dataset_id is not None


def test_read_records_in_seq_order_from_one_snapshot(store: Store) -> None:
    connector_id = add(store, "many", config={"records": 2500})
    Runner(store, RunOptions(connector_ids=[connector_id], batch_size=300)).run()
    [dataset_id] = ready_datasets(store, connector_id)
    chunks = list(store.read_records(dataset_id, chunk=700))
    assert [len(c) for c in chunks] == [700, 700, 700, 400]
    ids = [int(text.split('"id":')[1].split(",")[0]) for c in chunks for text in c]
    assert ids == list(range(2500))
    assert len(next(iter(store.read_records(dataset_id, limit=3)))) == 3
    dataset = store.find_dataset(dataset_id)
    assert dataset.connector_name == "many" and dataset.schema is not None
    assert dataset.schema["tags"] == ["array"]
    with pytest.raises(NotFound, match="no dataset 999999"):
        store.find_dataset(999_999)
    with pytest.raises(NotFound):
        store.find_dataset(dataset_id, tenant="other")


# -- deletion ------------------------------------------------------------------------------


def test_delete_leaves_no_orphan_rows_and_keeps_other_connectors(store: Store) -> None:
    gone = add(store, "gone", config={"records": 40})
    stays = add(store, "stays", config={"records": 5})
    for _ in range(2):
        sync(store, gone, stays)
    result = operations.delete_connector(store, "gone")
    assert (result.deleted, result.syncs, result.datasets, result.records) == (True, 2, 2, 80)
    assert all(count(store, query) == 0 for query in ORPHANS.values()), ORPHANS
    assert count(store, "SELECT count(*) FROM connectors") == 1
    assert count(store, "SELECT count(*) FROM dataset_records") == 10
    with pytest.raises(NotFound):
        store.find_connector(str(gone))
    assert store.find_connector(str(stays)).name == "stays"


def test_delete_refuses_a_live_lease_unless_forced(store: Store) -> None:
    busy = add(store, "busy")
    claimed = claim(store, busy)
    with pytest.raises(ConnectorBusy, match="being synced by w:1"):
        operations.delete_connector(store, "busy")
    with pytest.raises(ConnectorBusy):  # the store checks again, atomically
        store.retire_connector(busy, force=False, remove_data=True)
    assert store.find_connector("busy").status == "SYNCING"

    operations.delete_connector(store, "busy", force=True)
    with pytest.raises(LeaseLost):  # the worker records nothing over the deletion
        store.complete(claimed, completion())
    assert all(count(store, query) == 0 for query in ORPHANS.values())


def test_keep_data_makes_it_inactive_never_scheduled(store: Store, clock: ManualClock) -> None:
    kept = add(store, "kept")
    sync(store, kept)
    claimed = claim(store, kept)
    operations.delete_connector(store, "kept", keep_data=True, force=True)
    connector = store.find_connector("kept")
    assert (connector.status, connector.lease_owner) == ("INACTIVE", None)
    [open_sync, done] = store.history(ListFilter(connector_id=kept))
    assert (open_sync.status, open_sync.error) == ("CANCELLED", "cancelled: connector deleted")
    assert done.status == "COMPLETED" and len(ready_datasets(store, kept)) == 1
    assert count(store, f"SELECT count(*) FROM datasets WHERE id = {claimed.dataset_id}") == 0

    clock.advance(10 * 86400)
    assert store.due_connectors() == []
    assert store.claim(ClaimRequest(worker="w:2", limit=5, lease_seconds=60)) == []
    named = ClaimRequest(worker="w:2", limit=5, lease_seconds=60, connector_ids=[kept])
    assert store.claim(named) == []
    assert [c.name for c in operations.list_connectors(store)] == []
    assert [c.name for c in operations.list_connectors(store, include_inactive=True)] == ["kept"]


def test_sqlite_and_postgres_reject_a_negative_keep(store: Store, db_url: str) -> None:
    add(store, "k")
    with pytest.raises(sa.exc.IntegrityError), Database(db_url) as db, db.engine.begin() as conn:
        conn.exec_driver_sql("UPDATE connectors SET keep = -1")


def test_a_deleted_connectors_id_is_never_given_again(store: Store) -> None:
    """On SQLite too (migration 0008): a script's `run -c 7` or an alert's key must not
    come to mean another connector (an adversarial pass)."""
    add(store, "first")
    last = add(store, "last")
    operations.delete_connector(store, "last", keep_data=False, force=False)
    assert add(store, "next") > last


def test_reset_state_waits_for_a_sync_in_flight(store: Store, clock: ManualClock) -> None:
    """The sync's finish saves its own cursor: a reset in the middle was silently undone
    (an adversarial pass). Refused while a worker holds a live lease; fine once it ends."""
    busy = add(store, "busy")
    claimed = claim(store, busy)
    with pytest.raises(ConnectorBusy, match="reset its state once that sync has ended"):
        operations.reset_state(store, "busy", None)
    store.complete(claimed, completion(state={"cursor": 7}))
    assert store.find_connector("busy").state == {"cursor": 7}
    operations.reset_state(store, "busy", None)
    assert store.find_connector("busy").state is None
