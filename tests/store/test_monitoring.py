"""Monitoring on both databases: progress written by the heartbeat, syncs in flight,
health thresholds, the metrics snapshot and the alert state. Time is a ManualClock."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from connector_sync import operations
from connector_sync.store import Store, open_store
from connector_sync.store.base import (
    DURATION_BUCKETS,
    AlertThresholds,
    Claim,
    ClaimRequest,
    Completion,
    Failure,
    HealthProblem,
    HealthThresholds,
    HistoryFilter,
    ManualClock,
    NewConnector,
    SyncProgress,
)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC))


@pytest.fixture
def store(db_url: str, clock: ManualClock) -> Iterator[Store]:
    with open_store(db_url, clock=clock) as opened:
        yield opened


def add(store: Store, name: str, **extra: object) -> int:
    new = NewConnector(name=name, type="demo", config={}, sync_interval=3600, **extra)  # type: ignore[arg-type]
    return store.add_connector(new)


def claim(store: Store, connector_id: int, lease_seconds: float = 60) -> Claim:
    request = ClaimRequest(
        worker="host:1", limit=1, lease_seconds=lease_seconds, connector_ids=[connector_id]
    )
    [claimed] = store.claim(request)
    return claimed


def sync(
    store: Store, clock: ManualClock, connector_id: int, *, ok: bool = True, seconds: float = 5.0
) -> None:
    """One whole sync taking `seconds` on the clock: COMPLETED with 10 records, or FAILED."""
    claimed = claim(store, connector_id)
    clock.advance(seconds)
    if ok:
        store.complete(
            claimed,
            Completion(duration=seconds, records_fetched=10, records_processed=10, attempts=1,
                       schema={}, state=None, next_sync_in=3600),
        )  # fmt: skip
    else:
        store.fail(
            claimed,
            Failure(duration=seconds, records_fetched=0, records_processed=0, attempts=1,
                    error="source said no", error_type="PermanentError", retry_in=60),
        )  # fmt: skip
    clock.advance(60)


def problems(store: Store, **thresholds: object) -> dict[str, HealthProblem]:
    """health's problems by key (check:connector)."""
    report = operations.health(store, thresholds=HealthThresholds(**thresholds))  # type: ignore[arg-type]
    return {p.key: p for p in report.problems}


# -- progress and syncs in flight ---------------------------------------------------------


def test_the_heartbeat_writes_records_so_far_only_under_its_lease(
    store: Store, clock: ManualClock
) -> None:
    a, b = add(store, "a"), add(store, "b")
    claim_a, claim_b = claim(store, a), claim(store, b)
    clock.advance(10)
    store.heartbeat(
        {a: claim_a.lease_token, b: "not-b's-token"},
        60,
        {a: SyncProgress(claim_a.sync_id, 1200, 1000), b: SyncProgress(claim_b.sync_id, 9, 9)},
    )
    running = {r.connector_name: r for r in store.status_summary().syncing}
    assert (running["a"].records_fetched, running["a"].records_processed) == (1200, 1000)
    assert running["a"].elapsed == pytest.approx(10, abs=0.01)
    assert running["a"].rate == pytest.approx(100, rel=0.01)
    assert running["a"].worker == "host:1"
    assert running["b"].records_processed == 0  # its lease is not ours: nothing written
    clock.advance(10)
    store.heartbeat({a: claim_a.lease_token}, 60, {a: SyncProgress(claim_a.sync_id, 3000, 2500)})
    [in_progress] = [
        s for s in store.history(HistoryFilter(status="IN_PROGRESS")) if s.connector_id == a
    ]
    assert in_progress.records_processed == 2500
    assert in_progress.elapsed == pytest.approx(20, abs=0.01)
    assert in_progress.duration is None


def test_a_connectors_typical_duration_is_the_median_of_its_last_20_completed(
    store: Store, clock: ManualClock
) -> None:
    a = add(store, "a")
    for _ in range(5):
        sync(store, clock, a, seconds=1000)  # older than the last 20: not counted
    for n in range(20):
        sync(store, clock, a, seconds=4 + n % 3)  # 4, 5, 6, ...: median 5
    sync(store, clock, a, ok=False, seconds=900)  # failures do not count either
    claim(store, a)
    [running] = store.status_summary().syncing
    assert running.typical_duration == pytest.approx(5.0)
    assert add(store, "fresh") and claim(store, store.find_connector("fresh").id)
    fresh = {r.connector_name: r for r in store.status_summary().syncing}["fresh"]
    assert fresh.typical_duration is None


