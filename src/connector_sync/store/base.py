"""The Store contract: what the runner and the operations may ask of a database, and the
typed rows it answers with.

Each database has its own implementation written for it (store/postgres.py with its
named queries in queries.sql, store/sqlite.py with SQLAlchemy Core); the same contract
test suite (tests/store) runs against both. Callers never branch on the dialect.

Times: every "now" a store uses comes from its clock. Without an injected clock that is
the database's own clock (`now()` on PostgreSQL, so workers on machines with skewed
clocks agree; this host's UTC clock on SQLite, one host). Tests inject a `ManualClock`
and move time instead of sleeping.
"""

from __future__ import annotations

import abc
import datetime as dt
import functools
import itertools
import logging
import re
from collections.abc import Callable, Generator, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, NamedTuple, ParamSpec, TypeVar

from connector_sync.constants import (
    DEFAULT_KEEP,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_TENANT,
)
from connector_sync.db import Closing, Database
from connector_sync.exceptions import (
    AlreadyExists,
    BadInput,
    ConnectorBusy,
    DatabaseError,
    LeaseLost,
    NotFound,
)

log = logging.getLogger("connector_sync.store")

P = ParamSpec("P")
T = TypeVar("T")

#: A clock: returns the current time, timezone-aware UTC.
Clock = Callable[[], dt.datetime]


class ManualClock:
    """A clock that stands still until moved: tests move time instead of sleeping."""

    def __init__(self, start: dt.datetime | None = None) -> None:
        self.current = start or dt.datetime.now(dt.UTC).replace(microsecond=0)

    def __call__(self) -> dt.datetime:
        return self.current

    def advance(self, seconds: float) -> dt.datetime:
        self.current += dt.timedelta(seconds=seconds)
        return self.current


# -- typed rows ------------------------------------------------------------------------
#
# Not slots: orjson encodes a dataclass from its __dict__ at nearly the speed of a dict, and
# walks __slots__ three times slower (`list --all --json` encodes 100,000 connectors).


@dataclass
class ConnectorSummary:
    """A connector as listings show it: everything but its config and state."""

    id: int
    tenant: str
    name: str
    type: str
    status: str
    auto_sync: bool
    sync_interval: int
    #: A cron expression; when set it wins over sync_interval.
    schedule: str | None
    #: The IANA time zone the schedule is read in (None: UTC).
    timezone: str | None
    sync_timeout: int | None
    #: READY datasets kept when a sync completes (0: every one).
    keep: int
    last_sync_at: dt.datetime | None
    last_sync_status: str | None
    last_sync_error: str | None
    next_sync_at: dt.datetime | None
    consecutive_failures: int
    max_consecutive_failures: int
    lease_owner: str | None
    lease_expires_at: dt.datetime | None
    created_at: dt.datetime
    updated_at: dt.datetime


@dataclass
class Connector(ConnectorSummary):
    """A whole connector: the summary plus its config (with `env:` references) and state."""

    config: dict[str, Any]
    state: dict[str, Any] | None


@dataclass
class Sync:
    """One sync of a connector, as history shows it."""

    id: int
    connector_id: int
    connector_name: str
    tenant: str
    status: str
    trigger: str
    worker: str | None
    attempts: int
    started_at: dt.datetime
    completed_at: dt.datetime | None
    duration: float | None
    records_fetched: int
    records_processed: int
    dataset_id: int | None
    error: str | None
    error_type: str | None
    #: Seconds since it started on the store's clock, while it is IN_PROGRESS (None once it
    #: ended: see duration).
    elapsed: float | None = None


@dataclass
class DatasetSummary:
    """A dataset of a connector."""

    id: int
    sync_id: int | None
    name: str
    status: str
    record_count: int
    created_at: dt.datetime
    completed_at: dt.datetime | None


@dataclass
class Dataset(DatasetSummary):
    """A dataset with its connector and schema (field name -> JSON types seen)."""

    connector_id: int
    connector_name: str
    tenant: str
    schema: dict[str, list[str]] | None

    def __post_init__(self) -> None:
        # By field name on every database (jsonb orders keys by length first).
        if self.schema is not None:
            self.schema = dict(sorted(self.schema.items()))


@dataclass(frozen=True, slots=True)
class NewConnector:
    """What `add` stores; the connector is due at `next_sync_at` (None: at once)."""

    name: str
    type: str
    config: dict[str, Any]
    sync_interval: int
    auto_sync: bool = True
    tenant: str = DEFAULT_TENANT
    sync_timeout: int | None = None
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES
    schedule: str | None = None
    timezone: str | None = None
    keep: int = DEFAULT_KEEP
    next_sync_at: dt.datetime | None = None


@dataclass(frozen=True, slots=True)
class ConnectorEdit:
    """What `edit` writes: every editable field's new value (unchanged ones as they were).

    `next_sync_at` None leaves it as it is.
    """

    name: str
    config: dict[str, Any]
    sync_interval: int
    schedule: str | None
    timezone: str | None
    sync_timeout: int | None
    max_consecutive_failures: int
    keep: int
    next_sync_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class ClaimRequest:
    """What to claim.

    Without `connector_ids`: up to `limit` connectors due at `due_before` (default now),
    most overdue first. With `connector_ids`: a manual sync of those, due or not.
    """

    worker: str
    limit: int
    lease_seconds: float
    due_before: dt.datetime | None = None
    tenant: str | None = None
    connector_ids: Sequence[int] | None = None


