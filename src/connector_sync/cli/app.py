"""Every command: each parses its options, calls one operation and renders the result."""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Concatenate, ParamSpec, TypeVar

import typer

from connector_sync import constants
from connector_sync.cli.errors import CommandLine, Flags
from connector_sync.constants import (
    DEFAULT_KEEP,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_SYNC_INTERVAL,
    DEFAULT_TENANT,
    MAX_COUNT,
    MAX_SECONDS,
)
from connector_sync.deploy import DEFAULT_ENV_FILE, DEFAULT_EVERY, DEFAULT_GRACE, Target
from connector_sync.durations import duration_option
from connector_sync.exceptions import EXIT_FAILURE, EXIT_OK
from connector_sync.logs import configure_logging
from connector_sync.settings import resolve_database_url

# The modules below pull in SQLAlchemy, alembic and rich; each command imports
# what it needs when it runs, so `--help` and argument errors stay fast.
if TYPE_CHECKING:
    from connector_sync import operations
    from connector_sync.operations import LoopReport, RunReport

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
#: The tenant a new connector goes in (CONNECTOR_SYNC_TENANT, like every command's --tenant).
NewTenantOpt = Annotated[str, typer.Option("--tenant", "-t", help="Tenant.", envvar=f"{ENV}TENANT")]


def _at_most() -> Any:
    return typer.Option("--limit", "-n", min=1, max=MAX_COUNT, help="At most N.")


LimitOpt = Annotated[int | None, _at_most()]


def _seconds_option(
    *names: str,
    min: float,
    default: float | None,
    help: str,
    envvar: str | None = None,
    whole: bool = False,
) -> Any:
    """A duration (30s, 15m, 1h, 1d, or seconds) from `min` to MAX_SECONDS."""
    from connector_sync.durations import duration_option

    option = duration_option(
        help=help, min=min, max=MAX_SECONDS, default=default, envvar=envvar, whole_seconds=whole
    )
    option.param_decls = names
    return option


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
    return _seconds_option("--long-sync", min=1, default=None, envvar=envvar, help=help)


def _rate_option(help: str, envvar: str | None = None) -> Any:
    """A share from 0 to 1 (click's range lets NaN through: refused here)."""

    def finite(value: float | None) -> float | None:
        if value is not None and math.isnan(value):
            raise typer.BadParameter("must be a number from 0 to 1, not nan")
        return value

    return typer.Option(
        "--max-error-rate", min=0.0, max=1.0, envvar=envvar, help=help, callback=finite
    )


