"""How a failure becomes an HTTP answer: a status code and one line, never a traceback, a
secret or a stored value."""

from __future__ import annotations

import logging

from connector_sync.exceptions import BadInput, ConnectorSyncError, DatabaseError, NotFound
from connector_sync.secrets import mask_urls

log = logging.getLogger("connector_sync.server")


class ShuttingDown(Exception):
    """The server is shutting down and starts no new run."""


def status_of(exc: ConnectorSyncError) -> int:
    """404 no such object, 400 bad input, 503 the database is unavailable, 500 otherwise."""
    if isinstance(exc, NotFound):
        return 404
    if isinstance(exc, BadInput):
        return 400
    if isinstance(exc, DatabaseError):
        return 503
    return 500


def one_line(text: str) -> str:
    return " ".join(text.split())


def unexpected(exc: BaseException, where: str) -> str:
    """Log a bug (the traceback only at debug level) and say what to answer: the error's
    kind, its first line with URL passwords masked."""
    first = mask_urls(str(exc).strip().split("\n", 1)[0])
    log.error(
        "unexpected %s in %s: %s",
        type(exc).__name__,
        where,
        first,
        exc_info=exc if log.isEnabledFor(logging.DEBUG) else None,
    )
    return f"unexpected {type(exc).__name__} (see the server's log)"
