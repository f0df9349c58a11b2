"""One hostile source never stops a run (issue 13, findings 2, 6, 7 and 8).

Seven due connectors, one of them pointed at a source that sends what broke runs before:
a 401 whose body holds a NUL byte (unstorable on PostgreSQL), a Retry-After of 1e12 seconds
or of year 9999 (an overflow, or a connector parked for decades), a JSON Lines record with
NUL in a field name. The other six complete, the hostile one is FAILED with a storable
error, no connector is left SYNCING, and the hostile one is due again within a day.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.db import Database
from connector_sync.exceptions import TransientError
from connector_sync.runner import Runner, RunOptions, storable
from connector_sync.scheduling import MAX_RETRY_DELAY_FLOOR, retry_delay
from connector_sync.store import open_store
from connector_sync.store.base import Claim, NewConnector, Store

#: path -> (status, headers, body) the hostile server answers with.
ANSWERS: dict[str, tuple[int, dict[str, str], bytes]] = {
    "/nul-401": (401, {"Content-Type": "application/json"}, b'{"message": "bad \x00 token"}'),
    "/retry-1e12": (429, {"Retry-After": "1e12"}, b"{}"),
    "/retry-9999": (503, {"Retry-After": "Fri, 31 Dec 9999 23:59:59 GMT"}, b"{}"),
    "/retry-inf": (503, {"Retry-After": "inf"}, b"{}"),
    "/nul-field.jsonl": (200, {}, b'{"id": 1, "a\\u0000b": 2}\n'),
}


@contextmanager
def hostile_server() -> Iterator[str]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:
            pass

        def do_GET(self) -> None:
            status, headers, body = ANSWERS[self.path.split("?")[0]]
            self.send_response(status)
            for name, value in {**headers, "Content-Length": str(len(body))}.items():
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    threading.Thread(target=server.serve_forever, args=(0.01,), daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def hostile_connector(base: str, kind: str) -> NewConnector:
    if kind == "nul-field.jsonl":
        config: dict[str, Any] = {
            "url": f"{base}/{kind}",
            "format": "jsonl",
            "max_retries": 0,
            "incremental": {"cursor_field": "id"},
        }
        return NewConnector(name="hostile", type="file", config=config, sync_interval=600)
    config = {"url": f"{base}/{kind}", "max_retries": 0, "token": "s3cr3t-token-value"}
    return NewConnector(name="hostile", type="http", config=config, sync_interval=600)


def statuses(database: Database) -> dict[str, tuple[str, str | None]]:
    with database.engine.connect() as conn:
        rows = conn.execute(
            sa.text(
                "SELECT c.name, s.status, s.error FROM connector_syncs s "
                "JOIN connectors c ON c.id = s.connector_id"
            )
        ).all()
    return {name: (status, error) for name, status, error in rows}


@pytest.mark.parametrize("kind", ["nul-401", "retry-1e12", "retry-9999", "nul-field.jsonl"])
def test_a_hostile_source_fails_alone_and_the_run_goes_on(db_url: str, kind: str) -> None:
    with hostile_server() as base, open_store(db_url) as store:
        for n in range(6):
            store.add_connector(
                NewConnector(name=f"good{n}", type="demo", config={"records": 3}, sync_interval=60)
            )
        store.add_connector(hostile_connector(base, kind))
        report = Runner(store, RunOptions(attempts=1)).run()

        # SQLite stores a NUL in a JSON key; PostgreSQL's jsonb cannot, so there it fails.
        fails = not (kind == "nul-field.jsonl" and db_url.startswith("sqlite"))
        assert report.failed == fails and not report.lost and not report.cancelled
        outcomes = statuses(store.database)
        assert {name: s for name, (s, _) in outcomes.items()} == {
            **{f"good{n}": "COMPLETED" for n in range(6)},
            "hostile": "FAILED" if fails else "COMPLETED",
        }
        error = outcomes["hostile"][1]
        assert bool(error) == fails
        assert "\x00" not in (error or "") and "s3cr3t-token-value" not in (error or "")
        hostile = store.find_connector("hostile")
        assert hostile.status == "ACTIVE" and hostile.lease_owner is None
        assert hostile.next_sync_at is not None
        latest = store.now() + dt.timedelta(seconds=MAX_RETRY_DELAY_FLOOR + 60)
        assert hostile.next_sync_at <= latest  # never parked for decades


def test_retry_after_cannot_push_a_retry_past_a_day_or_the_interval() -> None:
    for asked in (1e12, float("inf"), float("nan"), -5.0, 1e9):
        delay = retry_delay(1, 600, asked, rand=lambda: 0.0)
        assert 0 < delay <= MAX_RETRY_DELAY_FLOOR
    assert retry_delay(1, 3 * 86400, 1e12, rand=lambda: 0.0) == 3 * 86400  # long intervals
    assert retry_delay(1, 600, 7200, rand=lambda: 0.0) == 7200  # a sane ask is honoured


def test_storable_escapes_control_characters_and_surrogates_and_cuts() -> None:
    assert storable("a\x00b\x1bc\ud800") == "a\\x00b\\x1bc\\ud800"
    long = storable("x" * 5000)
    assert len(long) == 2000 and long.endswith("…")


def test_an_error_is_redacted_before_it_is_cut(database: Database) -> None:
    """A secret near the cut must not show in part (it would no longer be recognised)."""
    store = open_store(database)
    token = "tok-ABCDEFGHIJKLMNOPQRSTUV"
    store.add_connector(
        NewConnector(name="c", type="http", config={"url": "http://x/", "token": token},
                     sync_interval=60)
    )  # fmt: skip
    claim = _claim(store)
    for cut_at in range(1985, 2001, 3):
        message = "x" * cut_at + f" got: Bearer {token}"
        described = Runner._describe(claim, TransientError(message))
        assert token[:6] not in described, cut_at
        assert len(described) <= 2000


def _claim(store: Store) -> Claim:
    from connector_sync.store.base import ClaimRequest

    (claim,) = store.claim(ClaimRequest(worker="w:1", limit=1, lease_seconds=60))
    return claim


def test_connectors_claimed_ahead_are_given_back_when_the_sync_in_front_turns_slow(
    db_url: str,
) -> None:
    """Worker A claims [slow, q8, q9, q10] in one batch; q8-q10 must not wait behind slow:
    they are given back after a second, worker B syncs them while slow still runs, and
    the hand-back leaves no trace (no CANCELLED sync)."""
    with open_store(db_url) as store:
        now = store.now()
        names = [f"q{n}" for n in range(1, 8)] + ["slow", "q8", "q9", "q10"]
        for n, name in enumerate(names):
            slow = name == "slow"
            store.add_connector(
                NewConnector(
                    name=name,
                    type="sleepy" if slow else "demo",
                    config={"records": 1, "seconds": 2.5} if slow else {"records": 1},
                    sync_interval=3600,
                )
            )
            with store.database.begin() as conn:  # due in this order, oldest first
                conn.execute(
                    sa.text("UPDATE connectors SET next_sync_at = :at WHERE name = :name"),
                    {"at": now - dt.timedelta(minutes=60 - n), "name": name},
                )
        worker_a = threading.Thread(target=Runner(store, RunOptions(worker="A:1", attempts=1)).run)
        worker_a.start()
        _wait_until(lambda: store.find_connector("slow").status == "SYNCING")
        _wait_until(lambda: store.find_connector("q8").status == "ACTIVE", seconds=3)
        report_b = Runner(store, RunOptions(worker="B:2", attempts=1)).run()
        slow_still_running = store.find_connector("slow").status == "SYNCING"
        worker_a.join()

        assert slow_still_running
        with store.database.engine.connect() as conn:
            rows = conn.execute(
                sa.text(
                    "SELECT c.name, s.worker, s.status FROM connector_syncs s "
                    "JOIN connectors c ON c.id = s.connector_id"
                )
            ).all()
        by_name = {name: (worker, status) for name, worker, status in rows}
        assert len(rows) == len(names)  # one sync each: the hand-back left no row
        assert {by_name[n] for n in ("q8", "q9", "q10")} == {("B:2", "COMPLETED")}
        assert by_name["slow"] == ("A:1", "COMPLETED")
        assert len(report_b.sync_ids) == 3


def _wait_until(condition: Any, seconds: float = 10.0) -> None:
    import time

    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)
