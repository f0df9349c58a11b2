"""SQLite: connector ids are never given again (AUTOINCREMENT, as the models declare).

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-01

The first migration made the connectors table with AUTOINCREMENT; 0002 and 0003 rebuilt it
(SQLite's way to alter a table) without it, so a new connector could take the id of the
last one deleted, and with it what refers to an id from outside: a script's
`run -c 7`, an alert's key. PostgreSQL's sequence never gives an id twice. This rebuilds
the table once more, with AUTOINCREMENT; the ids deleted before it cannot be known, so
the counter starts after the highest id there is.
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_context().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "connectors", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    """Nothing to undo: the ids AUTOINCREMENT gives are ids 0007 accepts."""
