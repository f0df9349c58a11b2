"""One run: recover expired leases, claim due connectors, sync each, record every outcome.

Threads: the caller's thread supervises (and receives signals); `concurrency`
worker threads claim and sync, each sync reading its plugin in a reader thread
through a bounded queue, so a plugin that hangs can be timed out; one lease-keeper
thread renews the leases of every sync in flight.
"""

from __future__ import annotations

import datetime as dt
import functools
import gc
import logging
import math
import os
import queue
import random
import re
import signal
import socket
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field, replace
from typing import Any

import tenacity

from connector_sync.connectors.base import ConnectorPlugin
from connector_sync.connectors.registry import load_plugin, secret_fields
from connector_sync.constants import CANCELLED, COMPLETED, FAILED
from connector_sync.datasets import DatasetWriter, EncodedBatch, KeyOrder, encode_batch
from connector_sync.exceptions import DatabaseError, DatabaseUnavailable, LeaseLost, PluginError
from connector_sync.scheduling import DEFAULT_BACKOFF_BASE, next_slot, retry_delay
from connector_sync.secrets import connector_secrets, redact, resolve_env_refs
from connector_sync.signals import relayed
from connector_sync.store.base import (
    Claim,
    ClaimRequest,
    Completion,
    Failure,
    Outcome,
    RecoveredLease,
    Store,
    SyncProgress,
    lease_lost,
)

log = logging.getLogger("connector_sync.runner")

MAX_ERROR_LENGTH = 2000
DEFAULT_TIMEOUT = 3600.0
#: Claim up to this many due connectors in one transaction while syncs are quick...
MAX_CLAIM_BATCH = 8
#: ...that is, while each takes less than this many seconds.
QUICK_SYNC_SECONDS = 1.0
#: The longest pause between tries of a sync within one run, in seconds.
MAX_RETRY_WAIT_IN_RUN = 60.0
_POLL_SECONDS = 0.2


def default_worker_name() -> str:
    return f"{socket.gethostname()}:{os.getpid()}"


@dataclass(frozen=True)
class RunOptions:
    """What one `connector-sync run` does."""

    limit: int | None = None
    tenant: str | None = None
    #: A manual sync of these connectors, due or not (a live lease is still respected).
    connector_ids: Sequence[int] | None = None
    #: Syncs in parallel in this process (threads).
    concurrency: int = 1
    lease_seconds: float = 60.0
    heartbeat_seconds: float = 20.0
    batch_size: int = 5000
    #: Tries per sync within the run when the plugin reports a transient error.
    attempts: int = 3
    #: First wait between those tries, in seconds; it doubles, with jitter.
    retry_wait: float = 1.0
    #: Seconds a sync may take, for connectors without their own timeout.
    timeout: float = DEFAULT_TIMEOUT
    #: After SIGTERM/SIGINT, how long in-flight syncs may go on before they are cancelled.
    grace: float = 30.0
    backoff_base: float = DEFAULT_BACKOFF_BASE
    worker: str = field(default_factory=default_worker_name)

    def __post_init__(self) -> None:
        if self.heartbeat_seconds >= self.lease_seconds:
            raise ValueError("the heartbeat must come more often than the lease expires")
        if self.concurrency < 1 or self.attempts < 1 or self.batch_size < 1:
            raise ValueError("concurrency, attempts and batch_size must be at least 1")


@dataclass
class RunReport:
    """What a run did."""

    recovered: list[RecoveredLease] = field(default_factory=list)
    #: The syncs this run recorded (COMPLETED, FAILED or CANCELLED), in finishing order.
    sync_ids: list[int] = field(default_factory=list)
    failed: int = 0
    cancelled: int = 0
    #: Connectors named for a manual sync that another worker holds.
    skipped: list[int] = field(default_factory=list)
    #: Connectors whose lease another worker took over mid-sync (nothing recorded).
    lost: list[str] = field(default_factory=list)
    #: The signal that stopped the run early, if any.
    signal: int | None = None


class SyncTimeout(Exception):
    """The sync ran past its timeout."""


class SyncCancelled(Exception):
    """The run is stopping and its grace period is over."""


class RunControl:
    """Stopping a run cooperatively: no new claims, then a deadline for syncs in flight."""

    def __init__(self) -> None:
        self.stop_claiming = threading.Event()
        self.deadline: float | None = None
        self.reason = ""
        self.signal: int | None = None

    def request_stop(self, grace: float, reason: str, signum: int | None = None) -> None:
        if self.signal is None:
            self.signal = signum
        self.reason = reason
        self.deadline = time.monotonic() + grace
        self.stop_claiming.set()

    def check(self) -> None:
        """Raises SyncCancelled once the grace period is over."""
        if self.deadline is not None and time.monotonic() >= self.deadline:
            raise SyncCancelled(self.reason)

    def wait(self, seconds: float) -> None:
        """Sleep, cut short (by SyncCancelled) when the grace period ends first."""
        end = time.monotonic() + seconds
        while (left := end - time.monotonic()) > 0:
            self.check()
            time.sleep(min(left, _POLL_SECONDS))


