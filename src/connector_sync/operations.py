"""The library API: every command of the CLI (and of the HTTP server) is one call here.

Operations take a Store and typed arguments and return typed results (store rows,
dataclasses); they never render, never import rich, and their errors name what was
wrong in the caller's terms (`BadInput.param`), not a command-line flag.
"""

from __future__ import annotations

import copy
import datetime as dt
import itertools
import json
import logging
import os
import threading
import unicodedata
from collections.abc import Callable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any, TextIO

from connector_sync import secrets
from connector_sync.constants import (
    CONNECTOR_STATUSES,
    DATASET_STATUSES,
    DEFAULT_TENANT,
    ERROR,
    INACTIVE,
    MAX_NAME_LENGTH,
    READY,
    SYNC_STATUSES,
    SYNCING,
)
from connector_sync.db import SCHEMA_REVISION, Database
from connector_sync.exceptions import (
    BadInput,
    ConnectorBusy,
    ConnectorSyncError,
    NotFound,
    PluginError,
)
from connector_sync.store import base, open_store
from connector_sync.store.base import (
    AlertMessage,
    HealthProblem,
    HistoryFilter,
    ListFilter,
    MetricsSnapshot,
    RecoveredLease,
    StatusSummary,
    as_dict,
)
from connector_sync.store.base import AlertThresholds as AlertThresholds

# The types the CLI and the server build requests with and read results of.
from connector_sync.store.base import Claim as Claim
from connector_sync.store.base import Connector as Connector
from connector_sync.store.base import ConnectorFilter as ConnectorFilter
from connector_sync.store.base import ConnectorSummary as ConnectorSummary
from connector_sync.store.base import Dataset as Dataset
from connector_sync.store.base import DatasetSummary as DatasetSummary
from connector_sync.store.base import HealthThresholds as HealthThresholds
from connector_sync.store.base import NewConnector as NewConnector
from connector_sync.store.base import Outcome as Outcome
from connector_sync.store.base import Store as Store
from connector_sync.store.base import Sync as Sync

# The runner, the plugins, scheduling and exports are imported by the operations that use
# them: the read commands (list, history, status, health, due, show) need none of them.
if TYPE_CHECKING:
    from connector_sync.connectors.base import CheckResult
    from connector_sync.notify import Notifier  # apprise: only when a notify URL is given
    from connector_sync.runner import LoopOptions as LoopOptions
    from connector_sync.runner import LoopReport as LoopReport
    from connector_sync.runner import Runner as Runner
    from connector_sync.runner import RunOptions as RunOptions
    from connector_sync.runner import RunReport as RunReport
    from connector_sync.runner import SyncWatcher as SyncWatcher


#: The runner's types the CLI and the server use, given through operations (their only
#: door) without importing the runner into every operation's process.
_FROM_RUNNER = frozenset(
    {"LoopOptions", "LoopReport", "Runner", "RunOptions", "RunReport", "SyncWatcher"}
)


def __getattr__(name: str) -> Any:
    if name in _FROM_RUNNER:
        from connector_sync import runner

        return getattr(runner, name)
    raise AttributeError(name)


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
    """The schema revision of the database (None: no schema), and the one this code needs.

    Raises:
        DatabaseUnavailable: a SQLite file that does not exist (asking does not create
            it), or a server that does not answer.
    """
    with Database(url) as database:
        database.refuse_missing_sqlite_file()
        return _revision_of(database)


def _revision_of(database: Database) -> SchemaRevision:
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


def nothing_to_run(url: str, tenant: str | None = None) -> bool:
    """Whether a run on the database at `url` (within `tenant`) would recover and claim
    nothing: asked with the bare driver, before the runner is imported. False whenever
    that is not certain (then the run itself reports what is wrong).

    Raises:
        DatabaseUnavailable: the PostgreSQL server does not answer.
    """
    from connector_sync.store.probe import nothing_to_do

    return nothing_to_do(url, tenant)


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
    if any(unicodedata.category(ch) in ("Cc", "Cs") for ch in value):
        raise BadInput(
            f"{what} {shown} holds a control character (tab, line break…) or an unpaired "
            "surrogate: remove it",
            param=what,
        )
    if len(value) > MAX_NAME_LENGTH:
        raise BadInput(
            f"{what} is {len(value)} characters long: use at most {MAX_NAME_LENGTH}", param=what
        )


#: How deep a config may nest objects and arrays (the built-in types need three).
MAX_CONFIG_DEPTH = 32


