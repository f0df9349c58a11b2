"""Every command: each parses its options, calls one operation and renders the result."""

from __future__ import annotations

import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

import typer

from connector_sync.cli.errors import CommandLine, Flags
from connector_sync.constants import (
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_SYNC_INTERVAL,
    DEFAULT_TENANT,
    MAX_COUNT,
    MAX_SECONDS,
    SYNC_STATUSES,
)
from connector_sync.exceptions import EXIT_FAILURE, EXIT_OK
from connector_sync.logs import configure_logging
from connector_sync.settings import resolve_database_url

# The modules below pull in SQLAlchemy, alembic and rich; each command imports
# what it needs when it runs, so `--help` and argument errors stay fast.
if TYPE_CHECKING:
    from connector_sync import operations
    from connector_sync.runner import LoopReport, RunReport

P = ParamSpec("P")
T = TypeVar("T")

ENV = "CONNECTOR_SYNC_"

app = typer.Typer(
    cls=CommandLine,
    name="connector-sync",
    help="Keep data from many connectors fresh. Run `connector-sync run` from a scheduler.",
    no_args_is_help=True,
    # `--install-completion` / `--show-completion`; connector names complete from the
    # database (complete_connector imports what it needs only when asked).
    add_completion=True,
    pretty_exceptions_enable=False,
    # Plain help: Typer's rich help imports rich.markdown and friends, tripling start-up.
    rich_markup_mode=None,
)
db_app = typer.Typer(
    help="Manage the database schema.", no_args_is_help=True, rich_markup_mode=None
)
app.add_typer(db_app, name="db")


class LogFormat(StrEnum):
    plain = "plain"
    json = "json"


class LogLevel(StrEnum):
    debug = "debug"
    info = "info"
    warning = "warning"
    error = "error"


JsonOpt = Annotated[bool, typer.Option("--json", help="Print a JSON document instead of a table.")]
TenantOpt = Annotated[
    str | None, typer.Option("--tenant", "-t", help="Only this tenant.", envvar=f"{ENV}TENANT")
]
LimitOpt = Annotated[
    int | None, typer.Option("--limit", "-n", min=1, max=MAX_COUNT, help="At most N.")
]


def _seconds_option(*, min: float, help: str, envvar: str | None = None) -> Any:
    """A number of seconds from `min` to MAX_SECONDS (the bounds also refuse nan and inf)."""
    return typer.Option(min=min, max=MAX_SECONDS, envvar=envvar, help=help)


def _duration(what: str) -> Callable[[str], float]:
    """A Typer parser: seconds from `90`, `10m`, `24h`, `7d` (errors name the option)."""

    def parse(text: str) -> float:
        from connector_sync.durations import parse_duration
        from connector_sync.exceptions import BadInput

        try:
            return parse_duration(text, what)
        except BadInput as exc:
            raise typer.BadParameter(exc.message.removeprefix(f"{what} ")) from None

    return parse


NotifyOpt = Annotated[
    list[str] | None,
    typer.Option(
        "--notify",
        envvar=f"{ENV}NOTIFY",
        metavar="URL",
        show_default=False,
        help="Send notifications to this apprise URL (slack://..., mailto://..., "
        "json://host/path; repeat, or CONNECTOR_SYNC_NOTIFY with URLs separated by spaces).",
    ),
]


def _long_sync_option(help: str, envvar: str | None = None) -> Any:
    return typer.Option(
        "--long-sync",
        parser=_duration("--long-sync"),
        metavar="DURATION",
        envvar=envvar,
        show_default=False,
        help=help,
    )


def _rate_option(help: str, envvar: str | None = None) -> Any:
    """A share from 0 to 1."""
    return typer.Option("--max-error-rate", min=0.0, max=1.0, envvar=envvar, help=help)


WindowOpt = Annotated[
    float,
    typer.Option(
        "--window",
        parser=_duration("--window"),
        metavar="DURATION",
        envvar=f"{ENV}WINDOW",
        help="Syncs started this long ago count (90m, 24h, 7d): health's ERROR_RATE, "
        "metrics' window_* series and duration histogram.",
    ),
]


