"""Running the runner in a test and reading back what its latest sync stored."""

from __future__ import annotations

from typing import Any

from connector_sync.runner import Runner, RunOptions
from connector_sync.store import Store
from connector_sync.store.base import HistoryFilter, Sync
from support.database import stored_records


def run_and_read(store: Store, **options: Any) -> tuple[Sync, list[dict[str, Any]]]:
    """One run (RunOptions from `options`); the newest sync, which must have completed,
    and the records its dataset holds."""
    Runner(store, RunOptions(**options)).run()
    latest = store.history(HistoryFilter(limit=1))[0]
    assert latest.status == "COMPLETED", latest.error
    assert latest.dataset_id is not None
    return latest, stored_records(store.database, latest.dataset_id)