class SyncWatcher:
    """Told about each sync as it goes (a progress display, failure notifications).

    Called from the sync's own thread; a watcher must be quick and must not raise.
    """

    def started(self, claim: Claim) -> None:
        """The sync began reading."""

    def progressed(self, claim: Claim, records_fetched: int, records_processed: int) -> None:
        """A batch was stored: the records so far of the current try."""

    def finished(
        self, claim: Claim, status: str, error: str | None, outcome: Outcome | None
    ) -> None:
        """The sync ended as `status`; a failure has its error and how it left the
        connector (None when that was recorded by an earlier try of the same write)."""


@dataclass
class _Progress:
    """Records read from the plugin and stored, by the latest try of a sync. Written by
    the sync's thread, read by the lease keeper's."""

    fetched: int = 0
    stored: int = 0


class LeaseKeeper:
    """A background thread that extends the leases this process holds while syncs run,
    and with the same statement writes each sync's records so far (for `status`)."""

    def __init__(self, store: Store, lease_seconds: float, every: float) -> None:
        self.store = store
        self.lease_seconds = lease_seconds
        self.every = every
        self._held: dict[int, str] = {}
        self._progress: dict[int, tuple[int, _Progress]] = {}
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

    def hold(self, claim: Claim, progress: _Progress | None = None) -> None:
        """Keep the claim's lease; with `progress`, also report its sync's records so far."""
        with self._lock:
            self._held[claim.connector_id] = claim.lease_token
            # A loss a heartbeat reported for an earlier claim of this connector (given
            # back, then claimed again in the same run) is not this claim's.
            self._lost.discard(claim.connector_id)
            if progress is not None:
                self._progress[claim.connector_id] = (claim.sync_id, progress)

    def release(self, claim: Claim) -> None:
        with self._lock:
            self._held.pop(claim.connector_id, None)
            self._progress.pop(claim.connector_id, None)
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
                progress = {
                    cid: SyncProgress(sync_id, p.fetched, p.stored)
                    for cid, (sync_id, p) in self._progress.items()
                }
            if not held:
                continue
            try:
                lost = self.store.heartbeat(held, self.lease_seconds, progress)
            except DatabaseError as exc:  # try again next beat; the lease has slack
                log.warning("heartbeat failed: %s", exc)
                continue
            if lost:
                with self._lock:
                    self._lost.update(lost)


class _Alarms:
    """Actions run at their deadlines by one thread, each cancelled by its key until then.

    A worker sets one before each sync that has connectors claimed ahead of it (to give
    them back if the sync turns slow) and cancels it after: a threading.Timer there
    started a thread per sync (0.07-0.24 ms here, the more under load, against about
    1.5 ms for a whole sync that reads nothing). The thread sleeps until the earliest
    deadline; setting or cancelling a later one does not wake it.
    """

    def __init__(self) -> None:
        self._set: dict[object, tuple[float, Callable[[], None]]] = {}
        self._changed = threading.Condition()
        self._wakes_at = math.inf
        self._closed = False
        self._thread: threading.Thread | None = None

    def set(self, key: object, seconds: float, action: Callable[[], None]) -> None:
        """Run `action` in `seconds` unless `cancel(key)` comes first."""
        at = time.monotonic() + seconds
        with self._changed:
            self._set[key] = (at, action)
            if self._thread is None:
                self._thread = threading.Thread(target=self._loop, name="alarms", daemon=True)
                self._thread.start()
            elif at < self._wakes_at:
                self._changed.notify()

    def cancel(self, key: object) -> None:
        with self._changed:
            self._set.pop(key, None)

    def close(self) -> None:
        """Cancel every alarm and end the thread (an action running now finishes first)."""
        with self._changed:
            self._closed = True
            self._set.clear()
            self._changed.notify()
        if self._thread is not None:
            self._thread.join()

    def _loop(self) -> None:
        while True:
            with self._changed:
                if self._closed:
                    return
                now = time.monotonic()
                due = [key for key, (at, _) in self._set.items() if at <= now]
                actions = [self._set.pop(key)[1] for key in due]
                if not actions:
                    self._wakes_at = min((at for at, _ in self._set.values()), default=math.inf)
                    wait = None if self._wakes_at == math.inf else self._wakes_at - now
                    self._changed.wait(wait)
                    continue
            for action in actions:
                try:
                    action()
                except Exception as exc:  # one failed action must not stop the others
                    log.error("%s", describe_error(exc))


_DONE = object()


class _Failure:
    def __init__(self, exc: BaseException) -> None:
        self.exc = exc