@dataclass(frozen=True, slots=True)
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
    schedule: str | None
    timezone: str | None
    lease_token: str
    worker: str
    trigger: str
    sync_id: int
    dataset_id: int
    started_at: dt.datetime

    @classmethod
    def from_row(cls, row: Sequence[Any], worker: str, trigger: str) -> Claim:
        """From a claimed row: CLAIM_CONNECTOR_COLUMNS, then sync_id, dataset_id, started_at."""
        values = dict(zip(CLAIM_CONNECTOR_COLUMNS, row, strict=False))
        sync_id, dataset_id, started_at = row[len(CLAIM_CONNECTOR_COLUMNS) :]
        return cls(
            connector_id=values.pop("id"), **values, worker=worker, trigger=trigger,
            sync_id=sync_id, dataset_id=dataset_id, started_at=started_at,
        )  # fmt: skip


#: The columns of `connectors` a claim returns, in Claim's order (up to lease_token).
CLAIM_CONNECTOR_COLUMNS = (
    "id", "tenant", "name", "type", "config", "state", "sync_interval",
    "consecutive_failures", "max_consecutive_failures", "sync_timeout", "schedule", "timezone",
    "lease_token",
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Finished:
    """What every finished sync records."""

    duration: float
    records_fetched: int
    records_processed: int
    attempts: int


@dataclass(frozen=True, slots=True)
class Completion(Finished):
    """What a completed sync records."""

    schema: dict[str, list[str]]
    state: dict[str, Any] | None
    #: Seconds from now (the store's clock) until the connector is due again...
    next_sync_in: float
    #: ...unless this says when (the next slot of a cron schedule).
    next_sync_at: dt.datetime | None = None
    #: False: the sync stored nothing worth a dataset (an incremental sync that found
    #: nothing new); its BUILDING dataset is deleted and the sync links none.
    keep_dataset: bool = True


@dataclass(frozen=True, slots=True)
class Failure(Finished):
    """What a failed sync records. The connector is due again `retry_in` seconds from now."""

    error: str
    error_type: str
    retry_in: float


@dataclass(frozen=True, slots=True)
class Outcome:
    """How a finished sync left its connector."""

    connector_status: str
    consecutive_failures: int
    next_sync_at: dt.datetime | None


@dataclass(frozen=True, slots=True)
class RecoveredLease:
    """A connector released after its worker's lease expired."""

    id: int
    name: str
    worker: str | None
    lease_expires_at: dt.datetime
    syncs: list[int]
    reason: str


class SyncProgress(NamedTuple):
    """Records so far of a sync in flight; the heartbeat writes them to its sync row."""

    sync_id: int
    records_fetched: int
    records_processed: int


@dataclass(frozen=True, slots=True)
class RunningSync:
    """A sync in flight, as `status` lists it and `health` judges it."""

    sync_id: int
    connector_id: int
    connector_name: str
    tenant: str
    worker: str | None
    started_at: dt.datetime
    #: Seconds since it started, on the store's clock.
    elapsed: float
    #: Records so far, as of the latest heartbeat.
    records_fetched: int
    records_processed: int
    #: Records stored per second so far.
    rate: float
    sync_timeout: int | None
    #: The median duration of the connector's last 20 COMPLETED syncs (None: none yet).
    typical_duration: float | None
    #: The connector's own long-sync threshold in seconds (`alerts --long-sync`), if set.
    long_sync: int | None

    @classmethod
    def from_row(cls, row: Sequence[Any]) -> RunningSync:
        """From RUNNING_SYNC_COLUMNS' values: `rate` is computed here."""
        values = dict(zip(RUNNING_SYNC_COLUMNS, row, strict=True))
        elapsed = values["elapsed"] = max(float(values["elapsed"]), 0.0)
        if values["typical_duration"] is not None:
            values["typical_duration"] = float(values["typical_duration"])
        return cls(**values, rate=values["records_processed"] / elapsed if elapsed > 0 else 0.0)


#: Records so far of the syncs in flight, by connector id.
Progress = Mapping[int, SyncProgress]

#: What a running-syncs query returns, in order (RunningSync's fields less `rate`).
RUNNING_SYNC_COLUMNS = (
    "sync_id", "connector_id", "connector_name", "tenant", "worker", "started_at", "elapsed",
    "records_fetched", "records_processed", "sync_timeout", "typical_duration", "long_sync",
)  # fmt: skip

#: How many syncs in flight `status` lists (the oldest first).
RUNNING_SYNCS_SHOWN = 100
#: How many of a connector's latest COMPLETED syncs make its typical duration.
TYPICAL_OF_LAST = 20


@dataclass(frozen=True, slots=True)
class StatusSummary:
    """Counts for `status`, and the syncs in flight."""

    connectors: dict[str, int]
    connectors_total: int
    due_now: int
    oldest_due_since: dt.datetime | None
    syncs_last_24h: dict[str, int]
    records_last_24h: int
    checked_at: dt.datetime
    #: What is syncing now, the longest-running first (at most RUNNING_SYNCS_SHOWN).
    syncing: list[RunningSync]


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """When `health` reports a problem (each a flag of the command; see health.py)."""

    overdue_after: float = 3600.0
    """OVERDUE: due for longer than this many seconds."""
    failures_warn: int = 2
    """FAILING: this many failures in a row, before ERROR parks the connector."""
    long_sync: float | None = None
    """LONG_SYNC: a sync running this many seconds or more; None: `long_sync_factor` times
    the connector's typical duration, at least `long_sync_floor`."""
    long_sync_factor: float = 3.0
    long_sync_floor: float = 600.0
    timeout: float = 3600.0
    """SYNC_TIMEOUT: running past the connector's own timeout, or this (the run's default)."""
    window: float = 86400.0
    """ERROR_RATE: over the syncs started in the last `window` seconds that ended, the share
    of FAILED above `max_error_rate`, once there are at least `min_syncs` of them."""
    max_error_rate: float = 0.2
    min_syncs: int = 5


@dataclass(frozen=True, slots=True)
class HealthFacts:
    """What the store knows that `health` judges, read in one transaction."""

    checked_at: dt.datetime
    #: Rows of connectors in ERROR: id, name, consecutive_failures, last_sync_error.
    errors: list[dict[str, Any]]
    #: Rows of connectors failing `failures_warn` times or more in a row but not in ERROR:
    #: id, name, consecutive_failures, max_consecutive_failures, last_sync_error, threshold.
    failing: list[dict[str, Any]]
    #: Rows of connectors whose lease expired: id, name, lease_owner, lease_expires_at.
    expired: list[dict[str, Any]]
    #: Rows of connectors overdue (at most 100): id, name, next_sync_at.
    overdue: list[dict[str, Any]]
    running: list[RunningSync]
    #: Rows of connectors whose error rate in the window is above their threshold: id,
    #: name, finished, failed, threshold.
    error_rates: list[dict[str, Any]]
    #: Syncs started in the window, by status.
    syncs_in_window: dict[str, int]


@dataclass(frozen=True, slots=True)
class HealthProblem:
    """One thing an operator must look at."""

    problem: str
    #: None for a problem of the whole installation (the overall error rate).
    connector_id: int | None
    connector_name: str | None
    detail: str
    #: "warning" or "critical".
    severity: str = "critical"
    #: The check that found it: problems of one check and connector are one alert, whose
    #: severity may change (FAILING becoming ERROR is an escalation, not a new alert).
    check: str = ""

    @property
    def key(self) -> str:
        """What identifies the alert across health runs."""
        return f"{self.check or self.problem.lower()}:{self.connector_id or '*'}"


@dataclass(frozen=True, slots=True)
class AlertMessage:
    """A notification `health --notify` owes: a problem (new or escalated), or its clearing."""

    key: str
    #: "problem" or "resolved".
    kind: str
    problem: str
    severity: str
    connector_id: int | None
    connector_name: str | None
    detail: str
    opened_at: dt.datetime


@dataclass(frozen=True, slots=True)
class AlertThresholds:
    """A connector's own alert thresholds (None: health's flag applies)."""

    failures_warn: int | None = None
    long_sync: int | None = None
    max_error_rate: float | None = None


#: Upper bounds (seconds) of the sync duration histogram's buckets.
DURATION_BUCKETS = (1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 1800.0, 3600.0, 7200.0, 21600.0)


@dataclass(frozen=True, slots=True)
class SyncsInWindow:
    """Syncs of one status started in the metrics window."""

    status: str
    count: int
    records: int
    #: Sum of durations of those that ended, and how many of them took at most each of
    #: DURATION_BUCKETS (cumulative, as Prometheus histograms count).
    duration_sum: float
    duration_count: int
    duration_buckets: list[int]


@dataclass(frozen=True, slots=True)
class ConnectorGauges:
    """One connector's own series."""

    tenant: str
    name: str
    consecutive_failures: int
    #: When its latest COMPLETED sync ended, in Unix seconds (None: never).
    last_success: float | None


@dataclass(frozen=True, slots=True)
class MetricsSnapshot:
    """Everything `metrics` exposes, read with a fixed number of queries."""

    checked_at: dt.datetime
    window: float
    connectors: dict[str, int]
    due_now: int
    oldest_due_since: dt.datetime | None
    expired_leases: int
    syncs: list[SyncsInWindow]
    #: The connectors with series of their own, those most in need of a look first.
    per_connector: list[ConnectorGauges]


@dataclass(frozen=True, slots=True)
class ConnectorFilter:
    """Which connectors a listing shows, by tenant and name."""

    tenant: str | None = None
    #: One status (as stored); INACTIVE shows the INACTIVE ones whatever include_inactive.
    status: str | None = None
    type: str | None = None
    #: Only those due now (as `due` and a run see them).
    due: bool = False
    #: INACTIVE connectors (deleted, their data kept) too.
    include_inactive: bool = True
    limit: int | None = None


@dataclass(frozen=True, slots=True)
class ListFilter:
    """Which rows a listing shows, newest first: syncs (`history`), datasets."""

    connector_id: int | None = None
    status: str | None = None
    tenant: str | None = None
    limit: int | None = 20


HistoryFilter = ListFilter


@dataclass(frozen=True, slots=True)
class DataCounts:
    """What deleting a connector removes."""

    syncs: int
    datasets: int
    records: int


@dataclass(frozen=True, slots=True)
class PruneRequest:
    """Which datasets to remove: those beyond the newest `keep` READY ones of each
    connector (None: each connector's own keep; 0: no limit) and those created before
    `older_than`. The newest READY dataset of a connector is never among them."""

    connector_id: int | None = None
    tenant: str | None = None
    keep: int | None = None
    older_than: dt.datetime | None = None
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class PrunedDataset:
    """A dataset removed (or, in a dry run, that would be), and why."""

    id: int
    connector_id: int
    connector_name: str
    tenant: str
    name: str
    record_count: int
    created_at: dt.datetime
    #: "keep" (beyond the newest N), "age" (older than asked), "unfinished" (a removal
    #: that was interrupted, finished now).
    reason: str


@dataclass(frozen=True, slots=True)
class PrunedHistory:
    """How many syncs of a connector were removed from its history (or would be)."""

    connector_id: int
    connector_name: str
    tenant: str
    syncs: int


#: Records deleted per transaction when a dataset is removed: each transaction stays
#: short, so other connectors' syncs (and SQLite's single writer) never wait long.
PURGE_BATCH = 10_000


def as_dict(row: Any) -> dict[str, Any]:
    """A typed row as a plain dict, keys in field order (for JSON documents)."""
    return {f.name: getattr(row, f.name) for f in fields(row)}


def first_line_matching(pattern: re.Pattern[str], lines: Sequence[str], start: int) -> str:
    """The record number (start + 1, ...) of the first of `lines` `pattern` finds something
    in: how an error names the record a database refused."""
    found = (n for n, line in enumerate(lines, start + 1) if pattern.search(line))
    return str(next(found, f"among {start + 1}-{start + len(lines)}"))


def dataset_gone(dataset_id: int) -> DatabaseError:
    """A batch of records for a dataset that was deleted (with its connector) meanwhile."""
    return DatabaseError(
        f"dataset {dataset_id} is gone (deleted during the sync); its records are not written"
    )


def lease_lost(name: str) -> LeaseLost:
    return LeaseLost(f"lease on connector '{name}' was lost; another worker owns it now")


def not_found(ref: str, tenant: str | None) -> NotFound:
    where = f" in tenant '{tenant}'" if tenant else ""
    return NotFound(f"no connector '{ref}'{where}: give an id or name from 'connector-sync list'")


def dataset_not_found(dataset_id: int, tenant: str | None) -> NotFound:
    where = f" in tenant '{tenant}'" if tenant else ""
    return NotFound(
        f"no dataset {dataset_id}{where}: give an id from 'connector-sync datasets'", param="id"
    )


def name_taken(name: str, tenant: str | None = None) -> AlreadyExists:
    where = f" in tenant '{tenant}'" if tenant else " in its tenant"
    return AlreadyExists(f"connector '{name}' already exists{where}: choose another name")


def connector_busy(name: str, owner: str | None, expires: dt.datetime | None) -> ConnectorBusy:
    until = f", lease until {expires:%Y-%m-%dT%H:%M:%SZ}" if expires else ""
    return ConnectorBusy(f"connector '{name}' is being synced by {owner}{until}")


#: Why a connector's open sync ended when the connector was deleted.
RETIRED_REASON = "cancelled: connector deleted"


def ambiguous_name(ref: str, tenants: Sequence[str]) -> BadInput:
    return BadInput(
        f"connector name '{ref}' exists in tenants {', '.join(sorted(tenants))}: "
        "give its id or a tenant"
    )


# -- transient errors are retried here, not by the callers --------------------------------


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, DatabaseError) and exc.transient


