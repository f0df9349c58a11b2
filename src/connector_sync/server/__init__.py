"""The HTTP trigger (`connector-sync serve`): the operations over FastAPI and uvicorn.

fastapi and uvicorn come with the `server` extra and are imported only when `serve` runs,
so `connector-sync --help` never pays for them.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from connector_sync.exceptions import BadInput

#: What `serve` says when fastapi or uvicorn is not installed.
INSTALL_HINT = "serve needs the server extra: pip install 'connector-sync[server]'"


@dataclass(frozen=True)
class ServeOptions:
    host: str = "127.0.0.1"
    port: int = 8000
    secret_file: Path | None = None
    #: The CRON_SECRET environment variable's value, if set.
    secret_env: str | None = None
    no_auth: bool = False
    #: After SIGTERM, seconds the syncs in flight get to finish before they are cancelled.
    grace: float = 30.0


def serve(url: str, options: ServeOptions) -> None:
    """Serve the API on the database at `url` until SIGTERM/SIGINT, then drain the runs in
    flight (see server.launch).

    Raises:
        BadInput: the server extra is not installed, no secret, --no-auth off loopback, or
            an address that cannot be bound.
        DatabaseError: the database is not there or its schema is not current.
    """
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        raise BadInput(INSTALL_HINT) from None
    from connector_sync.server.launch import serve_until_stopped

    serve_until_stopped(url, options)
