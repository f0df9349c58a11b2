"""Health checks: the thresholds that turn what the store knows (HealthFacts) into
problems, each with a severity and a reason an operator can act on. Pure: no I/O.

Severities, and what the `health` command's exit code makes of them:

- critical (exit 1): a connector parked in ERROR, an expired lease (a worker died), a
  connector overdue (is the scheduler running?), a sync running past its timeout, the
  error rate of all syncs above the threshold;
- warning (exit 0, or 1 with --strict): a connector failing again and again before
  ERROR, a sync running far longer than usual, one connector's error rate above the
  threshold.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import Any

from connector_sync.durations import human_seconds
from connector_sync.store.base import HealthFacts, HealthProblem, HealthThresholds, RunningSync

WARNING, CRITICAL = "warning", "critical"
SEVERITIES = (CRITICAL, WARNING)


def judge(facts: HealthFacts, thresholds: HealthThresholds) -> list[HealthProblem]:
    """Every problem found, critical ones first, each check's in the store's order."""
    found = [
        *_connector_rows(facts),
        *_long_syncs(facts, thresholds),
        *_error_rates(facts, thresholds),
    ]
    return sorted(found, key=lambda p: SEVERITIES.index(p.severity))


def worst(problems: list[HealthProblem]) -> str | None:
    """ "critical", "warning", or None when healthy."""
    return next((s for s in SEVERITIES if any(p.severity == s for p in problems)), None)


def _when(value: dt.datetime) -> str:
    return f"{value:%Y-%m-%dT%H:%M:%SZ}"


#: The checks that report connector rows as they are: (HealthFacts field, problem,
#: severity, check, the detail of a row).
_ROW_CHECKS: tuple[tuple[str, str, str, str, Callable[[Mapping[str, Any]], str]], ...] = (
    ("errors", "ERROR", CRITICAL, "failures", lambda r: (
        f"parked after {r['consecutive_failures']} consecutive failures; last error: "
        f"{r['last_sync_error']}; fix it, then 'connector-sync enable {r['name']}'"
    )),
    ("failing", "FAILING", WARNING, "failures", lambda r: (
        f"{r['consecutive_failures']} failures in a row (warning from {r['threshold']}, "
        f"parked in ERROR at {r['max_consecutive_failures']}); last error: "
        f"{r['last_sync_error']}"
    )),
    ("expired", "LEASE_EXPIRED", CRITICAL, "lease", lambda r: (
        f"lease of {r['lease_owner']} expired at {_when(r['lease_expires_at'])}; the next run "
        "(or 'connector-sync recover') releases it"
    )),
    ("overdue", "OVERDUE", CRITICAL, "overdue", lambda r: (
        f"due since {_when(r['next_sync_at'])}; is the scheduler running 'connector-sync run'?"
    )),
)  # fmt: skip


def _connector_rows(facts: HealthFacts) -> Iterator[HealthProblem]:
    for field, problem, severity, check, detail in _ROW_CHECKS:
        for r in getattr(facts, field):
            yield HealthProblem(problem, r["id"], r["name"], detail(r), severity, check)


def long_sync_threshold(sync: RunningSync, thresholds: HealthThresholds) -> float | None:
    """Seconds after which a sync counts as long-running: the connector's own threshold,
    else health's --long-sync, else a multiple of its typical duration with a floor (None:
    no COMPLETED sync to compare with, only the timeout applies)."""
    if sync.long_sync is not None:
        return float(sync.long_sync)
    if thresholds.long_sync is not None:
        return thresholds.long_sync
    if sync.typical_duration is None:
        return None
    return max(thresholds.long_sync_factor * sync.typical_duration, thresholds.long_sync_floor)


def _long_syncs(facts: HealthFacts, thresholds: HealthThresholds) -> Iterator[HealthProblem]:
    for sync in facts.running:
        running = (
            f"sync {sync.sync_id} on {sync.worker} running for {human_seconds(sync.elapsed)}, "
            f"{sync.records_processed:,} records so far"
        )
        timeout = float(sync.sync_timeout or thresholds.timeout)
        limit = long_sync_threshold(sync, thresholds)
        if sync.elapsed >= timeout:
            yield HealthProblem(
                "SYNC_TIMEOUT", sync.connector_id, sync.connector_name,
                f"{running}: past its timeout of {human_seconds(timeout)}; is the worker stuck?",
                CRITICAL, "long_sync",
            )  # fmt: skip
        elif limit is not None and sync.elapsed >= limit:
            usual = (
                ""
                if sync.typical_duration is None
                else f"; it usually takes {human_seconds(sync.typical_duration)}"
            )
            yield HealthProblem(
                "LONG_SYNC", sync.connector_id, sync.connector_name,
                f"{running}: longer than {human_seconds(limit)}{usual}",
                WARNING, "long_sync",
            )  # fmt: skip


def _error_rates(facts: HealthFacts, thresholds: HealthThresholds) -> Iterator[HealthProblem]:
    window = human_seconds(thresholds.window)
    for r in facts.error_rates:
        yield HealthProblem(
            "ERROR_RATE", r["id"], r["name"],
            f"{_rate(r['failed'], r['finished'])} of its syncs in the last {window} failed "
            f"(above {r['threshold']:.0%})",
            WARNING, "error_rate",
        )  # fmt: skip
    failed = facts.syncs_in_window.get("FAILED", 0)
    finished = failed + facts.syncs_in_window.get("COMPLETED", 0)
    if finished >= thresholds.min_syncs and failed > thresholds.max_error_rate * finished:
        yield HealthProblem(
            "ERROR_RATE", None, None,
            f"{_rate(failed, finished)} of all syncs in the last {window} failed "
            f"(above {thresholds.max_error_rate:.0%})",
            CRITICAL, "error_rate",
        )  # fmt: skip


def _rate(failed: int, finished: int) -> str:
    return f"{failed} of {finished} ({failed / finished:.0%})"