# -- health thresholds ----------------------------------------------------------------------


def test_two_failures_in_a_row_are_a_warning_before_error(store: Store, clock: ManualClock) -> None:
    a = add(store, "flaky")
    sync(store, clock, a, ok=False)
    assert problems(store) == {}
    sync(store, clock, a, ok=False)
    failing = problems(store)[f"failures:{a}"]
    assert (failing.problem, failing.severity) == ("FAILING", "warning")
    assert "2 failures in a row" in failing.detail and "source said no" in failing.detail
    assert problems(store, failures_warn=3) == {}
    for _ in range(3):
        sync(store, clock, a, ok=False)
    parked = problems(store)[f"failures:{a}"]  # the same alert, escalated
    assert (parked.problem, parked.severity) == ("ERROR", "critical")


def test_a_sync_far_longer_than_usual_is_reported_while_it_runs(
    store: Store, clock: ManualClock
) -> None:
    a = add(store, "usually-5s", sync_timeout=1800)
    for _ in range(3):
        sync(store, clock, a, seconds=5)
    claimed = claim(store, a, lease_seconds=3600)
    clock.advance(599)  # 3x 5s is 15s; the floor is 10 minutes
    assert problems(store) == {}
    clock.advance(1)
    store.heartbeat({a: claimed.lease_token}, 3600, {a: SyncProgress(claimed.sync_id, 70, 70)})
    long = problems(store)[f"long_sync:{a}"]
    assert (long.problem, long.severity) == ("LONG_SYNC", "warning")
    assert "running for 10m" in long.detail and "usually takes 5.0s" in long.detail
    assert "70 records so far" in long.detail
    assert problems(store, long_sync=3600) == {}  # health's --long-sync
    store.set_alert_thresholds(a, AlertThresholds(long_sync=700))  # its own wins
    assert problems(store, long_sync=60) == {}
    clock.advance(1200)
    timeout = problems(store)[f"long_sync:{a}"]
    assert (timeout.problem, timeout.severity) == ("SYNC_TIMEOUT", "critical")
    assert "past its timeout of 30m" in timeout.detail


def test_a_connector_deleted_with_its_data_kept_is_no_longer_a_problem(
    store: Store, clock: ManualClock
) -> None:
    """Nothing runs it, so nothing could clear its failures: health and metrics reported
    it failing for ever (an adversarial pass). Deleting it forgets them, as enable does."""
    gone, kept = add(store, "gone"), add(store, "kept")
    for connector in (gone, kept):
        for ok in (True, False, False, True, False, False):
            sync(store, clock, connector, ok=ok)
    found = problems(store)
    assert {f"failures:{gone}", f"error_rate:{gone}", f"failures:{kept}"} <= set(found)
    operations.delete_connector(store, "gone", keep_data=True, force=False)
    found = problems(store)
    assert not [key for key in found if key.endswith(f":{gone}")], found
    assert f"failures:{kept}" in found and f"error_rate:{kept}" in found  # untouched
    gauges = {g.name: g for g in store.metrics_snapshot(86400).per_connector}
    assert (gauges["gone"].consecutive_failures, gauges["kept"].consecutive_failures) == (0, 2)


def test_thirty_percent_failures_in_the_window_trip_the_error_rate(
    store: Store, clock: ManualClock
) -> None:
    a, healthy = add(store, "a"), add(store, "healthy")
    for n in range(10):
        sync(store, clock, a, ok=n % 3 != 0 or n == 9)  # failures 0, 3, 6: never 2 in a row
    found = problems(store)
    rate = found[f"error_rate:{a}"]
    assert (rate.problem, rate.severity) == ("ERROR_RATE", "warning")
    assert "3 of 10 (30%)" in rate.detail and "24h" in rate.detail
    overall = found["error_rate:*"]
    assert (overall.connector_id, overall.severity) == (None, "critical")
    for _ in range(10):
        sync(store, clock, healthy)
    found = problems(store)
    assert f"error_rate:{a}" in found and "error_rate:*" not in found  # 3 of 20 overall
    assert problems(store, max_error_rate=0.3) == {}
    store.set_alert_thresholds(a, AlertThresholds(max_error_rate=0.5))
    assert f"error_rate:{a}" not in problems(store)
    store.set_alert_thresholds(a, AlertThresholds())
    clock.advance(86400)
    assert problems(store, overdue_after=10**6) == {}  # out of the window


