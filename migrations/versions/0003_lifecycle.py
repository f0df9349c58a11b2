"""A connector's life: cron schedules read in a time zone, and how many datasets it keeps.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.add_column(sa.Column("timezone", sa.String(64)))
        batch.add_column(sa.Column("keep", sa.Integer, nullable=False, server_default="10"))
        batch.create_check_constraint(op.f("ck_connectors_keep_not_negative"), "keep >= 0")


def downgrade() -> None:
    with op.batch_alter_table("connectors") as batch:
        batch.drop_constraint(op.f("ck_connectors_keep_not_negative"), type_="check")
        batch.drop_column("keep")
        batch.drop_column("timezone")
