"""How results look: rich tables for people, JSON documents for scripts."""

from __future__ import annotations

import datetime as dt
import json
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import fields, is_dataclass
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from connector_sync.constants import CONNECTOR_KEYS

if TYPE_CHECKING:
    from connector_sync.connectors.base import CheckResult
    from connector_sync.operations import (
        ConnectorCheck,
        ConnectorDetail,
        DatasetDetail,
        DeletePlan,
        DeleteResult,
        DemoResult,
        EditResult,
        ExportResult,
        NewConnector,
        PruneResult,
        SchemaRevision,
    )
    from connector_sync.store.base import (
        ConnectorSummary,
        Dataset,
        HealthProblem,
        RecoveredLease,
        StatusSummary,
        Sync,
    )

# markup=False: names, errors and configs are user data and are never parsed as rich
# markup ("[/]" in a name must not crash a listing); styles come from Text objects.
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

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


def iso(value: dt.datetime | None) -> str | None:
    """ISO-8601 UTC with a Z, or None."""
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def jsonable(value: Any) -> Any:
    """`value` as plain JSON: times in ISO-8601 UTC, typed rows as objects (a result's own
    `to_document()` where it has one, which decides what is shown)."""
    if isinstance(value, dt.datetime):
        return iso(value)
    if hasattr(value, "to_document"):
        return jsonable(value.to_document())
    if is_dataclass(value) and not isinstance(value, type):
        return {f.name: jsonable(getattr(value, f.name)) for f in fields(value)}
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [jsonable(v) for v in value]
    return value


class Output:
    """What this process prints on stdout (set once by the CLI's global options)."""

    #: --quiet: nothing on stdout (logs still go to stderr).
    quiet = False
    #: Tables and messages for people; off when stdout is not a terminal and logs are JSON
    #: lines (a log file must not mix JSON lines with box-drawn tables). --json still prints.
    tables = True


def _show(renderable: Any) -> None:
    if Output.tables and not Output.quiet:
        console.print(renderable)


def print_json(document: Any) -> None:
    if not Output.quiet:
        sys.stdout.write(json.dumps(jsonable(document), indent=2, ensure_ascii=False) + "\n")


def json_line(document: Any) -> str:
    return json.dumps(jsonable(document), ensure_ascii=False)


def output(as_json: bool, document: Any, table: Callable[[Any], None]) -> None:
    """The one choice every read command makes: a JSON document, or a table for people."""
    if as_json:
        print_json(document)
    else:
        table(document)


def say(*parts: str | tuple[str, str], err: bool = False) -> None:
    """One message line, never wrapped (scripts grep it), never parsed as markup.

    Each part is plain text or (text, style): `say(("ok", "green"), " ", name)`.
    """
    if err:
        err_console.print(Text.assemble(*parts), soft_wrap=True)
    elif Output.tables and not Output.quiet:
        console.print(Text.assemble(*parts), soft_wrap=True)


def _style(status: str | None) -> Text:
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


def _short(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    return text if len(text) <= width else text[: width - 1] + "…"


# Below this terminal width the tables drop secondary columns and shorten times, so
# names and statuses stay whole on an 80-column terminal.
_WIDE = 120


def _narrow() -> bool:
    return console.width < _WIDE


def _when_short(value: dt.datetime | None) -> str:
    if value is None:
        return "-"
    fmt = "%m-%d %H:%M" if _narrow() else "%Y-%m-%d %H:%M:%S"
    return value.astimezone(dt.UTC).strftime(fmt)


def _columns(table: Table, *columns: tuple[str, dict[str, Any]]) -> None:
    for name, options in columns:
        table.add_column(name, **options)


def connectors_table(rows: Sequence[ConnectorSummary], title: str) -> None:
    if not rows:
        say(f"{title}: none.")
        return
    tenants = len({r.tenant for r in rows}) > 1 or rows[0].tenant != "default"
    whole = {"no_wrap": True}
    table = Table(title=title, title_justify="left")
    _columns(
        table,
        ("ID", whole),
        *((("Tenant", whole),) if tenants else ()),
        ("Name", whole),
        ("Type", whole),
        ("Status", whole),
        ("Every", whole),
        ("Last sync (UTC)", {}),
        ("Next sync (UTC)", {}),
        ("Fails", {"justify": "right"}),
    )
    for r in rows:
        last = Text.assemble(_when_short(r.last_sync_at), " ", _style(r.last_sync_status))
        table.add_row(
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
    _show(table)


def syncs_table(rows: Sequence[Sync], title: str) -> None:
    if not rows:
        say(f"{title}: none.")
        return
    narrow = _narrow()
    errors = any(r.error for r in rows)
    whole = {"no_wrap": True}
    number = {"justify": "right", "no_wrap": True}
    table = Table(title=title, title_justify="left")
    _columns(
        table,
        ("Sync", whole),
        ("Connector", whole),
        ("Status", whole),
        *(() if narrow else (("Trigger", whole),)),
        ("Started (UTC)", whole),
        ("Took", number),
        *(() if narrow else (("Fetched", number),)),
        ("Stored", number),
        *(() if narrow else (("Dataset", whole),)),
        *((("Error", {"overflow": "fold", "min_width": 30}),) if errors and not narrow else ()),
    )
    for r in rows:
        duration = r.duration
        table.add_row(
            str(r.id),
            r.connector_name if narrow else f"{r.connector_name} ({r.connector_id})",
            _style(r.status),
            *(() if narrow else (r.trigger,)),
            _when_short(r.started_at),
            "-" if duration is None else f"{duration:.2f}s",
            *(() if narrow else (f"{r.records_fetched:,}",)),
            f"{r.records_processed:,}",
            *(() if narrow else ("-" if r.dataset_id is None else str(r.dataset_id),)),
            *((_short(r.error, 120),) if errors and not narrow else ()),
        )
    _show(table)
    if narrow:  # errors get the whole width below the table
        for r in rows:
            if r.error:
                say(f"sync {r.id} ({r.connector_name}): {r.error}")


def types_table(types: Sequence[Mapping[str, Any]]) -> None:
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
    connector = view.connector
    table = Table(show_header=False, title=f"Connector {connector.name}", title_justify="left")
    table.add_column("Field", style="bold")
    table.add_column("Value")
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
    table = Table(show_header=False, title="connector-sync status", title_justify="left")
    table.add_column("What", style="bold")
    table.add_column("Value")
    table.add_row(
        "connectors",
        Text.assemble(f"{summary.connectors_total} (", _counts(summary.connectors), ")"),
    )
    table.add_row("due now", str(summary.due_now))
    table.add_row("oldest due since (UTC)", _when(summary.oldest_due_since))
    table.add_row("syncs, last 24 h", _counts(summary.syncs_last_24h))
    table.add_row("records stored, last 24 h", f"{summary.records_last_24h:,}")
    _show(table)


def _counts(by_status: Mapping[str, int]) -> Text:
    """`ACTIVE 3, ERROR 1`, each status in its colour; `none` when empty."""
    if not by_status:
        return Text("none")
    return Text(", ").join(Text.assemble(_style(k), f" {v}") for k, v in by_status.items())


def health_report(problems: Sequence[HealthProblem]) -> None:
    if not problems:
        say(("healthy", "green"), ": no connector in ERROR, no expired lease, none overdue")
        return
    table = Table(title=f"{len(problems)} problem(s)", title_justify="left")
    for column in ("Problem", "Connector", "Detail"):
        table.add_column(column)
    for p in problems:
        table.add_row(
            Text(p.problem, style="red"), f"{p.connector_name} ({p.connector_id})", p.detail
        )
    _show(table)


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