def _is_surely_undone(exc: BaseException) -> bool:
    return _is_transient(exc) and not getattr(exc, "uncertain", False)


@functools.cache
def _policy(twice_is_safe: bool) -> Any:
    """tenacity's policy for the tries after the first (imported on the first transient
    error: most commands never meet one). A call that is not safe twice is tried again
    only when its transaction surely did not commit."""
    import tenacity

    return tenacity.Retrying(
        stop=tenacity.stop_after_attempt(4),
        wait=tenacity.wait_exponential_jitter(multiplier=0.2, max=2.0, jitter=0.2),
        retry=tenacity.retry_if_exception(_is_transient if twice_is_safe else _is_surely_undone),
        before_sleep=lambda state: log.warning(
            "database error, trying again: %s", state.outcome.exception() if state.outcome else ""
        ),
        reraise=True,
    )


def retried(method: Callable[P, T]) -> Callable[P, T]:
    """Run a store method again on a transient database error (lost connection, busy,
    deadlock, serialization failure), up to four tries with jittered backoff.

    The first try runs outside tenacity: it nearly always succeeds, and the claim and
    finish methods run once per sync, where tenacity's bookkeeping showed in profiles.
    """
    return _retrying(method, twice_is_safe=True)


def retried_unless_uncertain(method: Callable[P, T]) -> Callable[P, T]:
    """`retried`, except after a connection lost mid-transaction: a method whose effect
    may not be repeated (a claim, an insert) cannot know whether its commit went through,
    so the error goes up instead (a claim that did commit expires and is recovered)."""
    return _retrying(method, twice_is_safe=False)