def check_config_document(config: Any) -> None:
    """A config every database stores and every walker can walk: at most MAX_CONFIG_DEPTH
    levels deep, no NUL character and no unpaired surrogate in any key or string (PostgreSQL
    refuses both; neither is text). Iterative, so a hostile depth cannot exhaust the stack.

    Raises:
        BadInput: naming the field, never the value (it may be a secret).
    """
    stack: list[tuple[Any, int, str]] = [(config, 0, "")]
    while stack:
        value, depth, path = stack.pop()
        if depth > MAX_CONFIG_DEPTH:
            raise BadInput(
                f"config is nested more than {MAX_CONFIG_DEPTH} levels deep (at '{path}'): "
                "flatten it",
                param="config",
            )
        if isinstance(value, dict):
            for key, item in value.items():
                where = f"{path}.{key}" if path else str(key)
                _check_text(f"config key '{where}'", str(key))
                stack.append((item, depth + 1, where))
        elif isinstance(value, list):
            stack.extend((item, depth + 1, f"{path}[{i}]") for i, item in enumerate(value))
        elif isinstance(value, str):
            _check_text(f"config field '{path}'", value)


def _check_text(what: str, text: str) -> None:
    if "\x00" in text:
        raise BadInput(f"{what} holds a NUL character (\\u0000), which no database stores: "
                       "remove it", param="config")  # fmt: skip
    if any("\ud800" <= ch <= "\udfff" for ch in text):
        raise BadInput(f"{what} holds an unpaired surrogate (\\ud800-\\udfff), which is not "
                       "text: fix its encoding", param="config")  # fmt: skip


def check_connector_name(name: str) -> None:
    """A connector's name: check_name's rules, and not all digits (it would read as an id)."""
    check_name("name", name)
    if name.isdigit():
        raise BadInput(
            f"name '{name}' is all digits and would read as an id: add a letter", param="name"
        )


def check_config(
    type_name: str,
    config: dict[str, Any],
    own_database_url: str | None = None,
    *,
    changed: bool = True,
) -> None:
    """A config as `add` and `edit` both check it: storable (check_config_document), `env:`
    references well formed, every field known, of its type and within its bounds, as the
    type's plugin declares, and (when it is new or `changed`) the plugin's rules for new
    configs; and, given connector-sync's own database URL, not reading it unless the config
    says it means to."""
    from connector_sync.connectors.registry import load_plugin

    check_config_document(config)
    secrets.check_env_refs(config)
    plugin = load_plugin(type_name)
    plugin.validate_config(config)
    if changed:
        plugin.check_new_config(config)
    if own_database_url is not None:
        plugin.refuse_own_database(config, own_database_url)


def check_schedule(schedule: str | None, timezone: str | None) -> None:
    """A cron schedule and its time zone, with the parser's reason when unusable."""
    from connector_sync import scheduling

    for what, text, longest in (("schedule", schedule, 200), ("timezone", timezone, 64)):
        if text is not None and len(text) > longest:  # their columns' size
            raise BadInput(
                f"{what} is {len(text)} characters long: use at most {longest}", param=what
            )
    if schedule is None:
        if timezone is not None:
            raise BadInput(
                "timezone applies to a schedule: give a cron schedule with it", param="timezone"
            )
        return
    try:
        scheduling.zone(timezone)
    except scheduling.ScheduleError as exc:
        raise BadInput(f"timezone {exc}", param="timezone") from None
    try:
        scheduling.check_schedule(schedule, timezone)
    except scheduling.ScheduleError as exc:
        raise BadInput(f"schedule {exc}", param="schedule") from None


def validated(new: NewConnector, own_database_url: str | None = None) -> NewConnector:
    """`new` once its name, tenant, config (against the type's fields and, given it, the
    tool's own database URL) and schedule are checked. Touches no database: the CLI checks
    before it opens (or creates) one.

    Raises:
        BadInput: naming what is wrong (ConfigError for the config).
    """
    check_connector_name(new.name)
    check_name("tenant", new.tenant)
    check_config(new.type, new.config, own_database_url)
    check_schedule(new.schedule, new.timezone)
    return new


def add_connector(store: Store, new: NewConnector) -> int:
    """Store a connector once `validated`; it is due at once, or at its schedule's next
    slot."""
    from connector_sync import scheduling

    new = validated(new, store.database.url)
    if new.schedule is not None:
        new = replace(
            new, next_sync_at=scheduling.next_slot(store.now(), new.schedule, new.timezone)
        )
    return store.add_connector(new)


def list_connectors(
    store: Store, tenant: str | None = None, include_inactive: bool = False
) -> list[ConnectorSummary]:
    """Connectors, by tenant and name; INACTIVE ones (deleted keeping their data) only
    with `include_inactive`."""
    return store.list_connectors(ConnectorFilter(tenant=tenant, include_inactive=include_inactive))


@dataclass(frozen=True)
class ConnectorPage:
    """A page of a listing: its rows, and how many there are in all."""

    rows: list[ConnectorSummary]
    total: int

    @property
    def more(self) -> int:
        """How many the page leaves out."""
        return self.total - len(self.rows)

    def to_document(self) -> list[ConnectorSummary]:
        """As `list --json` has always printed it: the connectors."""
        return self.rows


