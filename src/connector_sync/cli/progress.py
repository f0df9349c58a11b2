"""`run` on a terminal: a live line per sync in flight (records so far, rate, elapsed).

Shown only when stdout is a terminal and nothing asked for quiet or machine output
(--json, --quiet, JSON logs off a terminal): a cron job's mail or a log file never holds
a progress display.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from connector_sync.operations import SyncWatcher

if TYPE_CHECKING:
    from rich.progress import Progress, TaskID

    from connector_sync.operations import Claim, Outcome


class LiveProgress(SyncWatcher):
    """One rich progress line per sync while it runs; gone when it ends (the table of the
    run's syncs follows)."""

    def __init__(self, progress: Progress) -> None:
        self.progress = progress
        self._tasks: dict[int, TaskID] = {}

    def started(self, claim: Claim) -> None:
        self._tasks[claim.sync_id] = self.progress.add_task(claim.name, total=None)

    def progressed(self, claim: Claim, records_fetched: int, records_processed: int) -> None:
        task = self._tasks.get(claim.sync_id)
        if task is not None:
            self.progress.update(task, completed=records_processed)

    def finished(
        self, claim: Claim, status: str, error: str | None, outcome: Outcome | None
    ) -> None:
        task = self._tasks.pop(claim.sync_id, None)
        if task is not None:
            self.progress.remove_task(task)


def _columns() -> list[Any]:
    from rich.progress import ProgressColumn, SpinnerColumn, TextColumn, TimeElapsedColumn
    from rich.text import Text

    class RateColumn(ProgressColumn):
        """Records stored per second so far."""

        def render(self, task: Any) -> Text:
            elapsed = task.elapsed or 0.0
            rate = task.completed / elapsed if elapsed > 0 else 0.0
            return Text(f"{rate:,.0f} records/s", style="progress.data.speed")

    return [
        SpinnerColumn(),
        TextColumn("[bold]{task.description}", markup=True),
        TextColumn("{task.completed:,.0f} records"),
        RateColumn(),
        TimeElapsedColumn(),
    ]


@contextmanager
def live_progress(*, enabled: bool) -> Iterator[list[SyncWatcher]]:
    """The watchers for a run: a live display when `enabled` and stdout is a terminal
    that shows tables; none otherwise."""
    from connector_sync import render

    if not (enabled and render.Output.tables and not render.Output.quiet):
        yield []
        return
    if not render.console.is_terminal:
        yield []
        return
    from rich.progress import Progress

    progress = Progress(*_columns(), console=render.console, transient=True)
    with progress, _logs_above(progress):
        yield [LiveProgress(progress)]


@contextmanager
def _logs_above(progress: Progress) -> Iterator[None]:
    """Our log lines go through the live display's stderr, so they print above it instead
    of tearing it (the handler holds the stderr it was created with)."""
    handlers = [
        h
        for h in logging.getLogger("connector_sync").handlers
        if isinstance(h, logging.StreamHandler) and h.stream is sys.__stderr__
    ]
    previous = [h.setStream(sys.stderr) for h in handlers]
    try:
        yield
    finally:
        for handler, stream in zip(handlers, previous, strict=True):
            if stream is not None:
                handler.setStream(stream)