#: The garbage collector's first threshold while a reader reads: a collection per this
#: many new containers (records, their lists) rather than per 700. Records hold no
#: reference cycles, yet every collection walks those still alive in the batches; at
#: 700 that was a fifth of the CPU of a sync of demo records.
READING_GC_THRESHOLD = 50_000
#: How long (seconds) a thread holds the GIL while another waits for it, while a reader
#: reads, rather than 5 ms: the sync thread sends a batch in 128 KiB pieces, needing
#: the GIL back after each, and each wait for the busy reader held the database idle.
READING_SWITCH_INTERVAL = 0.0005
_reading_lock = threading.Lock()
_readers = 0
_settings_before = (gc.get_threshold(), sys.getswitchinterval())


@contextmanager
def _reading_settings() -> Iterator[None]:
    """While at least one reader reads: READING_GC_THRESHOLD (unless higher already) and
    READING_SWITCH_INTERVAL (unless lower already); the last reader to finish puts the
    process's own settings back."""
    global _readers, _settings_before
    with _reading_lock:
        if _readers == 0:
            _settings_before = (gc.get_threshold(), sys.getswitchinterval())
            (first, *older), interval = _settings_before
            gc.set_threshold(max(first, READING_GC_THRESHOLD), *older)
            sys.setswitchinterval(min(interval, READING_SWITCH_INTERVAL))
        _readers += 1
    try:
        yield
    finally:
        with _reading_lock:
            _readers -= 1
            if _readers == 0:
                gc.set_threshold(*_settings_before[0])
                sys.setswitchinterval(_settings_before[1])


#: How long a reader thread with nothing to read waits for the next sync before it ends.
READER_IDLE_SECONDS = 5.0

_Work = tuple[Callable[[], None], str]


class ReaderThreads:
    """The threads readers run in, each kept for the next sync once its reader is done:
    starting one per sync and waiting for it to run cost several times a hand-over to a
    thread kept waiting, the more under load. A thread whose reader is stuck inside a
    plugin stays with it (a daemon thread); one idle for READER_IDLE_SECONDS, or idle when
    `close` is called, ends."""

    def __init__(self) -> None:
        self._idle: list[queue.SimpleQueue[_Work | None]] = []
        self._lock = threading.Lock()

    def start(self, work: Callable[[], None], name: str) -> None:
        """Run `work` in an idle thread (renamed `name`), or in a new one."""
        with self._lock:
            inbox = self._idle.pop() if self._idle else None
        if inbox is None:
            inbox = queue.SimpleQueue()
            thread = threading.Thread(target=self._serve, args=(inbox,), name=name, daemon=True)
            thread.start()
        inbox.put((work, name))

    def close(self) -> None:
        """End the idle threads (a busy one waits READER_IDLE_SECONDS once it is done)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for inbox in idle:
            inbox.put(None)

    def _serve(self, inbox: queue.SimpleQueue[_Work | None]) -> None:
        while True:
            try:
                item = inbox.get(timeout=READER_IDLE_SECONDS)
            except queue.Empty:
                with self._lock:
                    if any(waiting is inbox for waiting in self._idle):
                        self._idle.remove(inbox)
                        return
                continue  # taken for a reader just now: its work is on the way
            if item is None:
                return
            work, name = item
            threading.current_thread().name = name
            work()
            with self._lock:
                self._idle.append(inbox)


class _Reader:
    """Runs a plugin's `read` in a thread of `threads`, handing batches over a bounded
    queue.

    The thread also encodes each batch as JSON, so that work overlaps the sync thread's
    wait on the database while it writes the batch before. The queue holds at most two
    batches, so memory stays flat however large the source. A reader that is abandoned
    (timeout, cancel, lost lease) stops at its next record; one blocked inside the plugin
    keeps its thread (a daemon) until the plugin returns. `done` is set once the thread
    is through with this reader.
    """

    def __init__(
        self,
        plugin: ConnectorPlugin,
        batch_size: int,
        name: str,
        threads: ReaderThreads,
        key_order: KeyOrder | None = None,
    ) -> None:
        self.plugin = plugin
        self.batch_size = batch_size
        self.name = f"read-{name}"
        self.threads = threads
        #: The store's order of a record's keys (Store.record_key_order).
        self.key_order = key_order
        self.fetched = 0
        self.batches: queue.Queue[object] = queue.Queue(maxsize=2)
        self.abandoned = threading.Event()
        #: The same as `abandoned`, read per record: a plain attribute costs a tenth of
        #: Event.is_set (a Python call), 4% of a demo sync's reading.
        self.stopping = False
        self.done = threading.Event()

    def __enter__(self) -> _Reader:
        self.threads.start(self._produce, self.name)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stopping = True
        self.abandoned.set()

    def _put(self, item: object) -> bool:
        while not self.abandoned.is_set():
            try:
                self.batches.put(item, timeout=_POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def _produce(self) -> None:
        try:
            with _reading_settings():
                self._read_batches()
        finally:
            self.done.set()

    def _read_batches(self) -> None:
        batch: list[Any] = []
        size = self.batch_size
        try:
            records = iter(self.plugin.read())
            while True:
                # The tightest loop per record: `fetched` is counted per batch (and for
                # the records of a batch cut short by an error, below).
                append = batch.append
                for record in records:
                    if self.stopping:
                        return
                    append(record)
                    if len(batch) >= size:
                        break
                if not batch:
                    break
                self.fetched += len(batch)
                full, batch = batch, []
                start = self.fetched - len(full)
                encoded = encode_batch(full, start, self.plugin.record_fields, self.key_order)
                if not self._put(encoded):
                    return
            self._put(_DONE)
        except BaseException as exc:  # handed to the sync thread, which classifies it
            self.fetched += len(batch)
            self._put(_Failure(exc))

    def batches_until(self, deadline: float, between: Callable[[], None]) -> Iterator[EncodedBatch]:
        """The batches as they come; raises SyncTimeout at the deadline, the plugin's errors."""
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise SyncTimeout()
            between()
            try:
                item = self.batches.get(timeout=min(left, _POLL_SECONDS))
            except queue.Empty:
                continue
            if item is _DONE:
                return
            if isinstance(item, _Failure):
                raise item.exc
            assert isinstance(item, EncodedBatch)
            yield item


