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

#: The SQLite file used when no database URL is given.
DEFAULT_SQLITE_FILE = "connector-sync.db"
#: Environment variables that name the database, first match wins.
DATABASE_URL_ENVVARS = ("CONNECTOR_SYNC_DATABASE_URL", "DATABASE_URL")