def _retrying(method: Callable[P, T], *, twice_is_safe: bool) -> Callable[P, T]:
    @functools.wraps(method)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        try:
            return method(*args, **kwargs)
        except DatabaseError as exc:
            if not exc.transient or (exc.uncertain and not twice_is_safe):
                raise
            log.warning("database error, trying again: %s", exc)
        result: T = _policy(twice_is_safe)(method, *args, **kwargs)
        return result

    return wrapper


class Recorded(NamedTuple):
    """What a store's finish transaction wrote: how it left the connector, and (after a
    completion) whether the connector's retention has anything to remove now."""

    outcome: Outcome
    retention_due: bool = False


def finish_once(
    claim: Claim,
    status: str,
    record: Callable[[], Recorded],
    sync_status: Callable[[int], str | None],
) -> Recorded | None:
    """Record a sync's outcome (`status`), trying again on a transient database error.

    A retry after a commit whose acknowledgement was lost finds the lease already
    released; when the sync row shows this very outcome, it was recorded: None. Another
    outcome there (recovery failed the sync meanwhile) is a lost lease.
    """
    tries = 0

    def once() -> Recorded:
        nonlocal tries
        tries += 1
        return record()

    try:
        return retried(once)()
    except LeaseLost:
        if tries > 1 and retried(sync_status)(claim.sync_id) == status:
            return None
        raise