def connector_filter(
    tenant: str | None = None,
    status: str | None = None,
    type: str | None = None,
    due: bool = False,
    include_inactive: bool = False,
    limit: int | None = None,
) -> ConnectorFilter:
    """A ConnectorFilter from what a caller was given: `status` in any case (BadInput
    naming the statuses there are)."""
    if status is not None:
        status = _known_status(status, ("connector", CONNECTOR_STATUSES))
    return ConnectorFilter(tenant, status, type, due, include_inactive, limit)


def connector_page(store: Store, where: ConnectorFilter) -> ConnectorPage:
    """The connectors `where` chooses, up to its limit, and how many it chooses in all."""
    return _paged(store, store.list_connectors(where), where)


def _paged(store: Store, rows: list[ConnectorSummary], where: ConnectorFilter) -> ConnectorPage:
    """`rows`, a page of what `where` chooses, and how many it chooses in all (counted only
    when the page is full)."""
    if where.limit is None or len(rows) < where.limit:
        return ConnectorPage(rows, len(rows))
    return ConnectorPage(rows, store.count_connectors(where))


def each_connector(
    store: Store, where: ConnectorFilter, each: Callable[[list[ConnectorSummary]], None]
) -> int:
    """Hand `each` the connectors `where` chooses, a chunk at a time, with flat memory
    (`list --all --json` over 100,000 connectors streams). Returns how many there were."""
    count = 0
    with closing(store.stream_connectors(where)) as chunks:
        for chunk in chunks:
            each(chunk)
            count += len(chunk)
    return count


def due_connectors(
    store: Store, limit: int | None = None, tenant: str | None = None
) -> list[ConnectorSummary]:
    return store.due_connectors(limit, tenant)


def due_page(store: Store, limit: int, tenant: str | None = None) -> ConnectorPage:
    """The `limit` most overdue connectors, and how many are due in all."""
    where = ConnectorFilter(tenant=tenant, due=True, limit=limit)
    return _paged(store, store.due_connectors(limit, tenant), where)


def find_connector(store: Store, ref: str, tenant: str | None = None) -> Connector:
    return store.find_connector(ref, tenant)


def set_auto_sync(store: Store, ref: str, tenant: str | None, enabled: bool) -> Connector:
    """`enable`: auto-sync on, ACTIVE, failures forgotten, due now. `disable`: auto-sync off.
    Returns the connector as it was."""
    connector = store.find_connector(ref, tenant)
    store.set_auto_sync(connector.id, enabled)
    return connector


def reset_state(store: Store, ref: str, tenant: str | None) -> Connector:
    """Forget a connector's incremental state; returns the connector as it was.

    Raises:
        ConnectorBusy: a worker is syncing it under a live lease: that sync's finish
            would save its own cursor over the reset (an adversarial pass saw it).
    """
    connector = store.find_connector(ref, tenant)
    _refuse_busy(store, connector, "reset its state once that sync has ended")
    store.reset_state(connector.id)
    return connector


def _refuse_busy(store: Store, connector: Connector, then: str | None = None) -> None:
    """Raises ConnectorBusy (saying what to do `then`) when a worker syncs `connector`
    under a live lease."""
    live = connector.lease_expires_at is not None and connector.lease_expires_at > store.now()
    if connector.status == SYNCING and live:
        owner, until = connector.lease_owner, connector.lease_expires_at
        busy = base.connector_busy(connector.name, owner, until)
        raise busy if then is None else ConnectorBusy(f"{busy.message}: {then}")


def history(
    store: Store,
    *,
    connector: str | None = None,
    status: str | None = None,
    tenant: str | None = None,
    limit: int | None = 20,
) -> list[Sync]:
    """Syncs, newest first; `connector` by id or name, `status` in any case."""
    return store.history(
        _list_filter(store, connector, status, ("sync", SYNC_STATUSES), tenant, limit)
    )


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
    from connector_sync import health as health_checks

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


def check_not_the_database(database_url: str, path: Path) -> None:
    """`path` is not the SQLite database's file (nor its -wal, -shm or -journal): writing
    an export over it replaced every connector with the records (an adversarial pass).

    Raises:
        BadInput: it is.
    """
    from connector_sync.db import plain_url

    plain = plain_url(database_url)
    if plain is None or plain.sqlite_path is None:
        return
    database = Path(plain.sqlite_path).resolve()
    ours = {database, *(Path(f"{database}{suffix}") for suffix in ("-wal", "-shm", "-journal"))}
    if path.resolve() in ours:
        raise BadInput(
            f"output {path} is connector-sync's own database: give another file",
            param="output",
        )


def check_output_file(path: Path) -> None:
    """A file to write whole (renamed over): a new one, or a regular file, never a
    directory, device, FIFO or symbolic link, which a rename would replace.

    Raises:
        BadInput: `path` is something else.
    """
    if path.is_symlink() or (path.exists() and not path.is_file()):
        kind = "a symbolic link" if path.is_symlink() else "not a regular file"
        raise BadInput(f"output {path} is {kind}: give the path of a file to write", param="output")


