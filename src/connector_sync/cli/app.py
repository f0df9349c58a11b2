"""Every command: each parses its options, calls one operation and renders the result."""

from __future__ import annotations

from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

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
from connector_sync.deploy import DEFAULT_ENV_FILE, DEFAULT_EVERY, DEFAULT_GRACE, Target
from connector_sync.durations import duration_option
from connector_sync.exceptions import EXIT_FAILURE, EXIT_OK
from connector_sync.logs import configure_logging
from connector_sync.settings import resolve_database_url

# The modules below pull in SQLAlchemy, alembic and rich; each command imports
# what it needs when it runs, so `--help` and argument errors stay fast.
if TYPE_CHECKING:
    from connector_sync.runner import RunReport

ENV = "CONNECTOR_SYNC_"

app = typer.Typer(
    cls=CommandLine,
    name="connector-sync",
    help="Keep data from many connectors fresh. Run `connector-sync run` from a scheduler.",
    no_args_is_help=True,
    add_completion=False,
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


ConnectorArg = Annotated[str, typer.Argument(help="Connector id or unique name.")]


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
    ctx.obj = resolve_database_url(database_url)


def _url(ctx: typer.Context) -> str:
    return str(ctx.obj)


@db_app.command("upgrade")
def db_upgrade(ctx: typer.Context) -> None:
    """Apply the schema migrations.  Example: connector-sync db upgrade"""
    from connector_sync import render
    from connector_sync.db import Database

    with Database(_url(ctx)) as database:
        database.upgrade()
        render.say(f"database {database.display_url} is at the latest schema", err=True)


@db_app.command("current")
def db_current(ctx: typer.Context, as_json: JsonOpt = False) -> None:
    """Show the schema revision.  Example: connector-sync db current"""
    from connector_sync import render
    from connector_sync.db import SCHEMA_REVISION, Database

    with Database(_url(ctx)) as database:
        revision = database.current_revision()
    document = {
        "revision": revision,
        "expected": SCHEMA_REVISION,
        "current": revision == SCHEMA_REVISION,
    }
    if as_json:
        render.print_json(document)
    else:
        render.say(f"revision {revision or 'none'} (this version needs {SCHEMA_REVISION})")


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

    parsed = operations.parse_config(config, config_file)
    with operations.open_repository(_url(ctx)) as repo:
        connector_id = operations.add_connector(
            repo,
            name=name,
            type_name=type_name,
            config=parsed,
            sync_interval=interval,
            auto_sync=not no_auto_sync,
            tenant=tenant,
            sync_timeout=timeout,
            max_consecutive_failures=max_failures,
        )
    if as_json:
        render.print_json({"id": connector_id})
    else:
        when = "due now" if not no_auto_sync else "auto-sync off: sync it with run --connector"
        render.say(f"added connector {name} (id {connector_id}), {when}")


@app.command("list")
def list_(ctx: typer.Context, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """List connectors.  Example: connector-sync list --json"""
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        rows = repo.list_connectors(tenant)
    render.output(as_json, rows, lambda rows: render.connectors_table(rows, "Connectors"))


@app.command()
def show(
    ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """Show one connector: settings, state, recent syncs, datasets.

    Example: connector-sync show customers
    """
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        view = operations.connector_detail(repo, repo.find_connector(connector, tenant))
    render.output(as_json, view, render.connector_detail)


def _set_auto_sync(ctx: typer.Context, connector: str, tenant: str | None, on: bool) -> None:
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        row = repo.find_connector(connector, tenant)
        repo.set_auto_sync(row["id"], on)
    state = "enabled: ACTIVE and due now" if on else "disabled: no more scheduled syncs"
    render.say(f"connector {row['name']} (id {row['id']}) {state}")


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

    with operations.open_repository(_url(ctx)) as repo:
        row = repo.find_connector(connector, tenant)
        repo.reset_state(row["id"])
    previous = "none" if row["state"] is None else render.json_line(row["state"])
    render.say(
        f"connector {row['name']} (id {row['id']}): state cleared (was {previous}); "
        "the next sync is a full one"
    )


@app.command()
def due(
    ctx: typer.Context, limit: LimitOpt = None, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """List the connectors due now, most overdue first.  Example: connector-sync due -n 10"""
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        rows = repo.due_connectors(limit, tenant)
    render.output(as_json, rows, lambda rows: render.connectors_table(rows, "Due connectors"))


@app.command()
def run(
    ctx: typer.Context,
    limit: LimitOpt = None,
    connector: Annotated[
        list[str] | None,
        typer.Option("--connector", "-c", help="Sync this connector now, due or not (repeat)."),
    ] = None,
    tenant: TenantOpt = None,
    concurrency: Annotated[
        int,
        typer.Option(
            "--concurrency",
            "-j",
            min=1,
            max=64,
            envvar=f"{ENV}CONCURRENCY",
            help="Syncs in parallel in this process.",
        ),
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
        typer.Option(
            min=1,
            max=20,
            envvar=f"{ENV}ATTEMPTS",
            help="Tries per sync when the source fails transiently.",
        ),
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
    as_json: JsonOpt = False,
) -> None:
    """Sync the due connectors (or the ones named).  Exit 1 if any sync failed.

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
    with operations.open_repository(_url(ctx)) as repo:
        ids = operations.resolve_connector_ids(repo, connector, tenant) if connector else None
        options = RunOptions(
            limit=limit, tenant=tenant, connector_ids=ids, concurrency=concurrency,
            timeout=timeout, attempts=attempts, grace=grace, lease_seconds=lease_seconds,
            heartbeat_seconds=heartbeat_seconds, batch_size=batch_size,
        )  # fmt: skip
        report, syncs = operations.run(repo, options)
    if as_json:
        render.print_json(syncs)
    elif syncs:
        render.syncs_table(syncs, "Syncs in this run")
    else:
        render.say("Nothing due.")
    raise typer.Exit(_run_exit_code(report))


def _run_exit_code(report: RunReport) -> int:
    if report.signal is not None:
        return 128 + report.signal
    return EXIT_FAILURE if report.failed or report.lost else EXIT_OK


@app.command()
def history(
    ctx: typer.Context,
    connector: Annotated[
        str | None, typer.Option("--connector", "-c", help="Only this connector.")
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

    if status is not None:
        status = status.upper()
        if status not in SYNC_STATUSES:
            raise typer.BadParameter(
                f"'{status}' is not a sync status; use one of {', '.join(SYNC_STATUSES)}",
                param_hint="'--status'",
            )
    with operations.open_repository(_url(ctx)) as repo:
        connector_id = repo.find_connector(connector, tenant)["id"] if connector else None
        rows = repo.history(
            connector_id=connector_id,
            tenant=tenant,
            limit=limit,
            status=status,
        )
    render.output(as_json, rows, lambda rows: render.syncs_table(rows, "Sync history"))


@app.command()
def status(ctx: typer.Context, tenant: TenantOpt = None, as_json: JsonOpt = False) -> None:
    """Summarise connectors by status, what is due, and the last 24 hours of syncs.

    Example: connector-sync status
    """
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        summary = repo.status_summary(tenant)
    render.output(as_json, summary, render.status_summary)


@app.command()
def health(
    ctx: typer.Context,
    overdue_after: Annotated[
        float,
        _seconds_option(min=1, help="Report connectors due for longer than this (seconds)."),
    ] = 3600.0,
    tenant: TenantOpt = None,
    as_json: JsonOpt = False,
) -> None:
    """Report connectors in ERROR, expired leases and overdue connectors.  Exit 1 if any.

    Example (alerting): connector-sync health --json || notify-oncall
    """
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        problems = repo.health_problems(tenant, overdue_after)
    render.output(as_json, problems, render.health_report)
    raise typer.Exit(EXIT_FAILURE if problems else EXIT_OK)


@app.command()
def test(
    ctx: typer.Context, connector: ConnectorArg, tenant: TenantOpt = None, as_json: JsonOpt = False
) -> None:
    """Check a connector's source without syncing or writing anything.  Exit 1 on failure.

    Example: connector-sync test customers
    """
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        row = repo.find_connector(connector, tenant)
    result = operations.check_connector(row)
    if as_json:
        render.print_json(
            {
                "connector_id": row["id"],
                "connector_name": row["name"],
                "ok": result.ok,
                "message": result.message,
                "details": result.details,
            }
        )
    elif result.ok:
        render.say(("ok", "green"), f" {row['name']}: {result.message}")
    else:
        render.say(("failed", "red"), f" {row['name']}: {result.message}")
    raise typer.Exit(EXIT_OK if result.ok else EXIT_FAILURE)


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
    """Release connectors whose worker died (expired lease); `run` does this first too.

    Example: connector-sync recover
    """
    from connector_sync import operations, render

    with operations.open_repository(_url(ctx)) as repo:
        recovered = repo.recover_expired_leases(tenant)
    if as_json:
        render.print_json(recovered)
    else:
        render.say(f"recovered {len(recovered)} connector(s)")
        for item in recovered:
            render.say(f"  {item['name']} (id {item['id']}): {item['reason']}")


@app.command()
def demo(ctx: typer.Context) -> None:
    """Quickstart: add three demo connectors, sync them once, show the results.

    Example: connector-sync demo
    """
    from connector_sync import operations, render
    from connector_sync.runner import RunOptions

    with operations.open_repository(_url(ctx)) as repo:
        ids = operations.ensure_demo_connectors(repo)
        report, syncs = operations.run(repo, RunOptions(connector_ids=ids))
        connectors = [repo.find_connector(str(i)) for i in ids]
        render.say(f"Database: {repo.db.display_url}")
    render.syncs_table(syncs, "Syncs in this run")
    render.connectors_table(connectors, "Demo connectors")
    render.say(
        "Next: `connector-sync list`, `connector-sync history`, `connector-sync show demo-orders`."
    )
    raise typer.Exit(_run_exit_code(report))


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
