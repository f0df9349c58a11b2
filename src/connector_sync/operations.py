"""The library API: every command of the CLI (and of the HTTP server) is one call here.

Operations take a Store and typed arguments and return typed results (store rows,
dataclasses); they never render, never import rich, and their errors name what was
wrong in the caller's terms (`BadInput.param`), not a command-line flag.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

from connector_sync import health as health_checks
from connector_sync import secrets
from connector_sync.connectors.base import CheckResult
from connector_sync.connectors.registry import available_types, load_plugin, secret_fields
from connector_sync.constants import DEFAULT_TENANT, MAX_NAME_LENGTH, SYNC_STATUSES
from connector_sync.db import SCHEMA_REVISION, Database
from connector_sync.exceptions import BadInput, ConnectorSyncError, PluginError
from connector_sync.runner import LoopOptions as LoopOptions
from connector_sync.runner import LoopReport, Runner, RunOptions, RunReport, SyncWatcher
from connector_sync.runner import run_loop as _run_loop
from connector_sync.store import open_store
from connector_sync.store.base import (
    AlertMessage,
    Connector,
    ConnectorSummary,
    DatasetSummary,
    HealthProblem,
    HistoryFilter,
    MetricsSnapshot,
    RecoveredLease,
    StatusSummary,
    Sync,
    as_dict,
)
from connector_sync.store.base import AlertThresholds as AlertThresholds
from connector_sync.store.base import HealthThresholds as HealthThresholds

# The types the CLI and the server build requests with and read results of.
from connector_sync.store.base import NewConnector as NewConnector
from connector_sync.store.base import Store as Store

if TYPE_CHECKING:  # apprise is imported only when a notify URL is given
    from connector_sync.notify import Notifier

log = logging.getLogger("connector_sync.operations")

DEMO_CONNECTORS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("demo-customers", {"records": 1000}),
    ("demo-orders", {"records": 5000, "seed": 100000}),
    ("demo-events", {"records": 200, "delay_ms": 1}),
)


def upgrade_schema(url: str) -> str:
    """Apply the migrations; returns the database's URL as it may be shown."""
    with Database(url) as database:
        database.upgrade()
        return database.display_url


@dataclass(frozen=True)
class SchemaRevision:
    revision: str | None
    expected: str
    current: bool


def schema_revision(url: str) -> SchemaRevision:
    """The schema revision of the database (None: no schema), and the one this code needs."""
    with Database(url) as database:
        revision = database.current_revision()
    return SchemaRevision(revision, SCHEMA_REVISION, revision == SCHEMA_REVISION)


def connector_names(url: str, prefix: str, tenant: str | None = None) -> list[str]:
    """Names of connectors starting with `prefix` (at most 100), for shell completion.

    Asks only an existing database with a current schema: completing never creates or
    upgrades anything.
    """
    with Database(url) as database:
        if database.current_revision() != SCHEMA_REVISION:
            return []
        store = open_store(database, ensure_schema=False)
        return store.connector_names(prefix, tenant, limit=100)


@contextmanager
def session(url: str, *, create: bool = False) -> Iterator[Store]:
    """The store of the database at `url`, its schema current (SQLite upgrades itself).

    A SQLite file that does not exist yet is created only with `create`; see
    CREATES_DATABASE.
    """
    store = open_store(url, create=create)
    try:
        yield store
    finally:
        store.close()


def check_name(what: str, value: str) -> None:
    """A connector name or tenant: not empty, no surrounding spaces, no control
    characters (any script, emoji and joiners are fine), and it fits its column."""
    shown = json.dumps(value, ensure_ascii=False)  # control characters escaped, text kept
    if not value.strip():
        raise BadInput(f"{what} must not be empty", param=what)
    if value != value.strip():
        raise BadInput(f"{what} {shown} has spaces at its start or end: remove them", param=what)
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise BadInput(
            f"{what} {shown} holds a control character (tab, line break…): remove it", param=what
        )
    if len(value) > MAX_NAME_LENGTH:
        raise BadInput(
            f"{what} is {len(value)} characters long: use at most {MAX_NAME_LENGTH}", param=what
        )


def add_connector(store: Store, new: NewConnector) -> int:
    """Validate the name, tenant and config (against the type's fields), then store the
    connector; it is due at once."""
    check_name("name", new.name)
    if new.name.isdigit():
        raise BadInput(
            f"name '{new.name}' is all digits and would read as an id: add a letter",
            param="name",
        )
    check_name("tenant", new.tenant)
    secrets.check_env_refs(new.config)
    load_plugin(new.type).validate_config(new.config)
    return store.add_connector(new)


