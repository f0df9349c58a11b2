"""The operations behind each command, as library calls the CLI (or a script) can make."""

from __future__ import annotations

import json
import unicodedata
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from connector_sync import secrets
from connector_sync.connectors.base import JSON_VALUE_TYPE_NAMES, CheckResult
from connector_sync.connectors.registry import available_types, load_plugin, secret_fields
from connector_sync.constants import MAX_NAME_LENGTH
from connector_sync.db import Database
from connector_sync.exceptions import BadInput, ConnectorSyncError, PluginError
from connector_sync.models import DEFAULT_MAX_CONSECUTIVE_FAILURES, DEFAULT_TENANT
from connector_sync.render import CONNECTOR_KEYS, SYNC_KEYS, pick
from connector_sync.repository import Repository
from connector_sync.runner import Runner, RunOptions, RunReport

DEMO_CONNECTORS: tuple[tuple[str, dict[str, Any]], ...] = (
    ("demo-customers", {"records": 1000}),
    ("demo-orders", {"records": 5000, "seed": 100000}),
    ("demo-events", {"records": 200, "delay_ms": 1}),
)


@contextmanager
def open_repository(url: str) -> Iterator[Repository]:
    """A repository on a database whose schema is current (SQLite upgrades itself)."""
    with Database(url) as database:
        database.ensure_schema()
        yield Repository(database)


def parse_config(config_json: str | None, config_file: Path | None) -> dict[str, Any]:
    """The connector config from --config or --config-file (a JSON object)."""
    if config_json is not None and config_file is not None:
        raise BadInput("give --config or --config-file, not both")
    if config_file is not None:
        try:
            text = config_file.read_text(encoding="utf-8")
        except OSError as exc:
            raise BadInput(f"--config-file {config_file}: cannot read it: {exc.strerror}") from None
        except UnicodeDecodeError as exc:
            raise BadInput(
                f"--config-file {config_file} is not UTF-8 (byte {exc.start}): save it as UTF-8"
            ) from None
        source = f"--config-file {config_file}"
    elif config_json is not None:
        text, source = config_json, "--config"
    else:
        return {}
    example = """give a JSON object, e.g. '{"records": 100}'"""
    try:
        config = json.loads(text, parse_constant=_reject_constant)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{source} is not valid JSON ({exc.msg} at line {exc.lineno} column {exc.colno}): "
            f"{example}"
        ) from None
    except ValueError as exc:  # NaN, Infinity
        raise BadInput(f"{source} is not valid JSON ({exc}): {example}") from None
    if not isinstance(config, dict):
        kind = JSON_VALUE_TYPE_NAMES[type(config)]  # json.loads makes only these types
        raise BadInput(f"{source} must be a JSON object, got a JSON {kind}: {example}")
    return config


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def check_name(what: str, value: str) -> None:
    """A connector name or tenant: not empty, no surrounding spaces, no control
    characters (any script, emoji and joiners are fine), and it fits its column."""
    shown = json.dumps(value, ensure_ascii=False)  # control characters escaped, text kept
    if not value.strip():
        raise BadInput(f"{what} must not be empty")
    if value != value.strip():
        raise BadInput(f"{what} {shown} has spaces at its start or end: remove them")
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise BadInput(f"{what} {shown} holds a control character (tab, line break…): remove it")
    if len(value) > MAX_NAME_LENGTH:
        raise BadInput(f"{what} is {len(value)} characters long: use at most {MAX_NAME_LENGTH}")


def add_connector(
    repository: Repository,
    *,
    name: str,
    type_name: str,
    config: dict[str, Any],
    sync_interval: int,
    auto_sync: bool = True,
    tenant: str = DEFAULT_TENANT,
    sync_timeout: int | None = None,
    max_consecutive_failures: int = DEFAULT_MAX_CONSECUTIVE_FAILURES,
) -> int:
    """Validate the config against the type's fields, then store the connector (due now)."""
    check_name("NAME", name)
    if name.isdigit():
        raise BadInput(f"NAME '{name}' is all digits and would read as an id: add a letter")
    check_name("--tenant", tenant)
    secrets.check_env_refs(config)
    load_plugin(type_name).validate_config(config)
    return repository.add_connector(
        name=name,
        type=type_name,
        config=config,
        sync_interval=sync_interval,
        auto_sync=auto_sync,
        tenant=tenant,
        sync_timeout=sync_timeout,
        max_consecutive_failures=max_consecutive_failures,
    )


def masked_config(type_name: str, config: dict[str, Any]) -> dict[str, Any]:
    return secrets.mask_config(secret_fields(type_name), config)


def connector_detail(repository: Repository, row: dict[str, Any]) -> dict[str, Any]:
    view = pick(row, CONNECTOR_KEYS)
    view["config"] = masked_config(row["type"], row["config"])
    view["state"] = row["state"]
    view["recent_syncs"] = [
        pick(s, SYNC_KEYS) for s in repository.history(connector_id=row["id"], limit=10)
    ]
    view["datasets"] = repository.datasets_of(row["id"])
    return view


def check_connector(row: dict[str, Any]) -> CheckResult:
    """Run the plugin's check; a plugin error becomes a failed result, nothing is written.

    `env:NAME` references are resolved as a sync would; secrets never reach the result.
    """
    try:
        plugin_cls = load_plugin(row["type"])
        result = plugin_cls(secrets.resolve_env_refs(row["config"]), row["state"]).check()
    except (PluginError, BadInput) as exc:
        result = CheckResult(False, exc.message, {"error_type": type(exc).__name__})
    except Exception as exc:  # a plugin bug must still be reported as a failed check
        result = CheckResult(False, f"{type(exc).__name__}: {exc}", {"error_type": "PluginBug"})
    hidden = secrets.connector_secrets(secret_fields(row["type"]), row["config"])
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


def run(repository: Repository, options: RunOptions) -> tuple[RunReport, list[dict[str, Any]]]:
    """One run; returns the report and the syncs it recorded, as history rows."""
    report = Runner(repository.db, options).run(handle_signals=True)
    return report, [pick(s, SYNC_KEYS) for s in repository.syncs_by_id(report.sync_ids)]


def resolve_connector_ids(
    repository: Repository, refs: Sequence[str], tenant: str | None
) -> list[int]:
    ids: list[int] = []
    for ref in refs:
        connector_id = repository.find_connector(ref, tenant)["id"]
        if connector_id not in ids:
            ids.append(connector_id)
    return ids


def ensure_demo_connectors(repository: Repository) -> list[int]:
    """The quickstart's demo connectors, created the first time."""
    existing = {r["name"]: r["id"] for r in repository.list_connectors(DEFAULT_TENANT)}
    ids = []
    for name, config in DEMO_CONNECTORS:
        if name not in existing:
            existing[name] = add_connector(
                repository, name=name, type_name="demo", config=config, sync_interval=3600
            )
        ids.append(existing[name])
    return ids