def complete_connector(ctx: typer.Context, incomplete: str) -> list[str]:
    """Shell completion: the names of connectors starting with what was typed so far."""
    from connector_sync import operations

    root = ctx.find_root()
    try:
        url = resolve_database_url(root.params.get("database_url"))
        tenant = ctx.params.get("tenant")
        return operations.connector_names(url, incomplete, tenant)
    except Exception:  # completion must never print an error into the user's shell
        return []


def _count_option(*names: str, max: int, help: str) -> Any:
    """A whole number from 1 to `max`, with its CONNECTOR_SYNC_* environment twin."""
    envvar = ENV + names[0].removeprefix("--").replace("-", "_").upper()
    return typer.Option(*names, min=1, max=max, envvar=envvar, help=help)


ConnectorArg = Annotated[
    str,
    typer.Argument(help="Connector id or unique name.", autocompletion=complete_connector),
]


def _print_version(value: bool) -> None:
    if value:
        from importlib.metadata import version

        typer.echo(f"connector-sync {version('connector-sync')}")
        raise typer.Exit()


@app.callback()
def global_options(
    ctx: typer.Context,
    database_url: Annotated[
        str | None,
        typer.Option(
            "--database-url",
            envvar=[f"{ENV}DATABASE_URL", "DATABASE_URL"],
            help="postgresql://user:pass@host/db or sqlite:///path.db "
            "[default: sqlite:///connector-sync.db]",
            show_default=False,
        ),
    ] = None,
    debug: Annotated[
        bool, typer.Option("--debug", envvar=f"{ENV}DEBUG", help="Show tracebacks.")
    ] = False,
    log_level: Annotated[
        LogLevel, typer.Option("--log-level", envvar=f"{ENV}LOG_LEVEL", help="Log level.")
    ] = LogLevel.info,
    log_format: Annotated[
        LogFormat,
        typer.Option("--log-format", envvar=f"{ENV}LOG_FORMAT", help="Logs on stderr as."),
    ] = LogFormat.plain,
    quiet: Annotated[
        bool,
        typer.Option(
            "--quiet", "-q", envvar=f"{ENV}QUIET", help="Print nothing on stdout (logs still)."
        ),
    ] = False,
    _version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_print_version, is_eager=True, help="Print the version."
        ),
    ] = False,
) -> None:
    """Keep data from many connectors fresh.

    Example: connector-sync --database-url postgresql://localhost/sync run
    """
    Flags.debug = debug
    configure_logging(log_level.value, log_format.value)
    from connector_sync.render import Output  # every command prints through it

    Output.quiet = quiet
    # JSON log lines to a file or pipe: no box-drawn tables mixed in (--json still prints).
    Output.tables = not (log_format is LogFormat.json and not sys.stdout.isatty())
    ctx.obj = resolve_database_url(database_url)


def _url(ctx: typer.Context) -> str:
    return str(ctx.obj)