def write_metrics(store: Store, path: Path, request: MetricsRequest | None = None) -> Path:
    """Write the metrics to `path` atomically (for node_exporter's textfile collector)."""
    from connector_sync.metrics import write_textfile

    check_not_the_database(store.database.url, path)
    check_output_file(path)
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
    from connector_sync.connectors.registry import secret_fields

    return secrets.mask_config(secret_fields(type_name), config)


@dataclass(frozen=True)
class ShownConnector:
    """A connector as a result shows it: its config masked."""

    connector: Connector
    config: dict[str, Any]

    def to_document(self) -> dict[str, Any]:
        """The connector's fields, its config masked, then the result's own fields."""
        more = {f.name: getattr(self, f.name) for f in fields(self)[2:]}
        return {**as_dict(self.connector), "config": self.config, **more}


@dataclass(frozen=True)
class ConnectorDetail(ShownConnector):
    """`show`: a connector with its config masked, its recent syncs and datasets."""

    recent_syncs: list[Sync]
    datasets: list[DatasetSummary]


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
    """`test`: what the plugin's check found, and the first records asked for (None: not
    asked), secrets redacted."""

    connector: Connector
    result: CheckResult
    preview: list[Any] | None = None

    def to_document(self) -> dict[str, Any]:
        document = {
            **_naming(self.connector),
            "ok": self.result.ok,
            "message": self.result.message,
            "details": self.result.details,
        }
        return document if self.preview is None else {**document, "preview": self.preview}


#: How long `test` waits in all for a plugin's check (and preview). The built-in types
#: bound themselves (their check_timeout); this holds a third-party plugin to it too.
CHECK_DEADLINE_SECONDS = 60.0


def test_connector(
    store: Store,
    ref: str,
    tenant: str | None = None,
    preview: int = 0,
    deadline: float | None = None,
) -> ConnectorCheck:
    """Run the connector's check and, with `preview`, read that many records as a sync
    would (from its saved state); nothing is written. At most `deadline` seconds
    (default CHECK_DEADLINE_SECONDS)."""
    connector = store.find_connector(ref, tenant)
    return check_connector(
        connector, preview, store.database.url, deadline or CHECK_DEADLINE_SECONDS
    )


def check_connector(
    row: Connector,
    preview: int = 0,
    own_database_url: str | None = None,
    deadline: float = CHECK_DEADLINE_SECONDS,
) -> ConnectorCheck:
    """Run the plugin's check (and read `preview` records once it passes); a plugin error
    becomes a failed result, nothing is written. A check still running after `deadline`
    seconds is a failed result too (its thread is left behind, a daemon).

    `env:NAME` references are resolved as a sync would; secrets never reach the result.
    """
    from connector_sync.connectors.base import CheckResult
    from connector_sync.connectors.registry import secret_fields

    found: list[tuple[CheckResult, list[Any] | None]] = []
    checking = threading.Thread(
        target=lambda: found.append(_check(row, preview, own_database_url)),
        name=f"check-{row.name}",
        daemon=True,
    )
    checking.start()
    checking.join(deadline)
    if found:
        result, records = found[0]
    else:
        message = f"no answer within {deadline:g}s: the source is silent or too slow"
        result, records = CheckResult(False, message, {"error_type": "Timeout"}), None
    hidden = secrets.connector_secrets(secret_fields(row.type), row.config)
    redacted = CheckResult(
        result.ok,
        secrets.redact(result.message, hidden),
        secrets.redact_json(result.details, hidden),
    )
    if preview:
        records = secrets.redact_json(records or [], hidden)
    return ConnectorCheck(row, redacted, records)


def _check(
    row: Connector, preview: int, own_database_url: str | None
) -> tuple[CheckResult, list[Any] | None]:
    from connector_sync.connectors.base import CheckResult
    from connector_sync.connectors.registry import load_plugin
    from connector_sync.datasets import encode_batch

    records: list[Any] | None = None
    try:
        plugin_cls = load_plugin(row.type)
        config = secrets.resolve_env_refs(row.config)
        if own_database_url is not None:
            plugin_cls.refuse_own_database(config, own_database_url)
        plugin = plugin_cls(config, row.state)
        result = plugin.check()
        if preview and result.ok:
            reading = plugin.read()
            try:
                lines = encode_batch(list(itertools.islice(reading, preview))).lines
            finally:  # stop the read: close the file or the response
                getattr(reading, "close", lambda: None)()
            records = [json.loads(line) for line in lines]
    except (PluginError, BadInput) as exc:
        result = CheckResult(False, exc.message, {"error_type": type(exc).__name__})
    except Exception as exc:  # a plugin bug must still be reported as a failed check
        result = CheckResult(False, f"{type(exc).__name__}: {exc}", {"error_type": "PluginBug"})
    return result, records


def describe_types() -> list[dict[str, Any]]:
    from connector_sync.connectors.registry import available_types, load_plugin

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
    from connector_sync.runner import Runner

    runner = Runner(store, options, _with_notifier(watchers, notify))
    return _finish(store, runner.run(handle_signals=True))