WindowOpt = Annotated[
    float,
    _seconds_option(
        "--window",
        min=1,
        default=86400,
        envvar=f"{ENV}WINDOW",
        help="Syncs started this long ago count: health's ERROR_RATE, metrics' window_* "
        "series and duration histogram",
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


#: The durations `run` takes: option -> (least, default, help). Environment twins follow.
_RUN_DURATIONS = {
    "--timeout": (1, 3600, "How long a sync may take, for connectors added without --timeout"),
    "--grace": (0, 30, "After SIGTERM/SIGINT, how long syncs in flight may go on"),
    "--lease-seconds": (5, 60, "Lease length"),
    "--heartbeat-seconds": (0.1, 20, "Lease renewal period"),
    "--every": (0.1, 900, "With --loop: from the start of one run to the next"),
    "--jitter": (0, 0, "With --loop: up to this much more between runs, at random"),
}


def _run_duration(name: str) -> Any:
    least, default, help = _RUN_DURATIONS[name]
    envvar = ENV + name.removeprefix("--").replace("-", "_").upper()
    return _seconds_option(name, min=least, default=default, envvar=envvar, help=help)


#: `run` and `serve`: how long in-flight syncs may finish after SIGTERM.
GraceOpt = Annotated[float, _run_duration("--grace")]


def _given(ctx: typer.Context, param: str) -> bool:
    """Whether the user gave this option (on the line or in its environment variable)."""
    source = ctx.get_parameter_source(param)
    return source is not None and source.name != "DEFAULT"


def _duration_option(*names: str, help: str) -> Any:
    """A whole number of seconds, given as a duration (90s, 15m, 1h, 1d), no default."""
    return _seconds_option(*names, min=1, default=None, whole=True, help=help)


IntervalOpt = Annotated[
    int,
    _seconds_option(
        "--interval", min=1, default=DEFAULT_SYNC_INTERVAL, whole=True, help="Time between syncs"
    ),
]
ScheduleOpt = Annotated[
    str | None,
    typer.Option(
        "--schedule",
        metavar="CRON",
        help="Cron schedule instead of an interval: '*/15 * * * *', @hourly, @daily.",
    ),
]
TimezoneOpt = Annotated[
    str | None,
    typer.Option("--timezone", help="IANA time zone the schedule is read in [default: UTC]."),
]
KeepOpt = Annotated[
    int,
    typer.Option(
        "--keep", min=0, max=MAX_COUNT, help="READY datasets kept after each sync; 0 keeps all."
    ),
]


def _count_option(*names: str, max: int, help: str) -> Any:
    """A whole number from 1 to `max`, with its CONNECTOR_SYNC_* environment twin."""
    envvar = ENV + names[0].removeprefix("--").replace("-", "_").upper()
    return typer.Option(*names, min=1, max=max, envvar=envvar, help=help)


ConnectorArg = Annotated[
    str,
    typer.Argument(help="Connector id or unique name.", autocompletion=complete_connector),
]


ConnectorFilterOpt = Annotated[
    str | None,
    typer.Option(
        "--connector", "-c", help="Only this connector.", autocompletion=complete_connector
    ),
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
    Flags.database_url_from = None
    source = ctx.get_parameter_source("database_url")
    if source is not None and source.name == "ENVIRONMENT":  # named as the user gave it
        names = constants.DATABASE_URL_ENVVARS
        Flags.database_url_from = next((n for n in names if os.environ.get(n)), names[-1])
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
    """Show the schema revision; exit 3 when the SQLite file does not exist (not created).

    Example: connector-sync db current
    """
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
    interval: IntervalOpt = DEFAULT_SYNC_INTERVAL,
    schedule: ScheduleOpt = None,
    timezone: TimezoneOpt = None,
    no_auto_sync: Annotated[
        bool, typer.Option("--no-auto-sync", help="Only sync when asked (run --connector).")
    ] = False,
    tenant: NewTenantOpt = DEFAULT_TENANT,
    timeout: Annotated[
        int | None,
        _seconds_option(
            "--timeout",
            min=1,
            default=None,
            whole=True,
            help="How long a sync may take [default: the run's --timeout, 1h]",
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
    keep: KeepOpt = DEFAULT_KEEP,
    allow_own_database: Annotated[
        bool,
        typer.Option(
            "--allow-own-database",
            help="Let a sql connector read connector-sync's own database (every connector's "
            "config and secrets are there).",
        ),
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """Add a connector; it is due at once (with --schedule, at its next slot).

    Example: connector-sync add customers --type csv --config '{"path": "customers.csv"}'
    """
    from connector_sync import operations, render
    from connector_sync.cli.inputs import parse_config

    if schedule is not None and _given(ctx, "interval"):
        raise typer.BadParameter(
            "give --interval or --schedule, not both", param_hint="'--schedule'"
        )
    parsed = parse_config(config, config_file)
    if allow_own_database:
        parsed["allow_own_database"] = True
    new = operations.NewConnector(
        name=name, type=type_name, config=parsed, sync_interval=interval,
        auto_sync=not no_auto_sync, tenant=tenant, sync_timeout=timeout,
        max_consecutive_failures=max_failures, schedule=schedule, timezone=timezone, keep=keep,
    )  # fmt: skip
    # Checked before the database is opened: a bad `add` must not create one.
    new = operations.validated(new, _url(ctx))
    connector_id = _call(ctx, operations.add_connector, new)
    if as_json:
        render.print_json({"id": connector_id})
    else:
        render.added(new, connector_id)


#: Connectors `list` and `due` show in a table unless --limit (or --all) says otherwise.
LIST_PAGE = 50
PageLimitOpt = Annotated[
    int | None,
    typer.Option(
        "--limit",
        "-n",
        min=1,
        max=MAX_COUNT,
        show_default=False,
        help=f"At most N [default: {LIST_PAGE} in a table, every one with --json].",
    ),
]


@app.command("list")
def list_(
    ctx: typer.Context,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help=f"Only this status: {', '.join(constants.CONNECTOR_STATUSES)}."
        ),
    ] = None,
    type_name: Annotated[str | None, typer.Option("--type", help="Only this type.")] = None,
    due: Annotated[bool, typer.Option("--due", help="Only the connectors due now.")] = False,
    limit: PageLimitOpt = None,
    all_: Annotated[
        bool,
        typer.Option(
            "--all", "-a", help="Every connector, however many, INACTIVE ones too (no page)."
        ),
    ] = False,
    tenant: TenantOpt = None,
    inactive: Annotated[
        bool, typer.Option("--inactive", help="INACTIVE connectors too (deleted, data kept).")
    ] = False,
    as_json: JsonOpt = False,
) -> None:
    """List connectors by tenant and name: a table shows the first 50 and says how many more.

    Example: connector-sync list --status ERROR --type http
    """
    from connector_sync import operations, render

    if all_ and limit is not None:
        raise typer.BadParameter(
            "--all shows every connector: leave out --limit", param_hint="'--limit'"
        )
    if limit is None and not (all_ or as_json):
        limit = LIST_PAGE
    where = operations.connector_filter(
        tenant, status, type_name, due, include_inactive=inactive or all_, limit=limit
    )
    if as_json:
        try:
            with render.json_array() as out:
                _call(ctx, operations.each_connector, where, out.add)
        except BrokenPipeError:  # the reader (`| head`) has what it wanted
            _silence_stdout()
        return
    render.connector_page(_call(ctx, operations.connector_page, where))


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
def edit(
    ctx: typer.Context,
    connector: ConnectorArg,
    config: Annotated[
        str | None, typer.Option("--config", help="The whole new config, a JSON object.")
    ] = None,
    config_file: Annotated[
        Path | None, typer.Option("--config-file", help="Read the whole new config from a file.")
    ] = None,
    set_: Annotated[
        list[str] | None,
        typer.Option(
            "--set",
            metavar="KEY=VALUE",
            help="Set a config key (dotted: headers.Accept); VALUE is JSON or text (repeat).",
        ),
    ] = None,
    unset: Annotated[
        list[str] | None,
        typer.Option("--unset", metavar="KEY", help="Remove a config key, dotted (repeat)."),
    ] = None,
    interval: Annotated[
        int | None,
        _duration_option("--interval", help="Time between syncs (replaces a schedule)"),
    ] = None,
    schedule: ScheduleOpt = None,
    timezone: TimezoneOpt = None,
    timeout: Annotated[
        int | None, _duration_option("--timeout", help="How long a sync may take")
    ] = None,
    max_failures: Annotated[
        int | None,
        typer.Option(
            "--max-failures", min=1, max=MAX_COUNT, help="Failures in a row before ERROR."
        ),
    ] = None,
    keep: Annotated[
        int | None,
        typer.Option("--keep", min=0, max=MAX_COUNT, help="READY datasets kept; 0 keeps all."),
    ] = None,
    rename: Annotated[str | None, typer.Option("--rename", metavar="NEW", help="New name.")] = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Change a connector's config, schedule or limits; checked as `add` checks them.

    Example: connector-sync edit orders --set path=orders.csv --interval 15m
    """
    from connector_sync import operations, render
    from connector_sync.cli.inputs import config_assignment, parse_config

    whole = parse_config(config, config_file) if config or config_file else None
    changes = operations.ConnectorChanges(
        config=whole, set_values=[config_assignment(item) for item in set_ or ()],
        unset=list(unset or ()), sync_interval=interval, schedule=schedule, timezone=timezone,
        sync_timeout=timeout, max_consecutive_failures=max_failures, keep=keep, rename=rename,
    )  # fmt: skip
    _show(ctx, as_json, render.edit_result, operations.edit_connector, connector, tenant, changes)


@app.command()
def delete(
    ctx: typer.Context,
    connector: ConnectorArg,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    force: Annotated[
        bool, typer.Option("--force", help="Delete it even while a worker is syncing it.")
    ] = False,
    keep_data: Annotated[
        bool,
        typer.Option(
            "--keep-data", help="Keep its datasets and history; the connector becomes INACTIVE."
        ),
    ] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Delete a connector with its syncs, datasets and records (asks first on a terminal).

    Example: connector-sync delete orders --yes
    """
    from connector_sync import operations, render
    from connector_sync.exceptions import BadInput, ConnectorBusy

    def confirm(plan: operations.DeletePlan) -> None:
        if yes:
            return
        if not sys.stdin.isatty():
            raise BadInput(
                f"deleting connector {plan.connector.name} needs a confirmation and there is "
                "no terminal to ask on: give --yes"
            )
        typer.confirm(render.deletion_question(plan), abort=True, err=True)

    try:
        _show(
            ctx, as_json, render.deleted, operations.delete_connector, connector, tenant,
            force=force, keep_data=keep_data, confirm=confirm,
        )  # fmt: skip
    except ConnectorBusy as exc:
        raise BadInput(f"{exc.message}: wait for the sync to end, or give --force") from None


datasets_app = typer.Typer(invoke_without_command=True, rich_markup_mode=None)
app.add_typer(datasets_app, name="datasets")
DatasetArg = Annotated[
    int, typer.Argument(min=1, max=MAX_COUNT, help="Dataset id (see `datasets`).")
]


@datasets_app.callback()
def datasets(
    ctx: typer.Context,
    connector: ConnectorFilterOpt = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status", "-s", help=f"Only this status: {', '.join(constants.DATASET_STATUSES)}."
        ),
    ] = None,
    limit: Annotated[int, _at_most()] = 50,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List datasets, newest first (or: datasets show ID, datasets export ID).

    Example: connector-sync datasets --connector orders
    """
    if ctx.invoked_subcommand is not None:
        return
    from connector_sync import operations, render

    rows = _call(ctx, operations.list_datasets, connector, status, tenant, limit)
    render.output(as_json, rows, render.datasets_table)


@datasets_app.command("show")
def datasets_show(
    ctx: typer.Context,
    dataset: DatasetArg,
    records: Annotated[
        int, typer.Option("--records", "-r", min=0, max=1000, help="Show the first N records.")
    ] = 10,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Show a dataset's schema (field -> JSON types) and first records.

    Example: connector-sync datasets show 3 --records 5
    """
    from connector_sync import operations, render

    _show(ctx, as_json, render.dataset_detail, operations.dataset_detail, dataset, tenant, records)


class ExportFormat(StrEnum):
    jsonl = "jsonl"
    csv = "csv"


@datasets_app.command("export")
def datasets_export(
    ctx: typer.Context,
    dataset: Annotated[
        int | None, typer.Argument(min=1, help="Dataset id (or --connector C --latest).")
    ] = None,
    connector: Annotated[
        str | None,
        typer.Option(
            "--connector",
            "-c",
            help="With --latest: this connector's.",
            autocompletion=complete_connector,
        ),
    ] = None,
    latest: Annotated[
        bool, typer.Option("--latest", help="The connector's newest READY dataset.")
    ] = False,
    format_: Annotated[
        ExportFormat, typer.Option("--format", "-f", help="jsonl: a record a line; csv.")
    ] = ExportFormat.jsonl,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file (whole or not at all)."),
    ] = None,
    tenant: TenantOpt = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="With -o: print what was written as JSON.")
    ] = False,
) -> None:
    """Write every record of a READY dataset, in order, to stdout or a file.

    Example: connector-sync datasets export --connector orders --latest --format csv -o orders.csv
    """
    from connector_sync import operations, render
    from connector_sync.cli.inputs import whole_file

    if (dataset is None) == (connector is None) or (connector is not None) != latest:
        raise typer.BadParameter(
            "give a DATASET id, or --connector NAME --latest", param_hint="'DATASET'"
        )
    if as_json and output is None:
        raise typer.BadParameter(
            "the records go to stdout: give --output FILE to get JSON about them",
            param_hint="'--json'",
        )
    kwargs: dict[str, Any] = {
        "dataset_id": dataset, "connector": connector, "tenant": tenant, "format": format_.value,
    }  # fmt: skip
    if output is None:
        try:
            _call(ctx, operations.export_dataset, sys.stdout, **kwargs)
        except BrokenPipeError:  # the reader (`| head`) has what it wanted
            _silence_stdout()
        return
    operations.check_not_the_database(_url(ctx), output)
    with whole_file(output) as out:
        result = _call(ctx, operations.export_dataset, out, **kwargs)
    if as_json:
        render.print_json({**render.jsonable(result), "output": str(output)})
    else:
        render.exported(result, str(output))


def _silence_stdout() -> None:
    """After the reader closed the pipe: nothing more goes to it, not even at exit."""
    import os

    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, sys.stdout.fileno())