def _call(
    ctx: typer.Context,
    operation: Callable[Concatenate[operations.Store, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """Open the database, run one operation on its store, close it."""
    from connector_sync import operations

    create = operation in operations.CREATES_DATABASE
    with operations.session(_url(ctx), create=create) as store:
        return operation(store, *args, **kwargs)


def _show(
    ctx: typer.Context,
    as_json: bool,
    renderer: Callable[[T], None],
    operation: Callable[Concatenate[operations.Store, P], T],
    *args: P.args,
    **kwargs: P.kwargs,
) -> T:
    """`_call`, then print the result: as a JSON document, or with `renderer` for people."""
    from connector_sync import render

    result = _call(ctx, operation, *args, **kwargs)
    render.output(as_json, result, renderer)
    return result


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the schema migrations.  Example: connector-sync db upgrade"""
    from connector_sync import operations, render

    display_url = operations.upgrade_schema(_url(ctx))
    render.say(f"database {display_url} is at the latest schema", err=True)


@db_app.command("current")
def db_current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision.  Example: connector-sync db current"""
    from connector_sync import operations, render

    render.output(as_json, operations.schema_revision(_url(ctx)), render.schema_revision)


@app.command()
def add(
    ctx: typer.Context,
    name: Annotated[str, typer.Argument(help="Unique name within the tenant.")],
    type_name: Annotated[str, typer.Option("--type", help="Connector type, see `types`.")],
    config: Annotated[str | None, typer.Option("--config", help="Config as a JSON object.")] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config-file", help="Read the JSON config from a file.")
    ] = None,
    interval: Annotated[
        int, typer.Option("--interval", min=1, max=MAX_SECONDS, help="Seconds between syncs.")
    ] = DEFAULT_SYNC_INTERVAL,
    no_auto_sync: Annotated[
        bool, typer.Option("--no-auto-sync", help="Only sync when asked (run --connector).")
    ] = False,
    tenant: Annotated[str, typer.Option("--tenant", "-t", help="Tenant.")] = DEFAULT_TENANT,
    timeout: Annotated[
        int | None,
        typer.Option(
            "--timeout",
            min=1,
            max=MAX_SECONDS,
            show_default=False,
            help="Seconds a sync may take [default: the run's --timeout, 3600].",
        ),
    ] = None,
    max_failures: Annotated[
        int,
        typer.Option(
            "--max-failures",
            min=1,
            max=MAX_COUNT,
            help="Failures in a row before the connector goes to ERROR.",
        ),
    ] = DEFAULT_MAX_CONSECUTIVE_FAILURES,
    as_json: JsonOpt = False,
) -> None:
    """Add a connector; it is due at once.

    Example: connector-sync add customers --type csv --config '{"path": "customers.csv"}'
    """
    from connector_sync import operations, render
    from connector_sync.cli.inputs import parse_config

    parsed = parse_config(config, config_file)
    new = operations.NewConnector(
        name=name, type=type_name, config=parsed, sync_interval=interval,
        auto_sync=not no_auto_sync, tenant=tenant, sync_timeout=timeout,
        max_consecutive_failures=max_failures,
    )  # fmt: skip
    connector_id = _call(ctx, operations.add_connector, new)
    if as_json:
        render.print_json({"id": connector_id})
    else:
        when = "due now" if not no_auto_sync else "auto-sync off: sync it with run --connector"
        render.say(f"added connector {name} (id {connector_id}), {when}")


@app.command("list")
def list_(ctx: typer.Context, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List connectors.  Example: connector-sync list --json"""
    from connector_sync import operations, render

    rows = _call(ctx, operations.list_connectors, tenant)
    render.output(as_json, rows, lambda rows: render.connectors_table(rows, "Connectors"))


@app.command()
def show(
    ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """Show a connector, its recent syncs and datasets.  Example: connector-sync show customers"""
    from connector_sync import operations, render

    _show(ctx, as_json, render.connector_detail, operations.connector_detail, connector, tenant)


def _set_auto_sync(ctx: typer.Context, connector: str, tenant: str | None, on: bool) -> None:
    from connector_sync import operations, render

    row = _call(ctx, operations.set_auto_sync, connector, tenant, on)
    state = "enabled: ACTIVE and due now" if on else "disabled: no more scheduled syncs"
    render.say(f"connector {row.name} (id {row.id}) {state}")


@app.command()
def enable(ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None) -> None:
    """Turn auto-sync on, clear ERROR and failures, make it due now.

    Example: connector-sync enable customers
    """
    _set_auto_sync(ctx, connector, tenant, True)


@app.command()
def disable(ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None) -> None:
    """Turn auto-sync off (manual `run --connector` still works).

    Example: connector-sync disable customers
    """
    _set_auto_sync(ctx, connector, tenant, False)


@app.command("reset-state")
def reset_state(ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None) -> None:
    """Forget an incremental connector's cursor: its next sync reads everything.

    Example: connector-sync reset-state orders-api
    """
    from connector_sync import operations, render

    row = _call(ctx, operations.reset_state, connector, tenant)
    previous = "none" if row.state is None else render.json_line(row.state)
    render.say(
        f"connector {row.name} (id {row.id}): state cleared (was {previous}); "
        "the next sync is a full one"
    )


@app.command()
def due(
    ctx: typer.Context, limit: LimitOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """List the connectors due now, most overdue first.  Example: connector-sync due -n 10"""
    from connector_sync import operations, render

    rows = _call(ctx, operations.due_connectors, limit, tenant)
    render.output(as_json, rows, lambda rows: render.connectors_table(rows, "Due connectors"))


@app.command()
def run(
    ctx: typer.Context,
    limit: LimitOpt = None,
    connector: Annotated[
        list[str] | None,
        typer.Option(
            "--connector",
            "-c",
            help="Sync this connector now, due or not (repeat).",
            autocompletion=complete_connector,
        ),
    ] = None,
    tenant: TenantOpt = None,
    concurrency: Annotated[
        int, _count_option("--concurrency", "-j", max=64, help="Syncs in parallel in this process.")
    ] = 1,
    timeout: Annotated[
        float,
        _seconds_option(
            min=1,
            envvar=f"{ENV}TIMEOUT",
            help="Seconds a sync may take (for connectors added without --timeout).",
        ),
    ] = 3600.0,
    attempts: Annotated[
        int,
        _count_option("--attempts", max=20, help="Tries per sync when a source fails transiently."),
    ] = 3,
    grace: Annotated[
        float,
        _seconds_option(
            min=0,
            envvar=f"{ENV}GRACE",
            help="After SIGTERM/SIGINT, seconds before in-flight syncs are cancelled.",
        ),
    ] = 30.0,
    lease_seconds: Annotated[
        float,
        _seconds_option(min=5, envvar=f"{ENV}LEASE_SECONDS", help="Lease length."),
    ] = 60.0,
    heartbeat_seconds: Annotated[
        float,
        _seconds_option(min=0.1, envvar=f"{ENV}HEARTBEAT_SECONDS", help="Lease renewal period."),
    ] = 20.0,
    batch_size: Annotated[
        int,
        typer.Option(min=1, max=1_000_000, envvar=f"{ENV}BATCH_SIZE", help="Records per write."),
    ] = 5000,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Show what this run would sync, in order; sync nothing."),
    ] = False,
    loop: Annotated[
        bool,
        typer.Option(
            "--loop", help="Run again and again (a container's PID 1, a long-lived worker)."
        ),
    ] = False,
    every: Annotated[
        float,
        _seconds_option(
            min=0.1,
            envvar=f"{ENV}EVERY",
            help="With --loop: seconds from the start of one run to the next.",
        ),
    ] = 900.0,
    jitter: Annotated[
        float,
        _seconds_option(
            min=0,
            envvar=f"{ENV}JITTER",
            help="With --loop: up to this many seconds more between runs, at random.",
        ),
    ] = 0.0,
    max_runs: Annotated[
        int | None,
        typer.Option("--max-runs", min=1, max=MAX_COUNT, help="With --loop: stop after N runs."),
    ] = None,
    notify: NotifyOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Sync the due connectors (or the ones named).  Exit 1 if any sync failed.

    On a terminal, shows each sync's records, rate and elapsed time as it goes.

    Example (crontab): */5 * * * * cd /srv/sync && connector-sync run
    """
    from connector_sync import operations, render
    from connector_sync.runner import RunOptions

    if heartbeat_seconds >= lease_seconds:
        raise typer.BadParameter(
            "must be shorter than --lease-seconds", param_hint="'--heartbeat-seconds'"
        )
    if connector and limit is not None:
        raise typer.BadParameter(
            "--limit applies to due connectors; with --connector, name fewer connectors",
            param_hint="'--limit'",
        )
    options = RunOptions(
        limit=limit, tenant=tenant, concurrency=concurrency, timeout=timeout,
        attempts=attempts, grace=grace, lease_seconds=lease_seconds,
        heartbeat_seconds=heartbeat_seconds, batch_size=batch_size,
    )  # fmt: skip
    if loop:
        if connector or dry_run:
            raise typer.BadParameter(
                "--loop runs the due connectors; leave out --connector and --dry-run",
                param_hint="'--loop'",
            )
        looped = _call(
            ctx, operations.run_loop, options, operations.LoopOptions(every, jitter, max_runs),
            notify or (),
        )  # fmt: skip
        raise typer.Exit(_loop_exit_code(looped))
    if dry_run:
        _show(ctx, as_json, render.would_sync, operations.plan_run, options, connector or ())
        return
    from connector_sync.cli.progress import live_progress

    with live_progress(enabled=not as_json) as watchers:
        if connector:
            result = _call(
                ctx, operations.run_connectors, connector, tenant, options, watchers, notify or ()
            )
        else:
            result = _call(ctx, operations.run, options, watchers, notify or ())
    if as_json:
        render.print_json(result.syncs)
    elif result.syncs:
        render.syncs_table(result.syncs, "Syncs in this run")
    else:
        render.say("Nothing due.")
    raise typer.Exit(_run_exit_code(result.report))


def _loop_exit_code(report: LoopReport) -> int:
    """Stopped by a signal: 0 when every sync it started ended (completed or failed), else
    128 + the signal. Ended by --max-runs: 1 if a sync failed, as `run`."""
    if report.signal is not None:
        return 128 + report.signal if report.cancelled or report.lost else EXIT_OK
    return EXIT_FAILURE if report.failed or report.lost else EXIT_OK


def _run_exit_code(report: RunReport) -> int:
    if report.signal is not None:
        return 128 + report.signal
    return EXIT_FAILURE if report.failed or report.lost else EXIT_OK


@app.command()
def history(
    ctx: typer.Context,
    connector: Annotated[
        str | None,
        typer.Option(
            "--connector", "-c", help="Only this connector.", autocompletion=complete_connector
        ),
    ] = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help=f"Only syncs in this status: {', '.join(SYNC_STATUSES)}."
        ),
    ] = None,
    limit: Annotated[
        int, typer.Option("--limit", "-n", min=1, max=MAX_COUNT, help="At most N.")
    ] = 20,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show recent syncs, newest first.  Example: connector-sync history --status FAILED"""
    from connector_sync import operations, render

    rows = _call(
        ctx, operations.history, connector=connector, status=status, tenant=tenant, limit=limit
    )
    render.output(as_json, rows, lambda rows: render.syncs_table(rows, "Sync history"))


@app.command()
def status(ctx: typer.Context, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Summarise connectors by status, what is due, and the last 24 hours of syncs."""
    from connector_sync import operations, render

    _show(ctx, as_json, render.status_summary, operations.status, tenant)


@app.command()
def health(
    ctx: typer.Context,
    overdue_after: Annotated[
        float,
        _seconds_option(min=1, help="OVERDUE: due for longer than this (seconds)."),
    ] = 3600.0,
    failures_warn: Annotated[
        int,
        _count_option(
            "--failures-warn",
            max=MAX_COUNT,
            help="FAILING (warning): this many failures in a row, before ERROR parks it.",
        ),
    ] = 2,
    long_sync: Annotated[
        float | None,
        _long_sync_option(
            "LONG_SYNC (warning): a sync running this long (90s, 10m, 2h) [default: 3x the "
            "connector's median of its last 20 completed syncs, at least 10m].",
            envvar=f"{ENV}LONG_SYNC",
        ),
    ] = None,
    timeout: Annotated[
        float,
        _seconds_option(
            min=1,
            envvar=f"{ENV}TIMEOUT",
            help="SYNC_TIMEOUT (critical): a sync running past this (seconds), for "
            "connectors without their own timeout (as run --timeout).",
        ),
    ] = 3600.0,
    window: WindowOpt = "24h",  # type: ignore[assignment]
    max_error_rate: Annotated[
        float,
        _rate_option(
            "ERROR_RATE: above this share of failed syncs (warning for a connector, critical "
            "for all syncs together).",
            envvar=f"{ENV}MAX_ERROR_RATE",
        ),
    ] = 0.2,
    min_syncs: Annotated[
        int,
        _count_option(
            "--min-syncs",
            max=MAX_COUNT,
            help="ERROR_RATE: judge a rate only over at least this many ended syncs.",
        ),
    ] = 5,
    strict: Annotated[
        bool,
        typer.Option(
            "--strict",
            envvar=f"{ENV}STRICT",
            help="Exit 1 on warnings too, not only critical problems.",
        ),
    ] = False,
    notify: NotifyOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report problems with a severity: exit 1 on a critical one (or any with --strict).

    Critical: ERROR, LEASE_EXPIRED, OVERDUE, SYNC_TIMEOUT, ERROR_RATE of all syncs.
    Warning: FAILING, LONG_SYNC, ERROR_RATE of one connector. With --notify, each new
    problem is sent once and its clearing once (the state is kept in the database).

    Example (cron): */5 * * * * connector-sync health --notify slack://T/B/C --quiet
    """
    from connector_sync import operations, render

    thresholds = operations.HealthThresholds(
        overdue_after=overdue_after, failures_warn=failures_warn, long_sync=long_sync,
        timeout=timeout, window=window, max_error_rate=max_error_rate, min_syncs=min_syncs,
    )  # fmt: skip
    report = _show(
        ctx, as_json, render.health_report, operations.health, tenant, thresholds, notify or ()
    )
    raise typer.Exit(_health_exit_code(report, strict))


def _health_exit_code(report: operations.HealthReport, strict: bool) -> int:
    """1: a critical problem, a warning with --strict, or a notification not delivered."""
    undelivered = report.delivery is not None and bool(report.delivery.failed)
    alarming = report.worst == "critical" or (strict and report.worst is not None)
    return EXIT_FAILURE if alarming or undelivered else EXIT_OK


@app.command()
def metrics(
    ctx: typer.Context,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="FILE",
            show_default=False,
            help="Write to FILE atomically (node_exporter's textfile collector) instead of "
            "printing.",
        ),
    ] = None,
    window: WindowOpt = "24h",  # type: ignore[assignment]
    connector_series: Annotated[
        int,
        typer.Option(
            "--connector-series",
            min=0,
            max=MAX_COUNT,
            envvar=f"{ENV}CONNECTOR_SERIES",
            help="At most this many connectors get series of their own (failing, then "
            "longest without a success, first); the rest are counted in "
            "connector_sync_connectors_without_series.",
        ),
    ] = 10_000,
    tenant: TenantOpt = None,
) -> None:
    """Print Prometheus metrics (text format), or write them to a file.

    Example (cron): * * * * * connector-sync metrics -o /var/lib/node_exporter/cs.prom
    """
    from connector_sync import operations, render

    request = operations.MetricsRequest(window, tenant, connector_series)
    if output is None:
        render.print_text(_call(ctx, operations.metrics_text, request))
        return
    written = _call(ctx, operations.write_metrics, output, request)
    render.say(f"metrics written to {written}", err=True)


@app.command()
def alerts(
    ctx: typer.Context,
    connector: ConnectorArg,
    failures_warn: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_COUNT, show_default=False, help="Its FAILING threshold."),
    ] = None,
    long_sync: Annotated[
        float | None, _long_sync_option("Its LONG_SYNC threshold (90s, 10m, 2h).")
    ] = None,
    max_error_rate: Annotated[float | None, _rate_option("Its ERROR_RATE threshold.")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget its thresholds first: health's flags apply.")
    ] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show or set a connector's own alert thresholds (they override health's flags).

    Example: connector-sync alerts big-export --long-sync 2h --failures-warn 3
    """
    from connector_sync import operations, render

    given = (failures_warn, long_sync, max_error_rate)
    change = None
    if any(value is not None for value in given):
        change = operations.AlertThresholds(
            failures_warn=failures_warn,
            long_sync=None if long_sync is None else round(long_sync),
            max_error_rate=max_error_rate,
        )
    _show(
        ctx, as_json, render.connector_alerts, operations.connector_alerts, connector, tenant,
        change, reset,
    )  # fmt: skip


@app.command()
def test(
    ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """Check a connector's source without syncing or writing anything.  Exit 1 on failure.

    Example: connector-sync test customers
    """
    from connector_sync import operations, render

    check = _show(
        ctx, as_json, render.connector_check, operations.test_connector, connector, tenant
    )
    raise typer.Exit(EXIT_OK if check.result.ok else EXIT_FAILURE)


@app.command()
def types(as_json: JsonOpt = False) -> None:
    """List the installed connector types and their config fields.

    Example: connector-sync types --json
    """
    from connector_sync import operations, render

    described = operations.describe_types()
    render.output(as_json, described, render.types_table)


@app.command()
def recover(ctx: typer.Context, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Release connectors whose worker died (expired lease); `run` does this first too."""
    from connector_sync import operations, render

    _show(ctx, as_json, render.recovered_leases, operations.recover, tenant)


@app.command()
def demo(ctx: typer.Context) -> None:
    """Quickstart: add three demo connectors, sync them once, show the results.

    Example: connector-sync demo
    """
    from connector_sync import operations, render

    result = _call(ctx, operations.demo)
    render.demo_result(result)
    raise typer.Exit(_run_exit_code(result.run.report))


def main() -> None:
    """Console-script entry point."""
    app()