def _finish(store: Store, report: RunReport) -> RunResult:
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
    from connector_sync.runner import run_loop as looping

    def logged(number: int, report: RunReport | None) -> None:
        if report is not None:
            log.info(
                "run %d: %d synced, %d failed, %d cancelled",
                number, len(report.sync_ids) - report.failed - report.cancelled,
                report.failed, report.cancelled,
            )  # fmt: skip

    return looping(store, options, loop, logged, _with_notifier((), notify))


def run_connectors(
    store: Store,
    refs: Sequence[str],
    tenant: str | None,
    options: RunOptions,
    watchers: Sequence[SyncWatcher] = (),
    notify: Sequence[str] = (),
) -> RunResult:
    """A manual run of the connectors named (by id or name), due or not."""
    ids = _connector_ids(store, refs, tenant)
    return run(store, replace(options, connector_ids=ids), watchers, notify)


def _connector_ids(store: Store, refs: Sequence[str], tenant: str | None) -> list[int]:
    """The ids of the connectors named (by id or name), each once, in the order named."""
    ids: list[int] = []
    for ref in refs:
        connector = store.find_connector(ref, tenant)
        if connector.status == INACTIVE:
            raise BadInput(_inactive(connector.name))
        if connector.id not in ids:
            ids.append(connector.id)
    return ids


def _inactive(name: str) -> str:
    return (
        f"connector '{name}' is INACTIVE (deleted, its data kept): "
        f"'connector-sync enable {name}' brings it back"
    )


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
        if connector.status not in (SYNCING, INACTIVE):
            named.setdefault(connector.id, connector)
    return list(named.values())


@dataclass(frozen=True)
class DemoResult:
    database: str
    run: RunResult
    connectors: list[Connector]
    #: Why a demo connector was not synced (one deleted with its data kept).
    notes: list[str] = field(default_factory=list)


def demo(store: Store, tenant: str = DEFAULT_TENANT) -> DemoResult:
    """The quickstart: the demo connectors (created the first time, in `tenant`), each
    synced once."""
    from connector_sync.runner import RunOptions

    listed = store.list_connectors(ConnectorFilter(tenant=tenant, include_inactive=True))
    existing = {r.name: r.id for r in listed}
    inactive = {r.name for r in listed if r.status == INACTIVE}
    for name, config in DEMO_CONNECTORS:
        if name not in existing:
            new = NewConnector(
                name=name, type="demo", config=config, sync_interval=3600, tenant=tenant
            )
            existing[name] = add_connector(store, new)
    names = [name for name, _ in DEMO_CONNECTORS]
    ids = [existing[name] for name in names if name not in inactive]
    result = run(store, RunOptions(connector_ids=ids, tenant=tenant))
    connectors = [store.find_connector(str(existing[name]), tenant) for name in names]
    notes = [f"{_inactive(name)}; not synced" for name in names if name in inactive]
    return DemoResult(store.display_url, result, connectors, notes)


# -- the life of a connector: edit, delete -------------------------------------------


@dataclass(frozen=True)
class ConnectorChanges:
    """What `edit` changes; None (or empty) leaves a field as it is."""

    #: The whole new config, before `set_values` and `unset` apply.
    config: dict[str, Any] | None = None
    #: (dotted path, value) pairs set in the config: ("headers.Accept", "text/csv").
    set_values: Sequence[tuple[str, Any]] = ()
    #: Dotted paths removed from the config.
    unset: Sequence[str] = ()
    #: Seconds between syncs; replaces a schedule.
    sync_interval: int | None = None
    schedule: str | None = None
    timezone: str | None = None
    sync_timeout: int | None = None
    max_consecutive_failures: int | None = None
    keep: int | None = None
    rename: str | None = None

    def __bool__(self) -> bool:
        return any(
            value not in (None, (), []) for value in (getattr(self, f.name) for f in fields(self))
        )


@dataclass(frozen=True)
class EditResult(ShownConnector):
    """`edit`: the connector as it is now (config masked), what changed, what to know."""

    changed: list[str]
    notes: list[str]


def _config_path(
    config: dict[str, Any], dotted: str, *, create: bool
) -> tuple[dict[str, Any], str]:
    """The object holding the last key of a dotted path, and that key."""
    *parents, last = dotted.split(".")
    if not all((*parents, last)):
        raise BadInput(f"config key '{dotted}' has an empty part: give e.g. headers.Accept")
    node = config
    for depth, key in enumerate(parents):
        child = node.get(key)
        if child is None and create:
            child = node[key] = {}
        if not isinstance(child, dict):
            where = ".".join(parents[: depth + 1])
            raise BadInput(f"config key '{dotted}': '{where}' is not an object in the config")
        node = child
    return node, last


