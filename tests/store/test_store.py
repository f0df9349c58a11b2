"""The Store contract: the same behaviour on SQLite and PostgreSQL.

Tests that need time to pass use `clocked_store` and move its ManualClock; the others run
on the database's own clock.
"""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.db import Database
from connector_sync.exceptions import AlreadyExists, BadInput, LeaseLost, NotFound
from connector_sync.health import judge
from connector_sync.models import connector_syncs, connectors, dataset_records, datasets
from connector_sync.store import Store, open_store
from connector_sync.store.base import (
    Claim,
    ClaimRequest,
    Completion,
    Failure,
    HealthProblem,
    HealthThresholds,
    HistoryFilter,
    ManualClock,
    NewConnector,
)

UTC = dt.UTC
FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=UTC)


def add(store: Store, name: str, **kw: Any) -> int:
    kw.setdefault("type", "demo")
    kw.setdefault("config", {"records": 3})
    kw.setdefault("sync_interval", 3600)
    return store.add_connector(NewConnector(name=name, **kw))


def claim_one(store: Store, **kw: Any) -> list[Claim]:
    kw.setdefault("worker", "host:1")
    kw.setdefault("limit", 10)
    kw.setdefault("lease_seconds", 60)
    kw.setdefault("due_before", FAR_FUTURE)
    return store.claim(ClaimRequest(**kw))


def completion(**kw: Any) -> Completion:
    values: dict[str, Any] = {
        "duration": 1.0, "records_fetched": 1, "records_processed": 1, "attempts": 1,
        "schema": {}, "state": None, "next_sync_in": 3600,
    }  # fmt: skip
    return Completion(**{**values, **kw})


def failure(**kw: Any) -> Failure:
    values: dict[str, Any] = {
        "duration": 1.0, "records_fetched": 0, "records_processed": 0, "attempts": 1,
        "error": "x", "error_type": "X", "retry_in": 60,
    }  # fmt: skip
    return Failure(**{**values, **kw})


def health_problems(store: Store, **thresholds: Any) -> list[HealthProblem]:
    """What `health` reports from the store's facts (health.judge is pure)."""
    limits = HealthThresholds(**thresholds)
    return judge(store.health_facts(limits), limits)