# -- the contract ------------------------------------------------------------------------


class Store(Closing, abc.ABC):
    """Every read and write of connectors, syncs and datasets.

    Every method is one short transaction (the dataset writes one per batch), and is
    tried again inside the store on a transient database error.
    """

    #: The order the database keeps a record's keys in, whatever order they come in
    #: (PostgreSQL's jsonb); None: the order they come in (SQLite stores the text). The
    #: runner writes records in it: the same stored value, and no sort for the server.
    record_key_order: Callable[[list[Any]], list[Any]] | None = None

    def __init__(
        self, database: Database, clock: Clock | None = None, *, owns_database: bool = True
    ) -> None:
        self.database = database
        #: None: the database's clock.
        self.clock = clock
        self._owns_database = owns_database

    @property
    def display_url(self) -> str:
        return self.database.display_url

    def close(self) -> None:
        if self._owns_database:
            self.database.close()

    # -- time ------------------------------------------------------------------------

    @abc.abstractmethod
    def now(self) -> dt.datetime:
        """The store's current time: the injected clock's, else the database's."""

    # -- connectors ------------------------------------------------------------------

    @abc.abstractmethod
    def add_connector(self, new: NewConnector) -> int:
        """Store a connector, due now; returns its id.

        Raises:
            AlreadyExists: the name is taken in that tenant.
        """

    @abc.abstractmethod
    def find_connector(self, ref: str, tenant: str | None = None) -> Connector:
        """A connector by id or by name (unique within the tenant, or across tenants).

        Raises:
            NotFound: no such connector.
            BadInput: the name exists in several tenants and no tenant was given.
        """

    @abc.abstractmethod
    def list_connectors(self, where: ConnectorFilter | None = None) -> list[ConnectorSummary]:
        """The connectors `where` chooses (None: every one), by tenant and name: a walk of
        the (tenant, name) index that stops at the limit."""

    @abc.abstractmethod
    def count_connectors(self, where: ConnectorFilter) -> int:
        """How many connectors `where` chooses, its limit aside."""

    @abc.abstractmethod
    def stream_connectors(
        self, where: ConnectorFilter, chunk: int = 2000
    ) -> Generator[list[ConnectorSummary], None, None]:
        """list_connectors' rows `chunk` at a time, from one snapshot and with flat memory
        (a server-side cursor on PostgreSQL). Close the iterator to stop early."""

    @abc.abstractmethod
    def edit_connector(self, connector_id: int, edit: ConnectorEdit) -> None:
        """Write a connector's editable fields; status, lease and outcome stay as they are.

        Raises:
            AlreadyExists: the new name is taken in the connector's tenant.
        """

    @abc.abstractmethod
    def data_counts(self, connector_id: int) -> DataCounts:
        """The connector's syncs, datasets and stored records."""

    @abc.abstractmethod
    def retire_connector(self, connector_id: int, *, force: bool, remove_data: bool) -> None:
        """INACTIVE (never scheduled again), its lease cleared, its open sync CANCELLED and
        that sync's BUILDING dataset deleted. With `remove_data` its datasets become
        FAILED, so no reader takes them for whole while their records are deleted.

        Raises:
            ConnectorBusy: a worker holds a live lease on it and `force` is False.
        """

    @abc.abstractmethod
    def delete_connector(self, connector_id: int) -> None:
        """Delete the connector row; its syncs and datasets (and their records) cascade."""

    @abc.abstractmethod
    def connector_names(self, prefix: str, tenant: str | None, limit: int) -> list[str]:
        """Names starting with `prefix`, sorted, at most `limit` (for shell completion)."""

    @abc.abstractmethod
    def due_connectors(
        self, limit: int | None = None, tenant: str | None = None
    ) -> list[ConnectorSummary]:
        """Connectors due now, most overdue first, answered from the partial due index."""

    @abc.abstractmethod
    def set_auto_sync(self, connector_id: int, enabled: bool) -> None:
        """On: auto-sync on, ACTIVE (unless SYNCING), failures forgotten, due now.
        Off: auto-sync off, nothing else changes."""

    @abc.abstractmethod
    def reset_state(self, connector_id: int) -> None:
        """Forget the incremental state: the next sync reads the whole source."""

    # -- claim, heartbeat, finish ------------------------------------------------------

    @abc.abstractmethod
    def claim(self, request: ClaimRequest) -> list[Claim]:
        """Claim connectors in one short transaction and open a sync and dataset for each.

        Due connectors are taken most overdue first, skipping rows other workers hold; a
        connector named for a manual sync is skipped while a worker is syncing it.
        Returns the claims in next_sync_at order.
        """

    @abc.abstractmethod
    def heartbeat(
        self, leases: Mapping[int, str], lease_seconds: float, progress: Progress | None = None
    ) -> set[int]:
        """Extend the leases still held (connector id -> lease token) to now + lease_seconds,
        and in the same statement write each held connector's `progress` (records so far)
        to its IN_PROGRESS sync.

        Returns the ids whose lease was lost to another worker (their progress is not
        written).
        """

    @abc.abstractmethod
    def append_records(self, dataset_id: int, start: int, lines: Sequence[str]) -> None:
        """Append JSON-encoded records to a BUILDING dataset as seq start+1.., one
        transaction.

        Raises:
            RecordError: a record the database cannot store.
            DatabaseError: the dataset is gone (deleted meanwhile); nothing was written.
        """

    @abc.abstractmethod
    def discard_records(self, claim: Claim) -> None:
        """Empty the claim's BUILDING dataset before the sync is tried again."""

    @abc.abstractmethod
    def complete(self, claim: Claim, done: Completion) -> Outcome | None:
        """Sync COMPLETED, dataset READY (or deleted, without done.keep_dataset), state
        saved, connector ACTIVE and due at done.next_sync_at or done.next_sync_in seconds
        from now; written only under the claim's lease. Then the connector's retention
        (apply_retention), right after that transaction, when the finish found it has
        anything to remove (see retention_after).

        When the connector's interval, schedule or time zone was edited during the sync,
        the edit wins: due one (new) interval from now, or at the slot the edit set.

        Returns None when a retry found the outcome already recorded (the first commit's
        acknowledgement was lost).

        Raises:
            LeaseLost: another worker holds the connector; nothing was written.
        """

    @abc.abstractmethod
    def fail(self, claim: Claim, failure: Failure) -> Outcome | None:
        """Sync FAILED, consecutive_failures + 1; the connector is due failure.retry_in
        seconds from now, or goes to ERROR on its max_consecutive_failures-th failure in
        a row. Written only under the lease, in one transaction that marks the partial
        dataset FAILED; then `discard_failed_dataset` deletes it in short transactions.

        Returns None when a retry found the outcome already recorded.

        Raises:
            LeaseLost: another worker holds the connector; nothing was written.
        """

    @abc.abstractmethod
    def cancel(self, claim: Claim, *, reason: str, duration: float) -> None:
        """Give the connector back ACTIVE and due now; the sync CANCELLED, its dataset
        deleted.

        Raises:
            LeaseLost: another worker holds the connector; nothing was written.
        """

    @abc.abstractmethod
    def unclaim(self, claim: Claim) -> bool:
        """Give back a claimed connector whose sync never started (this worker claimed it
        ahead and will not get to it soon): ACTIVE again, as due as before, its unopened
        sync and empty dataset removed, no trace in the history. Only under the claim's
        lease; returns whether it was still ours."""

    @abc.abstractmethod
    def recover_expired_leases(self, tenant: str | None = None) -> list[RecoveredLease]:
        """Release connectors whose lease expired: ACTIVE and due now (ERROR if this was
        their last allowed failure), their IN_PROGRESS sync FAILED naming the lost
        worker, its BUILDING dataset deleted."""

    # -- reads -----------------------------------------------------------------------

    @abc.abstractmethod
    def status_summary(self, tenant: str | None = None) -> StatusSummary:
        """Connectors by status, due now, syncs and records of the last 24 hours, and the
        syncs in flight (records so far as of their latest heartbeat)."""

    @abc.abstractmethod
    def health_facts(self, thresholds: HealthThresholds, tenant: str | None = None) -> HealthFacts:
        """What `health` judges, in one transaction: connectors in ERROR, failing (each
        connector's own `failures_warn` or the given one), with an expired lease, overdue
        (at most 100), the syncs in flight, the connectors whose error rate in the window
        is above their threshold, and the window's syncs by status."""

    @abc.abstractmethod
    def metrics_snapshot(
        self, window: float, tenant: str | None = None, connector_series: int | None = None
    ) -> MetricsSnapshot:
        """What `metrics` exposes, with a fixed number of queries whatever the number of
        connectors: connectors by status, due now, expired leases, the syncs of the last
        `window` seconds by status with their duration histogram, and each connector's
        failures in a row and last success (for at most `connector_series` connectors,
        None: all; failing the longest first, then the longest without a success)."""

    # -- alerts ------------------------------------------------------------------------

    @abc.abstractmethod
    def track_alerts(
        self, scope: str, problems: Sequence[HealthProblem], hold_seconds: float
    ) -> list[AlertMessage]:
        """Record what this health run found under `scope` (a tenant, or '*') and claim the
        messages now owed, in one transaction.

        A problem not open yet opens; one open already keeps its row (its severity and
        detail updated); an open problem missing from `problems` is resolved. Owed: a
        problem never announced, or announced at a lower severity; the clearing of one
        that was announced (one that clears before it was announced is forgotten).
        Claimed messages are held for `hold_seconds`: another health run does not send
        them meanwhile.
        """

    @abc.abstractmethod
    def alerts_sent(
        self, scope: str, sent: Sequence[AlertMessage], failed: Sequence[AlertMessage]
    ) -> None:
        """After sending: `sent` problems are announced at their severity, `sent` clearings
        forgotten; `failed` ones are released so the next health run tries again."""

    @abc.abstractmethod
    def open_alerts(self, scope: str) -> list[AlertMessage]:
        """The problems open under `scope` (kind "problem"), oldest first."""

    @abc.abstractmethod
    def set_alert_thresholds(self, connector_id: int, thresholds: AlertThresholds) -> None:
        """Set a connector's own alert thresholds (all None: back to health's flags)."""

    @abc.abstractmethod
    def alert_thresholds(self, connector_id: int) -> AlertThresholds:
        """A connector's own alert thresholds (each None where health's flag applies)."""

    @abc.abstractmethod
    def history(self, where: HistoryFilter) -> list[Sync]:
        """Syncs, newest first."""

    @abc.abstractmethod
    def syncs_by_id(self, sync_ids: Sequence[int]) -> list[Sync]:
        """These syncs, in the order given (missing ids left out)."""

    @abc.abstractmethod
    def datasets_of(self, connector_id: int, limit: int = 10) -> list[DatasetSummary]:
        """A connector's datasets, newest first."""

    @abc.abstractmethod
    def list_datasets(self, where: ListFilter) -> list[Dataset]:
        """Datasets, newest first."""

    @abc.abstractmethod
    def find_dataset(self, dataset_id: int, tenant: str | None = None) -> Dataset:
        """One dataset.

        Raises:
            NotFound: no such dataset (in that tenant).
        """

    @abc.abstractmethod
    def latest_dataset(self, connector_id: int) -> Dataset | None:
        """The connector's newest READY dataset."""

    @abc.abstractmethod
    def read_records(
        self, dataset_id: int, limit: int | None = None, chunk: int = 2000
    ) -> Generator[list[str], None, None]:
        """The dataset's records as JSON text in `seq` order, `chunk` at a time, from one
        snapshot and with flat memory (a server-side cursor on PostgreSQL, one lazily
        stepped statement on SQLite). Close the iterator to stop early."""

    # -- removing data -----------------------------------------------------------------

    @abc.abstractmethod
    def mark_datasets_to_prune(self, request: PruneRequest) -> list[PrunedDataset]:
        """Choose the datasets `request` removes and, unless it is a dry run, mark them
        FAILED in the same statement (readers stop taking them) for `purge` to delete;
        FAILED datasets left by an interrupted removal are chosen too. Never the
        newest READY dataset of a connector."""

    @abc.abstractmethod
    def max_record_seq(self, dataset_id: int) -> int:
        """The highest seq stored in a dataset (0 when it is empty)."""

    @abc.abstractmethod
    def delete_record_range(self, dataset_id: int, after: int, upto: int) -> int:
        """Delete a dataset's records with after < seq <= upto, one transaction; returns
        how many."""

    @abc.abstractmethod
    def delete_datasets(self, dataset_ids: Sequence[int]) -> None:
        """Delete these dataset rows (their syncs then link no dataset)."""

    @abc.abstractmethod
    def prune_history(
        self, before: dt.datetime, tenant: str | None = None, *, dry_run: bool = False
    ) -> list[PrunedHistory]:
        """Remove finished syncs started before `before`, by connector; never an open
        sync, a sync whose dataset is kept, or a connector's latest COMPLETED sync."""

    # -- built on the methods above, the same for every database ------------------------

    def purge_records(self, dataset_id: int, batch: int = PURGE_BATCH) -> int:
        """Delete a dataset's records, `batch` per short transaction; returns how many."""
        removed, upto = 0, self.max_record_seq(dataset_id)
        for after in range(0, upto, batch):
            removed += self.delete_record_range(dataset_id, after, after + batch)
        return removed

    def discard_failed_dataset(self, dataset_id: int) -> None:
        """Delete a failed sync's dataset (marked FAILED as the failure was recorded): its
        records `PURGE_BATCH` per short transaction, then its row, so that a large one
        does not hold SQLite's one writer for seconds. A failure is logged, not raised:
        the outcome is recorded, and `prune` (or the connector's next retention) removes
        what is left, as it removes every FAILED dataset."""
        try:
            self.purge_records(dataset_id)
            self.delete_datasets([dataset_id])
        except DatabaseError as exc:
            log.warning("dataset %s of a failed sync is left for prune: %s", dataset_id, exc)

    def prune(self, request: PruneRequest) -> list[PrunedDataset]:
        """Remove the datasets `request` chooses (see mark_datasets_to_prune): records
        first in short transactions, then the rows. A dry run removes nothing."""
        chosen = self.mark_datasets_to_prune(request)
        if not request.dry_run:
            for dataset in chosen:
                self.purge_records(dataset.id)
            self.delete_datasets([dataset.id for dataset in chosen])
        return chosen

    def retention_after(self, claim: Claim, recorded: Recorded | None) -> Outcome | None:
        """A completion's outcome, after its retention: run when the finish transaction
        found something to remove, or when it cannot say (a retry found the outcome
        recorded already). Most completions leave nothing to prune, and asking after each
        cost a statement in a transaction of its own."""
        if recorded is None or recorded.retention_due:
            self.apply_retention(claim.connector_id)
        return None if recorded is None else recorded.outcome

    def apply_retention(self, connector_id: int) -> list[PrunedDataset]:
        """The connector's own `keep`, applied right after a sync completed. A failure is
        logged, not raised: the sync is recorded, and the next completion or `prune`
        removes what this one left."""
        try:
            return self.prune(PruneRequest(connector_id=connector_id))
        except DatabaseError as exc:
            log.warning("retention of connector %s failed, left for later: %s", connector_id, exc)
            return []