@app.command()
def prune(
    ctx: typer.Context,
    keep: Annotated[
        int | None,
        typer.Option(
            "--keep",
            min=0,
            max=MAX_COUNT,
            help="Keep each connector's newest N READY datasets [default: its own --keep].",
        ),
    ] = None,
    older_than: Annotated[
        int | None,
        _duration_option("--older-than", help="Also remove datasets (or syncs) older than this"),
    ] = None,
    history: Annotated[
        bool,
        typer.Option("--history", help="Remove sync history older than --older-than instead."),
    ] = False,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Show what would be removed; remove nothing.")
    ] = False,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Remove old datasets (or old sync history) of every connector; never the newest good one.

    Example (weekly): connector-sync prune --older-than 30d
    """
    from connector_sync import operations, render

    if history and older_than is None:
        raise typer.BadParameter("--history needs --older-than", param_hint="'--history'")
    if history and keep is not None:
        raise typer.BadParameter(
            "--keep counts datasets; prune them and the history in two commands",
            param_hint="'--keep'",
        )
    _show(
        ctx, as_json, render.prune_report, operations.prune, keep=keep, older_than=older_than,
        history=history, dry_run=dry_run, tenant=tenant,
    )  # fmt: skip


@app.command()
def due(
    ctx: typer.Context,
    limit: PageLimitOpt = None,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """List the connectors due now, most overdue first (a table shows 50 and says how many
    more).  Example: connector-sync due -n 10"""
    from connector_sync import operations, render

    if as_json:
        rows = _call(ctx, operations.due_connectors, limit, tenant)
        render.print_json(rows)
        return
    page = _call(ctx, operations.due_page, limit or LIST_PAGE, tenant)
    render.connector_page(page, "Due connectors", "--limit N or --json")


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
    timeout: Annotated[float, _run_duration("--timeout")] = 3600.0,
    attempts: Annotated[
        int,
        _count_option("--attempts", max=20, help="Tries per sync when a source fails transiently."),
    ] = 3,
    grace: GraceOpt = 30.0,
    lease_seconds: Annotated[float, _run_duration("--lease-seconds")] = 60.0,
    heartbeat_seconds: Annotated[float, _run_duration("--heartbeat-seconds")] = 20.0,
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
    every: Annotated[float, _run_duration("--every")] = 900.0,
    jitter: Annotated[float, _run_duration("--jitter")] = 0.0,
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

    if heartbeat_seconds >= lease_seconds:
        raise typer.BadParameter(
            "must be shorter than --lease-seconds", param_hint="'--heartbeat-seconds'"
        )
    if connector and limit is not None:
        raise typer.BadParameter(
            "--limit applies to due connectors; with --connector, name fewer connectors",
            param_hint="'--limit'",
        )
    loop_only = [name for name in ("every", "jitter", "max_runs") if _given(ctx, name)]
    if loop_only and not loop:
        flag = "--" + loop_only[0].replace("_", "-")
        raise typer.BadParameter(
            "applies to --loop: add --loop, or leave it out", param_hint=f"'{flag}'"
        )
    if not (connector or loop or dry_run) and operations.nothing_to_run(_url(ctx), tenant):
        # Most scheduled runs: answered before the runner and the plugins are imported.
        _nothing_due(as_json)
        return
    from connector_sync.operations import RunOptions

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
    if not result.syncs:
        _nothing_due(as_json)
    elif as_json:
        render.print_json(result.syncs)
    else:
        render.syncs_table(result.syncs, "Syncs in this run")
    raise typer.Exit(_run_exit_code(result.report))


def _nothing_due(as_json: bool) -> None:
    from connector_sync import render

    if as_json:
        render.print_json([])
    else:
        render.say("Nothing due.")


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
    connector: ConnectorFilterOpt = None,
    status: Annotated[
        str | None,
        typer.Option(
            "--status",
            "-s",
            help=f"Only syncs in this status: {', '.join(constants.SYNC_STATUSES)}.",
        ),
    ] = None,
    limit: Annotated[int, _at_most()] = 20,
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
        _seconds_option(
            "--overdue-after",
            min=1,
            default=3600,
            envvar=f"{ENV}OVERDUE_AFTER",
            help="OVERDUE: due for longer than this",
        ),
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
            "LONG_SYNC (warning): a sync running this long [default: 3x the "
            "connector's median of its last 20 completed syncs, at least 10m].",
            envvar=f"{ENV}LONG_SYNC",
        ),
    ] = None,
    timeout: Annotated[
        float,
        _seconds_option(
            "--timeout",
            min=1,
            default=3600,
            envvar=f"{ENV}TIMEOUT",
            help="SYNC_TIMEOUT (critical): a sync running past this, for connectors without "
            "their own timeout (as run --timeout)",
        ),
    ] = 3600.0,
    window: WindowOpt = 86400.0,
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

    Example (cron): */5 * * * * connector-sync --quiet health --notify slack://T/B/C
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
    window: WindowOpt = 86400.0,
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
    render.note(f"metrics written to {written}")


@app.command()
def alerts(
    ctx: typer.Context,
    connector: ConnectorArg,
    failures_warn: Annotated[
        int | None,
        typer.Option(min=1, max=MAX_COUNT, show_default=False, help="Its FAILING threshold."),
    ] = None,
    long_sync: Annotated[float | None, _long_sync_option("Its LONG_SYNC threshold.")] = None,
    reset: Annotated[
        bool, typer.Option("--reset", help="Forget its thresholds first: health's flags apply.")
    ] = False,
    max_error_rate: Annotated[float | None, _rate_option("Its ERROR_RATE threshold.")] = None,
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
    ctx: typer.Context,
    connector: ConnectorArg,
    preview: Annotated[
        int,
        typer.Option(
            "--preview", "-p", min=0, max=1000, help="Also show the first N records it would sync."
        ),
    ] = 0,
    timeout: Annotated[
        float,
        _seconds_option(
            "--timeout", min=0.1, default=60, help="How long the check may take in all"
        ),
    ] = 60.0,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Check a connector's source without syncing or writing anything.  Exit 1 on failure.

    Example: connector-sync test customers --preview 5
    """
    from connector_sync import operations, render

    check = _show(
        ctx, as_json, render.connector_check, operations.test_connector, connector, tenant,
        preview, timeout,
    )  # fmt: skip
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
def demo(ctx: typer.Context, tenant: NewTenantOpt = DEFAULT_TENANT) -> None:
    """Quickstart: add three demo connectors, sync them once, show the results.

    Example: connector-sync demo
    """
    from connector_sync import operations, render

    result = _call(ctx, operations.demo, tenant)
    render.demo_result(result)
    raise typer.Exit(_run_exit_code(result.run.report))


