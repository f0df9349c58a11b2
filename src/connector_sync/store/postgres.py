"""The PostgreSQL store: every statement is a named query from queries.sql, run on a
psycopg connection of the database's pool (db.Database.transaction): one round trip per
call, and no SQLAlchemy import at all."""

from __future__ import annotations

import datetime as dt
import itertools
import re
from collections.abc import Generator, Iterator, Mapping, Sequence
from contextlib import closing, contextmanager
from typing import Any, cast

import psycopg
from psycopg.types.json import Jsonb

from connector_sync.constants import CANCELLED, COMPLETED, FAILED, HEALTH_OVERDUE_LISTED
from connector_sync.exceptions import AlreadyExists, DatabaseError, RecordError
from connector_sync.store import base
from connector_sync.store.base import (
    ALERT_LEVELS,
    DURATION_BUCKETS,
    RUNNING_SYNCS_SHOWN,
    TYPICAL_OF_LAST,
    Store,
    alert_message,
    ambiguous_name,
    as_dict,
    finish_once,
    lease_lost,
    not_found,
    retried,
    retried_unless_uncertain,
    status_summary_of,
)
from connector_sync.store.named import queries

# JSON's escape of a NUL character: \u0000 after an even number of backslashes.
#: Rows per message of a streamed listing.
_STREAM_CHUNK = 500

#: Records sent to COPY at once: the first piece is made while the server waits.
_COPY_PIECE_LINES = 500
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")


def _lease_of(claim: base.Claim) -> dict[str, Any]:
    """The parameters naming a claim's connector, lease, sync and dataset."""
    return {
        "connector_id": claim.connector_id,
        "lease_token": claim.lease_token,
        "sync_id": claim.sync_id,
        "dataset_id": claim.dataset_id,
    }


def _copy_text(prefix: str, lines: Sequence[str], seq: int) -> str:
    """Rows of COPY's text format: `prefix`, the seq (from `seq` on), the JSON text.

    JSON escapes every control character, so the only byte COPY treats specially that
    can remain is the backslash; it is doubled in one pass.
    """
    rows = [f"{prefix}{number}\t{text}\n" for number, text in enumerate(lines, seq)]
    return "".join(rows).replace("\\", "\\\\")


def jsonb_key_order(keys: list[Any]) -> list[Any]:
    """Keys in jsonb's order, shorter first, then by their bytes: jsonb sorts an object's
    keys so on input (a fifth of the server's work for a row of 19 fields), and skips
    the work when they come sorted. Keys that are not text are left as they are."""
    try:
        return sorted(keys, key=_jsonb_key)
    except (AttributeError, UnicodeEncodeError):  # not str, or a lone surrogate
        return keys


def _jsonb_key(key: str) -> tuple[int, bytes]:
    data = key.encode()
    return len(data), data


