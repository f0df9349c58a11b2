"""A connector's life end to end: the installed command in subprocesses, real files, a
terminal for the confirmation, a deletion racing a running sync and other workers."""

from __future__ import annotations

import csv
import json
import os
import pty
import subprocess
import threading
import time
from pathlib import Path
from typing import Any

from connector_sync import operations
from connector_sync.exceptions import DatabaseError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store import open_store
from connector_sync.store.base import (
    PURGE_BATCH,
    Claim,
    ClaimRequest,
    Completion,
    Failure,
    HistoryFilter,
    NewConnector,
    PruneRequest,
    Store,
)
from support.database import count_rows
from support.forkserver import forked_command

BIN = forked_command  # the command line as a process (support/forkserver.py)


def command(url: str, *args: str, **kw: Any) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DATABASE_URL": url}
    return subprocess.run(
        [BIN(), *args], env=env, capture_output=True, text=True, timeout=120, check=False, **kw
    )


def ok(url: str, *args: str) -> str:
    done = command(url, *args)
    assert done.returncode == 0, (args, done.stdout, done.stderr)
    return done.stdout


def orphans(url: str) -> int:
    with open_store(url) as store, store.database.begin() as conn:
        return int(
            conn.exec_driver_sql(
                "SELECT (SELECT count(*) FROM connector_syncs WHERE connector_id NOT IN "
                "(SELECT id FROM connectors)) + (SELECT count(*) FROM datasets WHERE "
                "connector_id NOT IN (SELECT id FROM connectors)) + (SELECT count(*) FROM "
                "dataset_records WHERE dataset_id NOT IN (SELECT id FROM datasets))"
            ).scalar_one()
        )


# -- round trips: what a source gave is what export gives back --------------------------------

CSV_SOURCE = (
    "id,name,note,amount,empty\r\n"
    '1,"Müller, Anna","said ""hi""\nthen left",12.50,\r\n'
    "2,Ωmega,,-0.0,\r\n"
    '3,"  spaced  ",emoji 🚀,1e3,x\r\n'
)
JSONL_RECORDS: list[dict[str, Any]] = [
    {"id": 1, "name": "Zoë", "tags": ["a", "b"], "nested": {"deep": {"x": [1, {"y": None}]}}},
    {"id": 2, "price": 0.1, "tiny": 1e-7, "big": 2**63 - 1, "ok": True, "none": None},
    {"id": 3, "text": 'line\nbreak "quoted" \\ backslash \t tab', "unicode": "日本語"},
    {"other": "a record with other fields", "id": 4},
]


def test_csv_and_jsonl_files_round_trip_through_sync_and_export(
    db_url: str, tmp_path: Path
) -> None:
    source_csv = tmp_path / "people.csv"
    source_csv.write_text(CSV_SOURCE, encoding="utf-8", newline="")
    source_jsonl = tmp_path / "events.jsonl"
    source_jsonl.write_text(
        "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in JSONL_RECORDS), encoding="utf-8"
    )
    ok(db_url, "add", "people", "--type", "file", "--config", json.dumps({"path": str(source_csv)}))
    ok(db_url, "add", "events", "--type", "file", "--config",
       json.dumps({"path": str(source_jsonl)}))  # fmt: skip
    ok(db_url, "run")

    exported_csv = tmp_path / "people-out.csv"
    ok(db_url, "datasets", "export", "-c", "people", "--latest", "-f", "csv", "-o",
       str(exported_csv))  # fmt: skip
    with (
        source_csv.open(encoding="utf-8", newline="") as a,
        exported_csv.open(encoding="utf-8", newline="") as b,
    ):
        assert list(csv.DictReader(b)) == list(csv.DictReader(a))

    exported = ok(db_url, "datasets", "export", "-c", "events", "--latest")
    assert [json.loads(line) for line in exported.splitlines()] == JSONL_RECORDS
    exported_jsonl = tmp_path / "events-out.jsonl"
    ok(db_url, "datasets", "export", "-c", "events", "--latest", "-o", str(exported_jsonl))
    lines = exported_jsonl.read_text(encoding="utf-8").splitlines()
    assert [json.loads(line) for line in lines] == JSONL_RECORDS
    # CSV of JSON records: the union of the fields, nested values as JSON text.
    as_csv = list(csv.DictReader(ok(db_url, "datasets", "export", "-c", "events", "--latest",
                                    "-f", "csv").splitlines()))  # fmt: skip
    assert set(as_csv[0]) == {r for record in JSONL_RECORDS for r in record}
    assert json.loads(as_csv[0]["nested"]) == JSONL_RECORDS[0]["nested"]
    assert (as_csv[1]["none"], as_csv[1]["ok"], as_csv[3]["name"]) == ("", "true", "")


