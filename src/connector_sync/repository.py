"""Every SQL statement about connectors and syncs; the PostgreSQL/SQLite differences live here.

Times are compared on the database's clock: `now()` on PostgreSQL, so workers on
machines with skewed clocks agree; on SQLite (one host) Python's UTC clock.
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import sqlalchemy as sa
from psycopg.rows import dict_row

from connector_sync.constants import CONNECTOR_KEYS, SYNC_KEYS
from connector_sync.db import Database
from connector_sync.exceptions import AlreadyExists, BadInput, LeaseLost, NotFound
from connector_sync.models import (
    ACTIVE,
    BUILDING,
    CANCELLED,
    COMPLETED,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TENANT,
    ERROR,
    FAILED,
    IN_PROGRESS,
    READY,
    SYNCING,
    UTC,
    UTCDateTime,
    connector_syncs,
    connectors,
    dataset_records,
    datasets,
)
from connector_sync.scheduling import next_sync_at

if TYPE_CHECKING:
    import psycopg

c = connectors.c
s = connector_syncs.c

#: What listings (`list`, `due`) fetch: the connector without its config and state,
#: the two JSON documents that cost the most to fetch and decode per row.
SUMMARY_COLUMNS = tuple(c[key] for key in CONNECTOR_KEYS)
CONNECTOR_COLUMNS = (*SUMMARY_COLUMNS, c.config, c.state)
SYNC_COLUMNS = tuple(
    c.name.label("connector_name") if key == "connector_name" else s[key] for key in SYNC_KEYS
)


# -- PostgreSQL hot path -------------------------------------------------------------
# Claim and finish run once per sync. On PostgreSQL each is a single statement of
# data-modifying CTEs, compiled once: one round trip plus the commit, where the
# portable Core version below needs five (it still serves SQLite, where a statement
# costs no round trip). tests/test_repository.py runs the same contract on both.

_PG_CLAIM_COLUMNS = (
    "c.id, c.tenant, c.name, c.type, c.config, c.state, c.sync_interval, "
    "c.consecutive_failures, c.max_consecutive_failures, c.sync_timeout, c.lease_token, "
    "c.next_sync_at"
)
_PG_CLAIM = """
WITH picked AS MATERIALIZED (
    SELECT id FROM connectors
    WHERE {eligible} AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant)
    ORDER BY next_sync_at, id
    LIMIT :limit
    FOR UPDATE SKIP LOCKED
), claimed AS (
    UPDATE connectors AS c
    SET status = 'SYNCING', lease_owner = :worker, lease_token = gen_random_uuid()::text,
        lease_expires_at = now() + make_interval(secs => :lease_seconds), updated_at = now()
    FROM picked WHERE c.id = picked.id
    RETURNING {columns}
), opened AS (
    INSERT INTO connector_syncs (connector_id, tenant, status, trigger, worker, lease_token,
                                 attempts, started_at)
    SELECT id, tenant, 'IN_PROGRESS', :trigger, :worker, lease_token, 1, now() FROM claimed
    RETURNING id, connector_id, started_at
), building AS (
    INSERT INTO datasets (connector_id, sync_id, tenant, name, status, created_at)
    SELECT o.connector_id, o.id, cl.tenant, cl.name || '#' || o.id, 'BUILDING', now()
    FROM opened AS o JOIN claimed AS cl ON cl.id = o.connector_id
    RETURNING id, sync_id
)
SELECT cl.*, o.id AS sync_id, o.started_at, b.id AS dataset_id
FROM claimed AS cl
JOIN opened AS o ON o.connector_id = cl.id
JOIN building AS b ON b.sync_id = o.id
-- The claim need not wait for its WAL flush: if the server crashes before the flush,
-- the claim is lost, the connector is still due, and the worker's finish (durable)
-- finds no lease and records nothing. A sync may then run twice; nothing is corrupt.
CROSS JOIN (SELECT set_config('synchronous_commit', 'off', true)) AS async_commit
ORDER BY cl.next_sync_at, cl.id
"""
_PG_CLAIM_DUE = sa.text(
    _PG_CLAIM.format(
        # Literals, not parameters, so the planner matches the partial index.
        eligible="auto_sync AND status = 'ACTIVE' "
        "AND next_sync_at <= COALESCE(CAST(:due_before AS timestamptz), now())",
        columns=_PG_CLAIM_COLUMNS,
    )
)
_PG_CLAIM_NAMED = sa.text(
    _PG_CLAIM.format(
        eligible="id = ANY(CAST(:ids AS integer[])) AND status <> 'SYNCING'",
        columns=_PG_CLAIM_COLUMNS,
    )
)
# Finishing: the connector row is written only under this worker's lease token; the
# sync and dataset are written only if that succeeded (EXISTS on the first CTE).
_PG_RELEASE = """
WITH released AS (
    UPDATE connectors
    SET {connector}, lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL,
        updated_at = now(), last_sync_at = now()
    WHERE id = :connector_id AND lease_token = :lease_token
    RETURNING status, consecutive_failures, next_sync_at
), closed AS (
    UPDATE connector_syncs
    SET completed_at = now(), duration = :duration, records_fetched = :records_fetched,
        records_processed = :records_processed, attempts = :attempts, {sync}
    WHERE id = :sync_id AND EXISTS (SELECT 1 FROM released)
    RETURNING id
), dataset AS (
    {dataset}
)
SELECT status, consecutive_failures, next_sync_at FROM released
"""
_PG_COMPLETE = sa.text(
    _PG_RELEASE.format(
        connector="status = 'ACTIVE', last_sync_status = 'COMPLETED', last_sync_error = NULL, "
        "consecutive_failures = 0, state = CAST(:state AS jsonb), "
        "next_sync_at = now() + make_interval(secs => sync_interval)",
        sync="status = 'COMPLETED', dataset_id = :dataset_id",
        dataset="UPDATE datasets SET status = 'READY', record_count = :records_processed, "
        "schema = CAST(:schema AS jsonb), completed_at = now() "
        "WHERE id = :dataset_id AND EXISTS (SELECT 1 FROM released) RETURNING id",
    )
)
_PG_FAIL = sa.text(
    _PG_RELEASE.format(
        connector="status = CASE WHEN consecutive_failures + 1 >= max_consecutive_failures "
        "THEN 'ERROR' ELSE 'ACTIVE' END, last_sync_status = 'FAILED', "
        "last_sync_error = :error, consecutive_failures = consecutive_failures + 1, "
        "next_sync_at = now() + make_interval(secs => :retry_in)",
        sync="status = 'FAILED', error = :error, error_type = :error_type",
        dataset="DELETE FROM datasets WHERE sync_id = :sync_id AND status <> 'READY' "
        "AND EXISTS (SELECT 1 FROM released) RETURNING id",
    )
)


def _dicts(result: sa.CursorResult[Any]) -> list[dict[str, Any]]:
    """All rows as plain dicts: one fetch, no RowMapping per row (listings are hot)."""
    keys = list(result.keys())
    return [dict(zip(keys, row, strict=True)) for row in result.all()]


# `due` on PostgreSQL: the listing operators and schedulers poll most.
_PG_DUE = sa.text(
    f"SELECT {', '.join(col.name for col in SUMMARY_COLUMNS)} FROM connectors "
    # Literals, not parameters, so the planner matches the partial index.
    "WHERE auto_sync AND status = 'ACTIVE' AND next_sync_at <= now() "
    "AND (CAST(:tenant AS text) IS NULL OR tenant = :tenant) "
    "ORDER BY next_sync_at, id LIMIT :limit"
)

_PG_DRIVER_SQL: dict[int, str] = {}


def _pg_rows(
    conn: sa.Connection, statement: sa.TextClause, params: Mapping[str, Any]
) -> list[dict[str, Any]]:
    """Run a hot-path statement on the psycopg connection under `conn`'s transaction.

    Compiled to the driver's SQL once; rows come back as plain dicts. For these
    statements SQLAlchemy's per-execution result machinery cost more than the
    statement itself (see scripts/bench.py, scheduling).
    """
    sql = _PG_DRIVER_SQL.get(id(statement))
    if sql is None:
        sql = _PG_DRIVER_SQL[id(statement)] = str(statement.compile(dialect=conn.dialect))
    raw: psycopg.Connection[Any] = conn.connection.driver_connection  # type: ignore[assignment]
    with raw.cursor(row_factory=dict_row) as cursor:
        cursor.execute(sql, params)
        return cursor.fetchall() if cursor.description else []


@dataclass(frozen=True)
class Claim:
    """A connector this worker holds under a lease, with its open sync and BUILDING dataset."""

    connector_id: int
    tenant: str
    name: str
    type: str
    config: dict[str, Any]
    state: dict[str, Any] | None
    sync_interval: int
    consecutive_failures: int
    max_consecutive_failures: int
    sync_timeout: int | None
    lease_token: str
    worker: str
    trigger: str
    sync_id: int
    dataset_id: int
    started_at: dt.datetime


def _claim(row: Mapping[str, Any], worker: str, trigger: str) -> Claim:
    """A Claim from a claimed connector row joined with its new sync and dataset ids."""
    return Claim(
        connector_id=row["id"],
        tenant=row["tenant"],
        name=row["name"],
        type=row["type"],
        config=row["config"],
        state=row["state"],
        sync_interval=row["sync_interval"],
        consecutive_failures=row["consecutive_failures"],
        max_consecutive_failures=row["max_consecutive_failures"],
        sync_timeout=row["sync_timeout"],
        lease_token=row["lease_token"],
        worker=worker,
        trigger=trigger,
        sync_id=row["sync_id"],
        dataset_id=row["dataset_id"],
        started_at=row["started_at"],
    )


@dataclass(frozen=True)
class Outcome:
    """How a finished sync left its connector."""

    connector_status: str
    consecutive_failures: int
    next_sync_at: dt.datetime | None


class Repository:
    """The only place that builds SQL (dataset bulk writes aside, see datasets.py)."""

    def __init__(self, database: Database) -> None:
        self.db = database
        self.pg = database.is_postgresql

    # -- clock ----------------------------------------------------------------------

    def _now(self) -> sa.ColumnElement[dt.datetime]:
        if self.pg:
            return sa.func.now(type_=UTCDateTime())
        return sa.bindparam(None, dt.datetime.now(UTC), type_=UTCDateTime())

    def _now_plus(self, seconds: float) -> sa.ColumnElement[dt.datetime]:
        if self.pg:
            return self._now() + sa.literal(dt.timedelta(seconds=seconds), sa.Interval())
        return sa.bindparam(
            None, dt.datetime.now(UTC) + dt.timedelta(seconds=seconds), type_=UTCDateTime()
        )

    def database_now(self) -> dt.datetime:
        """The database's current time (PostgreSQL), or this host's (SQLite)."""
        if not self.pg:
            return dt.datetime.now(UTC)
        with self.db.begin() as conn:
            return conn.execute(sa.select(self._now())).scalar_one()

    @staticmethod
    def _due_clause(at: sa.ColumnElement[dt.datetime]) -> sa.ColumnElement[bool]:
        # Literals, not bind parameters, so the planner matches the partial index
        # ix_connectors_due ("auto_sync AND status = 'ACTIVE'") even in a generic plan.
        return sa.and_(
            c.auto_sync,
            c.status == sa.literal_column(f"'{ACTIVE}'"),
            c.next_sync_at <= at,
        )

    # -- connectors -----------------------------------------------------------------

    def add_connector(
        self,
        *,
        name: str,
        type: str,
        config: dict[str, Any],
        sync_interval: int,
        auto_sync: bool = True,
        tenant: str = DEFAULT_TENANT,
        sync_timeout: int | None = None,
        max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    ) -> int:
        now = self._now()
        stmt = (
            sa.insert(connectors)
            .values(
                tenant=tenant,
                name=name,
                type=type,
                config=config,
                status=ACTIVE,
                auto_sync=auto_sync,
                sync_interval=sync_interval,
                sync_timeout=sync_timeout,
                max_consecutive_failures=max_consecutive_failures,
                next_sync_at=now,  # a new connector is due at once
                created_at=now,
                updated_at=now,
            )
            .returning(c.id)
        )
        try:
            with self.db.begin() as conn:
                return int(conn.execute(stmt).scalar_one())
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"connector '{name}' already exists in tenant '{tenant}': choose another NAME"
            ) from None

    def find_connector(self, ref: str, tenant: str | None = None) -> dict[str, Any]:
        """A connector by id or by name (unique within the tenant, or across tenants).

        Raises:
            NotFound: no such connector.
            BadInput: the name exists in several tenants and none was given.
        """
        query = sa.select(*CONNECTOR_COLUMNS)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        with self.db.begin() as conn:
            if ref.isdigit():
                row = conn.execute(query.where(c.id == int(ref))).mappings().first()
                if row is not None:
                    return dict(row)
            rows = conn.execute(query.where(c.name == ref)).mappings().all()
        if not rows:
            where = f" in tenant '{tenant}'" if tenant else ""
            raise NotFound(
                f"no connector '{ref}'{where}: give an id or name from 'connector-sync list'"
            )
        if len(rows) > 1:
            tenants = ", ".join(sorted(r["tenant"] for r in rows))
            raise BadInput(
                f"connector name '{ref}' exists in tenants {tenants}: give its id or --tenant"
            )
        return dict(rows[0])

    def list_connectors(self, tenant: str | None = None) -> list[dict[str, Any]]:
        query = sa.select(*SUMMARY_COLUMNS).order_by(c.tenant, c.name)
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        with self.db.begin() as conn:
            return _dicts(conn.execute(query))

    def due_connectors(
        self, limit: int | None = None, tenant: str | None = None
    ) -> list[dict[str, Any]]:
        """Connectors due now, most overdue first (answered from ix_connectors_due)."""
        if self.pg:
            with self.db.begin() as conn:
                return _pg_rows(conn, _PG_DUE, {"limit": limit, "tenant": tenant})
        query = (
            sa.select(*SUMMARY_COLUMNS)
            .where(self._due_clause(self._now()))
            .order_by(c.next_sync_at, c.id)
            .limit(limit)
        )
        if tenant is not None:
            query = query.where(c.tenant == tenant)
        with self.db.begin() as conn:
            return _dicts(conn.execute(query))

    def set_auto_sync(self, connector_id: int, enabled: bool) -> None:
        """`enable`: auto-sync on, ACTIVE, failures forgotten, due now. `disable`: auto-sync off."""
        values: dict[str, Any] = {"auto_sync": enabled, "updated_at": self._now()}
        if enabled:
            # A connector a worker holds stays SYNCING; the finish makes it ACTIVE.
            values.update(
                status=sa.case((c.status == SYNCING, SYNCING), else_=sa.literal(ACTIVE)),
                consecutive_failures=0,
                next_sync_at=self._now(),
            )
        with self.db.begin() as conn:
            conn.execute(sa.update(connectors).where(c.id == connector_id).values(**values))

    def reset_state(self, connector_id: int) -> None:
        """Forget the incremental state: the next sync reads the whole source."""
        with self.db.begin() as conn:
            conn.execute(
                sa.update(connectors)
                .where(c.id == connector_id)
                .values(state=None, updated_at=self._now())
            )

    # -- claim, heartbeat, finish ---------------------------------------------------

    def claim(
        self,
        *,
        worker: str,
        limit: int,
        lease_seconds: float,
        due_before: dt.datetime | None = None,
        tenant: str | None = None,
        connector_ids: Sequence[int] | None = None,
    ) -> list[Claim]:
        """Claim connectors in one short transaction and open a sync for each.

        Without `connector_ids`: up to `limit` due connectors whose next_sync_at is at
        or before `due_before` (default: now; a run passes its start time, so a
        connector it synced is not claimed again by the same run), most overdue
        first. On PostgreSQL rows other workers hold locked are skipped (FOR UPDATE SKIP
        LOCKED); on SQLite the
        single UPDATE repeats the eligibility test, since SQLite has no row locks.

        With `connector_ids`: a manual sync of those connectors whatever their
        schedule, except one that a worker is syncing now.
        """
        if limit <= 0:
            return []
        if self.pg:
            return self._pg_claim(worker, limit, lease_seconds, due_before, tenant, connector_ids)
        if connector_ids is None:
            cutoff = (
                self._now()
                if due_before is None
                else sa.bindparam(None, due_before, type_=UTCDateTime())
            )
            eligible = self._due_clause(cutoff)
            trigger = "schedule"
        else:
            eligible = sa.and_(c.id.in_(list(connector_ids)), c.status != SYNCING)
            trigger = "manual"
        if tenant is not None:
            eligible = sa.and_(eligible, c.tenant == tenant)
        picked = sa.select(c.id).where(eligible).order_by(c.next_sync_at, c.id).limit(limit)
        if self.pg:
            picked_cte = (
                picked.with_for_update(skip_locked=True).cte("picked").prefix_with("MATERIALIZED")
            )
            target: sa.ColumnElement[bool] = c.id.in_(sa.select(picked_cte.c.id))
        else:
            target = sa.and_(c.id.in_(picked), eligible)
        now = self._now()
        claim_stmt = (
            sa.update(connectors)
            .where(target)
            .values(
                status=SYNCING,
                lease_owner=worker,
                # (PostgreSQL claims in _PG_CLAIM, with gen_random_uuid().)
                lease_token=sa.func.lower(sa.func.hex(sa.func.randomblob(16))),
                lease_expires_at=self._now_plus(lease_seconds),
                updated_at=now,
            )
            .returning(
                c.id,
                c.tenant,
                c.name,
                c.type,
                c.config,
                c.state,
                c.sync_interval,
                c.consecutive_failures,
                c.max_consecutive_failures,
                c.lease_token,
                c.next_sync_at,
                c.sync_timeout,
            )
        )
        with self.db.begin() as conn:
            rows = sorted(conn.execute(claim_stmt).mappings(), key=lambda r: r["next_sync_at"])
            if not rows:
                return []
            started_at = self._select_now(conn)
            sync_ids = (
                conn.execute(
                    sa.insert(connector_syncs).returning(s.id, sort_by_parameter_order=True),
                    [
                        {
                            "connector_id": r["id"],
                            "tenant": r["tenant"],
                            "status": IN_PROGRESS,
                            "trigger": trigger,
                            "worker": worker,
                            "lease_token": r["lease_token"],
                            "attempts": 1,
                            "started_at": started_at,
                        }
                        for r in rows
                    ],
                )
                .scalars()
                .all()
            )
            dataset_ids = (
                conn.execute(
                    sa.insert(datasets).returning(datasets.c.id, sort_by_parameter_order=True),
                    [
                        {
                            "connector_id": r["id"],
                            "sync_id": sync_id,
                            "tenant": r["tenant"],
                            "name": f"{r['name']}#{sync_id}",
                            "status": BUILDING,
                            "created_at": started_at,
                        }
                        for r, sync_id in zip(rows, sync_ids, strict=True)
                    ],
                )
                .scalars()
                .all()
            )
        return [
            _claim(
                dict(r, sync_id=sync_id, dataset_id=dataset_id, started_at=started_at),
                worker,
                trigger,
            )
            for r, sync_id, dataset_id in zip(rows, sync_ids, dataset_ids, strict=True)
        ]

    def _pg_claim(
        self,
        worker: str,
        limit: int,
        lease_seconds: float,
        due_before: dt.datetime | None,
        tenant: str | None,
        connector_ids: Sequence[int] | None,
    ) -> list[Claim]:
        params: dict[str, Any] = {
            "worker": worker, "limit": limit, "lease_seconds": lease_seconds, "tenant": tenant,
        }  # fmt: skip
        if connector_ids is None:
            statement, trigger = _PG_CLAIM_DUE, "schedule"
            params["due_before"] = due_before
        else:
            statement, trigger = _PG_CLAIM_NAMED, "manual"
            params["ids"] = list(connector_ids)
        params["trigger"] = trigger
        with self.db.begin() as conn:
            rows = _pg_rows(conn, statement, params)
        return [_claim(r, worker, trigger) for r in rows]

    def _pg_release(
        self, statement: sa.TextClause, claim: Claim, params: dict[str, Any]
    ) -> Outcome:
        params.update(
            connector_id=claim.connector_id,
            lease_token=claim.lease_token,
            sync_id=claim.sync_id,
            dataset_id=claim.dataset_id,
        )
        with self.db.begin() as conn:
            rows = _pg_rows(conn, statement, params)
        if not rows:
            raise LeaseLost(
                f"lease on connector '{claim.name}' was lost; another worker owns it now"
            )
        row = rows[0]
        return Outcome(row["status"], row["consecutive_failures"], row["next_sync_at"])

    def _select_now(self, conn: sa.Connection) -> dt.datetime:
        if self.pg:
            return conn.execute(sa.select(self._now())).scalar_one()
        return dt.datetime.now(UTC)

    def heartbeat(self, leases: Mapping[int, str], lease_seconds: float) -> set[int]:
        """Extend the leases still held (connector id -> lease token).

        Returns the ids of the connectors whose lease was lost to another worker.
        """
        if not leases:
            return set()
        stmt = (
            sa.update(connectors)
            .where(c.id.in_(sorted(leases)), c.lease_token.in_(sorted(leases.values())))
            .values(lease_expires_at=self._now_plus(lease_seconds))
            .returning(c.id, c.lease_token)
        )
        with self.db.begin() as conn:
            kept = {(row.id, row.lease_token) for row in conn.execute(stmt)}
        return {cid for cid, token in leases.items() if (cid, token) not in kept}

    def _release(self, conn: sa.Connection, claim: Claim, values: dict[str, Any]) -> sa.RowMapping:
        """Write the connector's new state only if this worker still holds the lease."""
        row = (
            conn.execute(
                sa.update(connectors)
                .where(c.id == claim.connector_id, c.lease_token == claim.lease_token)
                .values(
                    lease_owner=None,
                    lease_token=None,
                    lease_expires_at=None,
                    updated_at=self._now(),
                    **values,
                )
                .returning(c.status, c.consecutive_failures, c.next_sync_at)
            )
            .mappings()
            .first()
        )
        if row is None:
            raise LeaseLost(
                f"lease on connector '{claim.name}' was lost; another worker owns it now"
            )
        return row

    def complete(
        self,
        claim: Claim,
        *,
        duration: float,
        records_fetched: int,
        records_processed: int,
        schema: dict[str, list[str]],
        state: dict[str, Any] | None,
        attempts: int = 1,
    ) -> Outcome:
        """Record success: sync COMPLETED, dataset READY, connector ACTIVE and next due.

        Raises:
            LeaseLost: another worker holds the connector; nothing was written.
        """
        if self.pg:
            return self._pg_release(
                _PG_COMPLETE,
                claim,
                {
                    "duration": duration,
                    "records_fetched": records_fetched,
                    "records_processed": records_processed,
                    "attempts": attempts,
                    "state": None if state is None else json.dumps(state),
                    "schema": json.dumps(schema),
                },
            )
        with self.db.begin() as conn:
            now = self._select_now(conn)
            row = self._release(
                conn,
                claim,
                {
                    "status": ACTIVE,
                    "last_sync_at": now,
                    "last_sync_status": COMPLETED,
                    "last_sync_error": None,
                    "consecutive_failures": 0,
                    "state": state,
                    "next_sync_at": self._next_after_success(claim),
                },
            )
            conn.execute(
                sa.update(connector_syncs)
                .where(s.id == claim.sync_id)
                .values(
                    status=COMPLETED,
                    completed_at=now,
                    duration=duration,
                    records_fetched=records_fetched,
                    records_processed=records_processed,
                    dataset_id=claim.dataset_id,
                    attempts=attempts,
                )
            )
            conn.execute(
                sa.update(datasets)
                .where(datasets.c.id == claim.dataset_id)
                .values(
                    status=READY,
                    record_count=records_processed,
                    schema=schema,
                    completed_at=now,
                )
            )
        return Outcome(row["status"], row["consecutive_failures"], row["next_sync_at"])

    @staticmethod
    def _next_after_success(claim: Claim) -> sa.ColumnElement[dt.datetime]:
        return sa.bindparam(
            None, next_sync_at(dt.datetime.now(UTC), claim.sync_interval), type_=UTCDateTime()
        )

    def fail(
        self,
        claim: Claim,
        *,
        error: str,
        error_type: str,
        duration: float,
        records_fetched: int,
        records_processed: int,
        retry_in: float,
        attempts: int = 1,
    ) -> Outcome:
        """Record failure: sync FAILED, partial dataset deleted, connector backs off.

        The connector stays ACTIVE, due again in `retry_in` seconds, unless this was
        its max_consecutive_failures-th failure in a row: then it goes to ERROR.

        Raises:
            LeaseLost: another worker holds the connector; nothing was written.
        """
        if self.pg:
            return self._pg_release(
                _PG_FAIL,
                claim,
                {
                    "duration": duration,
                    "records_fetched": records_fetched,
                    "records_processed": records_processed,
                    "attempts": attempts,
                    "error": error,
                    "error_type": error_type,
                    "retry_in": retry_in,
                },
            )
        failures = c.consecutive_failures + 1
        with self.db.begin() as conn:
            now = self._select_now(conn)
            row = self._release(
                conn,
                claim,
                {
                    "status": sa.case(
                        (failures >= c.max_consecutive_failures, ERROR), else_=sa.literal(ACTIVE)
                    ),
                    "consecutive_failures": failures,
                    "last_sync_at": now,
                    "last_sync_status": FAILED,
                    "last_sync_error": error,
                    "next_sync_at": self._now_plus(retry_in),
                },
            )
            self._close_sync(
                conn,
                claim.sync_id,
                status=FAILED,
                completed_at=now,
                duration=duration,
                records_fetched=records_fetched,
                records_processed=records_processed,
                error=error,
                error_type=error_type,
                attempts=attempts,
            )
        return Outcome(row["status"], row["consecutive_failures"], row["next_sync_at"])

    def discard_records(self, claim: Claim) -> None:
        """Empty the claim's BUILDING dataset before a sync is attempted again."""
        with self.db.begin() as conn:
            conn.execute(
                sa.delete(dataset_records).where(dataset_records.c.dataset_id == claim.dataset_id)
            )

    def sync_status(self, sync_id: int) -> str | None:
        with self.db.begin() as conn:
            return conn.execute(sa.select(s.status).where(s.id == sync_id)).scalar()

    def cancel(self, claim: Claim, *, reason: str, duration: float) -> None:
        """Give the connector back as due now; the sync is CANCELLED, its dataset deleted."""
        with self.db.begin() as conn:
            now = self._select_now(conn)
            self._release(conn, claim, {"status": ACTIVE, "next_sync_at": now})
            self._close_sync(
                conn,
                claim.sync_id,
                status=CANCELLED,
                completed_at=now,
                duration=duration,
                error=reason,
                error_type="Cancelled",
            )

    @staticmethod
    def _close_sync(conn: sa.Connection, sync_id: int, **values: Any) -> None:
        """End an unsuccessful sync and delete its partial dataset (records cascade)."""
        conn.execute(sa.update(connector_syncs).where(s.id == sync_id).values(**values))
        conn.execute(
            sa.delete(datasets).where(datasets.c.sync_id == sync_id, datasets.c.status != READY)
        )

    def recover_expired_leases(self, tenant: str | None = None) -> list[dict[str, Any]]:
        """Return connectors whose lease expired to ACTIVE and due now.

        Their IN_PROGRESS sync becomes FAILED ("abandoned: lease of <worker> expired
        at <time>") and its BUILDING dataset is deleted. The abandonment counts as a
        failure in a row, so a source that crashes its worker every time ends in
        ERROR after max_consecutive_failures instead of being retried for ever.
        Returns what was recovered.
        """
        now = self._now()
        expired = (
            sa.select(c.id, c.name, c.lease_owner, c.lease_token, c.lease_expires_at)
            .where(c.lease_expires_at < now, c.status == SYNCING)
            .order_by(c.lease_expires_at)
        )
        if tenant is not None:
            expired = expired.where(c.tenant == tenant)
        if self.pg:
            expired = expired.with_for_update(skip_locked=True, of=connectors)
        recovered: list[dict[str, Any]] = []
        with self.db.begin() as conn:
            at = self._select_now(conn)
            for row in conn.execute(expired).mappings().all():
                expired_at = row["lease_expires_at"].strftime("%Y-%m-%dT%H:%M:%SZ")
                reason = f"abandoned: lease of {row['lease_owner']} expired at {expired_at}"
                failures = c.consecutive_failures + 1
                released = conn.execute(
                    sa.update(connectors)
                    .where(c.id == row["id"], c.lease_token == row["lease_token"])
                    .values(
                        status=sa.case(
                            (failures >= c.max_consecutive_failures, ERROR),
                            else_=sa.literal(ACTIVE),
                        ),
                        consecutive_failures=failures,
                        last_sync_at=at,
                        last_sync_status=FAILED,
                        last_sync_error=reason,
                        next_sync_at=now,
                        lease_owner=None,
                        lease_token=None,
                        lease_expires_at=None,
                        updated_at=now,
                    )
                ).rowcount
                if not released:
                    continue
                open_syncs = (
                    conn.execute(
                        sa.select(s.id).where(s.connector_id == row["id"], s.status == IN_PROGRESS)
                    )
                    .scalars()
                    .all()
                )
                for sync_id in open_syncs:
                    self._close_sync(
                        conn,
                        sync_id,
                        status=FAILED,
                        completed_at=at,
                        error=reason,
                        error_type="LeaseExpired",
                    )
                recovered.append(
                    {
                        "id": row["id"],
                        "name": row["name"],
                        "worker": row["lease_owner"],
                        "lease_expires_at": row["lease_expires_at"],
                        "syncs": list(open_syncs),
                        "reason": reason,
                    }
                )
        return recovered

    # -- status and health ----------------------------------------------------------

    def status_summary(self, tenant: str | None = None) -> dict[str, Any]:
        """Counts for `status`: connectors by status, due now, syncs in the last 24 hours."""
        now = self._now()
        scope = [c.tenant == tenant] if tenant is not None else []
        sync_scope = [s.tenant == tenant] if tenant is not None else []
        with self.db.begin() as conn:
            by_status: dict[str, int] = dict(
                conn.execute(
                    sa.select(c.status, sa.func.count()).where(*scope).group_by(c.status)
                ).all()
            )
            due_now, oldest_due = conn.execute(
                sa.select(sa.func.count(), sa.func.min(c.next_sync_at)).where(
                    self._due_clause(now), *scope
                )
            ).one()
            since = self._now_plus(-86400)
            syncs = conn.execute(
                sa.select(s.status, sa.func.count(), sa.func.coalesce(
                    sa.func.sum(s.records_processed), 0))
                .where(s.started_at >= since, *sync_scope)
                .group_by(s.status)
            ).all()  # fmt: skip
            at = self._select_now(conn)
        return {
            "connectors": {status: int(n) for status, n in sorted(by_status.items())},
            "connectors_total": int(sum(by_status.values())),
            "due_now": int(due_now),
            "oldest_due_since": oldest_due,
            "syncs_last_24h": {status: int(n) for status, n, _ in syncs},
            "records_last_24h": int(sum(int(r) for _, _, r in syncs)),
            "checked_at": at,
        }

    def health_problems(
        self, tenant: str | None = None, overdue_after: float = 3600.0
    ) -> list[dict[str, Any]]:
        """What an operator must look at: parked connectors, stuck leases, a stalled scheduler.

        - ERROR: a connector parked after too many consecutive failures;
        - LEASE_EXPIRED: a worker died mid-sync and no run has recovered it yet;
        - OVERDUE: due for longer than `overdue_after` seconds (is the scheduler running?).
        """
        now = self._now()
        scope = [c.tenant == tenant] if tenant is not None else []
        columns = (c.id, c.name, c.tenant, c.status, c.last_sync_error, c.lease_owner,
                   c.lease_expires_at, c.next_sync_at, c.consecutive_failures)  # fmt: skip
        with self.db.begin() as conn:
            errors = (
                conn.execute(sa.select(*columns).where(c.status == ERROR, *scope).order_by(c.id))
                .mappings()
                .all()
            )
            stuck = (
                conn.execute(
                    sa.select(*columns)
                    .where(c.status == SYNCING, c.lease_expires_at < now, *scope)
                    .order_by(c.id)
                )
                .mappings()
                .all()
            )
            overdue = (
                conn.execute(
                    sa.select(*columns)
                    .where(self._due_clause(self._now_plus(-overdue_after)), *scope)
                    .order_by(c.next_sync_at)
                    .limit(100)
                )
                .mappings()
                .all()
            )
        problems: list[dict[str, Any]] = []
        for r in errors:
            problems.append({
                "problem": "ERROR", "connector_id": r["id"], "connector_name": r["name"],
                "detail": f"parked after {r['consecutive_failures']} consecutive failures; "
                f"last error: {r['last_sync_error']}; fix it, then 'connector-sync enable "
                f"{r['name']}'",
            })  # fmt: skip
        for r in stuck:
            problems.append({
                "problem": "LEASE_EXPIRED", "connector_id": r["id"], "connector_name": r["name"],
                "detail": f"lease of {r['lease_owner']} expired at "
                f"{r['lease_expires_at']:%Y-%m-%dT%H:%M:%SZ}; the next run (or "
                "'connector-sync recover') releases it",
            })  # fmt: skip
        for r in overdue:
            problems.append({
                "problem": "OVERDUE", "connector_id": r["id"], "connector_name": r["name"],
                "detail": f"due since {r['next_sync_at']:%Y-%m-%dT%H:%M:%SZ}; is the scheduler "
                "running 'connector-sync run'?",
            })  # fmt: skip
        return problems

    # -- history --------------------------------------------------------------------

    def history(
        self,
        *,
        connector_id: int | None = None,
        status: str | None = None,
        tenant: str | None = None,
        limit: int | None = 20,
    ) -> list[dict[str, Any]]:
        """Syncs, newest first."""
        query = (
            sa.select(*SYNC_COLUMNS)
            .select_from(connector_syncs.join(connectors, c.id == s.connector_id))
            .order_by(s.started_at.desc(), s.id.desc())
            .limit(limit)
        )
        if connector_id is not None:
            query = query.where(s.connector_id == connector_id)
        if status is not None:
            query = query.where(s.status == status)
        if tenant is not None:
            query = query.where(s.tenant == tenant)
        with self.db.begin() as conn:
            return _dicts(conn.execute(query))

    def syncs_by_id(self, sync_ids: Sequence[int]) -> list[dict[str, Any]]:
        if not sync_ids:
            return []
        query = (
            sa.select(*SYNC_COLUMNS)
            .select_from(connector_syncs.join(connectors, c.id == s.connector_id))
            .where(s.id.in_(list(sync_ids)))
        )
        with self.db.begin() as conn:
            by_id = {r["id"]: dict(r) for r in conn.execute(query).mappings()}
        return [by_id[i] for i in sync_ids if i in by_id]

    def datasets_of(self, connector_id: int, limit: int = 10) -> list[dict[str, Any]]:
        d = datasets.c
        query = (
            sa.select(
                d.id, d.sync_id, d.name, d.status, d.record_count, d.created_at, d.completed_at
            )
            .where(d.connector_id == connector_id)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        )
        with self.db.begin() as conn:
            return _dicts(conn.execute(query))