def set_columns(db: Database, connector_id: int, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(sa.update(connectors).where(connectors.c.id == connector_id).values(**values))


def row(db: Database, table: sa.Table, id_: int) -> dict[str, Any]:
    with db.begin() as conn:
        return dict(conn.execute(sa.select(table).where(table.c.id == id_)).mappings().one())


def count(db: Database, table: sa.Table) -> int:
    with db.begin() as conn:
        return int(conn.execute(sa.select(sa.func.count()).select_from(table)).scalar_one())


def test_new_connector_is_due_at_once(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    connector_id = add(store, "a")
    connector = store.find_connector("a")
    assert connector.id == connector_id
    assert connector.status == "ACTIVE"
    assert connector.next_sync_at == connector.created_at == clock()
    assert [c.id for c in store.due_connectors()] == [connector_id]


def test_due_is_most_overdue_first_and_only_active_auto_sync(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    now = clock()
    ids = {name: add(store, name) for name in ("old", "older", "future", "off", "broken")}
    set_columns(store.database, ids["old"], next_sync_at=now - dt.timedelta(minutes=1))
    set_columns(store.database, ids["older"], next_sync_at=now - dt.timedelta(hours=1))
    set_columns(store.database, ids["future"], next_sync_at=now + dt.timedelta(hours=1))
    set_columns(store.database, ids["off"], auto_sync=False)
    set_columns(store.database, ids["broken"], status="ERROR")
    assert [c.name for c in store.due_connectors()] == ["older", "old"]
    assert [c.name for c in store.due_connectors(limit=1)] == ["older"]
    clock.advance(3600)  # the future one's time comes
    assert [c.name for c in store.due_connectors()] == ["older", "old", "future"]


def test_due_filters_by_tenant(store: Store) -> None:
    add(store, "a", tenant="t1")
    add(store, "a", tenant="t2")
    assert [c.tenant for c in store.due_connectors(tenant="t2")] == ["t2"]


def test_duplicate_name_in_tenant_is_rejected(store: Store) -> None:
    add(store, "a")
    with pytest.raises(AlreadyExists, match="already exists in tenant 'default'"):
        add(store, "a")
    add(store, "a", tenant="other")  # same name, other tenant: fine


def test_find_connector_by_id_name_and_ambiguity(store: Store) -> None:
    first = add(store, "a", tenant="t1")
    add(store, "a", tenant="t2")
    assert store.find_connector(str(first)).tenant == "t1"
    assert store.find_connector("a", "t2").tenant == "t2"
    with pytest.raises(BadInput, match="exists in tenants t1, t2: give its id or a tenant"):
        store.find_connector("a")
    with pytest.raises(NotFound):
        store.find_connector("missing")


def test_connector_names_complete_a_prefix_literally(store: Store) -> None:
    for name, tenant in (("orders", "t1"), ("orders", "t2"), ("order%s", "t1"), ("users", "t1")):
        add(store, name, tenant=tenant)
    assert store.connector_names("ord", None, limit=10) == ["order%s", "orders"]
    assert store.connector_names("order%", None, limit=10) == ["order%s"]  # % is no wildcard
    assert store.connector_names("", "t2", limit=10) == ["orders"]
    assert store.connector_names("", None, limit=2) == ["order%s", "orders"]


def test_claim_opens_sync_and_dataset_and_takes_the_connector_out_of_due(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    connector_id = add(store, "a")
    [claim] = claim_one(store)
    connector = store.find_connector("a")
    assert connector.status == "SYNCING"
    assert connector.lease_owner == "host:1"
    assert connector.lease_expires_at > store.now()
    assert connector.lease_expires_at == clock() + dt.timedelta(seconds=60)
    assert claim.lease_token and len(claim.lease_token) >= 32
    sync = row(store.database, connector_syncs, claim.sync_id)
    assert (sync["status"], sync["connector_id"], sync["trigger"]) == (
        "IN_PROGRESS",
        connector_id,
        "schedule",
    )
    assert sync["started_at"] == claim.started_at == clock()
    assert row(store.database, datasets, claim.dataset_id)["status"] == "BUILDING"
    assert store.due_connectors() == []
    assert claim_one(store) == []


def test_claim_respects_limit_and_due_before(store: Store) -> None:
    for name in "abc":
        add(store, name)
    past = store.now() - dt.timedelta(hours=1)
    assert claim_one(store, due_before=past) == []
    assert len(claim_one(store, limit=2)) == 2
    assert len(claim_one(store, limit=2)) == 1


def test_claim_without_due_before_takes_what_is_due_on_the_clock(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    add(store, "a", sync_interval=60)
    [claim] = claim_one(store, due_before=None)
    store.complete(claim, completion(next_sync_in=60))
    clock.advance(59)
    assert claim_one(store, due_before=None) == []
    clock.advance(1)
    assert [c.name for c in claim_one(store, due_before=None)] == ["a"]


def test_each_claim_gets_its_own_token(store: Store) -> None:
    add(store, "a")
    add(store, "b")
    claims = claim_one(store)
    assert len({c.lease_token for c in claims}) == 2


def test_manual_claim_ignores_schedule_but_not_a_live_lease(store: Store) -> None:
    connector_id = add(store, "a")
    set_columns(store.database, connector_id, next_sync_at=FAR_FUTURE, auto_sync=False)
    [claim] = claim_one(store, connector_ids=[connector_id])
    assert claim.trigger == "manual"
    assert row(store.database, connector_syncs, claim.sync_id)["trigger"] == "manual"
    assert claim_one(store, connector_ids=[connector_id]) == []


def test_database_allows_one_open_sync_per_connector(store: Store) -> None:
    add(store, "a")
    [claim] = claim_one(store)
    with pytest.raises(sa.exc.IntegrityError), store.database.engine.begin() as conn:
        conn.execute(
            sa.insert(connector_syncs).values(
                connector_id=claim.connector_id,
                tenant="default",
                status="IN_PROGRESS",
                started_at=dt.datetime.now(UTC),
            )
        )


def test_complete_records_success_and_schedules_next(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    add(store, "a", sync_interval=600)
    [claim] = claim_one(store)
    clock.advance(5)  # the sync took five seconds
    store.append_records(claim.dataset_id, 0, ['{"id":1}', '{"id":2}', '{"id":3}'])
    outcome = store.complete(
        claim,
        completion(
            duration=0.5,
            records_fetched=3,
            records_processed=3,
            schema={"id": ["integer"]},
            state={"cursor": 3},
            next_sync_in=600,
        ),
    )
    connector = store.find_connector("a")
    assert outcome is not None
    assert outcome.connector_status == connector.status == "ACTIVE"
    assert outcome.next_sync_at == connector.next_sync_at
    assert connector.last_sync_status == "COMPLETED"
    assert connector.state == {"cursor": 3}
    assert connector.lease_owner is None and connector.lease_expires_at is None
    assert connector.last_sync_at == clock()
    delta = connector.next_sync_at - connector.last_sync_at
    assert delta == dt.timedelta(seconds=600)
    sync = row(store.database, connector_syncs, claim.sync_id)
    assert (sync["status"], sync["records_fetched"], sync["dataset_id"]) == (
        "COMPLETED",
        3,
        claim.dataset_id,
    )
    assert sync["completed_at"] == clock()
    dataset = row(store.database, datasets, claim.dataset_id)
    assert (dataset["status"], dataset["record_count"]) == ("READY", 3)
    assert dataset["schema"] == {"id": ["integer"]}
    assert store.due_connectors() == []
    assert [d.status for d in store.datasets_of(claim.connector_id)] == ["READY"]


def test_failures_back_off_then_park_in_error_until_enabled(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    connector_id = add(store, "a", sync_interval=3600)
    for attempt in range(1, 6):
        [claim] = claim_one(store, due_before=None)
        store.append_records(claim.dataset_id, 0, ['{"n":1}'])  # a partial batch
        outcome = store.fail(
            claim,
            failure(
                error="boom",
                error_type="RuntimeError",
                duration=0.1,
                records_fetched=1,
                records_processed=1,
                retry_in=30.0 * attempt,
            ),
        )
        connector = store.find_connector("a")
        assert connector.consecutive_failures == attempt
        assert connector.last_sync_error == "boom"
        wait = connector.next_sync_at - connector.last_sync_at
        assert wait == dt.timedelta(seconds=30 * attempt)
        expected = "ERROR" if attempt == 5 else "ACTIVE"
        assert outcome is not None
        assert outcome.connector_status == connector.status == expected
        assert outcome.consecutive_failures == attempt
        sync = row(store.database, connector_syncs, claim.sync_id)
        assert (sync["status"], sync["error"], sync["dataset_id"]) == ("FAILED", "boom", None)
        # The partial dataset is gone, records included.
        assert count(store.database, datasets) == 0
        assert count(store.database, dataset_records) == 0
        clock.advance(30 * attempt - 1)
        assert store.due_connectors() == []  # backing off
        clock.advance(1)
    assert store.due_connectors() == []  # ERROR is not due, though its time has come
    store.set_auto_sync(connector_id, True)
    connector = store.find_connector("a")
    assert (connector.status, connector.consecutive_failures) == ("ACTIVE", 0)
    assert [c.id for c in store.due_connectors()] == [connector_id]


def test_disable_keeps_the_rest_and_enable_leaves_a_held_connector_syncing(store: Store) -> None:
    connector_id = add(store, "a")
    store.set_auto_sync(connector_id, False)
    connector = store.find_connector("a")
    assert (connector.auto_sync, connector.status) == (False, "ACTIVE")
    assert store.due_connectors() == []
    [claim] = claim_one(store, connector_ids=[connector_id])
    store.set_auto_sync(connector_id, True)
    assert store.find_connector("a").status == "SYNCING"  # its finish makes it ACTIVE
    store.complete(claim, completion())
    assert (store.find_connector("a").status, store.find_connector("a").auto_sync) == (
        "ACTIVE",
        True,
    )


def test_reset_state_forgets_the_cursor(store: Store) -> None:
    connector_id = add(store, "a")
    [claim] = claim_one(store)
    store.complete(claim, completion(state={"cursor": 7}))
    assert store.find_connector("a").state == {"cursor": 7}
    store.reset_state(connector_id)
    assert store.find_connector("a").state is None


def test_heartbeat_extends_and_reports_a_lost_lease(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    add(store, "a")
    add(store, "b")
    claim_a, claim_b = claim_one(store, lease_seconds=10)
    before = store.find_connector("a").lease_expires_at
    set_columns(store.database, claim_b.connector_id, lease_token="somebody-else")
    clock.advance(5)
    lost = store.heartbeat(
        {claim_a.connector_id: claim_a.lease_token, claim_b.connector_id: claim_b.lease_token},
        lease_seconds=600,
    )
    assert lost == {claim_b.connector_id}
    after = store.find_connector("a").lease_expires_at
    assert after > before + dt.timedelta(seconds=500)
    assert after == clock() + dt.timedelta(seconds=600)
    assert store.heartbeat({}, lease_seconds=600) == set()


def test_finish_under_a_lost_lease_writes_nothing(store: Store) -> None:
    add(store, "a")
    [claim] = claim_one(store)
    set_columns(store.database, claim.connector_id, lease_token="new-owner")
    with pytest.raises(LeaseLost):
        store.complete(claim, completion())
    with pytest.raises(LeaseLost):
        store.fail(claim, failure(retry_in=1))
    with pytest.raises(LeaseLost):
        store.cancel(claim, reason="cancelled: test", duration=1.0)
    assert row(store.database, connector_syncs, claim.sync_id)["status"] == "IN_PROGRESS"
    assert row(store.database, datasets, claim.dataset_id)["status"] == "BUILDING"
    assert store.find_connector("a").status == "SYNCING"


def test_cancel_gives_the_connector_back_due_now(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    add(store, "a")
    [claim] = claim_one(store)
    store.append_records(claim.dataset_id, 0, ['{"n":1}'])
    clock.advance(30)
    store.cancel(claim, reason="cancelled: worker received SIGTERM", duration=30.0)
    connector = store.find_connector("a")
    assert (connector.status, connector.lease_owner, connector.consecutive_failures) == (
        "ACTIVE",
        None,
        0,
    )
    assert connector.next_sync_at == clock()
    [sync] = store.syncs_by_id([claim.sync_id])
    assert (sync.status, sync.error, sync.error_type) == (
        "CANCELLED",
        "cancelled: worker received SIGTERM",
        "Cancelled",
    )
    assert count(store.database, datasets) == count(store.database, dataset_records) == 0
    assert [c.name for c in store.due_connectors()] == ["a"]


def test_discard_records_empties_the_building_dataset(store: Store) -> None:
    add(store, "a")
    [claim] = claim_one(store)
    store.append_records(claim.dataset_id, 0, ['{"n":1}', '{"n":2}'])
    store.discard_records(claim)
    assert count(store.database, dataset_records) == 0
    store.append_records(claim.dataset_id, 0, ['{"n":3}'])  # the next try starts at seq 1
    store.complete(claim, completion())
    with store.database.begin() as conn:
        stored = conn.execute(sa.select(dataset_records.c.seq, dataset_records.c.data)).all()
    assert [tuple(r) for r in stored] == [(1, {"n": 3})]


def test_recover_expired_lease(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    add(store, "a")
    add(store, "b")
    [claim_a] = claim_one(store, worker="dead-host:42", limit=1, lease_seconds=10)
    [claim_b] = claim_one(store, worker="dead-host:42", limit=1, lease_seconds=60)
    store.append_records(claim_a.dataset_id, 0, ['{"partial": true}'])
    expired_at = clock() + dt.timedelta(seconds=10)
    clock.advance(10)
    assert store.recover_expired_leases() == []  # expires at, not yet past
    clock.advance(1)
    recovered = store.recover_expired_leases()
    assert [r.name for r in recovered] == ["a"]
    assert (recovered[0].worker, recovered[0].lease_expires_at, recovered[0].syncs) == (
        "dead-host:42",
        expired_at,
        [claim_a.sync_id],
    )
    connector = store.find_connector("a")
    assert connector.status == "ACTIVE" and connector.lease_owner is None
    assert [c.name for c in store.due_connectors()] == ["a"]
    sync = row(store.database, connector_syncs, claim_a.sync_id)
    assert sync["status"] == "FAILED"
    assert sync["error"].startswith("abandoned: lease of dead-host:42 expired at ")
    assert sync["error"] == (
        f"abandoned: lease of dead-host:42 expired at {expired_at:%Y-%m-%dT%H:%M:%SZ}"
    )
    assert sync["error"] == recovered[0].reason
    with store.database.begin() as conn:
        assert conn.execute(sa.select(datasets.c.id)).scalars().all() == [claim_b.dataset_id]
    assert count(store.database, dataset_records) == 0
    assert store.find_connector("b").status == "SYNCING"  # its lease is live
    assert store.recover_expired_leases() == []
    assert connector.consecutive_failures == 1
    assert connector.last_sync_error == sync["error"]


def test_recover_releases_an_expired_lease_that_has_no_token(
    clocked_store: Store, clock: ManualClock
) -> None:
    """A connector left SYNCING by hand (or by a tool that wrote no token) is still
    released once its lease expires, as health promises."""
    store = clocked_store
    connector_id = add(store, "stuck")
    set_columns(
        store.database, connector_id, status="SYNCING", lease_owner="gone:1",
        lease_expires_at=clock() - dt.timedelta(seconds=1),
    )  # fmt: skip
    assert [p.problem for p in health_problems(store)] == ["LEASE_EXPIRED"]
    [recovered] = store.recover_expired_leases()
    assert (recovered.name, recovered.worker, recovered.syncs) == ("stuck", "gone:1", [])
    assert store.find_connector("stuck").status == "ACTIVE"
    assert health_problems(store) == []


def test_a_source_that_keeps_killing_its_worker_ends_in_error(
    clocked_store: Store, clock: ManualClock
) -> None:
    store = clocked_store
    add(store, "crashy", max_consecutive_failures=2)
    for expected in ("ACTIVE", "ERROR"):
        claim_one(store, lease_seconds=60)
        clock.advance(61)
        assert len(store.recover_expired_leases()) == 1
        assert store.find_connector("crashy").status == expected


def test_history_newest_first_with_filters(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    add(store, "a")
    add(store, "b")
    claim_a, claim_b = claim_one(store)
    store.complete(claim_a, completion())
    store.fail(claim_b, failure(error="e", error_type="E", retry_in=60))
    clock.advance(3600)
    [claim_c] = claim_one(store, connector_ids=[claim_a.connector_id])
    rows = store.history(HistoryFilter())
    assert {r.connector_name for r in rows} == {"a", "b"}
    # Newest first; a and b started together, and then the higher id goes first.
    first_two = sorted([claim_a.sync_id, claim_b.sync_id], reverse=True)
    assert [r.id for r in rows] == [claim_c.sync_id, *first_two]
    assert [r.status for r in store.history(HistoryFilter(status="FAILED"))] == ["FAILED"]
    assert [
        r.connector_name for r in store.history(HistoryFilter(connector_id=claim_a.connector_id))
    ] == ["a", "a"]
    assert len(store.history(HistoryFilter(limit=1))) == 1
    assert [s.id for s in store.syncs_by_id([claim_b.sync_id, 10**6, claim_a.sync_id])] == [
        claim_b.sync_id,
        claim_a.sync_id,
    ]


def test_status_and_health_follow_the_clock(clocked_store: Store, clock: ManualClock) -> None:
    store = clocked_store
    add(store, "late")
    add(store, "held")
    assert health_problems(store) == []
    summary = store.status_summary()
    assert (summary.connectors, summary.due_now, summary.checked_at) == ({"ACTIVE": 2}, 2, clock())
    assert summary.oldest_due_since == clock()
    [claim] = claim_one(store, limit=1, due_before=None)  # "late": the older id goes first
    assert claim.name == "late"
    store.complete(claim, completion(records_processed=7, next_sync_in=60))
    [held] = claim_one(store, due_before=None)
    clock.advance(3600 + 60)
    problems = {p.problem: p for p in health_problems(store, overdue_after=3600)}
    assert set(problems) == {"OVERDUE", "LEASE_EXPIRED", "SYNC_TIMEOUT"}
    assert problems["SYNC_TIMEOUT"].connector_name == "held"  # past the 1h default timeout
    assert problems["OVERDUE"].connector_name == "late"
    assert problems["LEASE_EXPIRED"].connector_name == held.name == "held"
    assert "lease of host:1 expired at" in problems["LEASE_EXPIRED"].detail
    summary = store.status_summary()
    assert (summary.connectors, summary.due_now) == ({"ACTIVE": 1, "SYNCING": 1}, 1)
    assert summary.syncs_last_24h == {"COMPLETED": 1, "IN_PROGRESS": 1}
    assert summary.records_last_24h == 7
    clock.advance(86400)  # a day later the syncs are no longer "the last 24 hours"
    assert store.status_summary().syncs_last_24h == {}


def test_times_come_from_the_database_without_a_clock(store: Store) -> None:
    """No injected clock: PostgreSQL's now(), this host's UTC clock on SQLite."""
    before = dt.datetime.now(UTC)
    add(store, "a")
    now = store.now()
    assert now.tzinfo is not None
    assert before - dt.timedelta(seconds=5) <= now <= dt.datetime.now(UTC) + dt.timedelta(seconds=5)
    created = store.find_connector("a").created_at
    assert before - dt.timedelta(seconds=5) <= created <= now


def test_concurrent_claims_never_hand_out_a_connector_twice(db_url: str) -> None:
    """Four workers, each with its own engine (as separate processes would have)."""
    with open_store(db_url) as store:
        for i in range(60):
            add(store, f"c{i}")
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with open_store(db_url) as store:
                while True:
                    claims = claim_one(store, worker=f"w:{n}", limit=3)
                    if not claims:
                        return
                    with lock:
                        claimed.extend(c.connector_id for c in claims)
        except BaseException as exc:  # reported below
            errors.append(exc)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    assert sorted(claimed) == sorted(set(claimed))
    assert len(claimed) == 60
