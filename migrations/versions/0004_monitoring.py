"""Monitoring: what health --notify has announced, and per-connector alert thresholds.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30

Self-contained: two new tables, nothing else changes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

from connector_sync.models import UTCDateTime

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "health_alerts",
        sa.Column("scope", sa.String(200), nullable=False),
        sa.Column("key", sa.String(100), nullable=False),
        sa.Column("problem", sa.String(40), nullable=False),
        sa.Column("level", sa.Integer, nullable=False),
        sa.Column("connector_id", sa.Integer),
        sa.Column("connector_name", sa.String(200)),
        sa.Column("detail", sa.Text, nullable=False),
        sa.Column("opened_at", UTCDateTime, nullable=False),
        sa.Column("seen_at", UTCDateTime, nullable=False),
        sa.Column("notified_level", sa.Integer),
        sa.Column("resolved_at", UTCDateTime),
        sa.Column("sending_until", UTCDateTime),
        sa.PrimaryKeyConstraint("scope", "key", name=op.f("pk_health_alerts")),
    )
    op.create_table(
        "alert_thresholds",
        sa.Column("connector_id", sa.Integer, nullable=False),
        sa.Column("failures_warn", sa.Integer),
        sa.Column("long_sync", sa.Integer),
        sa.Column("max_error_rate", sa.Float),
        sa.Column("updated_at", UTCDateTime, nullable=False),
        sa.PrimaryKeyConstraint("connector_id", name=op.f("pk_alert_thresholds")),
        sa.ForeignKeyConstraint(
            ["connector_id"],
            ["connectors.id"],
            name=op.f("fk_alert_thresholds_connector_id_connectors"),
            ondelete="CASCADE",
        ),
    )


def downgrade() -> None:
    op.drop_table("alert_thresholds")
    op.drop_table("health_alerts")
