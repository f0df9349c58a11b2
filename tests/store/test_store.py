"""Repository contract: the same behaviour on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import threading
from typing import Any

import pytest
import sqlalchemy as sa

from connector_sync.db import Database
from connector_sync.exceptions import AlreadyExists, BadInput, LeaseLost, NotFound
from connector_sync.models import connector_syncs, connectors, dataset_records, datasets
from connector_sync.repository import Claim, Repository

UTC = dt.UTC
FAR_FUTURE = dt.datetime(2100, 1, 1, tzinfo=UTC)


def add(repo: Repository, name: str, **kw: Any) -> int:
    kw.setdefault("type", "demo")
    kw.setdefault("config", {"records": 3})
    kw.setdefault("sync_interval", 3600)
    return repo.add_connector(name=name, **kw)


def claim_one(repo: Repository, **kw: Any) -> list[Claim]:
    kw.setdefault("worker", "host:1")
    kw.setdefault("limit", 10)
    kw.setdefault("lease_seconds", 60)
    kw.setdefault("due_before", FAR_FUTURE)
    return repo.claim(**kw)


def set_columns(db: Database, connector_id: int, **values: Any) -> None:
    with db.begin() as conn:
        conn.execute(sa.update(connectors).where(connectors.c.id == connector_id).values(**values))


def row(db: Database, table: sa.Table, id_: int) -> dict[str, Any]:
    with db.begin() as conn:
        return dict(conn.execute(sa.select(table).where(table.c.id == id_)).mappings().one())


def test_new_connector_is_due_at_once(repo: Repository) -> None:
    connector_id = add(repo, "a")
    connector = repo.find_connector("a")
    assert connector["id"] == connector_id
    assert connector["status"] == "ACTIVE"
    assert connector["next_sync_at"] == connector["created_at"]
    assert [c["id"] for c in repo.due_connectors()] == [connector_id]


def test_due_is_most_overdue_first_and_only_active_auto_sync(repo: Repository) -> None:
    now = repo.database_now()
    ids = {name: add(repo, name) for name in ("old", "older", "future", "off", "broken")}
    set_columns(repo.db, ids["old"], next_sync_at=now - dt.timedelta(minutes=1))
    set_columns(repo.db, ids["older"], next_sync_at=now - dt.timedelta(hours=1))
    set_columns(repo.db, ids["future"], next_sync_at=now + dt.timedelta(hours=1))
    set_columns(repo.db, ids["off"], auto_sync=False)
    set_columns(repo.db, ids["broken"], status="ERROR")
    assert [c["name"] for c in repo.due_connectors()] == ["older", "old"]
    assert [c["name"] for c in repo.due_connectors(limit=1)] == ["older"]


def test_due_filters_by_tenant(repo: Repository) -> None:
    add(repo, "a", tenant="t1")
    add(repo, "a", tenant="t2")
    assert [c["tenant"] for c in repo.due_connectors(tenant="t2")] == ["t2"]


def test_duplicate_name_in_tenant_is_rejected(repo: Repository) -> None:
    add(repo, "a")
    with pytest.raises(AlreadyExists, match="already exists in tenant 'default'"):
        add(repo, "a")
    add(repo, "a", tenant="other")  # same name, other tenant: fine


def test_find_connector_by_id_name_and_ambiguity(repo: Repository) -> None:
    first = add(repo, "a", tenant="t1")
    add(repo, "a", tenant="t2")
    assert repo.find_connector(str(first))["tenant"] == "t1"
    assert repo.find_connector("a", "t2")["tenant"] == "t2"
    with pytest.raises(BadInput, match="exists in tenants t1, t2"):
        repo.find_connector("a")
    with pytest.raises(NotFound):
        repo.find_connector("missing")


def test_claim_opens_sync_and_dataset_and_takes_the_connector_out_of_due(repo: Repository) -> None:
    connector_id = add(repo, "a")
    [claim] = claim_one(repo)
    connector = repo.find_connector("a")
    assert connector["status"] == "SYNCING"
    assert connector["lease_owner"] == "host:1"
    assert connector["lease_expires_at"] > repo.database_now()
    assert claim.lease_token and len(claim.lease_token) >= 32
    sync = row(repo.db, connector_syncs, claim.sync_id)
    assert (sync["status"], sync["connector_id"], sync["trigger"]) == (
        "IN_PROGRESS",
        connector_id,
        "schedule",
    )
    assert row(repo.db, datasets, claim.dataset_id)["status"] == "BUILDING"
    assert repo.due_connectors() == []
    assert claim_one(repo) == []


def test_claim_respects_limit_and_due_before(repo: Repository) -> None:
    for name in "abc":
        add(repo, name)
    past = repo.database_now() - dt.timedelta(hours=1)
    assert claim_one(repo, due_before=past) == []
    assert len(claim_one(repo, limit=2)) == 2
    assert len(claim_one(repo, limit=2)) == 1


def test_each_claim_gets_its_own_token(repo: Repository) -> None:
    add(repo, "a")
    add(repo, "b")
    claims = claim_one(repo)
    assert len({c.lease_token for c in claims}) == 2


def test_manual_claim_ignores_schedule_but_not_a_live_lease(repo: Repository) -> None:
    connector_id = add(repo, "a")
    set_columns(repo.db, connector_id, next_sync_at=FAR_FUTURE, auto_sync=False)
    [claim] = claim_one(repo, connector_ids=[connector_id])
    assert claim.trigger == "manual"
    assert claim_one(repo, connector_ids=[connector_id]) == []


def test_database_allows_one_open_sync_per_connector(repo: Repository) -> None:
    add(repo, "a")
    [claim] = claim_one(repo)
    with pytest.raises(sa.exc.IntegrityError), repo.db.engine.begin() as conn:
        conn.execute(
            sa.insert(connector_syncs).values(
                connector_id=claim.connector_id,
                tenant="default",
                status="IN_PROGRESS",
                started_at=dt.datetime.now(UTC),
            )
        )


def test_complete_records_success_and_schedules_next(repo: Repository) -> None:
    add(repo, "a", sync_interval=600)
    [claim] = claim_one(repo)
    outcome = repo.complete(
        claim,
        duration=0.5,
        records_fetched=3,
        records_processed=3,
        schema={"id": ["integer"]},
        state={"cursor": 3},
    )
    connector = repo.find_connector("a")
    assert outcome.connector_status == connector["status"] == "ACTIVE"
    assert connector["last_sync_status"] == "COMPLETED"
    assert connector["state"] == {"cursor": 3}
    assert connector["lease_owner"] is None and connector["lease_expires_at"] is None
    delta = connector["next_sync_at"] - connector["last_sync_at"]
    assert dt.timedelta(seconds=599) <= delta <= dt.timedelta(seconds=601)
    sync = row(repo.db, connector_syncs, claim.sync_id)
    assert (sync["status"], sync["records_fetched"], sync["dataset_id"]) == (
        "COMPLETED",
        3,
        claim.dataset_id,
    )
    dataset = row(repo.db, datasets, claim.dataset_id)
    assert (dataset["status"], dataset["record_count"]) == ("READY", 3)
    assert dataset["schema"] == {"id": ["integer"]}
    assert repo.due_connectors() == []


def test_failures_back_off_then_park_in_error_until_enabled(repo: Repository) -> None:
    connector_id = add(repo, "a", sync_interval=3600)
    for attempt in range(1, 6):
        set_columns(repo.db, connector_id, next_sync_at=repo.database_now())
        [claim] = claim_one(repo)
        with repo.db.begin() as conn:  # a partial batch was written before the failure
            conn.execute(
                sa.insert(dataset_records).values(dataset_id=claim.dataset_id, seq=1, data={"n": 1})
            )
        outcome = repo.fail(
            claim,
            error="boom",
            error_type="RuntimeError",
            duration=0.1,
            records_fetched=1,
            records_processed=1,
            retry_in=30.0 * attempt,
        )
        connector = repo.find_connector("a")
        assert connector["consecutive_failures"] == attempt
        assert connector["last_sync_error"] == "boom"
        wait = connector["next_sync_at"] - connector["last_sync_at"]
        assert (
            dt.timedelta(seconds=30 * attempt - 1) <= wait <= dt.timedelta(seconds=30 * attempt + 1)
        )
        expected = "ERROR" if attempt == 5 else "ACTIVE"
        assert outcome.connector_status == connector["status"] == expected
        sync = row(repo.db, connector_syncs, claim.sync_id)
        assert (sync["status"], sync["error"], sync["dataset_id"]) == ("FAILED", "boom", None)
        with repo.db.begin() as conn:  # the partial dataset is gone, records included
            assert conn.execute(sa.select(sa.func.count()).select_from(datasets)).scalar() == 0
            assert (
                conn.execute(sa.select(sa.func.count()).select_from(dataset_records)).scalar() == 0
            )
    set_columns(repo.db, connector_id, next_sync_at=repo.database_now())
    assert repo.due_connectors() == []  # ERROR is not due
    repo.set_auto_sync(connector_id, True)
    connector = repo.find_connector("a")
    assert (connector["status"], connector["consecutive_failures"]) == ("ACTIVE", 0)
    assert [c["id"] for c in repo.due_connectors()] == [connector_id]


def test_heartbeat_extends_and_reports_a_lost_lease(repo: Repository) -> None:
    add(repo, "a")
    add(repo, "b")
    claim_a, claim_b = claim_one(repo, lease_seconds=10)
    before = repo.find_connector("a")["lease_expires_at"]
    set_columns(repo.db, claim_b.connector_id, lease_token="somebody-else")
    lost = repo.heartbeat(
        {claim_a.connector_id: claim_a.lease_token, claim_b.connector_id: claim_b.lease_token},
        lease_seconds=600,
    )
    assert lost == {claim_b.connector_id}
    assert repo.find_connector("a")["lease_expires_at"] > before + dt.timedelta(seconds=500)


def test_finish_under_a_lost_lease_writes_nothing(repo: Repository) -> None:
    add(repo, "a")
    [claim] = claim_one(repo)
    set_columns(repo.db, claim.connector_id, lease_token="new-owner")
    with pytest.raises(LeaseLost):
        repo.complete(
            claim, duration=1, records_fetched=1, records_processed=1, schema={}, state=None
        )
    with pytest.raises(LeaseLost):
        repo.fail(
            claim,
            error="x",
            error_type="X",
            duration=1,
            records_fetched=0,
            records_processed=0,
            retry_in=1,
        )
    assert row(repo.db, connector_syncs, claim.sync_id)["status"] == "IN_PROGRESS"
    assert row(repo.db, datasets, claim.dataset_id)["status"] == "BUILDING"
    assert repo.find_connector("a")["status"] == "SYNCING"


def test_recover_expired_lease(repo: Repository) -> None:
    add(repo, "a")
    add(repo, "b")
    claim_a, claim_b = claim_one(repo, worker="dead-host:42")
    with repo.db.begin() as conn:
        conn.execute(
            sa.insert(dataset_records).values(
                dataset_id=claim_a.dataset_id, seq=1, data={"partial": True}
            )
        )
    expired = repo.database_now() - dt.timedelta(seconds=5)
    set_columns(repo.db, claim_a.connector_id, lease_expires_at=expired)
    recovered = repo.recover_expired_leases()
    assert [r["name"] for r in recovered] == ["a"]
    connector = repo.find_connector("a")
    assert connector["status"] == "ACTIVE" and connector["lease_owner"] is None
    assert [c["name"] for c in repo.due_connectors()] == ["a"]
    sync = row(repo.db, connector_syncs, claim_a.sync_id)
    assert sync["status"] == "FAILED"
    assert sync["error"].startswith("abandoned: lease of dead-host:42 expired at ")
    with repo.db.begin() as conn:
        assert conn.execute(sa.select(datasets.c.id)).scalars().all() == [claim_b.dataset_id]
        assert conn.execute(sa.select(sa.func.count()).select_from(dataset_records)).scalar() == 0
    assert repo.find_connector("b")["status"] == "SYNCING"  # its lease is live
    assert repo.recover_expired_leases() == []
    assert connector["consecutive_failures"] == 1
    assert connector["last_sync_error"] == sync["error"]


def test_a_source_that_keeps_killing_its_worker_ends_in_error(repo: Repository) -> None:
    connector_id = add(repo, "crashy")
    set_columns(repo.db, connector_id, max_consecutive_failures=2)
    for expected in ("ACTIVE", "ERROR"):
        claim_one(repo)
        expired = repo.database_now() - dt.timedelta(seconds=1)
        set_columns(repo.db, connector_id, lease_expires_at=expired)
        assert len(repo.recover_expired_leases()) == 1
        assert repo.find_connector("crashy")["status"] == expected


def test_history_newest_first_with_filters(repo: Repository) -> None:
    add(repo, "a")
    add(repo, "b")
    claim_a, claim_b = claim_one(repo)
    repo.complete(
        claim_a, duration=1, records_fetched=1, records_processed=1, schema={}, state=None
    )
    repo.fail(
        claim_b,
        error="e",
        error_type="E",
        duration=1,
        records_fetched=0,
        records_processed=0,
        retry_in=60,
    )
    rows = repo.history()
    assert {r["connector_name"] for r in rows} == {"a", "b"}
    assert [r["status"] for r in repo.history(status="FAILED")] == ["FAILED"]
    assert [r["connector_name"] for r in repo.history(connector_id=claim_a.connector_id)] == ["a"]
    assert len(repo.history(limit=1)) == 1


def test_concurrent_claims_never_hand_out_a_connector_twice(db_url: str) -> None:
    """Four workers, each with its own engine (as separate processes would have)."""
    with Database(db_url) as db:
        repo = Repository(db)
        for i in range(60):
            add(repo, f"c{i}")
    claimed: list[int] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def worker(n: int) -> None:
        try:
            with Database(db_url) as db:
                repo = Repository(db)
                while True:
                    claims = claim_one(repo, worker=f"w:{n}", limit=3)
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


def test_due_query_uses_the_partial_index(repo: Repository) -> None:
    for i in range(20):
        add(repo, f"c{i}")
    query = (
        sa.select(connectors.c.id)
        .where(Repository._due_clause(sa.literal_column("CURRENT_TIMESTAMP")))
        .order_by(connectors.c.next_sync_at)
        .limit(5)
    )
    with repo.db.begin() as conn:
        sql = str(query.compile(conn, compile_kwargs={"literal_binds": True}))
        if repo.pg:
            conn.exec_driver_sql("SET LOCAL enable_seqscan = off")
            plan = [r[0] for r in conn.exec_driver_sql(f"EXPLAIN {sql}")]
        else:
            plan = [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {sql}")]
    assert any("ix_connectors_due" in line for line in plan), plan