def next_sync_on_completion(
    claim: Claim,
    done: Completion,
    now: dt.datetime,
    row: tuple[str | None, str | None, int, dt.datetime | None],
) -> dt.datetime | None:
    """When a completed sync's connector is due again, given its row as the sync ends
    (schedule, timezone, sync_interval, next_sync_at): what the runner asked, unless the
    schedule was edited during the sync. (PostgreSQL's finish statement says the same.)"""
    schedule, timezone, interval, edited_next = row
    if (schedule, timezone, interval) == (claim.schedule, claim.timezone, claim.sync_interval):
        return done.next_sync_at or now + dt.timedelta(seconds=done.next_sync_in)
    if schedule is None:
        return now + dt.timedelta(seconds=interval)
    return edited_next


def recovery_reason(worker: str | None, expired_at: dt.datetime) -> str:
    return f"abandoned: lease of {worker} expired at {expired_at:%Y-%m-%dT%H:%M:%SZ}"


def status_summary_of(
    by_status: Mapping[str, int],
    due_now: int,
    oldest_due: dt.datetime | None,
    syncs: Sequence[tuple[str, int, int]],
    at: dt.datetime,
    running: Sequence[RunningSync],
) -> StatusSummary:
    return StatusSummary(
        connectors={status: int(n) for status, n in sorted(by_status.items())},
        connectors_total=int(sum(by_status.values())),
        due_now=int(due_now),
        oldest_due_since=oldest_due,
        syncs_last_24h={status: int(n) for status, n, _ in syncs},
        records_last_24h=int(sum(int(r) for _, _, r in syncs)),
        checked_at=at,
        syncing=list(running),
    )