def _error_type(exc: BaseException) -> str:
    """The error's class name, as the sync row keeps it (its column holds 200 characters)."""
    return storable(type(exc).__name__, 200)


def _retry_after(exc: BaseException | None) -> float:
    """How long the source asked us to wait before trying again (0 if it did not say, or
    said something that is no number of seconds)."""
    try:
        value = float(getattr(exc, "retry_after", None) or 0.0)
    except (TypeError, ValueError, OverflowError):
        return 0.0
    return value if value > 0 and not math.isnan(value) else 0.0


def _worth_retrying_now(exc: BaseException) -> bool:
    """A transient plugin error, unless the source asked for a longer pause than a run
    should sit through: then the sync fails now and the connector backs off that long."""
    return (
        isinstance(exc, PluginError)
        and exc.transient
        and _retry_after(exc) <= MAX_RETRY_WAIT_IN_RUN
    )


class Runner:
    """Runs syncs for one `connector-sync run`."""

    def __init__(
        self,
        store: Store,
        options: RunOptions | None = None,
        watchers: Sequence[SyncWatcher] = (),
    ) -> None:
        self.store = store
        self.options = options or RunOptions()
        self.watchers = tuple(watchers)
        self.control = RunControl()
        self._lock = threading.Lock()
        self._reserved = 0
        self._reader_threads = ReaderThreads()

    def _stop_on_signal(self, signum: int, reason: str) -> None:
        self.control.request_stop(self.options.grace, reason, signum)

    # -- the run --------------------------------------------------------------------

    def run(self, *, handle_signals: bool = False) -> RunReport:
        """Run once. With `handle_signals` (the CLI), SIGTERM/SIGINT stop it gracefully."""
        report = RunReport()
        signals = (
            stop_on_signals(self.options.grace, self._stop_on_signal)
            if handle_signals
            else nullcontext()
        )
        with signals:
            report.recovered = self.store.recover_expired_leases(self.options.tenant)
            for item in report.recovered:
                log.warning("recovered connector %s: %s", item.name, item.reason)
            try:
                with LeaseKeeper(
                    self.store, self.options.lease_seconds, self.options.heartbeat_seconds
                ) as keeper:
                    self._run_workers(keeper, report)
            finally:
                self._reader_threads.close()
        report.signal = self.control.signal
        return report

    def _run_workers(self, keeper: LeaseKeeper, report: RunReport) -> None:
        opts = self.options
        claims: queue.Queue[Claim] | None = None
        if opts.connector_ids is not None:
            claims = self._claim_named(opts.connector_ids, keeper, report)
            due_before = None
        else:
            # Only what was due when the run began: a connector this run synced (or
            # that failed and backs off) is due again later, never within this run.
            due_before = self.store.now()
        errors: list[BaseException] = []
        alarms = _Alarms()

        def work() -> None:
            # Due connectors are claimed a few at a time while syncs are quick (one
            # claim transaction serves several syncs), one at a time once a sync is
            # slow, so that other workers get their share of a long queue.
            pending: queue.Queue[Claim] = claims if claims is not None else queue.Queue()
            give_back = functools.partial(self._unclaim_waiting, pending, keeper)
            batch = 1
            try:
                while not self.control.stop_claiming.is_set():
                    if claims is None and pending.empty():
                        for claim in self._claim_due(due_before, keeper, batch):
                            pending.put(claim)
                    try:
                        claim = pending.get_nowait()
                    except queue.Empty:
                        return
                    began = time.monotonic()
                    # Connectors claimed ahead must not wait behind a sync that turns slow:
                    # after QUICK_SYNC_SECONDS they are given back for any worker to take.
                    if claims is None and not pending.empty():
                        alarms.set(pending, QUICK_SYNC_SECONDS, give_back)
                    try:
                        self._sync_and_report(claim, keeper, report)
                    finally:
                        alarms.cancel(pending)
                    quick = time.monotonic() - began < QUICK_SYNC_SECONDS
                    batch = min(batch * 2, MAX_CLAIM_BATCH) if quick else 1
            except BaseException as exc:  # re-raised in the supervising thread
                errors.append(exc)
                self.control.request_stop(0, f"cancelled: run aborted ({exc})")
            finally:
                if claims is None:  # claimed ahead but never started: given back, no trace
                    self._unclaim_waiting(pending, keeper)

        threads = [
            threading.Thread(target=work, name=f"sync-{n}", daemon=True)
            for n in range(opts.concurrency)
        ]
        for thread in threads:
            thread.start()
        try:
            for thread in threads:
                while thread.is_alive():  # join in slices so signals are handled promptly
                    thread.join(_POLL_SECONDS)
        except KeyboardInterrupt:  # no handler installed: cancel in-flight syncs at once
            self.control.request_stop(0, "cancelled: interrupted", signal.SIGINT)
            for thread in threads:
                thread.join()
            raise
        finally:
            alarms.close()
            if claims is not None:  # claimed for a manual run but never started
                self._cancel_unstarted(claims, keeper, report)
        if errors:
            raise errors[0]

    def _claim_due(self, due_before: Any, keeper: LeaseKeeper, batch: int) -> list[Claim]:
        """Claim up to `batch` due connectors, within the run's --limit."""
        with self._lock:
            wanted = batch
            if self.options.limit is not None:
                wanted = min(batch, self.options.limit - self._reserved)
            if wanted <= 0:
                return []
            self._reserved += wanted
        found = self.store.claim(
            ClaimRequest(
                worker=self.options.worker,
                limit=wanted,
                lease_seconds=self.options.lease_seconds,
                due_before=due_before,
                tenant=self.options.tenant,
            )
        )
        with self._lock:
            self._reserved -= wanted - len(found)
        for claim in found:
            keeper.hold(claim)
        return found

    def _unclaim_waiting(self, pending: queue.Queue[Claim], keeper: LeaseKeeper) -> None:
        """Give back the connectors this worker claimed ahead and has not started."""
        while True:
            try:
                claim = pending.get_nowait()
            except queue.Empty:
                return
            try:
                if self.store.unclaim(claim):
                    log.info("gave back %s: claimed ahead of a slow sync", claim.name)
            except DatabaseError as exc:  # its lease expires; recovery follows
                log.error("could not give back connector %s: %s", claim.name, exc)
            finally:
                keeper.release(claim)
                with self._lock:
                    self._reserved -= 1

    def _claim_named(
        self, ids: Sequence[int], keeper: LeaseKeeper, report: RunReport
    ) -> queue.Queue[Claim]:
        claims = self.store.claim(
            ClaimRequest(
                worker=self.options.worker,
                limit=len(ids),
                lease_seconds=self.options.lease_seconds,
                tenant=self.options.tenant,
                connector_ids=ids,
            )
        )
        pending: queue.Queue[Claim] = queue.Queue()
        by_id = {claim.connector_id: claim for claim in claims}
        for connector_id in ids:
            if connector_id in by_id:
                keeper.hold(by_id[connector_id])
                pending.put(by_id[connector_id])
            else:
                report.skipped.append(connector_id)
                log.warning("connector %s is being synced by another worker; skipped", connector_id)
        return pending

    def _cancel_unstarted(
        self, claims: queue.Queue[Claim], keeper: LeaseKeeper, report: RunReport
    ) -> None:
        while True:
            try:
                claim = claims.get_nowait()
            except queue.Empty:
                return
            try:
                self.store.cancel(
                    claim, reason=self.control.reason or "cancelled: run stopped", duration=0.0
                )
            except (DatabaseError, LeaseLost) as exc:  # its lease expires; recovery follows
                log.error("could not release connector %s: %s", claim.name, exc)
                continue
            finally:
                keeper.release(claim)
            self._note(report, claim, CANCELLED)

    def _sync_and_report(self, claim: Claim, keeper: LeaseKeeper, report: RunReport) -> None:
        try:
            status = self.sync(claim, keeper)
        except LeaseLost as exc:
            log.error("%s", exc)
            with self._lock:
                report.lost.append(claim.name)
            return
        self._note(report, claim, status)

    def _note(self, report: RunReport, claim: Claim, status: str) -> None:
        with self._lock:
            report.sync_ids.append(claim.sync_id)
            report.failed += status == FAILED
            report.cancelled += status == CANCELLED

    # -- one sync -------------------------------------------------------------------

    def sync(self, claim: Claim, keeper: LeaseKeeper) -> str:
        """Read the connector through its plugin into its dataset; record the outcome.

        A transient plugin error is tried again (up to `attempts` tries in all) with
        exponential backoff and jitter; anything else fails the sync at once.

        Returns the sync's final status. Raises LeaseLost when another worker took
        the connector over (nothing is recorded then), DatabaseError when the
        database itself fails (the lease will expire and a later run recovers it).
        """
        progress = _Progress()
        keeper.hold(claim, progress)
        started = time.monotonic()
        timeout = float(claim.sync_timeout or self.options.timeout)
        deadline = started + timeout
        tries = 0
        self._tell("started", claim)

        def wait(seconds: float) -> None:
            if time.monotonic() + seconds >= deadline:
                raise SyncTimeout()
            self.control.wait(seconds)

        def read() -> tuple[DatasetWriter, ConnectorPlugin]:
            nonlocal tries
            tries += 1
            if tries > 1:
                self.store.discard_records(claim)
            return self._read_once(claim, keeper, deadline, progress)

        try:
            try:
                writer, plugin = self._read_with_retries(claim, read, wait)
            except (LeaseLost, DatabaseUnavailable):
                raise
            except DatabaseError as exc:
                # A connector deleted (--force) mid-sync takes its dataset with it: the
                # write fails, and the lease is gone. Say so rather than record a failure.
                if self._lease_gone(claim):
                    raise lease_lost(claim.name) from exc
                return self._record_failure(
                    claim, self._describe(claim, exc), _error_type(exc), started, progress, tries
                )
            except SyncCancelled as exc:
                reason = str(exc) or "cancelled"
                self.store.cancel(claim, reason=reason, duration=time.monotonic() - started)
                log.warning("sync of %s cancelled: %s", claim.name, exc)
                self._tell("finished", claim, CANCELLED, reason, None)
                return CANCELLED
            except SyncTimeout:
                error = f"timed out after {_seconds(timeout)}"
                return self._record_failure(claim, error, "Timeout", started, progress, tries)
            except Exception as exc:
                return self._record_failure(
                    claim, self._describe(claim, exc), _error_type(exc), started, progress, tries,
                    retry_after=_retry_after(exc),
                )  # fmt: skip
            duration = time.monotonic() - started
            try:
                done = Completion(
                    duration=duration,
                    records_fetched=progress.fetched,
                    records_processed=progress.stored,
                    schema=writer.schema(),
                    state=plugin.state or claim.state,
                    next_sync_in=claim.sync_interval,
                    next_sync_at=_next_slot(claim),
                    # Nothing new since the saved cursor: no empty dataset (the sync links none).
                    keep_dataset=progress.stored > 0 or not claim.state,
                    attempts=tries,
                )
                self.store.complete(claim, done)
            except (LeaseLost, DatabaseUnavailable):
                raise
            except Exception as exc:  # e.g. a state the database cannot store
                error = f"the records were read but the outcome could not be recorded: {exc}"
                return self._record_failure(
                    claim, self._describe(claim, ValueError(error)), _error_type(exc), started,
                    progress, tries,
                )  # fmt: skip
            log.info("synced %s: %d records in %.2fs", claim.name, progress.stored, duration)
            self._tell("finished", claim, COMPLETED, None, None)
            return COMPLETED
        finally:
            keeper.release(claim)

    def _read_with_retries(
        self,
        claim: Claim,
        read: Callable[[], tuple[DatasetWriter, ConnectorPlugin]],
        wait: Callable[[float], None],
    ) -> tuple[DatasetWriter, ConnectorPlugin]:
        """`read()`, tried again after a transient plugin error (up to `attempts` tries in
        all) with exponential backoff and jitter, or longer when the source asked for it.

        The first try runs outside tenacity, which takes over only after a failure worth
        trying again (its own first attempt raises that failure): nearly every sync
        succeeds at once, and tenacity's bookkeeping showed in profiles of syncs that read
        nothing.
        """
        try:
            return read()
        except Exception as exc:
            if self.options.attempts < 2 or not _worth_retrying_now(exc):
                raise
            first_failure: Exception | None = exc

        def again() -> tuple[DatasetWriter, ConnectorPlugin]:
            nonlocal first_failure
            if first_failure is not None:
                failure, first_failure = first_failure, None
                raise failure
            return read()

        backoff = tenacity.wait_exponential_jitter(
            multiplier=self.options.retry_wait,
            max=MAX_RETRY_WAIT_IN_RUN,
            jitter=self.options.retry_wait,
        )

        def pause(state: tenacity.RetryCallState) -> float:
            # Our backoff, or longer if the source asked for longer (Retry-After).
            failure = state.outcome.exception() if state.outcome else None
            return max(backoff(state), _retry_after(failure))

        retrying = tenacity.Retrying(
            stop=tenacity.stop_after_attempt(self.options.attempts),
            wait=pause,
            retry=tenacity.retry_if_exception(_worth_retrying_now),
            sleep=wait,
            before_sleep=lambda state: log.warning(
                "sync of %s failed on try %d, trying again: %s",
                claim.name,
                state.attempt_number,
                self._describe(claim, state.outcome.exception() if state.outcome else None),
            ),
            reraise=True,
        )
        return retrying(again)

    def _read_once(
        self, claim: Claim, keeper: LeaseKeeper, deadline: float, progress: _Progress
    ) -> tuple[DatasetWriter, ConnectorPlugin]:
        plugin_cls = load_plugin(claim.type)
        config = resolve_env_refs(claim.config)
        # Again at sync time: a config stored earlier, or an env: reference, may point at
        # the tool's own database, where every tenant's secrets are.
        plugin_cls.refuse_own_database(config, self.store.database.url)
        plugin = plugin_cls(config, claim.state)
        writer = DatasetWriter(self.store, claim.dataset_id)

        def between_batches() -> None:
            keeper.ensure_held(claim)
            self.control.check()

        reader = _Reader(
            plugin, self.options.batch_size, claim.name, self._reader_threads,
            self.store.record_key_order,
        )  # fmt: skip
        with reader:
            try:
                for batch in reader.batches_until(deadline, between_batches):
                    between_batches()
                    writer.write(batch)
                    progress.fetched, progress.stored = reader.fetched, writer.count
                    self._tell("progressed", claim, reader.fetched, writer.count)
            finally:
                progress.fetched, progress.stored = reader.fetched, writer.count
        return writer, plugin

    def _lease_gone(self, claim: Claim) -> bool:
        try:
            return bool(
                self.store.heartbeat(
                    {claim.connector_id: claim.lease_token}, self.options.lease_seconds
                )
            )
        except DatabaseError:
            return False

    def _tell(self, event: str, claim: Claim, *args: Any) -> None:
        """Call each watcher's `event`; a watcher that fails is logged, never fails the sync."""
        for watcher in self.watchers:
            try:
                getattr(watcher, event)(claim, *args)
            except Exception as exc:
                log.warning("%s watcher failed: %s", type(watcher).__name__, describe_error(exc))

    @staticmethod
    def _describe(claim: Claim, exc: BaseException | None) -> str:
        """The error as one line for the sync row and the log, every secret masked."""
        if exc is None:
            return ""
        try:
            hidden = connector_secrets(secret_fields(claim.type), claim.config)
        except Exception:  # describing a failure must not fail: mask what redact finds alone
            hidden = set()
        return storable(redact(describe_error(exc), hidden))

    def _record_failure(
        self,
        claim: Claim,
        error: str,
        error_type: str,
        started: float,
        progress: _Progress,
        tries: int,
        retry_after: float = 0.0,
    ) -> str:
        failure = Failure(
            error=error,
            error_type=error_type,
            duration=time.monotonic() - started,
            records_fetched=progress.fetched,
            records_processed=progress.stored,
            retry_in=retry_delay(
                claim.consecutive_failures + 1,
                _backoff_cap(claim, self.store.now()),
                retry_after,
                base=self.options.backoff_base,
            ),
            attempts=max(tries, 1),
        )
        try:
            outcome = self.store.fail(claim, failure)
        except (LeaseLost, DatabaseUnavailable):
            raise
        except Exception as exc:  # the last resort: a failure that says only what is safe
            log.error("could not record the failure of %s as it was: %s", claim.name, exc)
            plain = f"the sync failed ({error_type}) and its error could not be stored"
            outcome = self.store.fail(claim, replace(failure, error=plain))
        if outcome is not None:
            log.error(
                "sync of %s failed (%d in a row, connector %s): %s",
                claim.name,
                outcome.consecutive_failures,
                outcome.connector_status,
                error,
            )
        self._tell("finished", claim, FAILED, error, outcome)
        return FAILED


