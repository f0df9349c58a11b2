"""Prometheus metrics, built with prometheus_client from one MetricsSnapshot (a fixed
number of queries, whatever the number of connectors).

Counts over a window (syncs, records, the duration histogram) are gauges, not counters:
they are what the database holds for the last `window` seconds, so they go down as well
as up. The duration histogram is a gauge histogram for the same reason.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_sync.constants import CONNECTOR_STATUSES, SYNC_STATUSES
from connector_sync.exceptions import BadInput

if TYPE_CHECKING:
    from connector_sync.store.base import MetricsSnapshot

PREFIX = "connector_sync"


class _SnapshotCollector:
    """A prometheus_client collector yielding the families of one snapshot."""

    def __init__(self, snapshot: MetricsSnapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Any]:
        from prometheus_client.core import GaugeHistogramMetricFamily, GaugeMetricFamily

        from connector_sync.store.base import DURATION_BUCKETS

        snap = self.snapshot

        def gauge(name: str, doc: str, labels: list[str] | None = None, value: float | None = None
                  ) -> Any:  # fmt: skip
            return GaugeMetricFamily(f"{PREFIX}_{name}", doc, value=value, labels=labels)

        connectors = gauge("connectors", "Connectors by status.", ["status"])
        for status in sorted({*CONNECTOR_STATUSES, *snap.connectors}):
            connectors.add_metric([status], snap.connectors.get(status, 0))
        yield connectors
        yield gauge("connectors_due", "Connectors due now.", value=snap.due_now)
        oldest = (
            0.0
            if snap.oldest_due_since is None
            else max((snap.checked_at - snap.oldest_due_since).total_seconds(), 0.0)
        )
        yield gauge(
            "oldest_due_age_seconds",
            "How long the connector due the longest has been due (0: none due).",
            value=oldest,
        )
        yield gauge(
            "expired_leases",
            "Connectors whose worker's lease expired (the next run recovers them).",
            value=snap.expired_leases,
        )
        yield gauge(
            "window_seconds", "The window of the window_* series, in seconds.", value=snap.window
        )
        syncs = gauge("window_syncs", "Syncs started in the window, by status.", ["status"])
        records = gauge(
            "window_records", "Records stored by syncs started in the window, by status.",
            ["status"],
        )  # fmt: skip
        by_status = {row.status: row for row in snap.syncs}
        for status in sorted({*SYNC_STATUSES, *by_status}):
            row = by_status.get(status)
            syncs.add_metric([status], row.count if row else 0)
            records.add_metric([status], row.records if row else 0)
        yield syncs
        yield records
        durations = GaugeHistogramMetricFamily(
            f"{PREFIX}_sync_duration_seconds",
            "Durations of the syncs started in the window that ended, by status.",
            labels=["status"],
        )
        for row in snap.syncs:
            if row.duration_count:
                bounds = [f"{b:g}" for b in DURATION_BUCKETS] + ["+Inf"]
                counts = [*row.duration_buckets, row.duration_count]
                durations.add_metric(
                    [row.status], list(zip(bounds, counts, strict=True)), row.duration_sum
                )
        yield durations
        failures = gauge(
            "connector_consecutive_failures",
            "Failures in a row of each connector failing now (no sample: none, the last "
            "sync succeeded).",
            ["tenant", "connector"],
        )
        success = gauge(
            "connector_last_success_timestamp_seconds",
            "When each connector's latest successful sync ended, in Unix time (connectors "
            "that never succeeded have no sample).",
            ["tenant", "connector"],
        )
        for c in snap.per_connector:
            # Only the connectors failing now: a healthy fleet of 100,000 connectors would
            # otherwise double the exposition with zeros (alert on `>= 2`; absent is 0).
            if c.consecutive_failures:
                failures.add_metric([c.tenant, c.name], c.consecutive_failures)
            if c.last_success is not None:
                success.add_metric([c.tenant, c.name], c.last_success)
        yield failures
        yield success
        total = sum(snap.connectors.values())
        yield gauge(
            "connectors_without_series",
            "Connectors left out of the connector_* series (metrics --connector-series): "
            "the healthiest, after the failing ones and the longest without a success.",
            value=max(total - len(snap.per_connector), 0),
        )


def _registry(snapshot: MetricsSnapshot) -> Any:
    from prometheus_client import CollectorRegistry

    registry = CollectorRegistry(auto_describe=False)
    registry.register(_SnapshotCollector(snapshot))
    return registry


def exposition(snapshot: MetricsSnapshot) -> str:
    """The Prometheus text format (what `/metrics` serves and `metrics` prints)."""
    from prometheus_client import generate_latest

    return str(generate_latest(_registry(snapshot)).decode("utf-8"))


def write_textfile(path: Path, snapshot: MetricsSnapshot) -> None:
    """Write the text format to `path` atomically (a temporary file in the same folder,
    then a rename), as node_exporter's textfile collector needs: it never reads half a
    file. prometheus_client's own write_to_textfile does exactly this."""
    from prometheus_client import write_to_textfile

    try:
        write_to_textfile(os.fspath(path), _registry(snapshot))
    except OSError as exc:  # a read-only or full file system, a folder like /proc
        raise BadInput(
            f"output {path}: cannot write it: {exc.strerror or exc}", param="output"
        ) from None
