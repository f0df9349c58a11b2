"""The SQLite store, in SQLAlchemy Core: one host, one writer at a time.

SQLite has no row locks (SQLAlchemy drops FOR UPDATE there), so a claim is a single
`UPDATE ... WHERE id IN (SELECT ...) AND <eligibility repeated> RETURNING`: two workers
can never claim the same row, since the second's UPDATE re-tests the row it writes.
Every transaction starts with BEGIN IMMEDIATE (db.py), so writers queue on the busy
timeout instead of failing. Times are this host's UTC clock (or the injected one).
"""

from __future__ import annotations

import datetime as dt
import statistics
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import replace
from typing import Any

import sqlalchemy as sa

from connector_sync.constants import (
    ACTIVE,
    BUILDING,
    CANCELLED,
    COMPLETED,
    ERROR,
    FAILED,
    HEALTH_OVERDUE_LISTED,
    IN_PROGRESS,
    INACTIVE,
    READY,
    SYNCING,
)
from connector_sync.exceptions import AlreadyExists
from connector_sync.models import (
    DUE_INDEX_PREDICATE_SQLITE,
    UTCDateTime,
    alert_thresholds,
    connector_syncs,
    connectors,
    dataset_records,
    datasets,
    health_alerts,
)
from connector_sync.store.base import (
    ALERT_LEVELS,
    CLAIM_CONNECTOR_COLUMNS,
    DURATION_BUCKETS,
    RETIRED_REASON,
    RUNNING_SYNCS_SHOWN,
    TYPICAL_OF_LAST,
    AlertMessage,
    AlertThresholds,
    Claim,
    ClaimRequest,
    Completion,
    Connector,
    ConnectorEdit,
    ConnectorFilter,
    ConnectorGauges,
    ConnectorSummary,
    DataCounts,
    Dataset,
    DatasetSummary,
    Failure,
    Finished,
    HealthFacts,
    HealthProblem,
    HealthThresholds,
    HistoryFilter,
    ListFilter,
    MetricsSnapshot,
    NewConnector,
    Outcome,
    Progress,
    PrunedDataset,
    PrunedHistory,
    PruneRequest,
    Recorded,
    RecoveredLease,
    RunningSync,
    StatusSummary,
    Store,
    Sync,
    alert_message,
    alert_messages,
    ambiguous_name,
    as_dict,
    connector_busy,
    dataset_gone,
    dataset_not_found,
    finish_once,
    lease_lost,
    name_taken,
    next_sync_on_completion,
    not_found,
    recovery_reason,
    retried,
    retried_unless_uncertain,
    status_summary_of,
    syncs_by_bucket,
)

c = connectors.c
s = connector_syncs.c
d = datasets.c
a = health_alerts.c
t = alert_thresholds.c

SUMMARY_COLUMNS = tuple(c[f] for f in ConnectorSummary.__dataclass_fields__)
CONNECTOR_COLUMNS = (*SUMMARY_COLUMNS, c.config, c.state)
SYNC_COLUMNS = tuple(
    c.name if key == "connector_name" else s[key]
    for key in Sync.__dataclass_fields__
    if key != "elapsed"
)
DATASET_COLUMNS = tuple(d[f] for f in DatasetSummary.__dataclass_fields__)
WHOLE_DATASET_COLUMNS = tuple(
    c.name if key == "connector_name" else d[key] for key in Dataset.__dataclass_fields__
)
_DATASETS = datasets.join(connectors, c.id == d.connector_id)
CLAIM_COLUMNS = tuple(c[f] for f in CLAIM_CONNECTOR_COLUMNS)
_SYNCS = connector_syncs.join(connectors, c.id == s.connector_id)


def _due(at: sa.ColumnElement[dt.datetime]) -> sa.ColumnElement[bool]:
    """Due at `at`: the partial index's predicate, as its own text so SQLite's planner
    proves ix_connectors_due applies, and next_sync_at <= at."""
    return sa.and_(sa.text(DUE_INDEX_PREDICATE_SQLITE), c.next_sync_at <= at)


def _time(value: dt.datetime) -> sa.ColumnElement[dt.datetime]:
    return sa.bindparam(None, value, type_=UTCDateTime())


def _seconds_since(at: sa.ColumnElement[dt.datetime], now: dt.datetime) -> Any:
    """Seconds from `at` (a stored time) to `now`."""
    return (sa.func.julianday(_time(now)) - sa.func.julianday(at)) * 86400.0


def _sync_columns(now: dt.datetime) -> tuple[Any, ...]:
    """Sync's columns, `elapsed` (for a sync in flight) computed at `now`."""
    elapsed = sa.case((s.status == IN_PROGRESS, _seconds_since(s.started_at, now)))
    return (*SYNC_COLUMNS, elapsed)


def _tenant(column: sa.ColumnElement[str], tenant: str | None) -> list[sa.ColumnElement[bool]]:
    return [] if tenant is None else [column == tenant]


def _fails_again() -> dict[str, Any]:
    """The connector's failure count one higher, and ERROR once that reaches its limit."""
    failures = c.consecutive_failures + 1
    return {
        "consecutive_failures": failures,
        "status": sa.case((failures >= c.max_consecutive_failures, ERROR), else_=ACTIVE),
    }


#: julianday('1970-01-01'): SQLite's days to Unix seconds.
_UNIX_EPOCH_JULIAN_DAY = 2440587.5


def _started_since(now: dt.datetime, seconds: float) -> sa.ColumnElement[bool]:
    return s.started_at >= _time(now - dt.timedelta(seconds=seconds))


def _median(values: Sequence[float]) -> float | None:
    return statistics.median(values) if values else None


