"""How results look: rich tables for people, JSON documents for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from connector_sync.constants import CONNECTOR_KEYS, HEALTH_OVERDUE_LISTED
from connector_sync.documents import JsonArray, json_text
from connector_sync.documents import iso as iso
from connector_sync.documents import jsonable as jsonable
from connector_sync.durations import human_seconds

if TYPE_CHECKING:
    from rich.console import Console
    from rich.table import Table
    from rich.text import Text

    from connector_sync.connectors.base import CheckResult
    from connector_sync.operations import (
        ConnectorAlerts,
        ConnectorCheck,
        ConnectorDetail,
        ConnectorPage,
        DatasetDetail,
        DeletePlan,
        DeleteResult,
        DemoResult,
        EditResult,
        ExportResult,
        HealthReport,
        NewConnector,
        PruneResult,
        SchemaRevision,
    )
    from connector_sync.store.base import (
        ConnectorSummary,
        Dataset,
        RecoveredLease,
        RunningSync,
        StatusSummary,
        Sync,
    )


def _console(err: bool = False) -> Console:
    """The stdout (or stderr) console, made on first use: rich is imported only by what
    prints a table or a styled line, not by --json or a plain message.

    markup=False: names, errors and configs are user data and are never parsed as rich
    markup ("[/]" in a name must not crash a listing); styles come from Text objects.
    """
    name = "err_console" if err else "console"
    made: Console | None = globals().get(name)
    if made is None:
        from rich.console import Console

        made = globals()[name] = Console(stderr=err, markup=False)
    return made


def __getattr__(name: str) -> Any:
    # render.console / render.err_console for the progress display and tests.
    if name in ("console", "err_console"):
        return _console(err=name == "err_console")
    raise AttributeError(name)


_STATUS_STYLE = {
    "ACTIVE": "green",
    "COMPLETED": "green",
    "READY": "green",
    "SYNCING": "cyan",
    "IN_PROGRESS": "cyan",
    "BUILDING": "cyan",
    "ERROR": "bold red",
    "FAILED": "red",
    "CANCELLED": "yellow",
    "INACTIVE": "dim",
}


class Output:
    """What this process prints on stdout (set once by the CLI's global options)."""

    #: --quiet: nothing on stdout (logs still go to stderr).
    quiet = False
    #: Tables and messages for people; off when stdout is not a terminal and logs are JSON
    #: lines (a log file must not mix JSON lines with box-drawn tables). --json still prints.
    tables = True


def _show(renderable: Any) -> None:
    if Output.tables and not Output.quiet:
        _console().print(renderable)


def print_json(document: Any) -> None:
    if not Output.quiet:
        sys.stdout.write(json_text(document) + "\n")


def json_array() -> JsonArray:
    """print_json's format for a listing that comes in chunks (`list --all --json`): on
    stdout, or nowhere with --quiet."""
    return JsonArray(None if Output.quiet else sys.stdout)


def print_text(text: str) -> None:
    """Text for programs (the metrics exposition): as it is, unless --quiet."""
    if not Output.quiet:
        sys.stdout.write(text if text.endswith("\n") else text + "\n")


def json_line(document: Any) -> str:
    return json.dumps(jsonable(document), ensure_ascii=False)


def output(as_json: bool, document: Any, table: Callable[[Any], None]) -> None:
    """The one choice every read command makes: a JSON document, or a table for people."""
    if as_json:
        print_json(document)
    else:
        table(document)


def note(text: str) -> None:
    """A line on stderr saying what was done, left out with --quiet: under cron, any
    output is mailed, so a quiet job that did its usual work prints nothing."""
    if not Output.quiet:
        say(text, err=True)


def say(*parts: str | tuple[str, str], err: bool = False) -> None:
    """One message line, never wrapped (scripts grep it), never parsed as markup.

    Each part is plain text or (text, style): `say(("ok", "green"), " ", name)`.
    """
    if not err and not (Output.tables and not Output.quiet):
        return
    plain = [part for part in parts if isinstance(part, str)]
    if not err and len(plain) == len(parts):
        sys.stdout.write("".join(plain) + "\n")  # what rich prints for it, without rich
        return
    from rich.text import Text

    _console(err=err).print(Text.assemble(*parts), soft_wrap=True)


def _style(status: str | None) -> Text:
    from rich.text import Text

    if status is None:
        return Text("")
    return Text(status, style=_STATUS_STYLE.get(status, ""))


def _when(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    return value.astimezone(dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def _next_sync(row: ConnectorSummary) -> str:
    """The next scheduled sync, or why there is none."""
    if not row.auto_sync:
        return "- (auto-sync off)"
    if row.status == "ERROR":
        return "- (ERROR: enable)"
    if row.status == "SYNCING":
        return "- (syncing)"
    if row.status == "INACTIVE":
        return "- (inactive)"
    return _when_short(row.next_sync_at)


def every(row: ConnectorSummary) -> str:
    """How often it runs: its schedule (and time zone), or its interval."""
    if row.schedule:
        when = f"{row.schedule} ({row.timezone})" if row.timezone else row.schedule
    else:
        when = f"{row.sync_interval}s"
    return when if row.auto_sync else f"off ({when})"


def _columns(table: Table, *columns: tuple[str, dict[str, Any]]) -> None:
    for name, options in columns:
        table.add_column(name, **options)


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


# Below this terminal width, times are shortened (month-day hour:minute).
_WIDE = 120


def _narrow() -> bool:
    return _console().width < _WIDE


def _when_short(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    fmt = "%m-%d %H:%M" if _narrow() else "%Y-%m-%d %H:%M:%S"
    return value.astimezone(dt.UTC).strftime(fmt)


# -- tables that fit the terminal ------------------------------------------------------------


@dataclass(frozen=True)
class Col:
    """A column of a table that fits the terminal."""

    header: str
    #: 0: always shown. Otherwise, when the table is too wide, the column with the highest
    #: `drop` goes first (a text column to lines of its own below the table).
    drop: int = 0
    #: Long text (an error, a detail): wraps between words, never cut; it needs at least
    #: the width of its longest word.
    text: bool = False
    justify: str = "left"


#: A table's border and padding: 3 columns per column, and 1.
def _table_width(widths: Sequence[int]) -> int:
    return sum(widths) + 3 * len(widths) + 1


def _plain(cell: str | Text) -> str:
    from rich.text import Text

    return cell.plain if isinstance(cell, Text) else cell


def _natural(col: Col, cells: Sequence[str | Text]) -> int:
    """The width a column needs to show every cell on one line."""
    from rich.cells import cell_len

    lines = [line for cell in cells for line in _plain(cell).splitlines()]
    return max([cell_len(col.header), *map(cell_len, lines)])


def _least(col: Col, cells: Sequence[str | Text]) -> int:
    """The narrowest a column may be: a text column's longest word, others whole."""
    from rich.cells import cell_len

    if not col.text:
        return _natural(col, cells)
    words = [word for cell in cells for word in _plain(cell).split()]
    return max([cell_len(col.header), 10, *map(cell_len, words)])


def fitted_table(
    title: str,
    columns: Sequence[Col],
    rows: Sequence[Sequence[str | Text]],
    below: Callable[[int, str], str] | None = None,
) -> None:
    """Print a table that never cuts a cell: secondary columns are left out while it does
    not fit the terminal, text columns wrap between words, and a text column with a word
    too long for the width left is printed below the table instead, one whole line per
    row (`below(row index, text)`). When even the essential columns do not fit, each row
    is printed as one line of `Header: value` pairs instead of a table."""
    width = _console().width
    cells = [[row[i] for row in rows] for i in range(len(columns))]
    shown = list(range(len(columns)))
    moved: list[int] = []

    def needed() -> int:
        return _table_width([_least(columns[i], cells[i]) for i in shown])

    while needed() > width:
        # The column with the highest `drop` goes first: a text column to lines of its own
        # below the table, any other out of sight.
        droppable = [i for i in shown if columns[i].drop]
        if not droppable:
            listed = sorted(shown + moved)
            table_rows = [[row[i] for i in listed] for row in rows]
            _rows_as_lines(title, [columns[i] for i in listed], table_rows)
            return
        dropping = max(droppable, key=lambda i: columns[i].drop)
        shown.remove(dropping)
        if columns[dropping].text:
            moved.append(dropping)
    _fitting_table(title, [columns[i] for i in shown], [cells[i] for i in shown], rows, shown)
    for i in moved:
        for index, cell in enumerate(cells[i]):
            if _plain(cell):
                say(below(index, _plain(cell)) if below else _plain(cell))


def _rows_as_lines(
    title: str, columns: Sequence[Col], rows: Sequence[Sequence[str | Text]]
) -> None:
    """When even the essential columns do not fit the terminal: each row as one line of
    `Header: value` pairs, which the terminal wraps (nothing is cut)."""
    say(f"{title}:")
    for row in rows:
        say(
            "  ".join(
                f"{col.header}: {_plain(cell)}" for col, cell in zip(columns, row, strict=True)
            )
        )


def _fitting_table(
    title: str,
    columns: Sequence[Col],
    cells: Sequence[Sequence[str | Text]],
    rows: Sequence[Sequence[str | Text]],
    shown: Sequence[int],
) -> None:
    from rich.table import Table

    table = Table(title=title, title_justify="left")
    for col, column_cells in zip(columns, cells, strict=True):
        if col.text:
            table.add_column(
                col.header,
                justify=col.justify,  # type: ignore[arg-type]
                overflow="fold",
                ratio=1,
                min_width=_least(col, column_cells),
            )
        else:
            table.add_column(
                col.header,
                justify=col.justify,  # type: ignore[arg-type]
                no_wrap=True,
                min_width=_natural(col, column_cells),
            )
    for row in rows:
        table.add_row(*(row[i] for i in shown))
    _show(table)


def _several_tenants(rows: Sequence[ConnectorSummary] | Sequence[Sync]) -> bool:
    """Whether a listing needs a Tenant column: more than one, or not the default."""
    return len({r.tenant for r in rows}) > 1 or rows[0].tenant != "default"


def connector_page(
    page: ConnectorPage, title: str = "Connectors", see_more: str = "--limit N or --all"
) -> None:
    """`list`, `due`: a page of connectors, and how to see the ones it leaves out."""
    connectors_table(page.rows, title)
    if page.more:
        say(f"{page.more:,} more — use {see_more}")


def connectors_table(rows: Sequence[ConnectorSummary], title: str) -> None:
    from rich.text import Text

    if not rows:
        say(f"{title}: none.")
        return
    tenants = _several_tenants(rows)
    columns = [
        Col("ID"),
        *((Col("Tenant"),) if tenants else ()),
        Col("Name"),
        Col("Type", drop=2),
        Col("Status"),
        Col("Every", drop=3),
        Col("Last sync (UTC)", drop=1),
        Col("Next sync (UTC)"),
        Col("Fails", justify="right", drop=4),
    ]
    table_rows = []
    for r in rows:
        last = Text.assemble(_when_short(r.last_sync_at), " ", _style(r.last_sync_status))
        table_rows.append(
            (
                str(r.id),
                *((r.tenant,) if tenants else ()),
                r.name,
                r.type,
                _style(r.status),
                every(r),
                last if r.last_sync_at else "never",
                _next_sync(r),
                str(r.consecutive_failures),
            )
        )
    fitted_table(title, columns, table_rows)


def _took(sync: Sync) -> str:
    """How long a sync took, or has been running."""
    if sync.duration is not None:
        return f"{sync.duration:.2f}s"
    if sync.elapsed is not None:  # still running: this long so far
        return f"{human_seconds(sync.elapsed)}+"
    return "-"


def syncs_table(rows: Sequence[Sync], title: str) -> None:
    if not rows:
        say(f"{title}: none.")
        return
    errors = any(r.error for r in rows)
    tenants = _several_tenants(rows)
    columns = [
        Col("Sync"),
        *((Col("Tenant"),) if tenants else ()),
        Col("Connector"),
        Col("Status"),
        Col("Trigger", drop=5),
        Col("Started (UTC)", drop=2),
        Col("Took", justify="right"),
        Col("Fetched", justify="right", drop=4),
        Col("Stored", justify="right"),
        Col("Dataset", drop=6),
        *((Col("Error", text=True, drop=3),) if errors else ()),
    ]
    table_rows = [
        (
            str(r.id),
            *((r.tenant,) if tenants else ()),
            r.connector_name,
            _style(r.status),
            r.trigger,
            _when_short(r.started_at),
            _took(r),
            f"{r.records_fetched:,}",
            f"{r.records_processed:,}",
            "-" if r.dataset_id is None else str(r.dataset_id),
            *((r.error or "",) if errors else ()),
        )
        for r in rows
    ]
    fitted_table(
        title,
        columns,
        table_rows,
        below=lambda i, error: f"sync {rows[i].id} ({rows[i].connector_name}): {error}",
    )


def types_table(types: Sequence[Mapping[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="Connector types", title_justify="left")
    table.add_column("Type")
    table.add_column("Description")
    table.add_column("Config fields (* required)")
    for t in types:
        fields = []
        for f in t["fields"]:
            text = f"{f['name']}{'*' if f['required'] else ''}{' (secret)' if f['secret'] else ''}"
            text += f": {f['type']}"
            if f["default"] not in (None, ""):
                text += f" = {json.dumps(f['default'])}"
            text += _bounds(f.get("minimum"), f.get("maximum"))
            fields.append(text)
        table.add_row(t["type"], t["description"], "\n".join(fields))
    _show(table)


def _bounds(low: float | None, high: float | None) -> str:
    """`, >= 0`, `, 0.001 to 86400`: a number field's range as `types` shows it."""

    def number(value: float) -> str:
        return f"{int(value):,}" if float(value).is_integer() else f"{value:g}"

    if low is not None and high is not None:
        return f", {number(low)} to {number(high)}"
    if low is not None:
        return f", >= {number(low)}"
    if high is not None:
        return f", <= {number(high)}"
    return ""


def connector_detail(view: ConnectorDetail) -> None:
    from rich.table import Table
    from rich.text import Text

    connector = view.connector
    table = Table(show_header=False, title=f"Connector {connector.name}", title_justify="left")
    table.add_column("Field", style="bold")
    table.add_column("Value", overflow="fold")  # a long URL folds, never cut short
    for key in CONNECTOR_KEYS:
        value = getattr(connector, key)
        if isinstance(value, dt.datetime):
            value = _when(value)
        elif key in ("status", "last_sync_status"):
            value = _style(value)
        table.add_row(
            key, "-" if value is None else value if isinstance(value, Text) else str(value)
        )
    table.add_row("config", json.dumps(view.config, indent=2))  # masked
    table.add_row("state", json.dumps(connector.state))
    _show(table)
    syncs_table(view.recent_syncs, "Recent syncs")
    datasets = view.datasets
    if datasets:
        dtable = Table(title="Datasets", title_justify="left")
        for column in ("ID", "Name", "Status", "Records", "Created (UTC)"):
            dtable.add_column(column)
        for d in datasets:
            dtable.add_row(
                str(d.id), d.name, _style(d.status), f"{d.record_count:,}", _when(d.created_at)
            )
        _show(dtable)


def status_summary(summary: StatusSummary) -> None:
    from rich.table import Table
    from rich.text import Text

    table = Table(show_header=False, title="connector-sync status", title_justify="left")
    table.add_column("What", style="bold")
    table.add_column("Value", overflow="fold")  # a long URL folds, never cut short
    table.add_row(
        "connectors",
        Text.assemble(f"{summary.connectors_total} (", _counts(summary.connectors), ")"),
    )
    table.add_row("due now", str(summary.due_now))
    table.add_row("oldest due since (UTC)", _when(summary.oldest_due_since))
    table.add_row("syncs, last 24 h", _counts(summary.syncs_last_24h))
    table.add_row("records stored, last 24 h", f"{summary.records_last_24h:,}")
    table.add_row("syncing now", str(len(summary.syncing)))
    _show(table)
    if summary.syncing:
        running_table(summary.syncing)


def running_table(running: Sequence[RunningSync]) -> None:
    """What is syncing now: records so far (as of the latest heartbeat), rate, elapsed."""
    columns = [
        Col("Sync"),
        Col("Connector"),
        Col("Worker", drop=3),
        Col("Started (UTC)", drop=2),
        Col("Elapsed", justify="right"),
        Col("Records", justify="right"),
        Col("Rate", justify="right", drop=1),
        Col("Usually", justify="right", drop=4),
    ]
    rows = [
        (
            str(r.sync_id),
            f"{r.connector_name} ({r.connector_id})",
            r.worker or "-",
            _when_short(r.started_at),
            human_seconds(r.elapsed),
            f"{r.records_processed:,}",
            f"{r.rate:,.0f}/s",
            "-" if r.typical_duration is None else human_seconds(r.typical_duration),
        )
        for r in running
    ]
    fitted_table("Syncing now", columns, rows)


def _counts(by_status: Mapping[str, int]) -> Text:
    """`ACTIVE 3, ERROR 1`, each status in its colour; `none` when empty."""
    from rich.text import Text

    if not by_status:
        return Text("none")
    return Text(", ").join(Text.assemble(_style(k), f" {v}") for k, v in by_status.items())


_SEVERITY_STYLE = {"critical": "bold red", "warning": "yellow"}
#: Problems `health` shows in its table (a screenful), the critical ones first; the rest
#: are counted by kind (a thousand connectors in ERROR is one look, not a thousand rows).
HEALTH_ROWS = 20


def health_report(report: HealthReport) -> None:
    from rich.text import Text

    problems = report.problems
    if not problems:
        say(("healthy", "green"), ": no problem found (", _when(report.checked_at), " UTC)")
    else:
        critical = sum(p.severity == "critical" for p in problems)
        title = (
            f"{len(problems)} problem(s): {critical} critical, {len(problems) - critical} warning"
        )
        columns = [
            Col("Severity"),
            Col("Problem"),
            Col("Connector"),
            Col("Detail", text=True, drop=1),
        ]
        rows = [
            (
                Text(p.severity, style=_SEVERITY_STYLE.get(p.severity, "")),
                p.problem,
                "(all)" if p.connector_id is None else f"{p.connector_name} ({p.connector_id})",
                p.detail,
            )
            for p in problems[:HEALTH_ROWS]
        ]
        fitted_table(
            title, columns, rows, below=lambda i, detail: f"{rows[i][1]} on {rows[i][2]}: {detail}"
        )
        if len(problems) > HEALTH_ROWS:
            hidden = Counter(p.problem for p in problems[HEALTH_ROWS:])
            kinds = ", ".join(f"{kind} {count:,}" for kind, count in hidden.items())
            say(f"{sum(hidden.values()):,} more ({kinds}) — health --json lists them")
        if sum(p.problem == "OVERDUE" for p in problems) >= HEALTH_OVERDUE_LISTED:
            say(
                f"OVERDUE: the {HEALTH_OVERDUE_LISTED} most overdue connectors are listed, "
                "there may be more — 'connector-sync due' shows how many are due"
            )
    delivery = report.delivery
    if delivery is not None and (delivery.sent or delivery.failed or not Output.quiet):
        say(
            f"notified: {len(delivery.sent)} message(s) sent"
            + (f", {len(delivery.failed)} not delivered (tried again next run)"
               if delivery.failed else "")
            + f" via {', '.join(delivery.urls)}",
            err=True,
        )  # fmt: skip


def connector_alerts(alerts: ConnectorAlerts) -> None:
    t = alerts.thresholds

    def shown(value: object, flag: str) -> str:
        return f"from health's {flag}" if value is None else str(value)

    say(f"alert thresholds of {alerts.connector.name} (id {alerts.connector.id}):")
    say(f"  failures-warn:  {shown(t.failures_warn, '--failures-warn')}")
    say(
        "  long-sync:      "
        + shown(None if t.long_sync is None else f"{t.long_sync}s", "--long-sync")
    )
    say(f"  max-error-rate: {shown(t.max_error_rate, '--max-error-rate')}")


def would_sync(rows: Sequence[ConnectorSummary]) -> None:
    connectors_table(rows, "Would sync (dry run, nothing claimed)")


def connector_check(check: ConnectorCheck) -> None:
    result: CheckResult = check.result
    verdict = ("ok", "green") if result.ok else ("failed", "red")
    say(verdict, f" {check.connector.name}: {result.message}")
    if check.preview is not None:
        say(f"first {len(check.preview)} record(s) it would sync (nothing written):")
        records_lines(check.preview)


def records_lines(records: Sequence[Any]) -> None:
    """Records, one JSON line each (never wrapped, never parsed as markup)."""
    for record in records:
        say(json_line(record))


def recovered_leases(recovered: Sequence[RecoveredLease]) -> None:
    say(f"recovered {len(recovered)} connector(s)")
    for item in recovered:
        say(f"  {item.name} (id {item.id}): {item.reason}")


def demo_result(result: DemoResult) -> None:
    say(f"Database: {result.database}")
    syncs_table(result.run.syncs, "Syncs in this run")
    connectors_table(result.connectors, "Demo connectors")
    for note in result.notes:
        say(("note", "yellow"), f": {note}")
    say("Next: `connector-sync list`, `connector-sync history`, `connector-sync show demo-orders`.")


def schema_revision(revision: SchemaRevision) -> None:
    say(f"revision {revision.revision or 'none'} (this version needs {revision.expected})")


def added(new: NewConnector, connector_id: int) -> None:
    if not new.auto_sync:
        when = "auto-sync off: sync it with run --connector"
    elif new.schedule:
        when = f"runs on schedule {new.schedule} ({new.timezone or 'UTC'})"
    else:
        when = "due now"
    say(f"added connector {new.name} (id {connector_id}), {when}")


def edit_result(result: EditResult) -> None:
    connector = result.connector
    if not result.changed:
        say(f"connector {connector.name} (id {connector.id}): nothing changed")
    else:
        say(f"edited connector {connector.name} (id {connector.id}): {', '.join(result.changed)}")
        if "config" in result.changed:
            say(f"  config: {json_line(result.config)}")  # masked
        say(f"  runs: {every(connector)}; next sync (UTC): {_next_sync(connector)}")
    for note in result.notes:
        say(("note", "yellow"), f": {note}")


def deletion_question(plan: DeletePlan) -> str:
    connector, counts = plan.connector, plan.counts
    if plan.keep_data:
        return (
            f"Make connector {connector.name} (id {connector.id}) INACTIVE, keeping its "
            f"{counts.syncs} syncs and {counts.datasets} datasets?"
        )
    return (
        f"Delete connector {connector.name} (id {connector.id}) with its {counts.syncs} syncs, "
        f"{counts.datasets} datasets and {counts.records:,} records?"
    )


def deleted(result: DeleteResult) -> None:
    if result.deleted:
        say(
            f"deleted connector {result.name} (id {result.id}): {result.syncs} syncs, "
            f"{result.datasets} datasets, {result.records:,} records removed"
        )
    else:
        say(
            f"connector {result.name} (id {result.id}) is INACTIVE: never scheduled, shown by "
            f"'list --all'; its {result.syncs} syncs and {result.datasets} datasets are kept"
        )


def _fields(schema: Mapping[str, Any] | None) -> str:
    return ", ".join(schema or {}) or "-"


def datasets_table(rows: Sequence[Dataset]) -> None:
    from rich.table import Table

    if not rows:
        say("Datasets: none.")
        return
    table = Table(title="Datasets", title_justify="left")
    _columns(
        table,
        ("ID", {"no_wrap": True}),
        ("Connector", {"no_wrap": True}),
        ("Status", {"no_wrap": True}),
        ("Records", {"justify": "right", "no_wrap": True}),
        ("Fields", {"overflow": "fold"}),
        ("Created (UTC)", {"no_wrap": True}),
    )
    for d in rows:
        table.add_row(
            str(d.id),
            f"{d.connector_name} ({d.connector_id})",
            _style(d.status),
            f"{d.record_count:,}",
            _short(_fields(d.schema), 80),
            _when_short(d.created_at),
        )
    _show(table)


def dataset_detail(view: DatasetDetail) -> None:
    from rich.table import Table

    d = view.dataset
    say(
        f"dataset {d.id} of connector {d.connector_name} ({d.connector_id}): {d.status}, "
        f"{d.record_count:,} records, created {_when(d.created_at)} UTC"
    )
    table = Table(title="Schema", title_justify="left")
    _columns(table, ("Field", {}), ("JSON types", {}))
    for name, kinds in (d.schema or {}).items():
        table.add_row(name, ", ".join(kinds))
    _show(table)
    if view.records:
        say(f"first {len(view.records)} record(s):")
        records_lines(view.records)


def exported(result: ExportResult, path: str) -> None:
    d = result.dataset
    say(
        f"exported {result.records:,} records of dataset {d.id} ({d.connector_name}) "
        f"as {result.format} to {path}",
        err=True,
    )


def prune_report(result: PruneResult) -> None:
    from rich.table import Table

    verb = "would remove" if result.dry_run else "removed"
    if result.kind == "history":
        table = Table(title="Sync history", title_justify="left")
        _columns(table, ("Connector", {}), ("Syncs", {"justify": "right"}))
        for h in result.history:
            table.add_row(f"{h.connector_name} ({h.connector_id})", f"{h.syncs:,}")
        _show(table)
        say(f"{verb} {result.syncs:,} syncs from the history")
        return
    if result.datasets:
        table = Table(title="Datasets", title_justify="left")
        _columns(
            table, ("ID", {}), ("Connector", {}), ("Records", {"justify": "right"}),
            ("Created (UTC)", {}), ("Why", {}),
        )  # fmt: skip
        for p in result.datasets:
            table.add_row(
                str(p.id), f"{p.connector_name} ({p.connector_id})", f"{p.record_count:,}",
                _when_short(p.created_at), _PRUNE_REASONS.get(p.reason, p.reason),
            )  # fmt: skip
        _show(table)
    say(f"{verb} {len(result.datasets)} datasets ({result.records:,} records)")


_PRUNE_REASONS = {
    "keep": "beyond the newest kept",
    "age": "older than asked",
    "unfinished": "removal cut short earlier",
}
