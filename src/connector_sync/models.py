"""The database schema: tables, indexes and the column types shared by both dialects."""

from __future__ import annotations

import datetime as dt
from typing import Any

import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import JSONB

UTC = dt.UTC

from connector_sync.constants import (  # noqa: E402 - re-exported for the schema's users
    ACTIVE,
    BUILDING,
    CANCELLED,
    COMPLETED,
    CONNECTOR_STATUSES,
    DATASET_STATUSES,
    DEFAULT_KEEP,
    DEFAULT_MAX_CONSECUTIVE_FAILURES,
    DEFAULT_SYNC_INTERVAL,
    DEFAULT_TENANT,
    DUE_INDEX_PREDICATE_PG,
    DUE_INDEX_PREDICATE_SQLITE,
    ERROR,
    FAILED,
    IN_PROGRESS,
    INACTIVE,
    READY,
    SYNC_STATUSES,
    SYNCING,
    TRIGGERS,
)

__all__ = [
    "ACTIVE", "BUILDING", "CANCELLED", "COMPLETED", "CONNECTOR_STATUSES", "DATASET_STATUSES",
    "DEFAULT_MAX_CONSECUTIVE_FAILURES", "DEFAULT_SYNC_INTERVAL", "DEFAULT_TENANT",
    "DUE_INDEX_PREDICATE_PG", "DUE_INDEX_PREDICATE_SQLITE", "ERROR",
    "FAILED", "INACTIVE", "IN_PROGRESS", "READY", "SYNCING", "SYNC_STATUSES", "TRIGGERS",
    "UTCDateTime", "alert_thresholds", "connector_syncs", "connectors", "dataset_records",
    "datasets", "health_alerts", "metadata",
]  # fmt: skip


class UTCDateTime(sa.types.TypeDecorator[dt.datetime]):
    """Timezone-aware UTC datetimes on every dialect.

    PostgreSQL stores timestamptz. SQLite has no time type: values are stored as
    naive UTC text in one fixed format, so comparing them as strings orders them
    as times (the due index depends on that).
    """

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: sa.Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given where a UTC datetime is required")
        value = value.astimezone(UTC)
        if dialect.name == "sqlite":
            return value.replace(tzinfo=None)
        return value

    def result_processor(self, dialect: sa.Dialect, coltype: object) -> Any:
        # PostgreSQL sessions run in UTC (db.create_engine), so psycopg already returns
        # aware UTC datetimes: no per-value Python call on the hot read paths.
        if dialect.name == "postgresql":
            return None
        return super().result_processor(dialect, coltype)

    def process_result_value(self, value: Any, dialect: sa.Dialect) -> dt.datetime | None:
        if value is None:
            return None
        parsed: dt.datetime = (
            dt.datetime.fromisoformat(value)  # a value written by SQL text, e.g. a migration
            if isinstance(value, str)
            else value
        )
        if parsed.tzinfo is None:
            return parsed.replace(tzinfo=UTC)
        return parsed.astimezone(UTC)


#: JSON everywhere, JSONB on PostgreSQL.
JSONType = sa.JSON().with_variant(JSONB(), "postgresql")

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "ck": "ck_%(table_name)s_%(constraint_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _now_default() -> dt.datetime:
    return dt.datetime.now(UTC)


def _connector_id() -> sa.Column[int]:
    """The owning connector: deleting a connector deletes its syncs and datasets."""
    return sa.Column(
        "connector_id",
        sa.Integer,
        sa.ForeignKey("connectors.id", ondelete="CASCADE"),
        nullable=False,
    )


