"""One run: recover expired leases, claim due connectors, sync each, record every outcome."""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from connector_sync.connectors.registry import load_plugin
from connector_sync.datasets import DatasetWriter
from connector_sync.db import Database
from connector_sync.exceptions import DatabaseError, LeaseLost
from connector_sync.models import COMPLETED
from connector_sync.repository import Claim, Repository
from connector_sync.scheduling import DEFAULT_BACKOFF_BASE, failure_backoff

log = logging.getLogger("connector_sync.runner")

MAX_ERROR_LENGTH = 2000


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunOptions:
    """What one `connector-sync run` does."""

    limit: int | None = None
    tenant: str | None = None
    #: A manual sync of these connectors, due or not (a live lease is still respected).
    connector_ids: Sequence[int] | None = None
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 20.0
    batch_size: int = 5000
    backoff_base: float = DEFAULT_BACKOFF_BASE
    worker: str = field(default_factory=default_worker_name)

    def __post_init__(self) -> None:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("the heartbeat must come more often than the lease expires")


@dataclass
class RunReport:
    """What a run did: recovered leases, the syncs it recorded, connectors it could not claim."""

    recovered: list[dict[str, Any]] = field(default_factory=list)
    sync_ids: list[int] = field(default_factory=list)
    failed: int = 0
    skipped: list[int] = field(default_factory=list)
    lost: list[str] = field(default_factory=list)


class LeaseKeeper:
    """A background thread that extends the leases this process holds while syncs run."""

    def __init__(self, repository: Repository, lease_seconds: float, every: float) -> None:
        self.repository = repository
        self.lease_seconds = lease_seconds
        self.every = every
        self._held: dict[int, str] = {}
        self._lost: set[int] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="lease-keeper", daemon=True)

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def hold(self, claim: Claim) -> None:
        with self._lock:
            self._held[claim.connector_id] = claim.lease_token

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.connector_id, None)
            self._lost.discard(claim.connector_id)

    def ensure_held(self, claim: Claim) -> None:
        """Raises LeaseLost when a heartbeat found another worker owns the connector now."""
        with self._lock:
            lost = claim.connector_id in self._lost
        if lost:
            raise LeaseLost(
                f"lease on connector '{claim.name}' was lost to another worker; sync stopped"
            )

    def _loop(self) -> None:
        while not self._stop.wait(self.every):
            with self._lock:
                held = dict(self._held)
            if not held:
                continue
            try:
                lost = self.repository.heartbeat(held, self.lease_seconds)
            except DatabaseError as exc:  # try again next beat; the lease has slack
                log.warning("heartbeat failed: %s", exc)
                continue
            if lost:
                with self._lock:
                    self._lost.update(lost)


class Runner:
    """Runs syncs for one `connector-sync run`."""

    def __init__(self, database: Database, options: RunOptions | None = None) -> None:
        self.db = database
        self.repository = Repository(database)
        self.options = options or RunOptions()

    def run(self) -> RunReport:
        opts = self.options
        report = RunReport()
        report.recovered = self.repository.recover_expired_leases(opts.tenant)
        for item in report.recovered:
            log.warning("recovered connector %s: %s", item["name"], item["reason"])
        with LeaseKeeper(self.repository, opts.lease_seconds, opts.heartbeat_seconds) as keeper:
            if opts.connector_ids is not None:
                self._run_manual(opts.connector_ids, keeper, report)
            else:
                self._run_due(keeper, report)
        return report

    def _run_due(self, keeper: LeaseKeeper, report: RunReport) -> None:
        opts = self.options
        # Only what was due when the run began: a connector this run synced (or
        # that failed and backs off) is due again later, never within this run.
        due_before = self.repository.database_now()
        while opts.limit is None or len(report.sync_ids) < opts.limit:
            claims = self.repository.claim(
                worker=opts.worker,
                limit=1,
                lease_seconds=opts.lease_seconds,
                due_before=due_before,
                tenant=opts.tenant,
            )
            if not claims:
                break
            for claim in claims:
                self._sync_and_report(claim, keeper, report)

    def _run_manual(self, ids: Sequence[int], keeper: LeaseKeeper, report: RunReport) -> None:
        opts = self.options
        claims = self.repository.claim(
            worker=opts.worker,
            limit=len(ids),
            lease_seconds=opts.lease_seconds,
            due_before=self.repository.database_now(),
            tenant=opts.tenant,
            connector_ids=ids,
        )
        claimed = {claim.connector_id for claim in claims}
        report.skipped = [i for i in ids if i not in claimed]
        for connector_id in report.skipped:
            log.warning("connector %s is being synced by another worker; skipped", connector_id)
        for claim in claims:
            self._sync_and_report(claim, keeper, report)

    def _sync_and_report(self, claim: Claim, keeper: LeaseKeeper, report: RunReport) -> None:
        try:
            status = self.sync(claim, keeper)
        except LeaseLost as exc:
            log.error("%s", exc)
            report.lost.append(claim.name)
            return
        report.sync_ids.append(claim.sync_id)
        if status != COMPLETED:
            report.failed += 1

    def sync(self, claim: Claim, keeper: LeaseKeeper) -> str:
        """Read the connector through its plugin into its dataset; record the outcome.

        Returns the sync's final status. Raises LeaseLost when another worker took
        the connector over (nothing is recorded then), DatabaseError when the
        database itself fails (the lease will expire and a later run recovers it).
        """
        keeper.hold(claim)
        started = time.monotonic()
        writer = DatasetWriter(self.db, claim.dataset_id)
        fetched = 0
        try:
            try:
                plugin = load_plugin(claim.type)(claim.config, claim.state)
                batch: list[dict[str, Any]] = []
                for record in plugin.read():
                    fetched += 1
                    batch.append(record)
                    if len(batch) >= self.options.batch_size:
                        keeper.ensure_held(claim)
                        writer.append(batch)
                        batch = []
                keeper.ensure_held(claim)
                writer.append(batch)
            except (LeaseLost, DatabaseError):
                raise
            except KeyboardInterrupt:
                self.repository.cancel(
                    claim, reason="cancelled: interrupted", duration=time.monotonic() - started
                )
                raise
            except Exception as exc:
                return self._record_failure(
                    claim, exc, time.monotonic() - started, fetched, writer.count
                )
            new_state = plugin.state or claim.state
            duration = time.monotonic() - started
            self.repository.complete(
                claim,
                duration=duration,
                records_fetched=fetched,
                records_processed=writer.count,
                schema=writer.schema(),
                state=new_state,
            )
            log.info("synced %s: %d records in %.2fs", claim.name, writer.count, duration)
            return COMPLETED
        finally:
            keeper.release(claim)

    def _record_failure(
        self, claim: Claim, exc: BaseException, duration: float, fetched: int, stored: int
    ) -> str:
        error = describe_error(exc)
        retry_in = failure_backoff(
            claim.consecutive_failures + 1, claim.sync_interval, base=self.options.backoff_base
        )
        outcome = self.repository.fail(
            claim,
            error=error,
            error_type=type(exc).__name__,
            duration=duration,
            records_fetched=fetched,
            records_processed=stored,
            retry_in=retry_in,
        )
        log.error(
            "sync of %s failed (%d in a row, connector %s): %s",
            claim.name,
            outcome.consecutive_failures,
            outcome.connector_status,
            error,
        )
        return "FAILED"


def describe_error(exc: BaseException) -> str:
    """One line for the sync's error column."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    if len(text) > MAX_ERROR_LENGTH:
        text = text[: MAX_ERROR_LENGTH - 1] + "…"
    return text