def _edited_config(
    connector: Connector, changes: ConnectorChanges, secret_names: frozenset[str]
) -> dict[str, Any]:
    """The new config: the whole one given, then each key set, then each key removed. A
    secret left as shown, ***, keeps its stored value, in the whole config and in a key
    set alike (`--set token=***` must not store the mask over the token)."""
    # a key set and removed, or set inside one removed (`--set a.b=1 --unset a`, which
    # removed what it had just set)
    both = {
        dotted
        for dotted, _ in changes.set_values
        for removed in changes.unset
        if dotted == removed or dotted.startswith(f"{removed}.")
    }
    if both:
        key = sorted(both)[0]
        raise BadInput(f"config key '{key}' is both set and removed: give one of them")
    config = copy.deepcopy(connector.config if changes.config is None else changes.config)
    if changes.config is not None:
        config = _unmasked(config, connector.config, secret_names)
    for dotted, value in changes.set_values:
        node, key = _config_path(config, dotted, create=True)
        place = secrets.JsonPlace(tuple(dotted.split(".")))
        node[key] = _unmasked(value, connector.config, secret_names, place)
    for dotted in changes.unset:
        node, key = _config_path(config, dotted, create=False)
        if key not in node:
            raise BadInput(f"config key '{dotted}' is not in the config: nothing to remove")
        del node[key]
    return config


def _unmasked(
    new: Any, old: Any, secret_names: frozenset[str], place: secrets.JsonPlace | None = None
) -> Any:
    """`new` with every value that equals the masked form of the stored value at the same
    place (a config copied from `show`) given back its stored value. `new` sits at `place`
    in the config (a key set with --set), at the top when None."""
    masked_old = secrets.mask_config(secret_names, old)

    def at(value: Any, keys: Sequence[str | int]) -> Any:
        for key in keys:
            if not isinstance(value, dict | list):
                return None
            try:
                value = value[key]  # type: ignore[index]
            except (KeyError, IndexError, TypeError):
                return None
        return value

    def leaf(value: Any, place: secrets.JsonPlace) -> Any:
        shown, stored = at(masked_old, place.keys), at(old, place.keys)
        if value == shown and shown != stored:
            return stored
        if isinstance(value, str) and secrets.SECRET_MASK in value:
            # A masked value that is not the one shown for this place (the URL around it
            # changed, or the key is new) has nothing to be given back from: storing it
            # would replace a secret with the mask itself.
            raise BadInput(
                f"config field '{place.path}' holds {secrets.SECRET_MASK} where no stored "
                "secret can be kept: give the secret itself (or an env: reference)",
                param="config",
            )
        return value

    return secrets.walk_json(new, leaf, place=place or secrets.JsonPlace())


def edit_connector(
    store: Store, ref: str, tenant: str | None, changes: ConnectorChanges
) -> EditResult:
    """Change a connector: its config checked exactly as `add` checks it, its next sync
    moved to match a new interval or schedule. A connector in ERROR stays in ERROR;
    one being synced takes the change at its next sync."""
    from connector_sync import scheduling
    from connector_sync.connectors.registry import secret_fields

    if not changes:
        raise BadInput(
            "nothing to change: give a config, a key to set or unset, an interval, a schedule, "
            "a time zone, a timeout, a failure limit, a number of datasets to keep or a new name"
        )
    if changes.sync_interval is not None and changes.schedule is not None:
        raise BadInput(
            "schedule and interval both given: a connector runs on one of them", param="schedule"
        )
    if changes.sync_interval is not None and changes.timezone is not None:
        raise BadInput(
            "timezone applies to a schedule, and an interval replaces the schedule: give "
            "one of them",
            param="timezone",
        )
    old = store.find_connector(ref, tenant)
    name = old.name if changes.rename is None else changes.rename
    check_connector_name(name)
    config = _edited_config(old, changes, secret_fields(old.type))
    # an edit of something else leaves a stored config as it is, even one that newer
    # rules for new configs would refuse
    check_config(old.type, config, store.database.url, changed=config != old.config)
    if changes.sync_interval is not None:  # an interval replaces the schedule
        schedule, timezone = None, None
    else:
        schedule = changes.schedule if changes.schedule is not None else old.schedule
        timezone = changes.timezone if changes.timezone is not None else old.timezone
    check_schedule(schedule, timezone)
    interval = changes.sync_interval or old.sync_interval
    edit = base.ConnectorEdit(
        name=name, config=config, sync_interval=interval, schedule=schedule, timezone=timezone,
        sync_timeout=old.sync_timeout if changes.sync_timeout is None else changes.sync_timeout,
        max_consecutive_failures=changes.max_consecutive_failures or old.max_consecutive_failures,
        keep=old.keep if changes.keep is None else changes.keep, next_sync_at=None,
    )  # fmt: skip
    changed = [
        key
        for key, value in as_dict(edit).items()
        if key != "next_sync_at" and value != getattr(old, key)
    ]
    now = store.now()
    if "config" in changed and old.consecutive_failures and old.status != SYNCING:
        # A fix for what made it fail: try it now rather than after the backoff.
        edit = replace(edit, next_sync_at=now)
    if {"sync_interval", "schedule", "timezone"} & set(changed):
        edit = replace(
            edit,
            next_sync_at=scheduling.next_sync_after_edit(
                now=now, current=edit.next_sync_at or old.next_sync_at,
                last_sync_at=old.last_sync_at,
                consecutive_failures=old.consecutive_failures, interval=interval,
                schedule=schedule, timezone=timezone, syncing=old.status == SYNCING,
            ),
        )  # fmt: skip
    store.edit_connector(old.id, edit)
    new = store.find_connector(str(old.id))
    notes = []
    if new.status == ERROR:
        notes.append(
            f"connector {new.name} is still in ERROR: edit does not restart it; once fixed, "
            f"'connector-sync enable {new.name}'"
        )
    if new.state is not None and config.get("incremental") != old.config.get("incremental"):
        notes.append(
            f"its saved incremental state is kept ({json.dumps(new.state)}); if it no longer "
            f"fits, 'connector-sync reset-state {new.name}' starts from the beginning"
        )
    if new.status == SYNCING:
        notes.append("a sync is running now: the change takes effect at the next sync")
    if new.status == INACTIVE:
        notes.append(f"connector {new.name} is INACTIVE: 'connector-sync enable {new.name}'")
    return EditResult(new, masked_config(new.type, new.config), changed, notes)