connectors = sa.Table(
    "connectors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    sa.Column("tenant", sa.String(200), nullable=False, server_default=DEFAULT_TENANT),
    sa.Column("name", sa.String(200), nullable=False),
    sa.Column("type", sa.String(100), nullable=False),
    sa.Column("config", JSONType, nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default=ACTIVE),
    sa.Column("auto_sync", sa.Boolean, nullable=False, server_default=sa.true()),
    sa.Column(
        "sync_interval", sa.Integer, nullable=False, server_default=str(DEFAULT_SYNC_INTERVAL)
    ),
    # A cron expression (croniter); when set it wins over sync_interval.
    sa.Column("schedule", sa.String(200)),
    # The IANA time zone the schedule is read in; NULL means UTC.
    sa.Column("timezone", sa.String(64)),
    # Seconds a sync may take before it is failed; NULL means the run's default.
    sa.Column("sync_timeout", sa.Integer),
    sa.Column(
        "max_consecutive_failures",
        sa.Integer,
        nullable=False,
        server_default=str(DEFAULT_MAX_CONSECUTIVE_FAILURES),
    ),
    # READY datasets kept when a sync completes; 0 keeps every one.
    sa.Column("keep", sa.Integer, nullable=False, server_default=str(DEFAULT_KEEP)),
    sa.Column("last_sync_at", UTCDateTime),
    sa.Column("last_sync_status", sa.String(20)),
    sa.Column("last_sync_error", sa.Text),
    sa.Column("next_sync_at", UTCDateTime),
    sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
    sa.Column("state", JSONType),
    sa.Column("lease_owner", sa.String(300)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("lease_expires_at", UTCDateTime),
    sa.Column("created_at", UTCDateTime, nullable=False, default=_now_default),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=_now_default),
    sa.UniqueConstraint("tenant", "name"),
    sa.CheckConstraint(f"status IN {CONNECTOR_STATUSES!r}", name="status"),
    sa.CheckConstraint("sync_interval > 0", name="sync_interval_positive"),
    sa.CheckConstraint("sync_timeout IS NULL OR sync_timeout > 0", name="sync_timeout_positive"),
    sa.CheckConstraint("keep >= 0", name="keep_not_negative"),
    sqlite_autoincrement=True,
)


sa.Index(
    "ix_connectors_due",
    connectors.c.next_sync_at,
    postgresql_where=sa.text(DUE_INDEX_PREDICATE_PG),
    sqlite_where=sa.text(DUE_INDEX_PREDICATE_SQLITE),
)
# status counts connectors by status (not led by status: a due query must keep proving
# ix_connectors_due the one to use); health finds the ERROR and the failing ones.
sa.Index("ix_connectors_tenant_status", connectors.c.tenant, connectors.c.status)
# A connector by name in any tenant (uq (tenant, name) serves a name within a tenant).
sa.Index("ix_connectors_name", connectors.c.name)
sa.Index(
    "ix_connectors_in_error",
    connectors.c.id,
    postgresql_where=sa.text("status = 'ERROR'"),
    sqlite_where=sa.text("status = 'ERROR'"),
)
sa.Index(
    "ix_connectors_failing",
    connectors.c.consecutive_failures,
    postgresql_where=sa.text("consecutive_failures > 0"),
    sqlite_where=sa.text("consecutive_failures > 0"),
)
# metrics' connectors most in need of a look: those whose latest sync succeeded, in the
# order of that success (the others, few, are looked at one by one).
LAST_SUCCESS_INDEX_PREDICATE = "consecutive_failures = 0 AND last_sync_status = 'COMPLETED'"
sa.Index(
    "ix_connectors_last_success",
    connectors.c.last_sync_at,
    connectors.c.id,
    postgresql_where=sa.text(LAST_SUCCESS_INDEX_PREDICATE),
    sqlite_where=sa.text(LAST_SUCCESS_INDEX_PREDICATE),
)
sa.Index(
    "ix_connectors_lease_expires_at",
    connectors.c.lease_expires_at,
    postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
    sqlite_where=sa.text("lease_expires_at IS NOT NULL"),
)