def _connector_gauges(tenant: str | None, limit: int | None) -> sa.Select[Any]:
    """Each connector's failures in a row and last success (Unix seconds), at most `limit`,
    those most in need of a look first: failing the longest, then the longest without a
    success. The connectors whose latest sync was their last success (most) come in that
    order from ix_connectors_last_success, only the first `limit` of them; the others
    (few) each look their last COMPLETED sync up. The order compares the stored times
    (to the microsecond, as the index does; julianday keeps milliseconds), so the limit
    cuts one order. As queries.sql's connector_gauges."""
    succeeded_last = sa.and_(
        c.consecutive_failures == 0, c.last_sync_status == COMPLETED, c.last_sync_at.is_not(None)
    )

    def unix(time: Any) -> Any:
        return ((sa.func.julianday(time) - _UNIX_EPOCH_JULIAN_DAY) * 86400.0).label("last_success")

    def at(time: Any) -> Any:
        return time.label("last_success_at")

    looked_up = sa.case(
        (c.last_sync_status == COMPLETED, c.last_sync_at),
        else_=sa.select(s.completed_at)
        .where(s.connector_id == c.id, s.status == COMPLETED)
        .order_by(s.started_at.desc())
        .limit(1)
        .scalar_subquery(),
    )
    columns = (c.id, c.tenant, c.name, c.consecutive_failures)
    not_succeeded_last = sa.or_(  # its negation, NULLs included
        c.consecutive_failures != 0,
        c.last_sync_status.is_distinct_from(COMPLETED),
        c.last_sync_at.is_(None),
    )
    others = sa.select(*columns, at(looked_up)).where(
        not_succeeded_last, *_tenant(c.tenant, tenant)
    )
    in_order = (
        sa.select(*columns, at(c.last_sync_at))
        .where(succeeded_last, *_tenant(c.tenant, tenant))
        .order_by(c.last_sync_at, c.id)
        .limit(limit)
        .subquery()
    )
    g = sa.union_all(others, sa.select(in_order)).subquery()
    return (
        sa.select(g.c.tenant, g.c.name, g.c.consecutive_failures, unix(g.c.last_success_at))
        .order_by(g.c.consecutive_failures.desc(), g.c.last_success_at.nulls_first(), g.c.id)
        .limit(limit)
    )