@app.command()
def serve(
    ctx: typer.Context,
    host: Annotated[
        str, typer.Option("--host", envvar=f"{ENV}HOST", help="Address to listen on.")
    ] = "127.0.0.1",
    port: Annotated[
        int,
        typer.Option(
            "--port", min=0, max=65535, envvar=f"{ENV}PORT", help="Port (0: any free port)."
        ),
    ] = 8000,
    secret_file: Annotated[
        Path | None,
        typer.Option(
            "--secret-file",
            envvar=f"{ENV}SECRET_FILE",
            help="Read the bearer secret from this file instead of CRON_SECRET.",
        ),
    ] = None,
    no_auth: Annotated[
        bool,
        typer.Option("--no-auth", help="No bearer secret; allowed only on a loopback --host."),
    ] = False,
    grace: GraceOpt = 30.0,
) -> None:
    """Serve the HTTP trigger: hosted crons list and sync the due connectors over HTTP.

    Every /api route needs 'Authorization: Bearer $CRON_SECRET'. One process (no
    --workers): runs go in threads, and claims keep several servers and `run`s from
    syncing a connector twice. Exit 0 once stopped (SIGTERM drains runs within --grace),
    2 without a secret or a usable address, 3 without the database.

    Example: CRON_SECRET=... connector-sync serve --host 0.0.0.0 --port 8000
    """
    import os

    from connector_sync import server

    options = server.ServeOptions(
        host=host, port=port, secret_file=secret_file, secret_env=os.environ.get("CRON_SECRET"),
        no_auth=no_auth, grace=grace,
    )  # fmt: skip
    server.serve(_url(ctx), options)