def test_the_connector_own_thresholds_override_the_flags(store: Store) -> None:
    a = add(store, "a")
    assert store.alert_thresholds(a) == AlertThresholds()
    store.set_alert_thresholds(a, AlertThresholds(failures_warn=4, long_sync=60))
    assert store.alert_thresholds(a) == AlertThresholds(failures_warn=4, long_sync=60)
    store.set_alert_thresholds(a, AlertThresholds(max_error_rate=0.5))
    assert store.alert_thresholds(a) == AlertThresholds(max_error_rate=0.5)


# -- metrics ----------------------------------------------------------------------------------


def test_the_metrics_snapshot_counts_the_window_and_each_connector(
    store: Store, clock: ManualClock
) -> None:
    a, b, never = add(store, "a"), add(store, "b"), add(store, "never")
    sync(store, clock, a, seconds=5.0)  # exactly a bucket's bound: counted within it
    succeeded_at = clock.current - dt.timedelta(seconds=60)
    sync(store, clock, a, ok=False, seconds=120)
    sync(store, clock, b, seconds=0.5)
    claim(store, b)
    snapshot = store.metrics_snapshot(86400)
    assert snapshot.connectors == {"ACTIVE": 2, "SYNCING": 1}
    by_status = {row.status: row for row in snapshot.syncs}
    completed = by_status["COMPLETED"]
    assert (completed.count, completed.records, completed.duration_count) == (2, 20, 2)
    assert completed.duration_sum == pytest.approx(5.5)
    le = dict(zip(DURATION_BUCKETS, completed.duration_buckets, strict=True))
    assert (le[1.0], le[5.0], le[15.0]) == (1, 2, 2)
    assert (
        dict(zip(DURATION_BUCKETS, by_status["FAILED"].duration_buckets, strict=True))[300.0] == 1
    )
    assert (by_status["IN_PROGRESS"].count, by_status["IN_PROGRESS"].duration_count) == (1, 0)
    gauges = {g.name: g for g in snapshot.per_connector}
    assert gauges["a"].consecutive_failures == 1
    # its latest sync failed: its last success is the one before
    assert gauges["a"].last_success == pytest.approx(succeeded_at.timestamp(), abs=0.01)
    assert gauges["never"].last_success is None and never
    clock.advance(86400)
    assert store.metrics_snapshot(3600).syncs == []


def test_the_connectors_most_in_need_of_a_look_come_first_and_the_limit_keeps_them(
    store: Store, clock: ManualClock
) -> None:
    """Failing the longest, then never succeeded, then the longest without a success (ties
    by id), however each got there: `enable` clears the failures in a row of `reset`,
    whose latest sync failed; the limit cuts that one order."""
    names = ("s1", "s2", "s3", "s4", "s5", "never", "once", "twice", "reset")
    ids = {name: add(store, name) for name in names}
    for name in ("s1", "reset", "once", "s2", "s3", "s4", "s5"):
        sync(store, clock, ids[name])  # each one's success, in this order
    for name in ("once", "twice", "twice", "reset"):
        sync(store, clock, ids[name], ok=False)
    store.set_auto_sync(ids["reset"], True)
    order = ["twice", "once", "never", "s1", "reset", "s2", "s3", "s4", "s5"]
    for limit in (None, *range(1, len(order) + 1)):
        gauges = store.metrics_snapshot(3600, connector_series=limit).per_connector
        assert [g.name for g in gauges] == order[:limit], limit
    gauges = {g.name: g for g in store.metrics_snapshot(3600).per_connector}
    assert gauges["reset"].consecutive_failures == 0
    assert gauges["never"].last_success is None and gauges["twice"].last_success is None
    assert gauges["s1"].last_success < gauges["reset"].last_success < gauges["s2"].last_success  # type: ignore[operator]
    assert [g.name for g in store.metrics_snapshot(3600, "nobody").per_connector] == []


