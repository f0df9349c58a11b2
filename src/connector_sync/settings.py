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
                "database URL is empty: give postgresql://user@host/db or sqlite:///path.db, "
                "or leave it out for the default sqlite:///connector-sync.db",
                param="database URL",
            )
        return explicit
    for name in DATABASE_URL_ENVVARS:
        value = os.environ.get(name)
        if value is None:
            continue
        if not value.strip():
            # What GitHub Actions passes for a secret that is not set: a job that fell back
            # to a new empty SQLite file would report "nothing due" and stay green.
            raise BadInput(
                f"{name} is set but empty (an unset CI secret?): set it to "
                "postgresql://user@host/db or sqlite:///path.db, or unset it for the default "
                "sqlite:///connector-sync.db"
            )
        return value
    return f"sqlite:///{DEFAULT_SQLITE_FILE}"