# -- deletion: asked on a terminal, racing a sync, beside other workers -----------------------


def _answer(url: str, answer: str) -> tuple[int, str]:
    """`delete orders` with a terminal on stdin, answering the question."""
    controller, terminal = pty.openpty()
    env = {**os.environ, "DATABASE_URL": url}
    process = subprocess.Popen(
        [BIN(), "delete", "orders"], stdin=terminal, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, env=env, text=True,
    )  # fmt: skip
    os.close(terminal)
    os.write(controller, answer.encode() + b"\n")
    out, err = process.communicate(timeout=60)
    os.close(controller)
    return process.returncode, out + err


def test_delete_asks_on_a_terminal(sqlite_url: str) -> None:
    ok(sqlite_url, "add", "orders", "--type", "demo", "--config", '{"records": 3}')
    ok(sqlite_url, "run")
    status, text = _answer(sqlite_url, "n")
    assert status == 1 and "aborted" in text
    assert "Delete connector orders (id 1) with its 1 syncs, 1 datasets and 3 records?" in text
    assert json.loads(ok(sqlite_url, "list", "--json"))[0]["name"] == "orders"
    status, text = _answer(sqlite_url, "y")
    assert status == 0 and "deleted connector orders" in text
    assert json.loads(ok(sqlite_url, "list", "--all", "--json")) == []