def syncs_by_bucket(rows: Sequence[Sequence[Any]]) -> list[SyncsInWindow]:
    """Fold rows of (status, bucket, count, records, duration sum) into one SyncsInWindow
    per status. `bucket` is how many of DURATION_BUCKETS lie below the duration (None: a
    sync still running, which has none)."""
    totals: dict[str, list[Any]] = {}
    for status, bucket, count, records, duration_sum in rows:
        entry = totals.setdefault(status, [0, 0, 0.0, [0] * (len(DURATION_BUCKETS) + 1)])
        entry[0] += int(count)
        entry[1] += int(records)
        if bucket is not None:
            entry[2] += float(duration_sum)
            entry[3][int(bucket)] += int(count)
    return [
        SyncsInWindow(
            status=status,
            count=count,
            records=records,
            duration_sum=duration_sum,
            duration_count=sum(per_bucket),
            duration_buckets=list(itertools.accumulate(per_bucket[:-1])),
        )
        for status, (count, records, duration_sum, per_bucket) in sorted(totals.items())
    ]


#: Alert levels by severity: a higher level announced again is an escalation.
ALERT_LEVELS = {"warning": 1, "critical": 2}
SEVERITY_OF_LEVEL = {level: severity for severity, level in ALERT_LEVELS.items()}


def alert_message(row: Mapping[str, Any], kind: str) -> AlertMessage:
    """A health_alerts row as the message it owes."""
    return AlertMessage(
        key=row["key"], kind=kind, problem=row["problem"],
        severity=SEVERITY_OF_LEVEL[row["level"]], connector_id=row["connector_id"],
        connector_name=row["connector_name"], detail=row["detail"], opened_at=row["opened_at"],
    )  # fmt: skip


def alert_messages(claimed: Sequence[Mapping[str, Any]]) -> list[AlertMessage]:
    """The messages claimed (rows with a `resolved` flag), problems first, oldest first."""
    messages = [alert_message(row, "resolved" if row["resolved"] else "problem") for row in claimed]
    return sorted(messages, key=lambda m: (m.kind != "problem", m.opened_at, m.key))