def list_connectors(store: Store, tenant: str | None = None) -> list[ConnectorSummary]:
    return store.list_connectors(tenant)


def due_connectors(
    store: Store, limit: int | None = None, tenant: str | None = None
) -> list[ConnectorSummary]:
    return store.due_connectors(limit, tenant)


def find_connector(store: Store, ref: str, tenant: str | None = None) -> Connector:
    return store.find_connector(ref, tenant)


def set_auto_sync(store: Store, ref: str, tenant: str | None, enabled: bool) -> Connector:
    """`enable`: auto-sync on, ACTIVE, failures forgotten, due now. `disable`: auto-sync off.
    Returns the connector as it was."""
    connector = store.find_connector(ref, tenant)
    store.set_auto_sync(connector.id, enabled)
    return connector


def reset_state(store: Store, ref: str, tenant: str | None) -> Connector:
    """Forget a connector's incremental state; returns the connector as it was."""
    connector = store.find_connector(ref, tenant)
    store.reset_state(connector.id)
    return connector


def history(
    store: Store,
    *,
    connector: str | None = None,
    status: str | None = None,
    tenant: str | None = None,
    limit: int | None = 20,
) -> list[Sync]:
    """Syncs, newest first; `connector` by id or name, `status` in any case."""
    if status is not None:
        status = status.upper()
        if status not in SYNC_STATUSES:
            raise BadInput(
                f"status '{status}' is not a sync status; use one of {', '.join(SYNC_STATUSES)}",
                param="status",
            )
    connector_id = store.find_connector(connector, tenant).id if connector else None
    return store.history(HistoryFilter(connector_id, status, tenant, limit))


def status(store: Store, tenant: str | None = None) -> StatusSummary:
    return store.status_summary(tenant)


#: How long a health run holds the alerts it is sending (another run skips them).
NOTIFY_HOLD_SECONDS = 120.0


@dataclass(frozen=True)
class AlertDelivery:
    """What `health --notify` sent: messages of alerts delivered, and not (tried again by
    the next run), to the URLs shown in their privacy form."""

    urls: list[str]
    sent: list[AlertMessage]
    failed: list[AlertMessage]


@dataclass(frozen=True)
class HealthReport:
    """`health`: every problem found, the worst severity, what was notified."""

    checked_at: dt.datetime
    problems: list[HealthProblem]
    #: "critical", "warning" or None (healthy).
    worst: str | None
    delivery: AlertDelivery | None = None

    def to_document(self) -> list[HealthProblem]:
        """`health --json`: the problems, each with its severity and check."""
        return self.problems


def health(
    store: Store,
    tenant: str | None = None,
    thresholds: HealthThresholds | None = None,
    notify: Sequence[str] = (),
) -> HealthReport:
    """Judge the connectors against the thresholds. With `notify` (apprise URLs), send each
    new (or escalated) problem once and each clearing once; the state is kept in the
    database, so health runs from cron never send the same message twice."""
    thresholds = thresholds or HealthThresholds()
    notifier = _notifier(notify)
    facts = store.health_facts(thresholds, tenant)
    problems = health_checks.judge(facts, thresholds)
    delivery = None
    if notifier is not None:
        delivery = _deliver_alerts(store, notifier, problems, tenant or "*")
    return HealthReport(facts.checked_at, problems, health_checks.worst(problems), delivery)


def _notifier(urls: Sequence[str]) -> Notifier | None:
    """A Notifier for the URLs (None for none); BadInput for a URL apprise cannot use."""
    urls = [url for url in urls if url.strip()]
    if not urls:
        return None
    from connector_sync.notify import Notifier

    return Notifier(urls)


def _deliver_alerts(
    store: Store, notifier: Notifier, problems: Sequence[HealthProblem], scope: str
) -> AlertDelivery:
    from connector_sync.notify import alert_notifications

    owed = store.track_alerts(scope, problems, NOTIFY_HOLD_SECONDS)
    sent: list[AlertMessage] = []
    failed: list[AlertMessage] = []
    try:
        for title, body, severity, messages in alert_notifications(owed, scope):
            (sent if notifier.send(title, body, severity) else failed).extend(messages)
    finally:
        # What was not tried (an unexpected error) is released like a failure.
        tried = {m.key for m in sent + failed}
        failed += [m for m in owed if m.key not in tried]
        store.alerts_sent(scope, sent, failed)
    return AlertDelivery(list(notifier.shown), sent, failed)


@dataclass(frozen=True)
class ConnectorAlerts:
    """`alerts`: a connector's own alert thresholds (None: health's flag applies)."""

    connector: Connector
    thresholds: AlertThresholds

    def to_document(self) -> dict[str, Any]:
        return {**_naming(self.connector), **as_dict(self.thresholds)}