@dataclass(frozen=True)
class DeletePlan:
    """What `delete` is about to remove, for the confirmation question."""

    connector: Connector
    counts: base.DataCounts
    keep_data: bool


@dataclass(frozen=True)
class DeleteResult:
    """`delete`: the connector removed (with what it had), or kept INACTIVE with its data."""

    id: int
    name: str
    tenant: str
    deleted: bool
    syncs: int
    datasets: int
    records: int


def delete_connector(
    store: Store,
    ref: str,
    tenant: str | None = None,
    *,
    force: bool = False,
    keep_data: bool = False,
    confirm: Callable[[DeletePlan], None] | None = None,
) -> DeleteResult:
    """Remove a connector with its syncs, datasets and records, or with `keep_data` keep
    them and make the connector INACTIVE (never scheduled; `enable` brings it back).

    `confirm(plan)` is asked first and raises to stop. The connector goes INACTIVE at once,
    so no worker claims it; records go in short transactions, then the rows.

    Raises:
        ConnectorBusy: a worker is syncing it under a live lease, and not `force`.
    """
    connector = store.find_connector(ref, tenant)
    if not force:
        _refuse_busy(store, connector)
    counts = store.data_counts(connector.id)
    if confirm is not None:
        confirm(DeletePlan(connector, counts, keep_data))
    store.retire_connector(connector.id, force=force, remove_data=not keep_data)
    if not keep_data:
        for dataset in store.list_datasets(ListFilter(connector_id=connector.id, limit=None)):
            store.purge_records(dataset.id)
        store.delete_connector(connector.id)
    return DeleteResult(
        connector.id, connector.name, connector.tenant, not keep_data,
        counts.syncs, counts.datasets, counts.records,
    )  # fmt: skip


# -- datasets: reading them back, pruning them -----------------------------------------


def _list_filter(
    store: Store,
    connector: str | None,
    status: str | None,
    statuses: tuple[str, Sequence[str]],
    tenant: str | None,
    limit: int | None,
) -> ListFilter:
    """What a listing shows: the connector found by id or name, a status in any case
    (BadInput naming the statuses there are)."""
    if status is not None:
        status = _known_status(status, statuses)
    connector_id = store.find_connector(connector, tenant).id if connector else None
    return ListFilter(connector_id, status, tenant, limit)


def _known_status(status: str, statuses: tuple[str, Sequence[str]]) -> str:
    """`status` upper-cased, if it is one of `statuses` (what, known)."""
    what, known = statuses
    status = status.upper()
    if status not in known:
        raise BadInput(
            f"status '{status}' is not a {what} status; use one of {', '.join(known)}",
            param="status",
        )
    return status


def list_datasets(
    store: Store, connector: str | None, status: str | None, tenant: str | None, limit: int | None
) -> list[Dataset]:
    """Datasets, newest first; `connector` by id or name, `status` in any case."""
    where = _list_filter(store, connector, status, ("dataset", DATASET_STATUSES), tenant, limit)
    return store.list_datasets(where)


@dataclass(frozen=True)
class DatasetDetail:
    """`datasets show`: a dataset, its schema, and its first records."""

    dataset: Dataset
    records: list[Any]

    def to_document(self) -> dict[str, Any]:
        return {**as_dict(self.dataset), "records": self.records}


