"""Where connectors, syncs and datasets are kept: one Store per database.

Importing this package imports no database library: `open_store` imports the store the
database needs (the PostgreSQL one never imports SQLAlchemy).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import sqlalchemy as sa

    from connector_sync.db import Database
    from connector_sync.store.base import Clock, Store


def open_store(
    url_or_database: str | sa.URL | sa.Engine | Database,
    *,
    clock: Clock | None = None,
    ensure_schema: bool = True,
    create: bool = False,
) -> Store:
    """The store for a database URL (or engine, or Database), its schema made current:
    SQLite upgrades itself, PostgreSQL says how (SchemaOutOfDate). A missing SQLite file
    is created only with `create`; otherwise DatabaseUnavailable.

    Closing the store disposes only an engine it created.
    """
    from connector_sync.db import Database

    owns = not isinstance(url_or_database, Database)
    database = (
        url_or_database if isinstance(url_or_database, Database) else Database(url_or_database)
    )
    try:
        if ensure_schema:
            database.ensure_schema(create=create)
        if database.is_postgresql:
            from connector_sync.store.postgres import PostgresStore

            return PostgresStore(database, clock, owns_database=owns)
        from connector_sync.store.sqlite import SqliteStore

        return SqliteStore(database, clock, owns_database=owns)
    except BaseException:
        if owns:
            database.close()
        raise


def __getattr__(name: str) -> Any:
    # `from connector_sync.store import Store` without importing base.py up front.
    if name in ("Clock", "Store"):
        from connector_sync.store import base

        return getattr(base, name)
    raise AttributeError(name)


__all__ = ["Clock", "Store", "open_store"]