def _naming(connector: Connector) -> dict[str, Any]:
    """The keys that name the connector a result is about."""
    return {"connector_id": connector.id, "connector_name": connector.name}


def connector_alerts(
    store: Store,
    ref: str,
    tenant: str | None = None,
    change: AlertThresholds | None = None,
    reset: bool = False,
) -> ConnectorAlerts:
    """A connector's own alert thresholds; `change` sets those it gives (None leaves one
    as it is), `reset` clears them all first."""
    connector = store.find_connector(ref, tenant)
    current = AlertThresholds() if reset else store.alert_thresholds(connector.id)
    if change is not None or reset:
        given = {k: v for k, v in as_dict(change or AlertThresholds()).items() if v is not None}
        current = replace(current, **given)
        store.set_alert_thresholds(connector.id, current)
    return ConnectorAlerts(connector, current)


#: The window of `metrics`' window_* series, in seconds.
DEFAULT_METRICS_WINDOW = 86400.0
#: How many connectors get series of their own at most (those most in need of a look
#: first): Prometheus' cost grows with every series, and a scrape of a 100,000-connector
#: fleet should not carry 100,000 timestamps that say "fine".
DEFAULT_CONNECTOR_SERIES = 10_000


@dataclass(frozen=True)
class MetricsRequest:
    """What `metrics` exposes: the window of its window_* series and histogram, the
    tenant, and how many connectors get series of their own (None: all)."""

    window: float = DEFAULT_METRICS_WINDOW
    tenant: str | None = None
    connector_series: int | None = DEFAULT_CONNECTOR_SERIES


def metrics_text(store: Store, request: MetricsRequest | None = None) -> str:
    """The Prometheus text format of everything `metrics` exposes (what `serve`'s
    /metrics answers), from a fixed number of queries."""
    from connector_sync.metrics import exposition

    return exposition(_snapshot(store, request or MetricsRequest()))


def _snapshot(store: Store, request: MetricsRequest) -> MetricsSnapshot:
    return store.metrics_snapshot(request.window, request.tenant, request.connector_series)


def write_metrics(store: Store, path: Path, request: MetricsRequest | None = None) -> Path:
    """Write the metrics to `path` atomically (for node_exporter's textfile collector)."""
    from connector_sync.metrics import write_textfile

    folder = path.parent
    if not folder.is_dir() or not os.access(folder, os.W_OK):
        state = "does not exist" if not folder.exists() else "is not a writable folder"
        raise BadInput(f"output {path}: {folder} {state}: create it first", param="output")
    write_textfile(path, _snapshot(store, request or MetricsRequest()))
    return path


def recover(store: Store, tenant: str | None = None) -> list[RecoveredLease]:
    """Release connectors whose worker died (expired lease)."""
    return store.recover_expired_leases(tenant)