def main() -> None:
    """Console-script entry point."""
    app()


@app.command()
def deploy(
    target: Annotated[Target, typer.Argument(help="The scheduler that starts the runs.")],
    every: Annotated[
        float, duration_option(min=1, default=DEFAULT_EVERY, help="Time between runs.")
    ] = DEFAULT_EVERY,
    limit: LimitOpt = None,
    grace: Annotated[
        float | None,
        duration_option(
            default=DEFAULT_GRACE,
            help="After SIGTERM, how long syncs in flight may finish (systemd, compose, "
            "kubernetes).",
        ),
    ] = None,
    executable: Annotated[
        str | None,
        typer.Option(
            metavar="PATH", help="The connector-sync to run (crontab, systemd) [default: this one]."
        ),
    ] = None,
    workdir: Annotated[
        str | None,
        typer.Option(
            metavar="DIR",
            help="Directory the runs start in, for the default SQLite file and relative "
            "paths (crontab, systemd) [default: the current one].",
        ),
    ] = None,
    env_file: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="File with DATABASE_URL=... and the connectors' secrets (crontab, systemd) "
            f"[default: {DEFAULT_ENV_FILE}].",
        ),
    ] = None,
    log_file: Annotated[
        str | None,
        typer.Option(
            metavar="FILE",
            help="File the runs append their logs to (crontab) "
            "[default: WORKDIR/connector-sync.log].",
        ),
    ] = None,
    user: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="User the runs run as (systemd) [default: you]."),
    ] = None,
    install: Annotated[
        list[str] | None,
        typer.Option(
            metavar="SPEC",
            help="What pip installs, repeat for plugins (github-actions, compose) "
            "[default: connector-sync==VERSION].",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            metavar="IMAGE",
            help="Image built from `deploy compose`'s Dockerfile (kubernetes) "
            "[default: connector-sync:VERSION].",
        ),
    ] = None,
    output: Annotated[
        Path | None,
        typer.Option(
            "--output",
            "-o",
            metavar="PATH",
            help="Write the file there (a directory for several) instead.",
        ),
    ] = None,
) -> None:
    """Print a ready-to-use file that makes a scheduler start `connector-sync run`.

    Example: connector-sync deploy crontab --every 5m --limit 10
    """
    from connector_sync.deploy import DeployOptions, as_text, render, write

    options = DeployOptions(
        every=every, limit=limit, grace=grace, executable=executable, workdir=workdir,
        env_file=env_file, log_file=log_file, user=user, install=tuple(install or ()),
        image=image,
    )  # fmt: skip
    files = render(target, options)
    if output is None:
        typer.echo(as_text(files), nl=False)
    for path in write(files, output) if output else ():
        typer.echo(f"wrote {path}", err=True)
