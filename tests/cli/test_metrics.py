"""`metrics`: the Prometheus text format from prometheus_client, parsed back by its own
parser; `-o FILE` written atomically; a fixed number of queries however many connectors."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from prometheus_client.parser import text_string_to_metric_families

from conftest import Cli
from connector_sync import operations
from connector_sync.store import open_store
from connector_sync.store.base import NewConnector
from connector_sync.store.postgres import PostgresStore


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample: (name, sorted labels) -> value."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def add(cli: Cli, name: str, config: dict[str, Any]) -> None:
    result = cli("add", name, "--type", "demo", "--config", json.dumps(config))
    assert result.exit_code == 0, result.stderr


def test_metrics_hold_every_series_and_parse(cli: Cli) -> None:
    add(cli, "good", {"records": 7})
    add(cli, "broken", {"fail": True, "records": 10})
    add(cli, "later", {"records": 1})
    cli("run", "-c", "good", "-c", "broken")
    cli("run", "-c", "broken")
    result = cli("metrics")
    assert result.exit_code == 0, result.stderr
    found = samples(result.stdout)
    families = {f.name: f.type for f in text_string_to_metric_families(result.stdout)}
    assert families["connector_sync_sync_duration_seconds"] == "histogram"
    assert families["connector_sync_connectors"] == "gauge"
    assert found[("connector_sync_connectors", (("status", "ACTIVE"),))] == 3
    assert found[("connector_sync_connectors", (("status", "ERROR"),))] == 0
    assert found[("connector_sync_connectors_due", ())] == 1  # "later"
    assert found[("connector_sync_oldest_due_age_seconds", ())] >= 0
    assert found[("connector_sync_expired_leases", ())] == 0
    assert found[("connector_sync_window_seconds", ())] == 86400
    assert found[("connector_sync_window_syncs", (("status", "COMPLETED"),))] == 1
    assert found[("connector_sync_window_syncs", (("status", "FAILED"),))] == 2
    assert found[("connector_sync_window_records", (("status", "COMPLETED"),))] == 7
    inf = ("connector_sync_sync_duration_seconds_bucket", (("le", "+Inf"), ("status", "FAILED")))
    assert found[inf] == 2
    assert found[("connector_sync_sync_duration_seconds_gcount", (("status", "FAILED"),))] == 2
    per = (("connector", "broken"), ("tenant", "default"))
    assert found[("connector_sync_connector_consecutive_failures", per)] == 2
    good = (("connector", "good"), ("tenant", "default"))
    assert found[("connector_sync_connector_last_success_timestamp_seconds", good)] > 1.7e9
    assert ("connector_sync_connector_last_success_timestamp_seconds", per) not in found
    assert ("connector_sync_connector_consecutive_failures", good) not in found  # none now
    assert found[("connector_sync_connectors_without_series", ())] == 0
    week = samples(cli("metrics", "--window", "7d").stdout)
    assert week[("connector_sync_window_seconds", ())] == 7 * 86400


def test_connector_series_are_bounded_those_in_need_first(cli: Cli) -> None:
    for name in ("fine", "broken", "never"):
        add(cli, name, {"records": 2, "fail": name == "broken"})
    cli("run", "-c", "fine", "-c", "broken")
    one = samples(cli("metrics", "--connector-series", "1").stdout)
    per_connector = {
        dict(labels)["connector"]
        for name, labels in one
        if name.startswith("connector_sync_connector_")
    }
    assert per_connector == {"broken"}  # failing: first in need of a look
    assert one[("connector_sync_connectors_without_series", ())] == 2
    two = samples(cli("metrics", "--connector-series", "2").stdout)
    assert ("connector_sync_connector_last_success_timestamp_seconds",
            (("connector", "fine"), ("tenant", "default"))) not in two  # fmt: skip
    assert two[("connector_sync_connectors_without_series", ())] == 1  # "never" came second


def test_metrics_output_file_is_written_whole(cli: Cli, tmp_path: Path) -> None:
    add(cli, "good", {"records": 2})
    cli("run")
    target = tmp_path / "textfile" / "connector-sync.prom"
    missing = cli("metrics", "-o", str(target))
    assert missing.exit_code == 2
    assert missing.stderr.startswith("connector-sync: error: --output ")
    assert "does not exist: create it first" in missing.stderr
    target.parent.mkdir()
    target.write_text("old contents\n")
    result = cli("metrics", "-o", str(target))
    assert result.exit_code == 0, result.stderr
    assert result.stdout == ""
    assert f"metrics written to {target}" in result.stderr
    quiet = cli("--quiet", "metrics", "-o", str(target))  # every minute under cron
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    unwritable = cli("metrics", "-o", "/proc/connector-sync.prom")  # was exit 1, a traceback
    assert unwritable.exit_code == 2
    assert unwritable.stderr.startswith("connector-sync: error: --output /proc/connector-sync")
    text = target.read_text()
    assert samples(text)[("connector_sync_window_syncs", (("status", "COMPLETED"),))] == 1
    assert [p.name for p in target.parent.iterdir()] == [target.name]  # no temporary left
    bad_window = cli("metrics", "--window", "soon")
    assert bad_window.exit_code == 2 and "'--window'" in bad_window.stderr


class QueryCounter:
    """Counts the statements a store sends: SQLAlchemy's events on SQLite, the named
    queries' runner on PostgreSQL."""

    def __init__(self, store: Any, monkeypatch: pytest.MonkeyPatch) -> None:
        self.count = 0
        if isinstance(store, PostgresStore):
            from connector_sync.store import postgres

            original = postgres._Runner.__call__

            def counted(runner: Any, query: str, /, **params: Any) -> Any:
                self.count += 1
                return original(runner, query, **params)

            monkeypatch.setattr(postgres._Runner, "__call__", counted)
        else:
            sa.event.listen(store.database.engine, "before_cursor_execute", self._seen)

    def _seen(self, *_: Any) -> None:
        self.count += 1


@pytest.fixture
def counted_store(db_url: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, Any]]:
    with open_store(db_url) as store:
        yield store, QueryCounter(store, monkeypatch)


def test_metrics_take_the_same_queries_for_5_or_60_connectors(
    counted_store: tuple[Any, QueryCounter],
) -> None:
    store, counter = counted_store

    def queries_for(total: int) -> int:
        while len(store.list_connectors()) < total:
            n = len(store.list_connectors())
            store.add_connector(NewConnector(name=f"c{n}", type="demo", config={},
                                             sync_interval=60))  # fmt: skip
        counter.count = 0
        assert "connector_sync_connectors_due " in operations.metrics_text(store)
        used = counter.count
        assert len(store.metrics_snapshot(3600).per_connector) == total
        return used

    assert queries_for(5) == queries_for(60) <= 8
