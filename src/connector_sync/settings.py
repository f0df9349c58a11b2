"""Where settings come from when not given as options (kept free of heavy imports)."""

from __future__ import annotations

import os

from connector_sync.constants import DATABASE_URL_ENVVARS, DEFAULT_SQLITE_FILE
from connector_sync.exceptions import BadInput


def resolve_database_url(explicit: str | None = None) -> str:
    """The URL from the option, else the environment, else the SQLite default file."""
    if explicit is not None:
        if not explicit.strip():
            raise BadInput(
                "--database-url is empty: give postgresql://user@host/db or sqlite:///path.db, "
                "or leave the option out for the default sqlite:///connector-sync.db"
            )
        return explicit
    for name in DATABASE_URL_ENVVARS:
        value = os.environ.get(name)
        if value:
            return value
    return f"sqlite:///{DEFAULT_SQLITE_FILE}"