class PostgresStore(Store):
    """The Store on PostgreSQL: row locks (FOR UPDATE SKIP LOCKED), the database's clock."""

    record_key_order = staticmethod(jsonb_key_order)

    @contextmanager
    def _cursor(self, name: str | None = None) -> Iterator[psycopg.Cursor[Any]]:
        """A cursor in one transaction (server-side when named); driver errors become
        DatabaseError (transient where trying again may succeed)."""
        with (
            self.database.transaction() as conn,
            conn.cursor(name) if name else conn.cursor() as cursor,
        ):
            yield cursor

    def _run(self, query: str, /, **params: Any) -> list[tuple[Any, ...]]:
        """One named query, as its own transaction (every statement is atomic alone)."""
        with self.database.connection() as conn, conn.cursor() as cursor:
            return _Runner(cursor, self.clock() if self.clock else None)(query, **params)

    @contextmanager
    def _transaction(self) -> Iterator[_Runner]:
        """Several named queries in one transaction: `run(name, **params)` gives the rows,
        `run.dicts(name, **params)` the rows as dicts."""
        with self._cursor() as cursor:
            yield _Runner(cursor, self.clock() if self.clock else None)

    # -- time --------------------------------------------------------------------------

    @retried
    def now(self) -> dt.datetime:
        if self.clock is not None:
            return self.clock()
        value: dt.datetime = self._run("now")[0][0]
        return value

    # -- connectors --------------------------------------------------------------------

    @retried_unless_uncertain
    def add_connector(self, new: base.NewConnector) -> int:
        params = as_dict(new)
        params["config"] = Jsonb(new.config)
        rows = self._run("add_connector", **params)
        if not rows:
            raise AlreadyExists(
                f"connector '{new.name}' already exists in tenant '{new.tenant}': "
                "choose another NAME"
            )
        return int(rows[0][0])

    @retried
    def find_connector(self, ref: str, tenant: str | None = None) -> base.Connector:
        if ref.isascii() and ref.isdigit() and int(ref) < 2**31:
            rows = self._run("find_connector_by_id", id=int(ref), tenant=tenant)
            if rows:
                return base.Connector(*rows[0])
        rows = self._run("find_connectors_by_name", name=ref, tenant=tenant)
        if not rows:
            raise not_found(ref, tenant)
        if len(rows) > 1:
            raise ambiguous_name(ref, [row[1] for row in rows])
        return base.Connector(*rows[0])

    @retried
    def list_connectors(
        self, where: base.ConnectorFilter | None = None
    ) -> list[base.ConnectorSummary]:
        rows = self._run("list_connectors", **as_dict(where or base.ConnectorFilter()))
        return [base.ConnectorSummary(*row) for row in rows]

    @retried
    def count_connectors(self, where: base.ConnectorFilter) -> int:
        return int(self._run("count_connectors", **as_dict(where))[0][0])

    def stream_connectors(
        self, where: base.ConnectorFilter, chunk: int = 2000
    ) -> Generator[list[base.ConnectorSummary], None, None]:
        summary = base.ConnectorSummary
        params = {**as_dict(where), "now": self.clock() if self.clock else None}
        # One statement (one snapshot) whose rows the server sends on while these are
        # handled, `_STREAM_CHUNK` per message (libpq 17's chunked rows), in binary: times and
        # numbers arrive as values, not text to parse. Closing the stream cancels the rest.
        with self.database.connection() as conn, conn.cursor(binary=True) as cursor:
            size = _STREAM_CHUNK if psycopg.pq.version() >= 170000 else 1
            stream = cursor.stream(queries()["list_connectors"], params, size=size)
            with closing(cast(Generator[Any, None, None], stream)) as rows:
                while batch := list(itertools.islice(rows, chunk)):
                    yield [summary(*row) for row in batch]

    @retried
    def edit_connector(self, connector_id: int, edit: base.ConnectorEdit) -> None:
        params = as_dict(edit)
        params["config"] = Jsonb(edit.config)
        try:
            self._run("edit_connector", id=connector_id, **params)
        except DatabaseError as exc:
            if isinstance(exc.__cause__, psycopg.errors.UniqueViolation):
                raise base.name_taken(edit.name) from None
            raise

    @retried
    def data_counts(self, connector_id: int) -> base.DataCounts:
        syncs, datasets, records = self._run("data_counts", id=connector_id)[0]
        return base.DataCounts(int(syncs), int(datasets), int(records))

    @retried
    def retire_connector(self, connector_id: int, *, force: bool, remove_data: bool) -> None:
        if self._run(
            "retire_connector", id=connector_id, force=force, remove_data=remove_data,
            reason=base.RETIRED_REASON,
        ):  # fmt: skip
            return
        rows = self._run("lease_of", id=connector_id)
        if rows:
            raise base.connector_busy(*rows[0])

    @retried
    def delete_connector(self, connector_id: int) -> None:
        self._run("delete_connector", id=connector_id)

    @retried
    def connector_names(self, prefix: str, tenant: str | None, limit: int) -> list[str]:
        rows = self._run("connector_names", prefix=prefix, tenant=tenant, limit=limit)
        return [row[0] for row in rows]

    @retried
    def due_connectors(
        self, limit: int | None = None, tenant: str | None = None
    ) -> list[base.ConnectorSummary]:
        rows = self._run("due_connectors", limit=limit, tenant=tenant)
        return [base.ConnectorSummary(*row) for row in rows]

    @retried
    def set_auto_sync(self, connector_id: int, enabled: bool) -> None:
        self._run("enable_connector" if enabled else "disable_connector", id=connector_id)

    @retried
    def reset_state(self, connector_id: int) -> None:
        self._run("reset_state", id=connector_id)

    # -- claim, heartbeat, finish --------------------------------------------------------

    @retried_unless_uncertain
    def claim(self, request: base.ClaimRequest) -> list[base.Claim]:
        if request.limit <= 0:
            return []
        params = as_dict(request)
        ids = params.pop("connector_ids")
        params["ids"] = None if ids is None else list(ids)
        rows = self._run("claim", **params)
        trigger = "schedule" if ids is None else "manual"
        return [base.Claim.from_row(row, request.worker, trigger) for row in rows]

    @retried
    def heartbeat(
        self, leases: Mapping[int, str], lease_seconds: float, progress: base.Progress | None = None
    ) -> set[int]:
        if not leases:
            return set()
        done = [p for cid, p in (progress or {}).items() if cid in leases]
        rows = self._run(
            "heartbeat",
            ids=list(leases),
            tokens=list(leases.values()),
            lease_seconds=lease_seconds,
            sync_ids=[p.sync_id for p in done],
            fetched=[p.records_fetched for p in done],
            processed=[p.records_processed for p in done],
        )
        kept = set(rows)
        return {cid for cid, token in leases.items() if (cid, token) not in kept}

    @retried_unless_uncertain
    def append_records(self, dataset_id: int, start: int, lines: Sequence[str]) -> None:
        prefix = f"{dataset_id}\t"
        try:
            with self._cursor() as cursor:
                cursor.execute(queries()["lock_dataset"], {"dataset_id": dataset_id})
                if not cursor.rowcount:
                    raise base.dataset_gone(dataset_id)
                with cursor.copy("COPY dataset_records (dataset_id, seq, data) FROM STDIN") as copy:
                    # A piece at a time: the server parses one while the next is made.
                    for first in range(0, len(lines), _COPY_PIECE_LINES):
                        piece = lines[first : first + _COPY_PIECE_LINES]
                        copy.write(_copy_text(prefix, piece, start + first + 1))
        except RecordError:
            raise
        except Exception as exc:
            if isinstance(exc.__cause__, psycopg.errors.UntranslatableCharacter):
                # jsonb has no text for \u0000 (SQLite stores it). Name the record, not the data.
                number = base.first_line_matching(_ESCAPED_NUL, lines, start)
                raise RecordError(
                    f"record {number} holds a NUL character (\\u0000), which PostgreSQL cannot "
                    "store in jsonb; remove it in the source"
                ) from None
            raise

    @retried
    def discard_records(self, claim: base.Claim) -> None:
        self._run("discard_records", dataset_id=claim.dataset_id)

    def complete(self, claim: base.Claim, done: base.Completion) -> base.Outcome | None:
        recorded = self._finish(
            claim, COMPLETED, done, schema=Jsonb(done.schema),
            state=None if done.state is None else Jsonb(done.state),
            next_sync_in=done.next_sync_in, next_sync_at=done.next_sync_at,
            keep_dataset=done.keep_dataset,
        )  # fmt: skip
        return self.retention_after(claim, recorded)

    def fail(self, claim: base.Claim, failure: base.Failure) -> base.Outcome | None:
        recorded = self._finish(
            claim, FAILED, failure, error=failure.error, error_type=failure.error_type,
            next_sync_in=failure.retry_in,
        )  # fmt: skip
        self.discard_failed_dataset(claim.dataset_id)
        return None if recorded is None else recorded.outcome

    @retried
    def cancel(self, claim: base.Claim, *, reason: str, duration: float) -> None:
        cancelled = base.Finished(
            duration=duration, records_fetched=0, records_processed=0, attempts=1
        )
        self._record(claim, CANCELLED, cancelled, error=reason, error_type="Cancelled")

    def _finish(
        self, claim: base.Claim, status: str, finished: base.Finished, **params: Any
    ) -> base.Recorded | None:
        return finish_once(
            claim, status, lambda: self._record(claim, status, finished, **params),
            self._sync_status,
        )  # fmt: skip

    def _record(
        self, claim: base.Claim, status: str, finished: base.Finished, **params: Any
    ) -> base.Recorded:
        """The `finish` statement; raises LeaseLost when the lease is no longer ours."""
        values: dict[str, Any] = {
            "error": None, "error_type": None, "schema": None, "state": None, "next_sync_in": 0,
            "next_sync_at": None, "keep_dataset": True, **as_dict(finished), **params,
        }  # fmt: skip
        rows = self._run(
            "finish", status=status, **_lease_of(claim), schedule=claim.schedule,
            timezone=claim.timezone, sync_interval=claim.sync_interval, **values,
        )  # fmt: skip
        if not rows:
            raise lease_lost(claim.name)
        *outcome, retention_due = rows[0]
        return base.Recorded(base.Outcome(*outcome), bool(retention_due))

    def _sync_status(self, sync_id: int) -> str | None:
        rows = self._run("sync_status", sync_id=sync_id)
        return str(rows[0][0]) if rows else None

    @retried
    def unclaim(self, claim: base.Claim) -> bool:
        return bool(self._run("unclaim", **_lease_of(claim)))

    @retried
    def recover_expired_leases(self, tenant: str | None = None) -> list[base.RecoveredLease]:
        rows = self._run("recover_expired_leases", tenant=tenant)
        return [base.RecoveredLease(*row) for row in rows]

    # -- reads ---------------------------------------------------------------------------

    @retried
    def status_summary(self, tenant: str | None = None) -> base.StatusSummary:
        with self._transaction() as run:
            now = run.now
            by_status = dict(run("connectors_by_status", tenant=tenant))
            due_now, oldest = run("due_count", tenant=tenant)[0]
            syncs = run("syncs_since", tenant=tenant, seconds=86400)
            running = self._running(run, tenant)
            if now is None:
                now = run("now")[0][0]
        return status_summary_of(by_status, due_now, oldest, syncs, now, running)

    @staticmethod
    def _running(run: _Runner, tenant: str | None) -> list[base.RunningSync]:
        rows = run(
            "running_syncs", tenant=tenant, limit=RUNNING_SYNCS_SHOWN, typical_of=TYPICAL_OF_LAST
        )
        return [base.RunningSync.from_row(row) for row in rows]

    @retried
    def health_facts(
        self, thresholds: base.HealthThresholds, tenant: str | None = None
    ) -> base.HealthFacts:
        limits = {"tenant": tenant, "seconds": thresholds.window}
        with self._transaction() as run:
            return base.HealthFacts(
                checked_at=run.now or run("now")[0][0],
                errors=run.dicts("connectors_in_error", tenant=tenant),
                failing=run.dicts(
                    "failing_connectors", tenant=tenant, failures_warn=thresholds.failures_warn
                ),
                expired=run.dicts("expired_leases", tenant=tenant),
                overdue=run.dicts(
                    "overdue_connectors",
                    tenant=tenant,
                    seconds=thresholds.overdue_after,
                    listed=HEALTH_OVERDUE_LISTED,
                ),
                running=self._running(run, tenant),
                error_rates=run.dicts(
                    "error_rates",
                    **limits,
                    max_error_rate=thresholds.max_error_rate,
                    min_syncs=thresholds.min_syncs,
                ),
                syncs_in_window={status: int(n) for status, n, _ in run("syncs_since", **limits)},
            )

    @retried
    def metrics_snapshot(
        self, window: float, tenant: str | None = None, connector_series: int | None = None
    ) -> base.MetricsSnapshot:
        with self._transaction() as run:
            by_status = dict(run("connectors_by_status", tenant=tenant))
            due_now, oldest = run("due_count", tenant=tenant)[0]
            buckets = run(
                "syncs_in_window", tenant=tenant, seconds=window, buckets=len(DURATION_BUCKETS),
                negated_bounds=[-b for b in reversed(DURATION_BUCKETS)],
            )  # fmt: skip
            return base.MetricsSnapshot(
                checked_at=run.now or run("now")[0][0],
                window=window,
                connectors={status: int(n) for status, n in sorted(by_status.items())},
                due_now=int(due_now),
                oldest_due_since=oldest,
                expired_leases=int(run("expired_lease_count", tenant=tenant)[0][0]),
                syncs=base.syncs_by_bucket(buckets),
                per_connector=[
                    base.ConnectorGauges(*row)
                    for row in run("connector_gauges", tenant=tenant, limit=connector_series)
                ],
            )

    # -- alerts --------------------------------------------------------------------------

    @retried
    def track_alerts(
        self, scope: str, problems: Sequence[base.HealthProblem], hold_seconds: float
    ) -> list[base.AlertMessage]:
        found = {p.key: p for p in problems}.values()
        with self._transaction() as run:
            run(
                "open_alert", scope=scope, keys=[p.key for p in found],
                problems=[p.problem for p in found],
                levels=[ALERT_LEVELS[p.severity] for p in found],
                connector_ids=[p.connector_id for p in found],
                names=[p.connector_name for p in found], details=[p.detail for p in found],
            )  # fmt: skip
            run("resolve_alerts", scope=scope, keys=[p.key for p in found])
            run("forget_unannounced_alerts", scope=scope)
            claimed = run.dicts("claim_alert_messages", scope=scope, hold_seconds=hold_seconds)
        return base.alert_messages(claimed)

    @retried
    def alerts_sent(
        self, scope: str, sent: Sequence[base.AlertMessage], failed: Sequence[base.AlertMessage]
    ) -> None:
        announced = [m for m in sent if m.kind == "problem"]
        with self._transaction() as run:
            run(
                "announced_alerts", scope=scope, keys=[m.key for m in announced],
                levels=[ALERT_LEVELS[m.severity] for m in announced],
            )  # fmt: skip
            resolved = [m.key for m in sent if m.kind == "resolved"]
            run("forget_resolved_alerts", scope=scope, keys=resolved)
            run("release_alerts", scope=scope, keys=[m.key for m in failed])

    @retried
    def open_alerts(self, scope: str) -> list[base.AlertMessage]:
        with self._transaction() as run:
            return [alert_message(row, "problem") for row in run.dicts("open_alerts", scope=scope)]

    @retried
    def set_alert_thresholds(self, connector_id: int, thresholds: base.AlertThresholds) -> None:
        self._run("set_alert_thresholds", connector_id=connector_id, **as_dict(thresholds))

    @retried
    def alert_thresholds(self, connector_id: int) -> base.AlertThresholds:
        rows = self._run("alert_thresholds", connector_id=connector_id)
        return base.AlertThresholds(*rows[0]) if rows else base.AlertThresholds()

    @retried
    def history(self, where: base.HistoryFilter) -> list[base.Sync]:
        rows = self._run("history", **as_dict(where), ids=None)
        return [base.Sync(*row) for row in rows]

    @retried
    def syncs_by_id(self, sync_ids: Sequence[int]) -> list[base.Sync]:
        if not sync_ids:
            return []
        by_id = {
            row[0]: base.Sync(*row)
            for row in self._run(
                "history", **as_dict(base.HistoryFilter(limit=None)), ids=list(sync_ids)
            )
        }
        return [by_id[i] for i in sync_ids if i in by_id]

    @retried
    def datasets_of(self, connector_id: int, limit: int = 10) -> list[base.DatasetSummary]:
        rows = self._run("datasets_of", connector_id=connector_id, limit=limit)
        return [base.DatasetSummary(*row) for row in rows]

    @retried
    def list_datasets(self, where: base.ListFilter) -> list[base.Dataset]:
        return [base.Dataset(*row) for row in self._run("list_datasets", id=None, **as_dict(where))]

    @retried
    def find_dataset(self, dataset_id: int, tenant: str | None = None) -> base.Dataset:
        rows = []
        if dataset_id < 2**31:
            rows = self._run(
                "list_datasets", id=dataset_id, connector_id=None, status=None, tenant=tenant,
                limit=1,
            )  # fmt: skip
        if not rows:
            raise base.dataset_not_found(dataset_id, tenant)
        return base.Dataset(*rows[0])

    @retried
    def latest_dataset(self, connector_id: int) -> base.Dataset | None:
        rows = self._run("latest_dataset", connector_id=connector_id)
        return base.Dataset(*rows[0]) if rows else None

    def read_records(
        self, dataset_id: int, limit: int | None = None, chunk: int = 2000
    ) -> Generator[list[str], None, None]:
        with self._cursor(name=f"records_{dataset_id}") as cursor:
            cursor.execute(queries()["read_records"], {"dataset_id": dataset_id, "limit": limit})
            while rows := cursor.fetchmany(chunk):
                yield [row[0] for row in rows]

    # -- removing data -------------------------------------------------------------------

    @retried
    def mark_datasets_to_prune(self, request: base.PruneRequest) -> list[base.PrunedDataset]:
        rows = self._run("prune_datasets", **as_dict(request))
        return [base.PrunedDataset(*row) for row in rows]

    @retried
    def max_record_seq(self, dataset_id: int) -> int:
        return int(self._run("max_record_seq", dataset_id=dataset_id)[0][0])

    @retried
    def delete_record_range(self, dataset_id: int, after: int, upto: int) -> int:
        rows = self._run("delete_record_range", dataset_id=dataset_id, after=after, upto=upto)
        return int(rows[0][0])

    @retried
    def delete_datasets(self, dataset_ids: Sequence[int]) -> None:
        if dataset_ids:
            self._run("delete_datasets", ids=list(dataset_ids))

    @retried
    def prune_history(
        self, before: dt.datetime, tenant: str | None = None, *, dry_run: bool = False
    ) -> list[base.PrunedHistory]:
        rows = self._run("prune_history", before=before, tenant=tenant, dry_run=dry_run)
        return [base.PrunedHistory(cid, name, tenant, int(n)) for cid, name, tenant, n in rows]


class _Runner:
    """Runs named queries on one cursor (one transaction); `now` is the injected clock's
    time, or None for the database's own."""

    def __init__(self, cursor: psycopg.Cursor[Any], now: dt.datetime | None) -> None:
        self.cursor = cursor
        self.now = now

    def __call__(self, query: str, /, **params: Any) -> list[tuple[Any, ...]]:
        params.setdefault("now", self.now)
        self.cursor.execute(queries()[query], params)
        # Columns in the result: rows to fetch (`description` would make an object per
        # column, at every call).
        result = self.cursor.pgresult
        return self.cursor.fetchall() if result is not None and result.nfields else []

    def dicts(self, query: str, /, **params: Any) -> list[dict[str, Any]]:
        rows = self(query, **params)
        columns = [c.name for c in self.cursor.description or ()]
        return [dict(zip(columns, row, strict=True)) for row in rows]