@contextmanager
def stop_on_signals(
    grace: float, request_stop: Callable[[int, str], None]
) -> Iterator[threading.Event]:
    """While the block runs, SIGTERM/SIGINT stop it gracefully: the first sets the event
    yielded, then calls `request_stop(signum, reason)`; a second exits at once (the
    unfinished leases expire and a later run recovers them). Both happen in a relay
    thread (signals.py), not in the signal handler, so `request_stop` may log and lock.
    Outside the main thread, signals are not handled and the event is never set by one."""
    stopped = threading.Event()

    def on_signal(signum: int) -> None:
        name = signal.Signals(signum).name
        if stopped.is_set():
            log.error("second %s: exiting now; unfinished leases expire and are recovered", name)
            os._exit(128 + signum)
        stopped.set()
        log.warning(
            "%s received: no new syncs; in-flight syncs get %s to finish, then are "
            "cancelled (send it again to exit at once)",
            name,
            _seconds(grace),
        )
        request_stop(signum, f"cancelled: worker received {name}, grace of {_seconds(grace)} over")

    with relayed(on_signal):
        yield stopped


@dataclass(frozen=True)
class LoopOptions:
    """`run --loop`: a run every `every` seconds (start to start), until stopped."""

    every: float
    #: Up to this many seconds more between runs, at random, so workers started together
    #: spread out.
    jitter: float = 0.0
    #: Stop after this many runs (None: until a signal).
    max_runs: int | None = None


