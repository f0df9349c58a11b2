"""Alembic environment: runs on a connection handed over by connector-sync, or its own."""

from __future__ import annotations

import logging.config

from alembic import context

from connector_sync import db
from connector_sync.models import metadata
from connector_sync.settings import resolve_database_url

config = context.config
if config.config_file_name is not None and config.attributes.get("connection") is None:
    logging.config.fileConfig(config.config_file_name, disable_existing_loggers=False)


def run_migrations(connection: object) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER most things; batch mode copies the table instead.
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is not None:
    run_migrations(connection)
else:
    url = context.get_x_argument(as_dictionary=True).get("url") or resolve_database_url()
    database = db.Database(url)
    try:
        with database.migrating() as own_connection:
            run_migrations(own_connection)
    finally:
        database.close()
