"""Initial schema: connectors, connector_syncs, datasets, dataset_records.

Revision ID: 0001
Revises:
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

from connector_sync.models import UTCDateTime

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(JSONB(), "postgresql")


def upgrade() -> None:
    op.create_table(
        "connectors",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("tenant", sa.String(200), nullable=False, server_default="default"),
        sa.Column("name", sa.String(200), nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        sa.Column("config", JSON, nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="ACTIVE"),
        sa.Column("auto_sync", sa.Boolean, nullable=False, server_default=sa.true()),
        sa.Column("sync_interval", sa.Integer, nullable=False, server_default="3600"),
        sa.Column("schedule", sa.String(200)),
        sa.Column("max_consecutive_failures", sa.Integer, nullable=False, server_default="5"),
        sa.Column("last_sync_at", UTCDateTime),
        sa.Column("last_sync_status", sa.String(20)),
        sa.Column("last_sync_error", sa.Text),
        sa.Column("next_sync_at", UTCDateTime),
        sa.Column("consecutive_failures", sa.Integer, nullable=False, server_default="0"),
        sa.Column("state", JSON),
        sa.Column("lease_owner", sa.String(300)),
        sa.Column("lease_token", sa.String(64)),
        sa.Column("lease_expires_at", UTCDateTime),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_connectors"),
        sa.UniqueConstraint("tenant", "name", name="uq_connectors_tenant_name"),
        sa.CheckConstraint(
            "status IN ('ACTIVE', 'SYNCING', 'ERROR', 'INACTIVE')",
            name=op.f("ck_connectors_status"),
        ),
        sa.CheckConstraint("sync_interval > 0", name=op.f("ck_connectors_sync_interval_positive")),
        # Ids are never reused on SQLite either (a deleted dataset's id stays unique).
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_connectors_due",
        "connectors",
        ["next_sync_at"],
        postgresql_where=sa.text("auto_sync AND status = 'ACTIVE'"),
        sqlite_where=sa.text("auto_sync = 1 AND status = 'ACTIVE'"),
    )
    op.create_index(
        "ix_connectors_lease_expires_at",
        "connectors",
        ["lease_expires_at"],
        postgresql_where=sa.text("lease_expires_at IS NOT NULL"),
        sqlite_where=sa.text("lease_expires_at IS NOT NULL"),
    )

    op.create_table(
        "connector_syncs",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("connector_id", sa.Integer, nullable=False),
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
        sa.PrimaryKeyConstraint("id", name="pk_connector_syncs"),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name="fk_connector_syncs_connector_id_connectors",
            ondelete="CASCADE",
        ),
        sa.CheckConstraint(
            "status IN ('IN_PROGRESS', 'COMPLETED', 'FAILED', 'CANCELLED')",
            name=op.f("ck_connector_syncs_status"),
        ),
        sa.CheckConstraint(
            "trigger IN ('schedule', 'manual', 'api')", name=op.f("ck_connector_syncs_trigger")
        ),
        # Ids are never reused on SQLite either (a deleted dataset's id stays unique).
        sqlite_autoincrement=True,
    )
    op.create_index(
        "uq_connector_syncs_one_in_progress",
        "connector_syncs",
        ["connector_id"],
        unique=True,
        postgresql_where=sa.text("status = 'IN_PROGRESS'"),
        sqlite_where=sa.text("status = 'IN_PROGRESS'"),
    )
    op.create_index(
        "ix_connector_syncs_connector_id_started_at",
        "connector_syncs",
        ["connector_id", "started_at"],
    )
    op.create_index("ix_connector_syncs_started_at", "connector_syncs", ["started_at"])

    op.create_table(
        "datasets",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("connector_id", sa.Integer, nullable=False),
        sa.Column("sync_id", sa.Integer),
        sa.Column("tenant", sa.String(200), nullable=False),
        sa.Column("name", sa.String(400), nullable=False),
        sa.Column("status", sa.String(20), nullable=False, server_default="BUILDING"),
        sa.Column("record_count", sa.BigInteger, nullable=False, server_default="0"),
        sa.Column("schema", JSON),
        sa.Column("created_at", UTCDateTime, nullable=False),
        sa.Column("completed_at", UTCDateTime),
        sa.PrimaryKeyConstraint("id", name="pk_datasets"),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name="fk_datasets_connector_id_connectors",
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["sync_id"],
            ["connector_syncs.id"],
            name="fk_datasets_sync_id_connector_syncs",
            ondelete="SET NULL",
        ),
        sa.CheckConstraint(
            "status IN ('BUILDING', 'READY', 'FAILED')", name=op.f("ck_datasets_status")
        ),
        # Ids are never reused on SQLite either (a deleted dataset's id stays unique).
        sqlite_autoincrement=True,
    )
    op.create_index(
        "ix_datasets_connector_id_created_at", "datasets", ["connector_id", "created_at"]
    )

    op.create_table(
        "dataset_records",
        sa.Column("dataset_id", sa.Integer, nullable=False),
        sa.Column("seq", sa.BigInteger, nullable=False, autoincrement=False),
        sa.Column("data", JSON, nullable=False),
        sa.PrimaryKeyConstraint("dataset_id", "seq", name="pk_dataset_records"),
        sa.ForeignKeyConstraint(
            ["dataset_id"],
            ["datasets.id"],
            name="fk_dataset_records_dataset_id_datasets",
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("dataset_records")
    op.drop_table("datasets")
    op.drop_table("connector_syncs")
    op.drop_table("connectors")