def dataset_detail(
    store: Store, dataset_id: int, tenant: str | None = None, records: int = 10
) -> DatasetDetail:
    dataset = store.find_dataset(dataset_id, tenant)
    first: list[Any] = []
    if records:
        with closing(store.read_records(dataset.id, limit=records)) as chunks:
            first = [json.loads(text) for chunk in chunks for text in chunk]
    return DatasetDetail(dataset, first)


@dataclass(frozen=True)
class ExportResult:
    """What `datasets export` wrote."""

    dataset: Dataset
    format: str
    records: int


def export_dataset(
    store: Store,
    out: TextIO,
    *,
    dataset_id: int | None = None,
    connector: str | None = None,
    tenant: str | None = None,
    format: str = "jsonl",
) -> ExportResult:
    """Write every record of a READY dataset to `out` in seq order (one snapshot, flat
    memory): the dataset `dataset_id`, or the newest READY one of `connector`.

    Raises:
        NotFound: no such dataset, or the connector has no READY dataset.
        BadInput: the dataset is not READY.
        ConnectorSyncError: the dataset was removed while it was being written.
    """
    from connector_sync import export

    if format not in export.FORMATS:
        raise BadInput(
            f"format '{format}' is not one of {', '.join(export.FORMATS)}", param="format"
        )
    if dataset_id is not None:
        dataset = store.find_dataset(dataset_id, tenant)
    else:
        if connector is None:
            raise ValueError("give a dataset id or a connector")
        owner = store.find_connector(connector, tenant)
        latest = store.latest_dataset(owner.id)
        if latest is None:
            raise NotFound(
                f"connector '{owner.name}' has no READY dataset yet: "
                f"'connector-sync run --connector {owner.name}' makes one"
            )
        dataset = latest
    if dataset.status != READY:
        raise BadInput(
            f"dataset {dataset.id} is {dataset.status}: only a READY dataset is whole; "
            "see 'connector-sync datasets'"
        )
    with closing(store.read_records(dataset.id)) as chunks:
        if format == "csv":
            written = export.write_csv(chunks, list(dataset.schema or {}), out)
        else:
            written = export.write_jsonl(chunks, out)
    if written != dataset.record_count:
        raise ConnectorSyncError(
            f"dataset {dataset.id} was removed while it was exported ({written:,} of "
            f"{dataset.record_count:,} records written): the output is incomplete"
        )
    return ExportResult(dataset, format, written)


@dataclass(frozen=True)
class PruneResult:
    """What `prune` removed (or, in a dry run, would remove)."""

    #: "datasets" or "history".
    kind: str
    dry_run: bool
    datasets: list[base.PrunedDataset]
    records: int
    history: list[base.PrunedHistory]
    syncs: int


def prune(
    store: Store,
    *,
    keep: int | None = None,
    older_than: float | None = None,
    history: bool = False,
    tenant: str | None = None,
    dry_run: bool = False,
) -> PruneResult:
    """Remove datasets beyond each connector's newest `keep` READY ones (None: the
    connector's own keep; 0: no limit) or older than `older_than` seconds; with
    `history`, instead remove syncs older than that from the history. A connector's
    newest READY dataset and latest completed sync are never removed."""
    cutoff = None if older_than is None else store.now() - dt.timedelta(seconds=older_than)
    if history:
        if cutoff is None:
            raise ValueError("pruning history needs an age")
        removed = store.prune_history(cutoff, tenant, dry_run=dry_run)
        return PruneResult("history", dry_run, [], 0, removed, sum(h.syncs for h in removed))
    chosen = store.prune(base.PruneRequest(None, tenant, keep, cutoff, dry_run))
    records = sum(p.record_count for p in chosen)
    return PruneResult("datasets", dry_run, chosen, records, [], 0)


#: The operations that may create the embedded SQLite database when it does not exist:
#: the ones a new user starts with. Everything else (a scheduled `run` above all) refuses
#: a missing file, so a job pointed at the wrong folder fails instead of staying green.
CREATES_DATABASE = frozenset({add_connector, demo})


# -- for the HTTP server ------------------------------------------------------------------


def readiness(store: Store) -> SchemaRevision:
    """Whether the store's database answers and has the schema this code needs (`/readyz`).

    Raises DatabaseUnavailable when it does not answer.
    """
    return _revision_of(store.database)


def prepare_run(store: Store, options: RunOptions, refs: Sequence[str] = ()) -> Runner:
    """A run for a caller that starts and stops it itself (the HTTP server).

    The connectors named (by id or name, within options.tenant) are looked up now, so a
    wrong name fails before anything starts; without names the run syncs the due
    connectors. Start it with `execute_run`; stop it with
    `runner.control.request_stop(grace, reason)`.
    """
    from connector_sync.runner import Runner

    if refs:
        options = replace(options, connector_ids=_connector_ids(store, refs, options.tenant))
    return Runner(store, options)


def execute_run(store: Store, runner: Runner) -> RunResult:
    """Run a prepared run in this thread. No signal handler is installed: the caller may be
    any thread, and stops the run through its control."""
    return _finish(store, runner.run(handle_signals=False))
