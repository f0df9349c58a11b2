"""The runs one server process started: each in its own thread, kept in memory to be polled,
stopped together when the server shuts down."""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
import uuid
from collections import OrderedDict
from dataclasses import dataclass, field

from connector_sync import operations
from connector_sync.exceptions import ConnectorSyncError
from connector_sync.operations import Runner
from connector_sync.server.errors import ShuttingDown, unexpected
from connector_sync.server.schemas import RunDocument, RunStatus

log = logging.getLogger("connector_sync.server")

#: Finished runs kept to be polled, newest last; older ones are forgotten.
KEEP_FINISHED = 100


@dataclass
class TriggeredRun:
    """One run started through the API."""

    id: str
    runner: Runner
    started_at: dt.datetime
    finished_at: dt.datetime | None = None
    result: operations.RunResult | None = None
    #: Why the run itself could not go on (the syncs it recorded say how each went).
    error: ConnectorSyncError | None = None
    done: threading.Event = field(default_factory=threading.Event)

    @property
    def poll(self) -> str:
        return f"/api/runs/{self.id}"

    @property
    def status(self) -> RunStatus:
        if not self.done.is_set():
            return "RUNNING"
        return "ERROR" if self.error is not None else "FINISHED"

    def document(self) -> RunDocument:
        return RunDocument(
            id=self.id,
            status=self.status,
            poll=self.poll,
            started_at=self.started_at,
            finished_at=self.finished_at,
            syncs=self.result.syncs if self.result is not None else None,
            error=self.error.message if self.error is not None else None,
        )


class RunRegistry:
    """Starts runs in threads, finds them by id, and stops them all on shutdown.

    In memory, in this process: a run started on one server is polled on that server
    (behind a load balancer, use `wait=true` or sticky sessions).
    """

    def __init__(self, store: operations.Store) -> None:
        self.store = store
        self._runs: OrderedDict[str, TriggeredRun] = OrderedDict()
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()
        self._stopping = False

    @property
    def accepting(self) -> bool:
        return not self._stopping

    def start(self, runner: Runner) -> TriggeredRun:
        """Start a prepared run in its own thread.

        Raises:
            ShuttingDown: the server is stopping (its runs are being drained).
        """
        run = TriggeredRun(uuid.uuid4().hex, runner, dt.datetime.now(dt.UTC))
        thread = threading.Thread(target=self._execute, args=(run,), name=f"run-{run.id[:8]}")
        thread.daemon = True  # one that outlives the drain must not hold the process
        with self._lock:
            if self._stopping:
                raise ShuttingDown()
            self._runs[run.id] = run
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()
        return run

    def get(self, run_id: str) -> TriggeredRun | None:
        with self._lock:
            return self._runs.get(run_id)

    def stop(self, grace: float, reason: str) -> None:
        """Start no new run; runs in flight get `grace` seconds to finish their syncs, then
        the syncs still going are cancelled (recorded CANCELLED, due again)."""
        with self._lock:
            self._stopping = True
            running = [run for run in self._runs.values() if not run.done.is_set()]
        for run in running:
            run.runner.control.request_stop(grace, reason)

    def join(self, timeout: float) -> bool:
        """Wait up to `timeout` seconds for every run thread; False if some are still going."""
        deadline = time.monotonic() + timeout
        with self._lock:
            threads = list(self._threads)
        for thread in threads:
            thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    def _execute(self, run: TriggeredRun) -> None:
        try:
            run.result = operations.execute_run(self.store, run.runner)
        except ConnectorSyncError as exc:
            log.error("run %s stopped: %s", run.id, exc.message)
            run.error = exc
        except Exception as exc:  # a bug: the run is reported, the server goes on
            run.error = ConnectorSyncError(unexpected(exc, f"run {run.id}"))
        finally:
            run.finished_at = dt.datetime.now(dt.UTC)
            run.done.set()
            self._forget_old()

    def _forget_old(self) -> None:
        with self._lock:
            finished = [key for key, run in self._runs.items() if run.done.is_set()]
            for key in finished[: max(0, len(finished) - KEEP_FINISHED)]:
                del self._runs[key]