@dataclass
class LoopReport:
    """What a loop did, over all its runs."""

    runs: int = 0
    #: Syncs recorded, by outcome, over all runs.
    completed: int = 0
    failed: int = 0
    cancelled: int = 0
    lost: int = 0
    #: The signal that stopped the loop, if any.
    signal: int | None = None


def run_loop(
    store: Store,
    options: RunOptions,
    loop: LoopOptions,
    on_run: Callable[[int, RunReport | None], None] | None = None,
    watchers: Sequence[SyncWatcher] = (),
) -> LoopReport:
    """Run, sleep, run again, until a signal (or `loop.max_runs`).

    A signal during the sleep ends the loop at once; during a run, the run's syncs get
    `options.grace` to finish. A run the database was unavailable for is logged and the
    loop goes on: the next run tries again.
    """
    report = LoopReport()
    current: list[Runner] = []
    # The signal is acted on in another thread: a run starting as it comes is either in
    # `current` when request_stop looks, or sees `report.signal` set.
    lock = threading.Lock()

    def request_stop(signum: int, reason: str) -> None:
        with lock:
            report.signal = signum
            for runner in current:
                runner.control.request_stop(options.grace, reason, signum)

    with stop_on_signals(options.grace, request_stop) as stopped:
        while not stopped.is_set():
            started = time.monotonic()
            runner = Runner(store, options, watchers)
            with lock:
                current.append(runner)
                if report.signal is not None:  # a signal between the check and the append
                    runner.control.request_stop(0, "cancelled: loop stopping", report.signal)
            try:
                run_report: RunReport | None = runner.run()
            except DatabaseUnavailable as exc:
                log.error("run %d: %s; the next run tries again", report.runs + 1, exc)
                run_report = None
            finally:
                with lock:
                    current.clear()
            report.runs += 1
            if run_report is not None:
                report.failed += run_report.failed
                report.cancelled += run_report.cancelled
                report.lost += len(run_report.lost)
                report.completed += (
                    len(run_report.sync_ids) - run_report.failed - run_report.cancelled
                )
            if on_run is not None:
                on_run(report.runs, run_report)
            if loop.max_runs is not None and report.runs >= loop.max_runs:
                break
            delay = loop.every + random.uniform(0, loop.jitter) - (time.monotonic() - started)
            stopped.wait(max(0.0, delay))
    return report