class SqliteStore(Store):
    """The Store on a SQLite file."""

    def now(self) -> dt.datetime:
        return self.clock() if self.clock else dt.datetime.now(dt.UTC)

    # -- connectors --------------------------------------------------------------------

    @retried_unless_uncertain
    def add_connector(self, new: NewConnector) -> int:
        now = self.now()
        stmt = (
            sa.insert(connectors)
            .values(
                {
                    **as_dict(new),
                    "status": ACTIVE,
                    "next_sync_at": new.next_sync_at or now,  # else due at once
                    "created_at": now,
                    "updated_at": now,
                }
            )
            .returning(c.id)
        )
        try:
            with self.database.begin() as conn:
                return int(conn.execute(stmt).scalar_one())
        except sa.exc.IntegrityError:
            raise AlreadyExists(
                f"connector '{new.name}' already exists in tenant '{new.tenant}': "
                "choose another NAME"
            ) from None

    @retried
    def find_connector(self, ref: str, tenant: str | None = None) -> Connector:
        query = sa.select(*CONNECTOR_COLUMNS).where(*_tenant(c.tenant, tenant))
        with self.database.begin() as conn:
            if ref.isascii() and ref.isdigit() and int(ref) < 2**63:
                row = conn.execute(query.where(c.id == int(ref))).first()
                if row is not None:
                    return Connector(*row)
            rows = conn.execute(query.where(c.name == ref).order_by(c.tenant)).all()
        if not rows:
            raise not_found(ref, tenant)
        if len(rows) > 1:
            raise ambiguous_name(ref, [row.tenant for row in rows])
        return Connector(*rows[0])

    def _chosen(self, where: ConnectorFilter) -> list[sa.ColumnElement[bool]]:
        """What `where` asks of a connector row."""
        chosen = _tenant(c.tenant, where.tenant)
        if where.status is not None:
            chosen.append(c.status == where.status)
        elif not where.include_inactive:
            chosen.append(c.status != INACTIVE)
        if where.type is not None:
            chosen.append(c.type == where.type)
        if where.due:
            chosen.append(_due(_time(self.now())))
        return chosen

    def _listing(self, where: ConnectorFilter) -> sa.Select[Any]:
        query = sa.select(*SUMMARY_COLUMNS).where(*self._chosen(where))
        return query.order_by(c.tenant, c.name).limit(where.limit)

    def list_connectors(self, where: ConnectorFilter | None = None) -> list[ConnectorSummary]:
        return self._page(self._listing(where or ConnectorFilter()))

    @retried
    def count_connectors(self, where: ConnectorFilter) -> int:
        query = sa.select(sa.func.count()).select_from(connectors).where(*self._chosen(where))
        with self.database.begin() as conn:
            return int(conn.execute(query).scalar_one())

    def stream_connectors(
        self, where: ConnectorFilter, chunk: int = 2000
    ) -> Generator[list[ConnectorSummary], None, None]:
        # Page by page after the last (tenant, name), each page its own short transaction:
        # a slow reader never holds SQLite's one write lock (BEGIN IMMEDIATE) for long.
        left = where.limit
        after: tuple[str, str] | None = None
        while left is None or left > 0:
            page = replace(where, limit=chunk if left is None else min(chunk, left))
            query = self._listing(page)
            if after is not None:
                query = query.where(sa.tuple_(c.tenant, c.name) > sa.tuple_(*after))
            rows = self._page(query)
            if not rows:
                return
            yield rows
            after = (rows[-1].tenant, rows[-1].name)
            left = None if left is None else left - len(rows)

    @retried
    def _page(self, query: sa.Select[Any]) -> list[ConnectorSummary]:
        with self.database.begin() as conn:
            return [ConnectorSummary(*row) for row in conn.execute(query)]

    @retried
    def edit_connector(self, connector_id: int, edit: ConnectorEdit) -> None:
        values = as_dict(edit)
        if edit.next_sync_at is None:
            del values["next_sync_at"]
        try:
            with self.database.begin() as conn:
                conn.execute(
                    sa.update(connectors)
                    .where(c.id == connector_id)
                    .values(**values, updated_at=self.now())
                )
        except sa.exc.IntegrityError:
            raise name_taken(edit.name) from None

    @retried
    def data_counts(self, connector_id: int) -> DataCounts:
        of_connector = d.connector_id == connector_id
        query = sa.select(
            sa.select(sa.func.count()).where(s.connector_id == connector_id).scalar_subquery(),
            sa.select(sa.func.count()).where(of_connector).scalar_subquery(),
            sa.select(sa.func.coalesce(sa.func.sum(d.record_count), 0))
            .where(of_connector)
            .scalar_subquery(),
        )
        with self.database.begin() as conn:
            return DataCounts(*conn.execute(query).one())

    @retried
    def retire_connector(self, connector_id: int, *, force: bool, remove_data: bool) -> None:
        now = self.now()
        free = sa.or_(c.status != SYNCING, c.lease_expires_at.is_(None), c.lease_expires_at <= now)
        with self.database.begin() as conn:
            retired = conn.execute(
                sa.update(connectors)
                .where(c.id == connector_id, sa.true() if force else free)
                .values(
                    status=INACTIVE,
                    lease_owner=None,
                    lease_token=None,
                    lease_expires_at=None,
                    consecutive_failures=0,  # as enable forgets them; nothing can clear them
                    updated_at=now,
                )
            ).rowcount
            if not retired:
                row = conn.execute(
                    sa.select(c.name, c.lease_owner, c.lease_expires_at).where(c.id == connector_id)
                ).first()
                if row is None:
                    return
                raise connector_busy(*row)
            open_syncs = conn.execute(
                sa.select(s.id).where(s.connector_id == connector_id, s.status == IN_PROGRESS)
            ).scalars()
            for sync_id in list(open_syncs):
                self._close_sync(
                    conn, sync_id, status=CANCELLED, completed_at=now, error=RETIRED_REASON,
                    error_type="Cancelled",
                )  # fmt: skip
            if remove_data:
                conn.execute(
                    sa.update(datasets)
                    .where(d.connector_id == connector_id, d.status == READY)
                    .values(status=FAILED)
                )

    @retried
    def delete_connector(self, connector_id: int) -> None:
        with self.database.begin() as conn:
            conn.execute(sa.delete(connectors).where(c.id == connector_id))

    @retried
    def connector_names(self, prefix: str, tenant: str | None, limit: int) -> list[str]:
        query = (
            sa.select(c.name)
            .where(sa.func.substr(c.name, 1, len(prefix)) == prefix, *_tenant(c.tenant, tenant))
            .distinct()
            .order_by(c.name)
            .limit(limit)
        )
        with self.database.begin() as conn:
            return list(conn.execute(query).scalars())

    @retried
    def due_connectors(
        self, limit: int | None = None, tenant: str | None = None
    ) -> list[ConnectorSummary]:
        query = (
            sa.select(*SUMMARY_COLUMNS)
            .where(_due(_time(self.now())), *_tenant(c.tenant, tenant))
            .order_by(c.next_sync_at, c.id)
            .limit(limit)
        )
        with self.database.begin() as conn:
            return [ConnectorSummary(*row) for row in conn.execute(query)]

    @retried
    def set_auto_sync(self, connector_id: int, enabled: bool) -> None:
        now = self.now()
        values: dict[str, Any] = {"auto_sync": enabled, "updated_at": now}
        if enabled:
            # A connector a worker holds stays SYNCING; the finish makes it ACTIVE.
            values.update(
                status=sa.case((c.status == SYNCING, SYNCING), else_=ACTIVE),
                consecutive_failures=0,
                next_sync_at=now,
            )
        with self.database.begin() as conn:
            conn.execute(sa.update(connectors).where(c.id == connector_id).values(**values))

    @retried
    def reset_state(self, connector_id: int) -> None:
        with self.database.begin() as conn:
            conn.execute(
                sa.update(connectors)
                .where(c.id == connector_id)
                .values(state=None, updated_at=self.now())
            )

    # -- claim, heartbeat, finish --------------------------------------------------------

    @retried_unless_uncertain
    def claim(self, request: ClaimRequest) -> list[Claim]:
        worker = request.worker
        if request.limit <= 0:
            return []
        now = self.now()
        if request.connector_ids is None:
            eligible = _due(_time(request.due_before or now))
            trigger = "schedule"
        else:
            eligible = sa.and_(
                c.id.in_(list(request.connector_ids)), c.status.not_in([SYNCING, INACTIVE])
            )
            trigger = "manual"
        eligible = sa.and_(eligible, *_tenant(c.tenant, request.tenant))
        picked = sa.select(c.id).where(eligible).order_by(c.next_sync_at, c.id).limit(request.limit)
        claim_stmt = (
            sa.update(connectors)
            .where(c.id.in_(picked), eligible)  # eligibility repeated: see the module doc
            .values(
                status=SYNCING,
                lease_owner=worker,
                lease_token=sa.func.lower(sa.func.hex(sa.func.randomblob(16))),
                lease_expires_at=now + dt.timedelta(seconds=request.lease_seconds),
                updated_at=now,
            )
            .returning(*CLAIM_COLUMNS, c.next_sync_at)
        )
        with self.database.begin() as conn:
            rows = sorted(conn.execute(claim_stmt).all(), key=lambda r: (r[-1], r[0]))
            if not rows:
                return []
            sync_ids = (
                conn.execute(
                    sa.insert(connector_syncs).returning(s.id, sort_by_parameter_order=True),
                    [
                        {
                            "connector_id": r.id,
                            "tenant": r.tenant,
                            "status": IN_PROGRESS,
                            "trigger": trigger,
                            "worker": worker,
                            "lease_token": r.lease_token,
                            "attempts": 1,
                            "started_at": now,
                        }
                        for r in rows
                    ],
                )
                .scalars()
                .all()
            )
            dataset_ids = (
                conn.execute(
                    sa.insert(datasets).returning(d.id, sort_by_parameter_order=True),
                    [
                        {
                            "connector_id": r.id,
                            "sync_id": sync_id,
                            "tenant": r.tenant,
                            "name": f"{r.name}#{sync_id}",
                            "status": BUILDING,
                            "created_at": now,
                        }
                        for r, sync_id in zip(rows, sync_ids, strict=True)
                    ],
                )
                .scalars()
                .all()
            )
        return [
            Claim.from_row((*r[:-1], sync_id, dataset_id, now), worker, trigger)
            for r, sync_id, dataset_id in zip(rows, sync_ids, dataset_ids, strict=True)
        ]

    @retried
    def heartbeat(
        self, leases: Mapping[int, str], lease_seconds: float, progress: Progress | None = None
    ) -> set[int]:
        if not leases:
            return set()
        stmt = (
            sa.update(connectors)
            .where(c.id.in_(sorted(leases)), c.lease_token.in_(sorted(leases.values())))
            .values(lease_expires_at=self.now() + dt.timedelta(seconds=lease_seconds))
            .returning(c.id, c.lease_token)
        )
        with self.database.begin() as conn:
            kept = {(row.id, row.lease_token) for row in conn.execute(stmt)}
            # The progress of the syncs whose lease is still ours, in the same transaction
            # (SQLite is in-process: no round trip to save by one statement).
            progressed = [
                {"sync_id": p.sync_id, "token": leases[cid], "fetched": p.records_fetched,
                 "processed": p.records_processed}
                for cid, p in (progress or {}).items()
                if (cid, leases.get(cid)) in kept
            ]  # fmt: skip
            if progressed:
                conn.execute(
                    sa.update(connector_syncs)
                    .where(
                        s.id == sa.bindparam("sync_id"),
                        s.status == IN_PROGRESS,
                        s.lease_token == sa.bindparam("token"),
                    )
                    .values(
                        records_fetched=sa.bindparam("fetched"),
                        records_processed=sa.bindparam("processed"),
                    ),
                    progressed,
                )
        return {cid for cid, token in leases.items() if (cid, token) not in kept}

    @retried_unless_uncertain
    def append_records(self, dataset_id: int, start: int, lines: Sequence[str]) -> None:
        try:
            with self.database.begin() as conn:
                conn.exec_driver_sql(
                    "INSERT INTO dataset_records (dataset_id, seq, data) VALUES (?, ?, ?)",
                    [(dataset_id, seq, text) for seq, text in enumerate(lines, start + 1)],
                )
        except sa.exc.IntegrityError as exc:  # the foreign key: the dataset was deleted
            raise dataset_gone(dataset_id) from exc

    @retried
    def discard_records(self, claim: Claim) -> None:
        with self.database.begin() as conn:
            conn.execute(
                sa.delete(dataset_records).where(dataset_records.c.dataset_id == claim.dataset_id)
            )

    def _release(
        self, conn: sa.Connection, claim: Claim, now: dt.datetime, values: dict[str, Any]
    ) -> Outcome:
        """Write the connector's new state only if this worker still holds the lease."""
        row = conn.execute(
            sa.update(connectors)
            .where(c.id == claim.connector_id, c.lease_token == claim.lease_token)
            .values(
                lease_owner=None, lease_token=None, lease_expires_at=None, updated_at=now, **values
            )
            .returning(c.status, c.consecutive_failures, c.next_sync_at)
        ).first()
        if row is None:
            raise lease_lost(claim.name)
        return Outcome(*row)

    @staticmethod
    def _close_sync(
        conn: sa.Connection, sync_id: int, *, discard_later: bool = False, **values: Any
    ) -> None:
        """End a sync; one that did not complete, or completed linking no dataset, loses
        its partial dataset (records cascade), or with `discard_later` has it marked
        FAILED for the caller to delete in short transactions."""
        conn.execute(sa.update(connector_syncs).where(s.id == sync_id).values(**values))
        if values["status"] != COMPLETED or values.get("dataset_id", 0) is None:
            partial = (d.sync_id == sync_id, d.status != READY)
            if discard_later:
                conn.execute(sa.update(datasets).where(*partial).values(status=FAILED))
            else:
                conn.execute(sa.delete(datasets).where(*partial))

    def complete(self, claim: Claim, done: Completion) -> Outcome | None:
        def record(conn: sa.Connection, now: dt.datetime) -> dict[str, Any]:
            row = conn.execute(
                sa.select(c.schedule, c.timezone, c.sync_interval, c.next_sync_at).where(
                    c.id == claim.connector_id
                )
            ).first()
            if row is None:
                raise lease_lost(claim.name)
            return {
                "status": ACTIVE, "last_sync_status": COMPLETED, "last_sync_error": None,
                "consecutive_failures": 0, "state": done.state,
                "next_sync_at": next_sync_on_completion(claim, done, now, tuple(row)),
            }  # fmt: skip

        recorded = self._finish(
            claim, done, record, ready_schema=done.schema if done.keep_dataset else None,
            retention=True, status=COMPLETED,
            dataset_id=claim.dataset_id if done.keep_dataset else None,
        )  # fmt: skip
        return self.retention_after(claim, recorded)

    def fail(self, claim: Claim, failure: Failure) -> Outcome | None:
        def record(_conn: sa.Connection, now: dt.datetime) -> dict[str, Any]:
            return {
                **_fails_again(), "last_sync_status": FAILED, "last_sync_error": failure.error,
                "next_sync_at": now + dt.timedelta(seconds=failure.retry_in),
            }  # fmt: skip

        recorded = self._finish(
            claim, failure, record, status=FAILED, error=failure.error,
            error_type=failure.error_type, discard_later=True,
        )  # fmt: skip
        self.discard_failed_dataset(claim.dataset_id)
        return None if recorded is None else recorded.outcome

    def _finish(
        self,
        claim: Claim,
        finished: Finished,
        connector_values: Callable[[sa.Connection, dt.datetime], dict[str, Any]],
        ready_schema: dict[str, list[str]] | None = None,
        retention: bool = False,
        **sync_values: Any,
    ) -> Recorded | None:
        """Release the connector (with `connector_values(now)`), close the sync, and with
        `ready_schema` make the dataset READY; one transaction, only under the lease. With
        `retention`, the same transaction says whether the connector's retention has
        anything to remove."""

        def record() -> Recorded:
            now = self.now()
            with self.database.begin() as conn:
                values = {**connector_values(conn, now), "last_sync_at": now}
                outcome = self._release(conn, claim, now, values)
                self._close_sync(
                    conn, claim.sync_id, completed_at=now, duration=finished.duration,
                    records_fetched=finished.records_fetched,
                    records_processed=finished.records_processed, attempts=finished.attempts,
                    **sync_values,
                )  # fmt: skip
                if ready_schema is not None:
                    conn.execute(
                        sa.update(datasets)
                        .where(d.id == claim.dataset_id)
                        .values(status=READY, record_count=finished.records_processed,
                                schema=ready_schema, completed_at=now)
                    )  # fmt: skip
                due = retention and self._retention_due(conn, claim.connector_id)
            return Recorded(outcome, due)

        return finish_once(claim, sync_values["status"], record, self._sync_status)

    @staticmethod
    def _retention_due(conn: sa.Connection, connector_id: int) -> bool:
        """Whether mark_datasets_to_prune would choose any dataset of this connector alone:
        more READY ones than its keep (0: no limit), or FAILED ones a cut-short removal
        left."""
        keep = sa.select(c.keep).where(c.id == connector_id).scalar_subquery()
        ready = sa.func.count().filter(d.status == READY)
        failed = sa.func.count().filter(d.status == FAILED)
        query = sa.select(sa.or_(failed > 0, sa.and_(keep > 0, ready > keep))).where(
            d.connector_id == connector_id
        )
        return bool(conn.execute(query).scalar())

    def _sync_status(self, sync_id: int) -> str | None:
        with self.database.begin() as conn:
            return conn.execute(sa.select(s.status).where(s.id == sync_id)).scalar()

    @retried
    def cancel(self, claim: Claim, *, reason: str, duration: float) -> None:
        now = self.now()
        with self.database.begin() as conn:
            self._release(conn, claim, now, {"status": ACTIVE, "next_sync_at": now})
            self._close_sync(
                conn,
                claim.sync_id,
                status=CANCELLED,
                completed_at=now,
                duration=duration,
                error=reason,
                error_type="Cancelled",
            )

    @retried
    def unclaim(self, claim: Claim) -> bool:
        with self.database.begin() as conn:
            released = conn.execute(
                sa.update(connectors)
                .where(c.id == claim.connector_id, c.lease_token == claim.lease_token)
                .values(status=ACTIVE, lease_owner=None, lease_token=None,
                        lease_expires_at=None, updated_at=self.now())
            ).rowcount  # fmt: skip
            if released:
                conn.execute(sa.delete(datasets).where(d.sync_id == claim.sync_id))
                conn.execute(sa.delete(connector_syncs).where(s.id == claim.sync_id))
        return bool(released)

    @retried
    def recover_expired_leases(self, tenant: str | None = None) -> list[RecoveredLease]:
        now = self.now()
        expired = (
            sa.select(c.id, c.name, c.lease_owner, c.lease_token, c.lease_expires_at)
            .where(c.lease_expires_at < _time(now), c.status == SYNCING, *_tenant(c.tenant, tenant))
            .order_by(c.lease_expires_at, c.id)
        )
        recovered: list[RecoveredLease] = []
        with self.database.begin() as conn:
            for row in conn.execute(expired).all():
                reason = recovery_reason(row.lease_owner, row.lease_expires_at)
                released = conn.execute(
                    sa.update(connectors)
                    .where(c.id == row.id, c.lease_token == row.lease_token)
                    .values(
                        **_fails_again(),
                        last_sync_at=now,
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
                        sa.select(s.id).where(s.connector_id == row.id, s.status == IN_PROGRESS)
                    )
                    .scalars()
                    .all()
                )
                for sync_id in open_syncs:
                    self._close_sync(
                        conn,
                        sync_id,
                        status=FAILED,
                        completed_at=now,
                        error=reason,
                        error_type="LeaseExpired",
                    )
                recovered.append(
                    RecoveredLease(
                        row.id,
                        row.name,
                        row.lease_owner,
                        row.lease_expires_at,
                        list(open_syncs),
                        reason,
                    )
                )
        return recovered

    # -- reads ---------------------------------------------------------------------------

    @retried
    def status_summary(self, tenant: str | None = None) -> StatusSummary:
        now = self.now()
        with self.database.begin() as conn:
            by_status = self._by_status(conn, tenant)
            due_now, oldest = self._due_count(conn, now, tenant)
            syncs = self._syncs_since(conn, now, 86400.0, tenant)
            running = self._running(conn, now, tenant)
        return status_summary_of(by_status, due_now, oldest, syncs, now, running)

    @staticmethod
    def _by_status(conn: sa.Connection, tenant: str | None) -> dict[str, int]:
        query = sa.select(c.status, sa.func.count()).where(*_tenant(c.tenant, tenant))
        return {status: int(n) for status, n in conn.execute(query.group_by(c.status))}

    @staticmethod
    def _due_count(
        conn: sa.Connection, now: dt.datetime, tenant: str | None
    ) -> tuple[int, dt.datetime | None]:
        query = sa.select(sa.func.count(), sa.func.min(c.next_sync_at)).where(
            _due(_time(now)), *_tenant(c.tenant, tenant)
        )
        due_now, oldest = conn.execute(query).one()
        return int(due_now), oldest

    @staticmethod
    def _syncs_since(
        conn: sa.Connection, now: dt.datetime, seconds: float, tenant: str | None
    ) -> list[tuple[str, int, int]]:
        query = (
            sa.select(
                s.status, sa.func.count(), sa.func.coalesce(sa.func.sum(s.records_processed), 0)
            )
            .where(_started_since(now, seconds), *_tenant(s.tenant, tenant))
            .group_by(s.status)
        )
        return [(status, int(n), int(r)) for status, n, r in conn.execute(query)]

    @staticmethod
    def _running(conn: sa.Connection, now: dt.datetime, tenant: str | None) -> list[RunningSync]:
        """The syncs in flight; their connectors' typical durations in a second query (SQLite
        has no percentile aggregate: the median is taken here)."""
        rows = conn.execute(
            sa.select(
                s.id,
                s.connector_id,
                c.name,
                s.tenant,
                s.worker,
                s.started_at,
                _seconds_since(s.started_at, now),
                s.records_fetched,
                s.records_processed,
                c.sync_timeout,
                sa.null(),
                t.long_sync,
            )
            .select_from(_SYNCS.outerjoin(alert_thresholds, t.connector_id == s.connector_id))
            .where(s.status == IN_PROGRESS, *_tenant(s.tenant, tenant))
            .order_by(s.started_at, s.id)
            .limit(RUNNING_SYNCS_SHOWN)
        ).all()
        if not rows:
            return []
        latest = (
            sa.select(
                s.connector_id,
                s.duration,
                sa.func.row_number()
                .over(partition_by=s.connector_id, order_by=s.started_at.desc())
                .label("n"),
            )
            .where(s.connector_id.in_({row[1] for row in rows}), s.status == COMPLETED)
            .subquery()
        )
        durations: dict[int, list[float]] = {}
        for connector_id, duration in conn.execute(
            sa.select(latest.c.connector_id, latest.c.duration).where(latest.c.n <= TYPICAL_OF_LAST)
        ):
            durations.setdefault(connector_id, []).append(duration)
        return [
            RunningSync.from_row((*row[:10], _median(durations.get(row[1], [])), row[11]))
            for row in rows
        ]

    @retried
    def health_facts(self, thresholds: HealthThresholds, tenant: str | None = None) -> HealthFacts:
        now = self.now()
        scope = _tenant(c.tenant, tenant)
        window = _started_since(now, thresholds.window)
        with self.database.begin() as conn:

            def rows(*columns: Any, where: Any, order: Any = c.id, limit: int | None = None,
                     source: Any = connectors) -> list[dict[str, Any]]:  # fmt: skip
                query = sa.select(*columns).select_from(source).where(*where, *scope)
                return [
                    dict(row)
                    for row in conn.execute(query.order_by(*order).limit(limit)).mappings()
                ]

            with_thresholds = connectors.outerjoin(alert_thresholds, t.connector_id == c.id)
            failures_warn = sa.func.coalesce(t.failures_warn, thresholds.failures_warn)
            ended = (
                sa.select(
                    s.connector_id,
                    sa.func.count().label("finished"),
                    sa.func.count().filter(s.status == FAILED).label("failed"),
                )
                .where(s.status.in_((COMPLETED, FAILED)), window, *_tenant(s.tenant, tenant))
                .group_by(s.connector_id)
                .subquery()
            )
            max_rate = sa.func.coalesce(t.max_error_rate, thresholds.max_error_rate)
            overdue_at = _time(now - dt.timedelta(seconds=thresholds.overdue_after))
            return HealthFacts(
                checked_at=now,
                errors=rows(
                    c.id,
                    c.name,
                    c.consecutive_failures,
                    c.last_sync_error,
                    where=[c.status == ERROR],
                    order=[c.id],
                ),
                failing=rows(
                    c.id,
                    c.name,
                    c.consecutive_failures,
                    c.max_consecutive_failures,
                    c.last_sync_error,
                    failures_warn.label("threshold"),
                    source=with_thresholds,
                    where=[
                        c.status != ERROR,
                        c.consecutive_failures > 0,
                        c.consecutive_failures >= failures_warn,
                    ],
                    order=[c.consecutive_failures.desc(), c.id],
                ),
                expired=rows(
                    c.id,
                    c.name,
                    c.lease_owner,
                    c.lease_expires_at,
                    where=[c.status == SYNCING, c.lease_expires_at < _time(now)],
                    order=[c.id],
                ),
                overdue=rows(
                    c.id,
                    c.name,
                    c.next_sync_at,
                    where=[_due(overdue_at)],
                    order=[c.next_sync_at],
                    limit=HEALTH_OVERDUE_LISTED,
                ),
                running=self._running(conn, now, tenant),
                error_rates=rows(
                    c.id,
                    c.name,
                    ended.c.finished,
                    ended.c.failed,
                    max_rate.label("threshold"),
                    source=with_thresholds.join(ended, ended.c.connector_id == c.id),
                    where=[
                        ended.c.finished >= thresholds.min_syncs,
                        ended.c.failed > max_rate * ended.c.finished,
                        c.status != INACTIVE,  # deleted: nothing to fix
                    ],
                    order=[(ended.c.failed * 1.0 / ended.c.finished).desc(), c.id],
                ),
                syncs_in_window={
                    status: int(n)
                    for status, n, _ in self._syncs_since(conn, now, thresholds.window, tenant)
                },
            )

    @retried
    def metrics_snapshot(
        self, window: float, tenant: str | None = None, connector_series: int | None = None
    ) -> MetricsSnapshot:
        now = self.now()
        bucket = sa.case(
            *((s.duration <= bound, index) for index, bound in enumerate(DURATION_BUCKETS)),
            else_=sa.case((s.duration.is_not(None), len(DURATION_BUCKETS))),
        ).label("bucket")
        with self.database.begin() as conn:
            by_status = self._by_status(conn, tenant)
            due_now, oldest = self._due_count(conn, now, tenant)
            expired = conn.execute(
                sa.select(sa.func.count()).where(
                    c.status == SYNCING, c.lease_expires_at < _time(now), *_tenant(c.tenant, tenant)
                )
            ).scalar_one()
            buckets = conn.execute(
                sa.select(
                    s.status,
                    bucket,
                    sa.func.count(),
                    sa.func.coalesce(sa.func.sum(s.records_processed), 0),
                    sa.func.coalesce(sa.func.sum(s.duration), 0.0),
                )
                .where(_started_since(now, window), *_tenant(s.tenant, tenant))
                .group_by(s.status, bucket)
            ).all()
            gauges = conn.execute(_connector_gauges(tenant, connector_series)).all()
        return MetricsSnapshot(
            checked_at=now,
            window=window,
            connectors=dict(sorted(by_status.items())),
            due_now=due_now,
            oldest_due_since=oldest,
            expired_leases=int(expired),
            syncs=syncs_by_bucket(buckets),
            per_connector=[ConnectorGauges(*row) for row in gauges],
        )

    # -- alerts --------------------------------------------------------------------------

    @retried
    def track_alerts(
        self, scope: str, problems: Sequence[HealthProblem], hold_seconds: float
    ) -> list[AlertMessage]:
        now = self.now()
        found = {p.key: p for p in problems}
        mine = a.scope == scope
        owed = sa.or_(
            a.resolved_at.is_not(None), a.notified_level.is_(None), a.level > a.notified_level
        )
        with self.database.begin() as conn:
            for p in found.values():
                values = {
                    "problem": p.problem, "level": ALERT_LEVELS[p.severity],
                    "connector_name": p.connector_name, "detail": p.detail, "seen_at": now,
                }  # fmt: skip
                kept = conn.execute(
                    sa.update(health_alerts)
                    .where(mine, a.key == p.key)
                    .values(
                        **values,
                        resolved_at=None,
                        notified_level=sa.case(
                            (a.notified_level > values["level"], values["level"]),
                            else_=a.notified_level,
                        ),
                    )
                ).rowcount
                if not kept:
                    conn.execute(
                        sa.insert(health_alerts).values(
                            scope=scope,
                            key=p.key,
                            connector_id=p.connector_id,
                            opened_at=now,
                            **values,
                        )
                    )
            conn.execute(
                sa.update(health_alerts)
                .where(mine, a.resolved_at.is_(None), a.key.not_in(list(found)))
                .values(resolved_at=now)
            )
            conn.execute(
                sa.delete(health_alerts).where(
                    mine, a.resolved_at.is_not(None), a.notified_level.is_(None)
                )
            )
            claimed = conn.execute(
                sa.update(health_alerts)
                .where(mine, owed, sa.or_(a.sending_until.is_(None), a.sending_until < _time(now)))
                .values(sending_until=now + dt.timedelta(seconds=hold_seconds))
                .returning(
                    a.key,
                    a.problem,
                    a.level,
                    a.connector_id,
                    a.connector_name,
                    a.detail,
                    a.opened_at,
                    a.resolved_at,
                )
            ).mappings()
            # SQLite's RETURNING got `resolved_at IS NOT NULL` wrong (true for NULL): test here.
            return alert_messages(
                [{**row, "resolved": row["resolved_at"] is not None} for row in claimed]
            )

    @retried
    def alerts_sent(
        self, scope: str, sent: Sequence[AlertMessage], failed: Sequence[AlertMessage]
    ) -> None:
        mine = a.scope == scope
        with self.database.begin() as conn:
            for message in sent:
                if message.kind == "problem":
                    conn.execute(
                        sa.update(health_alerts)
                        .where(mine, a.key == message.key)
                        .values(notified_level=ALERT_LEVELS[message.severity], sending_until=None)
                    )
                else:
                    conn.execute(
                        sa.delete(health_alerts).where(
                            mine, a.key == message.key, a.resolved_at.is_not(None)
                        )
                    )
            conn.execute(
                sa.update(health_alerts)
                .where(mine, a.key.in_([m.key for m in failed]))
                .values(sending_until=None)
            )

    @retried
    def open_alerts(self, scope: str) -> list[AlertMessage]:
        query = (
            sa.select(
                a.key, a.problem, a.level, a.connector_id, a.connector_name, a.detail, a.opened_at
            )
            .where(a.scope == scope, a.resolved_at.is_(None))
            .order_by(a.opened_at, a.key)
        )
        with self.database.begin() as conn:
            return [alert_message(dict(row), "problem") for row in conn.execute(query).mappings()]

    @retried
    def set_alert_thresholds(self, connector_id: int, thresholds: AlertThresholds) -> None:
        values = {**as_dict(thresholds), "updated_at": self.now()}
        with self.database.begin() as conn:
            updated = conn.execute(
                sa.update(alert_thresholds).where(t.connector_id == connector_id).values(**values)
            ).rowcount
            if not updated:
                conn.execute(
                    sa.insert(alert_thresholds).values(connector_id=connector_id, **values)
                )

    @retried
    def alert_thresholds(self, connector_id: int) -> AlertThresholds:
        query = sa.select(t.failures_warn, t.long_sync, t.max_error_rate).where(
            t.connector_id == connector_id
        )
        with self.database.begin() as conn:
            row = conn.execute(query).first()
        return AlertThresholds(*row) if row else AlertThresholds()

    @retried
    def history(self, where: HistoryFilter) -> list[Sync]:
        query = (
            sa.select(*_sync_columns(self.now()))
            .select_from(_SYNCS)
            .order_by(s.started_at.desc(), s.id.desc())
            .limit(where.limit)
        )
        if where.connector_id is not None:
            query = query.where(s.connector_id == where.connector_id)
        if where.status is not None:
            query = query.where(s.status == where.status)
        query = query.where(*_tenant(s.tenant, where.tenant))
        with self.database.begin() as conn:
            return [Sync(*row) for row in conn.execute(query)]

    @retried
    def syncs_by_id(self, sync_ids: Sequence[int]) -> list[Sync]:
        if not sync_ids:
            return []
        query = (
            sa.select(*_sync_columns(self.now()))
            .select_from(_SYNCS)
            .where(s.id.in_(list(sync_ids)))
        )
        with self.database.begin() as conn:
            by_id = {row.id: Sync(*row) for row in conn.execute(query)}
        return [by_id[i] for i in sync_ids if i in by_id]

    @retried
    def datasets_of(self, connector_id: int, limit: int = 10) -> list[DatasetSummary]:
        query = (
            sa.select(*DATASET_COLUMNS)
            .where(d.connector_id == connector_id)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        )
        with self.database.begin() as conn:
            return [DatasetSummary(*row) for row in conn.execute(query)]

    def _datasets(self, *where: sa.ColumnElement[bool], limit: int | None) -> list[Dataset]:
        query = (
            sa.select(*WHOLE_DATASET_COLUMNS)
            .select_from(_DATASETS)
            .where(*where)
            .order_by(d.created_at.desc(), d.id.desc())
            .limit(limit)
        )
        with self.database.begin() as conn:
            return [Dataset(*row) for row in conn.execute(query)]

    @retried
    def list_datasets(self, where: ListFilter) -> list[Dataset]:
        conditions = [*_tenant(d.tenant, where.tenant)]
        if where.connector_id is not None:
            conditions.append(d.connector_id == where.connector_id)
        if where.status is not None:
            conditions.append(d.status == where.status)
        return self._datasets(*conditions, limit=where.limit)

    @retried
    def find_dataset(self, dataset_id: int, tenant: str | None = None) -> Dataset:
        found = []
        if dataset_id < 2**63:  # SQLite's integers are 64-bit: a larger id names nothing
            found = self._datasets(d.id == dataset_id, *_tenant(d.tenant, tenant), limit=1)
        if not found:
            raise dataset_not_found(dataset_id, tenant)
        return found[0]

    @retried
    def latest_dataset(self, connector_id: int) -> Dataset | None:
        query = (
            sa.select(*WHOLE_DATASET_COLUMNS)
            .select_from(_DATASETS)
            .where(d.connector_id == connector_id, d.status == READY)
            .order_by(d.id.desc())
            .limit(1)
        )
        with self.database.begin() as conn:
            row = conn.execute(query).first()
        return Dataset(*row) if row else None

    def read_records(
        self, dataset_id: int, limit: int | None = None, chunk: int = 2000
    ) -> Generator[list[str], None, None]:
        # Not through Database.begin: its BEGIN IMMEDIATE would hold the one write lock
        # for the whole read. One statement stepped lazily reads one WAL snapshot and
        # lets writers go on.
        raw = self.database.engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute(
                "SELECT data FROM dataset_records WHERE dataset_id = ? ORDER BY seq LIMIT ?",
                (dataset_id, -1 if limit is None else limit),
            )
            while rows := cursor.fetchmany(chunk):
                yield [row[0] for row in rows]
            cursor.close()
        finally:
            raw.close()

    # -- removing data -------------------------------------------------------------------

    @retried
    def mark_datasets_to_prune(self, request: PruneRequest) -> list[PrunedDataset]:
        scope = [*_tenant(d.tenant, request.tenant)]
        if request.connector_id is not None:
            scope.append(d.connector_id == request.connector_id)
        newest = sa.func.row_number().over(partition_by=d.connector_id, order_by=d.id.desc())
        ready = (
            sa.select(d.id, d.connector_id, d.created_at, newest.label("newest"))
            .where(d.status == READY, *scope)
            .subquery()
        )
        keep = sa.func.coalesce(sa.bindparam(None, request.keep, type_=sa.Integer), c.keep)
        beyond = sa.and_(keep > 0, ready.c.newest > keep)
        older = ready.c.created_at < _time(request.older_than) if request.older_than else sa.false()
        chosen = sa.union_all(
            sa.select(ready.c.id, sa.case((beyond, "keep"), else_="age").label("reason"))
            .join(connectors, c.id == ready.c.connector_id)
            .where(ready.c.newest > 1, sa.or_(beyond, older)),
            sa.select(d.id, sa.literal("unfinished")).where(d.status == FAILED, *scope),
        ).subquery()
        query = (
            sa.select(
                d.id,
                d.connector_id,
                c.name,
                d.tenant,
                d.name,
                d.record_count,
                d.created_at,
                chosen.c.reason,
            )
            .select_from(chosen.join(_DATASETS, d.id == chosen.c.id))
            .order_by(d.tenant, c.name, d.id)
        )
        with self.database.begin() as conn:
            found = [PrunedDataset(*row) for row in conn.execute(query)]
            if not request.dry_run and found:
                conn.execute(
                    sa.update(datasets)
                    .where(d.id.in_([p.id for p in found]), d.status == READY)
                    .values(status=FAILED)
                )
        return found

    @retried
    def max_record_seq(self, dataset_id: int) -> int:
        r = dataset_records.c
        query = sa.select(sa.func.coalesce(sa.func.max(r.seq), 0)).where(r.dataset_id == dataset_id)
        with self.database.begin() as conn:
            return int(conn.execute(query).scalar_one())

    @retried
    def delete_record_range(self, dataset_id: int, after: int, upto: int) -> int:
        r = dataset_records.c
        with self.database.begin() as conn:
            return conn.execute(
                sa.delete(dataset_records).where(
                    r.dataset_id == dataset_id, r.seq > after, r.seq <= upto
                )
            ).rowcount

    @retried
    def delete_datasets(self, dataset_ids: Sequence[int]) -> None:
        if not dataset_ids:
            return
        with self.database.begin() as conn:
            conn.execute(
                sa.update(connector_syncs)
                .where(s.dataset_id.in_(list(dataset_ids)))
                .values(dataset_id=None)
            )
            conn.execute(sa.delete(datasets).where(d.id.in_(list(dataset_ids))))

    @retried
    def prune_history(
        self, before: dt.datetime, tenant: str | None = None, *, dry_run: bool = False
    ) -> list[PrunedHistory]:
        # Aliases, so that SQLAlchemy does not correlate the subquery with the outer
        # statement's connector_syncs.
        p, latest = connector_syncs.alias("picked"), connector_syncs.alias("latest")
        latest_completed = (
            sa.select(sa.func.max(latest.c.id))
            .where(latest.c.connector_id == p.c.connector_id, latest.c.status == COMPLETED)
            .scalar_subquery()
        )
        picked = sa.select(p.c.id).where(
            p.c.started_at < _time(before),
            p.c.status != IN_PROGRESS,
            *_tenant(p.c.tenant, tenant),
            ~sa.exists().where(d.sync_id == p.c.id),
            p.c.id != sa.func.coalesce(latest_completed, 0),
        )
        counts = (
            sa.select(s.connector_id, c.name, c.tenant, sa.func.count())
            .select_from(_SYNCS)
            .where(s.id.in_(picked))
            .group_by(s.connector_id, c.name, c.tenant)
            .order_by(c.tenant, c.name)
        )
        with self.database.begin() as conn:
            found = [PrunedHistory(*row) for row in conn.execute(counts)]
            if not dry_run and found:
                conn.execute(sa.delete(connector_syncs).where(s.id.in_(picked)))
        return found