@pytest.mark.parametrize(
    ("start", "first", "apart"),
    [
        # .000100 and .000200: one millisecond
        (dt.datetime(2026, 11, 30, 12, 0, tzinfo=dt.UTC), 5.0001, 0.0001),
        # .000001 and .000002: one float8 of epoch seconds
        (dt.datetime(2300, 1, 1, tzinfo=dt.UTC), 5.000001, 0.000001),
    ],
)
def test_successes_a_moment_apart_keep_their_order_at_every_limit(
    store: Store, clock: ManualClock, start: dt.datetime, first: float, apart: float
) -> None:
    """`b` (the higher id) succeeds `apart` seconds before `a`: the order is the times',
    to the microsecond, whatever the limit (found in review: SQLite's julianday keeps
    milliseconds, and epoch seconds as float8 lose microseconds after 2242)."""
    clock.current = start
    a, b = add(store, "a"), add(store, "b")
    claim_a, claim_b = claim(store, a), claim(store, b)
    done = Completion(duration=5, records_fetched=10, records_processed=10, attempts=1,
                      schema={}, state=None, next_sync_in=3600)  # fmt: skip
    clock.advance(first)
    store.complete(claim_b, done)
    clock.advance(apart)
    store.complete(claim_a, done)
    for limit in (None, 1, 2):
        gauges = store.metrics_snapshot(3600, connector_series=limit).per_connector
        assert [g.name for g in gauges] == ["b", "a"][:limit], limit


# -- alert state -------------------------------------------------------------------------------


def problem(connector_id: int, severity: str = "warning", name: str = "FAILING") -> HealthProblem:
    return HealthProblem(name, connector_id, f"c{connector_id}", "detail", severity, "failures")


def test_each_problem_is_owed_once_and_its_clearing_once(store: Store) -> None:
    found = [problem(1), problem(2)]
    owed = store.track_alerts("*", found, 120)
    assert [(m.key, m.kind) for m in owed] == [("failures:1", "problem"), ("failures:2", "problem")]
    assert store.track_alerts("*", found, 120) == []  # held by the first run meanwhile
    store.alerts_sent("*", owed, [])
    assert store.track_alerts("*", found, 120) == []
    assert [m.key for m in store.open_alerts("*")] == ["failures:1", "failures:2"]
    escalated = store.track_alerts("*", [problem(1, "critical", "ERROR"), problem(2)], 120)
    assert [(m.key, m.problem, m.severity) for m in escalated] == [
        ("failures:1", "ERROR", "critical")
    ]
    store.alerts_sent("*", escalated, [])
    cleared = store.track_alerts("*", [problem(1, "critical", "ERROR")], 120)
    assert [(m.key, m.kind) for m in cleared] == [("failures:2", "resolved")]
    store.alerts_sent("*", [], cleared)  # not delivered: owed again
    again = store.track_alerts("*", [problem(1, "critical", "ERROR")], 120)
    assert [(m.key, m.kind) for m in again] == [("failures:2", "resolved")]
    store.alerts_sent("*", again, [])
    assert store.track_alerts("*", [problem(1, "critical", "ERROR")], 120) == []
    assert [m.key for m in store.open_alerts("*")] == ["failures:1"]


def test_a_problem_that_clears_before_it_is_sent_is_forgotten(store: Store) -> None:
    owed = store.track_alerts("*", [problem(1)], 120)
    store.alerts_sent("*", [], owed)  # delivery failed
    assert store.track_alerts("*", [], 120) == []  # cleared meanwhile: nothing to say
    assert store.open_alerts("*") == []


def test_alert_scopes_are_apart(store: Store) -> None:
    store.alerts_sent("*", store.track_alerts("*", [problem(1)], 120), [])
    owed = store.track_alerts("tenant-a", [], 120)  # a tenant's run resolves nothing of '*'
    assert owed == [] and [m.key for m in store.open_alerts("*")] == ["failures:1"]


def test_a_held_message_is_owed_again_once_the_hold_expires(
    store: Store, clock: ManualClock
) -> None:
    assert store.track_alerts("*", [problem(1)], 120)  # a run that died while sending
    clock.advance(119)
    assert store.track_alerts("*", [problem(1)], 120) == []
    clock.advance(2)
    assert [m.key for m in store.track_alerts("*", [problem(1)], 120)] == ["failures:1"]