def test_delete_force_while_a_run_syncs_it_ends_that_sync_not_the_run(db_url: str) -> None:
    ok(db_url, "add", "slow", "--type", "sleepy", "--config", '{"records": 400, "seconds": 0.02}')
    env = {**os.environ, "DATABASE_URL": db_url}
    run = subprocess.Popen(
        [BIN(), "run", "--batch-size", "5", "--heartbeat-seconds", "0.5"], env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 30
    while json.loads(ok(db_url, "list", "--json"))[0]["status"] != "SYNCING":
        assert time.monotonic() < deadline, "the run never started syncing"
        time.sleep(0.1)
    time.sleep(0.5)  # some batches written
    assert "--force" in command(db_url, "delete", "slow", "--yes").stderr
    ok(db_url, "delete", "slow", "--yes", "--force")
    out, err = run.communicate(timeout=60)
    assert run.returncode == 1, (out, err)  # one sync lost, not a database error (3)
    assert "lost" in err and "Traceback" not in err
    assert orphans(db_url) == 0
    assert json.loads(ok(db_url, "list", "--all", "--json")) == []


def test_deleting_a_large_connector_does_not_hold_up_other_connectors(db_url: str) -> None:
    """Another worker claims and completes a sync of another connector again and again
    while a connector with 100,000 records is deleted; no claim waits long."""
    records = 100_000
    with open_store(db_url) as store:
        big = store.add_connector(
            NewConnector(name="big", type="demo", config={"records": records}, sync_interval=3600)
        )
        other = store.add_connector(
            NewConnector(name="other", type="demo", config={"records": 0}, sync_interval=3600)
        )
        Runner(store, RunOptions(connector_ids=[big], batch_size=5000)).run()
        assert store.data_counts(big).records == records

        waits: list[float] = []
        deleting = threading.Event()
        done = threading.Event()

        def other_worker() -> None:
            request = ClaimRequest(worker="other:1", limit=1, lease_seconds=60,
                                   connector_ids=[other])  # fmt: skip
            finished = Completion(duration=0, records_fetched=0, records_processed=0,
                                  attempts=1, schema={}, state=None, next_sync_in=60)  # fmt: skip
            deleting.wait()
            while not done.is_set():
                started = time.perf_counter()
                [claim] = store.claim(request)
                store.complete(claim, finished)
                waits.append(time.perf_counter() - started)

        thread = threading.Thread(target=other_worker)
        thread.start()
        deleting.set()
        try:
            began = time.perf_counter()
            operations.delete_connector(store, "big")
            took = time.perf_counter() - began
        finally:
            done.set()
            thread.join()
    assert orphans(db_url) == 0
    assert len(waits) >= 3, f"the other worker synced {len(waits)} times in {took:.1f}s"
    # One claim+complete takes milliseconds; the longest may wait for one batch of
    # PURGE_BATCH records to be deleted, never for the whole deletion.
    assert max(waits) < max(1.0, took / 4), (max(waits), took, len(waits))


def _failing_sync_with(store: Store, connector: int, records: int) -> tuple[Claim, Failure]:
    """A claim of `connector` whose dataset holds `records` records, and its failure."""
    [claim] = store.claim(
        ClaimRequest(worker="big:1", limit=1, lease_seconds=60, connector_ids=[connector])
    )
    line = '{"n": 1, "text": "a record of a sync that will fail"}'
    for start in range(0, records, 5000):
        store.append_records(claim.dataset_id, start, [line] * min(5000, records - start))
    failure = Failure(duration=1.0, records_fetched=records, records_processed=records,
                      attempts=1, error="the source broke", error_type="PermanentError",
                      retry_in=60)  # fmt: skip
    return claim, failure


def test_a_large_failed_sync_is_discarded_while_other_connectors_sync(db_url: str) -> None:
    """A sync fails with 100,000 records written: the failure is recorded first, then the
    records go in short transactions, between which another worker claims and completes
    another connector; at the end nothing of the dataset is left."""
    records = 100_000
    with open_store(db_url) as store:
        big = store.add_connector(
            NewConnector(name="big", type="demo", config={"records": 1}, sync_interval=3600)
        )
        other = store.add_connector(
            NewConnector(name="other", type="demo", config={"records": 0}, sync_interval=3600)
        )
        claim, failure = _failing_sync_with(store, big, records)
        assert count_rows(db_url, "dataset_records") == records

        def other_worker() -> None:  # another process would have a store of its own
            with open_store(db_url) as own:
                request = ClaimRequest(worker="other:1", limit=1, lease_seconds=60,
                                       connector_ids=[other])  # fmt: skip
                [other_claim] = own.claim(request)
                own.complete(other_claim, Completion(
                    duration=0, records_fetched=0, records_processed=0, attempts=1, schema={},
                    state=None, next_sync_in=60,
                ))  # fmt: skip

        seen: list[tuple[str, ...]] = []  # at the first deletion: the sync, the connector
        meanwhile: list[tuple[int, float]] = []  # records left as the other sync completed
        delete_record_range = store.delete_record_range

        def purging(dataset_id: int, after: int, upto: int) -> int:
            if not seen:
                [sync] = store.syncs_by_id([claim.sync_id])
                seen.append((sync.status, store.find_connector("big").status))
            removed = delete_record_range(dataset_id, after, upto)
            if not meanwhile:  # between two of the short transactions
                began = time.perf_counter()
                worker = threading.Thread(target=other_worker)
                worker.start()
                worker.join(20)
                meanwhile.append((count_rows(db_url, "dataset_records"),
                                  time.perf_counter() - began))  # fmt: skip
            return removed

        store.delete_record_range = purging  # type: ignore[method-assign]
        outcome = store.fail(claim, failure)
        del store.delete_record_range
        assert outcome is not None and outcome.consecutive_failures == 1
        assert count_rows(db_url, "dataset_records") == 0
        assert store.datasets_of(big) == []
        [sync] = store.syncs_by_id([claim.sync_id])
        assert (sync.status, sync.error, sync.dataset_id) == ("FAILED", "the source broke", None)
        assert [s.status for s in store.history(HistoryFilter(connector_id=other))] == ["COMPLETED"]
    assert seen == [("FAILED", "ACTIVE")]  # recorded, and the lease given back, first
    [(left, seconds)] = meanwhile
    assert left == records - PURGE_BATCH  # the other sync went in the middle of the purge
    assert seconds < 10  # and waited for no lock
    assert orphans(db_url) == 0


def test_a_failed_sync_whose_discard_is_cut_short_is_removed_by_prune(db_url: str) -> None:
    """The database goes away in the middle of the discard: the failure stays recorded,
    the dataset stays FAILED (no reader takes it), and `prune` removes the rest."""
    records = 25_000  # three purge batches
    with open_store(db_url) as store:
        big = store.add_connector(
            NewConnector(name="big", type="demo", config={"records": 1}, sync_interval=3600)
        )
        claim, failure = _failing_sync_with(store, big, records)
        delete_record_range = store.delete_record_range
        calls = 0

        def cut_short(dataset_id: int, after: int, upto: int) -> int:
            nonlocal calls
            calls += 1
            if calls > 1:
                raise DatabaseError("the database went away (a test)")
            return delete_record_range(dataset_id, after, upto)

        store.delete_record_range = cut_short  # type: ignore[method-assign]
        outcome = store.fail(claim, failure)
        del store.delete_record_range
        assert outcome is not None and outcome.consecutive_failures == 1
        assert [d.status for d in store.datasets_of(big)] == ["FAILED"]
        assert count_rows(db_url, "dataset_records") == records - PURGE_BATCH
        assert [d.reason for d in store.prune(PruneRequest(connector_id=big))] == ["unfinished"]
        assert store.datasets_of(big) == []
        assert count_rows(db_url, "dataset_records") == 0
    assert orphans(db_url) == 0