def _next_slot(claim: Claim) -> dt.datetime | None:
    """A cron connector's next slot after its sync started (None: it has an interval).
    A slot that passed during the sync makes it due at once: missed slots run once."""
    if claim.schedule is None:
        return None
    return next_slot(claim.started_at, claim.schedule, claim.timezone)


def _backoff_cap(claim: Claim, now: dt.datetime) -> float:
    """The longest retry delay after a failure at `now`: the interval, or for a cron
    connector the time from now to its next slot (a failing connector is retried at least
    as often as it runs). A schedule that no longer parses falls back to the interval: it
    must fail this sync, not the run."""
    try:
        slot = _next_slot(claim)
    except Exception as exc:
        log.error("schedule of %s is unusable (%s): retrying at its interval", claim.name, exc)
        return float(claim.sync_interval)
    if slot is None:
        return float(claim.sync_interval)
    return max(1.0, (slot - now).total_seconds())


def _seconds(value: float) -> str:
    return f"{value:g}s"


def describe_error(exc: BaseException) -> str:
    """The error as one line (whole: `storable` cuts it, after secrets are redacted)."""
    try:
        text = str(exc)
    except Exception:  # a plugin's exception whose __str__ fails still fails its sync
        text = ""
    return " ".join(text.split()) or type(exc).__name__


#: Control characters (NUL included): PostgreSQL refuses NUL in text, and none belongs in
#: a one-line message.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def storable(text: str, limit: int = MAX_ERROR_LENGTH) -> str:
    """`text` as every database stores it and every terminal shows it: control characters
    escaped (\\x00), lone surrogates escaped (\\ud800), at most `limit` characters.

    Cut only after secrets were redacted: a secret cut in half is no longer recognised.
    """
    text = text.encode("utf-8", "backslashreplace").decode("utf-8")
    text = _CONTROL.sub(lambda m: f"\\x{ord(m[0]):02x}", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