connector_syncs = sa.Table(
    "connector_syncs",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _connector_id(),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("status", sa.String(20), nullable=False),
    sa.Column("trigger", sa.String(20), nullable=False, server_default="schedule"),
    sa.Column("worker", sa.String(300)),
    sa.Column("lease_token", sa.String(64)),
    sa.Column("attempts", sa.Integer, nullable=False, server_default="1"),
    sa.Column("started_at", UTCDateTime, nullable=False),
    sa.Column("completed_at", UTCDateTime),
    sa.Column("duration", sa.Float),
    sa.Column("records_fetched", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("records_processed", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("dataset_id", sa.Integer),
    sa.Column("error", sa.Text),
    sa.Column("error_type", sa.String(200)),
    sa.CheckConstraint(f"status IN {SYNC_STATUSES!r}", name="status"),
    sa.CheckConstraint(f"trigger IN {TRIGGERS!r}", name="trigger"),
    sqlite_autoincrement=True,
)

# At most one open sync per connector, enforced by the database itself.
sa.Index(
    "uq_connector_syncs_one_in_progress",
    connector_syncs.c.connector_id,
    unique=True,
    postgresql_where=sa.text("status = 'IN_PROGRESS'"),
    sqlite_where=sa.text("status = 'IN_PROGRESS'"),
)
sa.Index(
    "ix_connector_syncs_connector_id_started_at",
    connector_syncs.c.connector_id,
    connector_syncs.c.started_at,
)
# The window's aggregates (status, health, metrics) read this index alone on PostgreSQL.
sa.Index(
    "ix_connector_syncs_started_at",
    connector_syncs.c.started_at,
    postgresql_include=["status", "records_processed", "connector_id", "tenant"],
)
# history --status / --tenant: newest first within the status or tenant.
sa.Index(
    "ix_connector_syncs_status_started_at",
    connector_syncs.c.status,
    connector_syncs.c.started_at,
)
sa.Index(
    "ix_connector_syncs_tenant_started_at",
    connector_syncs.c.tenant,
    connector_syncs.c.started_at,
)

datasets = sa.Table(
    "datasets",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True),
    _connector_id(),
    sa.Column(
        "sync_id",
        sa.Integer,
        sa.ForeignKey("connector_syncs.id", ondelete="SET NULL"),
    ),
    sa.Column("tenant", sa.String(200), nullable=False),
    sa.Column("name", sa.String(400), nullable=False),
    sa.Column("status", sa.String(20), nullable=False, server_default=BUILDING),
    sa.Column("record_count", sa.BigInteger, nullable=False, server_default="0"),
    sa.Column("schema", JSONType),
    sa.Column("created_at", UTCDateTime, nullable=False, default=_now_default),
    sa.Column("completed_at", UTCDateTime),
    sa.CheckConstraint(f"status IN {DATASET_STATUSES!r}", name="status"),
    sqlite_autoincrement=True,
)
sa.Index("ix_datasets_connector_id_created_at", datasets.c.connector_id, datasets.c.created_at)

dataset_records = sa.Table(
    "dataset_records",
    metadata,
    sa.Column(
        "dataset_id",
        sa.Integer,
        sa.ForeignKey("datasets.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("seq", sa.BigInteger, primary_key=True, autoincrement=False),
    sa.Column("data", JSONType, nullable=False),
)

# -- monitoring ------------------------------------------------------------------------

#: What `health --notify` has announced, so that each problem is sent once, an escalation
#: once more, and its clearing once: one row per open problem (or cleared problem whose
#: "resolved" message is still to be sent), per scope (the tenant the health run looked
#: at, '*' for all). Keyed by the check and its subject ("failures:42", "error_rate:*").
health_alerts = sa.Table(
    "health_alerts",
    metadata,
    sa.Column("scope", sa.String(200), primary_key=True),
    sa.Column("key", sa.String(100), primary_key=True),
    sa.Column("problem", sa.String(40), nullable=False),
    # 1 warning, 2 critical: compared to tell an escalation.
    sa.Column("level", sa.Integer, nullable=False),
    sa.Column("connector_id", sa.Integer),
    sa.Column("connector_name", sa.String(200)),
    sa.Column("detail", sa.Text, nullable=False),
    sa.Column("opened_at", UTCDateTime, nullable=False),
    sa.Column("seen_at", UTCDateTime, nullable=False),
    # The level last announced; NULL: not announced yet.
    sa.Column("notified_level", sa.Integer),
    # Set when the problem cleared; the row goes once its "resolved" message is sent.
    sa.Column("resolved_at", UTCDateTime),
    # A health run sending this row's message holds it until then (two cron runs at
    # once never send the same message twice).
    sa.Column("sending_until", UTCDateTime),
)

#: A connector's own alert thresholds, overriding `health`'s flags (NULL: the flag's).
_owner = sa.ForeignKey("connectors.id", ondelete="CASCADE")
alert_thresholds = sa.Table(
    "alert_thresholds",
    metadata,
    sa.Column("connector_id", sa.Integer, _owner, primary_key=True),
    sa.Column("failures_warn", sa.Integer),
    sa.Column("long_sync", sa.Integer),
    sa.Column("max_error_rate", sa.Float),
    sa.Column("updated_at", UTCDateTime, nullable=False, default=_now_default),
)
