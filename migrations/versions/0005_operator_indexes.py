"""Indexes for the operator commands at 100,000 connectors and millions of syncs.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-30

`history --status S` and `history --tenant T` walk an index of their own instead of every
sync since the newest; `status`, `health` and `metrics` count the window's syncs from the
started_at index alone (PostgreSQL: it carries what they count); a connector is found by
name in any tenant from an index of names; `status` counts connectors by status, and
`health` finds the failing and ERROR ones, from small indexes.
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: What the window's aggregates read, carried by the started_at index on PostgreSQL.
WINDOW_COLUMNS = ["status", "records_processed", "connector_id", "tenant"]
#: Small indexes of the connectors health looks for: (name, column, predicate).
PARTIAL_INDEXES = (
    ("ix_connectors_in_error", "id", "status = 'ERROR'"),
    ("ix_connectors_failing", "consecutive_failures", "consecutive_failures > 0"),
)


def upgrade() -> None:
    op.create_index(
        "ix_connector_syncs_status_started_at", "connector_syncs", ["status", "started_at"]
    )
    op.create_index(
        "ix_connector_syncs_tenant_started_at", "connector_syncs", ["tenant", "started_at"]
    )
    op.drop_index("ix_connector_syncs_started_at", table_name="connector_syncs")
    op.create_index(
        "ix_connector_syncs_started_at",
        "connector_syncs",
        ["started_at"],
        postgresql_include=WINDOW_COLUMNS,
    )
    # Not led by status: a due query must keep proving ix_connectors_due the one to use.
    op.create_index("ix_connectors_tenant_status", "connectors", ["tenant", "status"])
    # A connector by name in any tenant (show NAME, history -c NAME, run -c NAME...): the
    # unique (tenant, name) index serves only a name within a tenant.
    op.create_index("ix_connectors_name", "connectors", ["name"])
    for name, column, where in PARTIAL_INDEXES:
        condition = sa.text(where)
        op.create_index(
            name, "connectors", [column], postgresql_where=condition, sqlite_where=condition
        )


def downgrade() -> None:
    for name, _, _ in PARTIAL_INDEXES:
        op.drop_index(name, table_name="connectors")
    op.drop_index("ix_connectors_name", table_name="connectors")
    op.drop_index("ix_connectors_tenant_status", table_name="connectors")
    op.drop_index("ix_connector_syncs_started_at", table_name="connector_syncs")
    op.create_index("ix_connector_syncs_started_at", "connector_syncs", ["started_at"])
    op.drop_index("ix_connector_syncs_tenant_started_at", table_name="connector_syncs")
    op.drop_index("ix_connector_syncs_status_started_at", table_name="connector_syncs")
