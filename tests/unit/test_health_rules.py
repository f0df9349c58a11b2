"""health's rules without a database: thresholds, severities, order; durations in and out."""

from __future__ import annotations

import datetime as dt

import pytest

from connector_sync.durations import human_seconds
from connector_sync.health import judge, long_sync_threshold, worst
from connector_sync.notify import alert_notifications
from connector_sync.store.base import AlertMessage, HealthFacts, HealthThresholds, RunningSync

NOW = dt.datetime(2026, 11, 30, 12, tzinfo=dt.UTC)


def running(elapsed: float, typical: float | None = 5.0, **extra: object) -> RunningSync:
    values: dict[str, object] = {
        "sync_id": 9, "connector_id": 3, "connector_name": "c", "tenant": "default",
        "worker": "host:1", "started_at": NOW, "elapsed": elapsed, "records_fetched": 0,
        "records_processed": 100, "rate": 1.0, "sync_timeout": None, "typical_duration": typical,
        "long_sync": None, **extra,
    }  # fmt: skip
    return RunningSync(**values)  # type: ignore[arg-type]


def facts(**fields: object) -> HealthFacts:
    values: dict[str, object] = {
        "checked_at": NOW, "errors": [], "failing": [], "expired": [], "overdue": [],
        "running": [], "error_rates": [], "syncs_in_window": {}, **fields,
    }  # fmt: skip
    return HealthFacts(**values)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("sync", "given", "expected"),
    [
        (running(0, typical=5.0), HealthThresholds(), 600.0),  # 3x 5s, but at least 10 min
        (running(0, typical=400.0), HealthThresholds(), 1200.0),
        (running(0, typical=None), HealthThresholds(), None),  # nothing to compare with
        (running(0, typical=None), HealthThresholds(long_sync=90), 90.0),
        (running(0, typical=5.0, long_sync=30), HealthThresholds(long_sync=90), 30.0),
    ],
)
def test_long_sync_threshold(sync: RunningSync, given: HealthThresholds, expected: float) -> None:
    assert long_sync_threshold(sync, given) == expected


def test_critical_problems_come_first_and_decide_the_worst() -> None:
    found = judge(
        facts(
            failing=[
                {
                    "id": 1,
                    "name": "a",
                    "consecutive_failures": 2,
                    "threshold": 2,
                    "max_consecutive_failures": 5,
                    "last_sync_error": "x",
                }
            ],
            running=[running(4000.0)],  # past the default timeout of an hour
        ),
        HealthThresholds(),
    )
    assert [(p.problem, p.severity) for p in found] == [
        ("SYNC_TIMEOUT", "critical"), ("FAILING", "warning"),
    ]  # fmt: skip
    assert worst(found) == "critical" and worst(found[1:]) == "warning" and worst([]) is None


def test_the_overall_error_rate_needs_enough_syncs() -> None:
    few = facts(syncs_in_window={"FAILED": 3, "COMPLETED": 1})
    assert judge(few, HealthThresholds()) == []  # 4 ended syncs: too few to judge
    [overall] = judge(few, HealthThresholds(min_syncs=4))
    assert overall.key == "error_rate:*" and "3 of 4 (75%)" in overall.detail
    assert judge(facts(syncs_in_window={"FAILED": 2, "COMPLETED": 8}), HealthThresholds()) == []


@pytest.mark.parametrize(
    ("seconds", "shown"),
    [(4.24, "4.2s"), (42, "42s"), (600, "10m"), (603, "10m 03s"), (7500, "2h 05m"),
     (86400, "24h"), (3 * 86400 + 4 * 3600, "3d 4h")],
)  # fmt: skip
def test_human_seconds(seconds: float, shown: str) -> None:
    assert human_seconds(seconds) == shown


def test_notifications_group_problems_and_clearings() -> None:
    def message(key: str, kind: str, severity: str = "warning") -> AlertMessage:
        return AlertMessage(key, kind, "FAILING", severity, 1, "orders", "2 in a row", NOW)

    sent = alert_notifications(
        [message("a", "problem"), message("b", "problem", "critical"), message("c", "resolved")],
        "acme",
    )
    assert [(title, severity) for title, _, severity, _ in sent] == [
        ("connector-sync critical: 2 problems (tenant acme)", "critical"),
        ("connector-sync resolved: FAILING on orders (id 1) (tenant acme)", "resolved"),
    ]
    assert "[critical] FAILING on orders (id 1): 2 in a row" in sent[0][1]
