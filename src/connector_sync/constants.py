"""Status values and defaults, importable without loading SQLAlchemy (the CLI starts fast)."""

from __future__ import annotations

# Status values, as stored.
ACTIVE, SYNCING, ERROR, INACTIVE = "ACTIVE", "SYNCING", "ERROR", "INACTIVE"
CONNECTOR_STATUSES = (ACTIVE, SYNCING, ERROR, INACTIVE)
IN_PROGRESS, COMPLETED, FAILED, CANCELLED = "IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"
SYNC_STATUSES = (IN_PROGRESS, COMPLETED, FAILED, CANCELLED)
BUILDING, READY = "BUILDING", "READY"
DATASET_STATUSES = (BUILDING, READY, FAILED)
TRIGGERS = ("schedule", "manual", "api")

DEFAULT_TENANT = "default"
DEFAULT_SYNC_INTERVAL = 3600
DEFAULT_MAX_CONSECUTIVE_FAILURES = 5
#: READY datasets a connector keeps when a sync completes (0 keeps every one).
DEFAULT_KEEP = 10
#: Upper bounds of what options accept: ten years of seconds, counts and lengths
#: that fit every column on both databases.
MAX_SECONDS = 10 * 365 * 24 * 3600
MAX_COUNT = 1_000_000_000
MAX_NAME_LENGTH = 200

#: A connector as listings and --json show it (config and state only in `show`).
CONNECTOR_KEYS = (
    "id", "tenant", "name", "type", "status", "auto_sync", "sync_interval", "schedule",
    "timezone", "sync_timeout", "keep", "last_sync_at", "last_sync_status", "last_sync_error",
    "next_sync_at", "consecutive_failures", "max_consecutive_failures", "lease_owner",
    "lease_expires_at", "created_at", "updated_at",
)  # fmt: skip
#: A sync as history, run and --json show it.
SYNC_KEYS = (
    "id", "connector_id", "connector_name", "tenant", "status", "trigger", "worker",
    "attempts", "started_at", "completed_at", "duration", "records_fetched",
    "records_processed", "dataset_id", "error", "error_type",
)  # fmt: skip

#: The due predicate's static part, as the partial index ix_connectors_due is declared
#: (models.py): every due query repeats it verbatim, with literals, so both planners can
#: prove the index applies.
DUE_INDEX_PREDICATE_PG = "auto_sync AND status = 'ACTIVE'"
DUE_INDEX_PREDICATE_SQLITE = "auto_sync = 1 AND status = 'ACTIVE'"

#: health lists at most this many OVERDUE connectors, the most overdue (a stopped scheduler
#: makes every connector overdue); `due` and `status` count them all.
HEALTH_OVERDUE_LISTED = 100

#: The SQLite file used when no database URL is given.
DEFAULT_SQLITE_FILE = "connector-sync.db"
#: Environment variables that name the database, first match wins.
DATABASE_URL_ENVVARS = ("CONNECTOR_SYNC_DATABASE_URL", "DATABASE_URL")

#: The JSON type name of each Python type a config field (or a record value) may have.
JSON_TYPE_NAMES: dict[type, str] = {
    str: "string",
    int: "integer",
    float: "number",
    bool: "boolean",
    dict: "object",
    list: "array",
}
#: The same for any JSON value, which may also be null (a record's field, parsed input).
JSON_VALUE_TYPE_NAMES: dict[type, str] = {**JSON_TYPE_NAMES, type(None): "null"}
