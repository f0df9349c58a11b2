"""Per-connector sync timeout.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("sync_timeout", sa.Integer))
        batch.create_check_constraint(
            op.f("ck_connectors_sync_timeout_positive"), "sync_timeout IS NULL OR sync_timeout > 0"
        )


def downgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.drop_constraint(op.f("ck_connectors_sync_timeout_positive"), type_="check")
        batch.drop_column("sync_timeout")