def masked_config(type_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return secrets.mask_config(secret_fields(type_name), config)


@dataclass(frozen=True)
class ConnectorDetail:
    """`show`: a connector with its config masked, its recent syncs and datasets."""

    connector: Connector
    config: dict[str, Any]
    recent_syncs: list[Sync]
    datasets: list[DatasetSummary]

    def to_document(self) -> dict[str, Any]:
        """`show --json`: the connector's fields, its config masked, syncs and datasets."""
        document = as_dict(self.connector)
        document["config"] = self.config  # masked
        return {**document, "recent_syncs": self.recent_syncs, "datasets": self.datasets}


def connector_detail(store: Store, ref: str, tenant: str | None = None) -> ConnectorDetail:
    connector = store.find_connector(ref, tenant)
    return ConnectorDetail(
        connector=connector,
        config=masked_config(connector.type, connector.config),
        recent_syncs=store.history(HistoryFilter(connector_id=connector.id, limit=10)),
        datasets=store.datasets_of(connector.id),
    )


@dataclass(frozen=True)
class ConnectorCheck:
    """`test`: what the plugin's check found, secrets redacted."""

    connector: Connector
    result: CheckResult

    def to_document(self) -> dict[str, Any]:
        return {
            **_naming(self.connector),
            "ok": self.result.ok,
            "message": self.result.message,
            "details": self.result.details,
        }


def test_connector(store: Store, ref: str, tenant: str | None = None) -> ConnectorCheck:
    connector = store.find_connector(ref, tenant)
    return ConnectorCheck(connector, check_connector(connector))


def check_connector(row: Connector) -> CheckResult:
    """Run the plugin's check; a plugin error becomes a failed result, nothing is written.

    `env:NAME` references are resolved as a sync would; secrets never reach the result.
    """
    try:
        plugin_cls = load_plugin(row.type)
        result = plugin_cls(secrets.resolve_env_refs(row.config), row.state).check()
    except (PluginError, BadInput) as exc:
        result = CheckResult(False, exc.message, {"error_type": type(exc).__name__})
    except Exception as exc:  # a plugin bug must still be reported as a failed check
        result = CheckResult(False, f"{type(exc).__name__}: {exc}", {"error_type": "PluginBug"})
    hidden = secrets.connector_secrets(secret_fields(row.type), row.config)
    return CheckResult(
        result.ok,
        secrets.redact(result.message, hidden),
        secrets.redact_json(result.details, hidden),
    )


def describe_types() -> list[dict[str, Any]]:
    described = []
    for name in available_types():
        try:
            described.append(load_plugin(name).describe())
        except ConnectorSyncError as exc:
            described.append({"type": name, "description": f"(broken) {exc}", "fields": []})
    return described


@dataclass(frozen=True)
class RunResult:
    """What a run did, and the syncs it recorded."""

    report: RunReport
    syncs: list[Sync]


def run(
    store: Store,
    options: RunOptions,
    watchers: Sequence[SyncWatcher] = (),
    notify: Sequence[str] = (),
) -> RunResult:
    """One run: recover expired leases, claim, sync, record. `watchers` are told of each
    sync as it goes; with `notify` (apprise URLs), each failed sync is notified at once."""
    report = Runner(store, options, _with_notifier(watchers, notify)).run(handle_signals=True)
    return RunResult(report, store.syncs_by_id(report.sync_ids))


def _with_notifier(watchers: Sequence[SyncWatcher], notify: Sequence[str]) -> list[SyncWatcher]:
    notifier = _notifier(notify)
    if notifier is None:
        return list(watchers)
    from connector_sync.notify import FailureNotifier

    return [*watchers, FailureNotifier(notifier)]


def run_loop(
    store: Store, options: RunOptions, loop: LoopOptions, notify: Sequence[str] = ()
) -> LoopReport:
    """`run --loop`: runs until a signal (or loop.max_runs); each run is logged; with
    `notify`, each failed sync is notified at once."""

    def logged(number: int, report: RunReport | None) -> None:
        if report is not None:
            log.info(
                "run %d: %d synced, %d failed, %d cancelled",
                number, len(report.sync_ids) - report.failed - report.cancelled,
                report.failed, report.cancelled,
            )  # fmt: skip

    return _run_loop(store, options, loop, logged, _with_notifier((), notify))


def run_connectors(
    store: Store,
    refs: Sequence[str],
    tenant: str | None,
    options: RunOptions,
    watchers: Sequence[SyncWatcher] = (),
    notify: Sequence[str] = (),
) -> RunResult:
    """A manual run of the connectors named (by id or name), due or not."""
    ids: list[int] = []
    for ref in refs:
        connector_id = store.find_connector(ref, tenant).id
        if connector_id not in ids:
            ids.append(connector_id)
    return run(store, replace(options, connector_ids=ids), watchers, notify)


def plan_run(store: Store, options: RunOptions, refs: Sequence[str] = ()) -> list[ConnectorSummary]:
    """What a run with these options would claim now, in order; claims nothing.

    The due connectors (within the limit and tenant), or the connectors named, less those
    a worker is syncing now.
    """
    if not refs:
        return store.due_connectors(options.limit, options.tenant)
    named: dict[int, ConnectorSummary] = {}
    for ref in refs:
        connector = store.find_connector(ref, options.tenant)
        if connector.status != "SYNCING":
            named.setdefault(connector.id, connector)
    return list(named.values())


@dataclass(frozen=True)
class DemoResult:
    database: str
    run: RunResult
    connectors: list[Connector]


def demo(store: Store) -> DemoResult:
    """The quickstart: the demo connectors (created the first time), each synced once."""
    existing = {r.name: r.id for r in store.list_connectors(DEFAULT_TENANT)}
    for name, config in DEMO_CONNECTORS:
        if name not in existing:
            existing[name] = add_connector(
                store, NewConnector(name=name, type="demo", config=config, sync_interval=3600)
            )
    ids = [existing[name] for name, _ in DEMO_CONNECTORS]
    result = run(store, RunOptions(connector_ids=ids))
    return DemoResult(store.display_url, result, [store.find_connector(str(i)) for i in ids])


#: The operations that may create the embedded SQLite database when it does not exist:
#: the ones a new user starts with. Everything else (a scheduled `run` above all) refuses
#: a missing file, so a job pointed at the wrong folder fails instead of staying green.
CREATES_DATABASE = frozenset({add_connector, demo})
