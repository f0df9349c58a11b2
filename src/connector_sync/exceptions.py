"""The project's exception tree and the exit code each kind of failure maps to."""

from __future__ import annotations

EXIT_OK = 0
EXIT_FAILURE = 1
EXIT_USAGE = 2
EXIT_DATABASE = 3


class ConnectorSyncError(Exception):
    """connector-sync failed."""

    exit_code = EXIT_FAILURE

    def __init__(self, message: str | None = None, *, param: str | None = None) -> None:
        super().__init__(message or (self.__doc__ or "").strip())
        #: The input the message starts by naming (`tenant`, `database URL`, ...), so a
        #: front end can name it its own way (the CLI says `--tenant`).
        self.param = param

    @property
    def message(self) -> str:
        return str(self.args[0])


class BadInput(ConnectorSyncError):
    """The input is not valid."""

    exit_code = EXIT_USAGE


class NotFound(BadInput):
    """No such object."""


class AlreadyExists(BadInput):
    """An object with that name already exists."""


class ConnectorBusy(BadInput):
    """A worker is syncing this connector under a live lease."""


class DatabaseError(ConnectorSyncError):
    """The database could not be used."""

    exit_code = EXIT_DATABASE

    def __init__(
        self, message: str | None = None, *, transient: bool = False, uncertain: bool = False
    ) -> None:
        super().__init__(message)
        #: A retry of the same transaction may succeed (lost connection, lock, serialization).
        self.transient = transient
        #: The connection broke once the transaction was under way: it may have committed
        #: (a lost acknowledgement). Only what is safe to do twice is tried again then.
        self.uncertain = uncertain


class DatabaseUnavailable(DatabaseError):
    """The database is unreachable."""


class SchemaOutOfDate(DatabaseError):
    """The database schema is not at the version this program needs."""


class LeaseLost(ConnectorSyncError):
    """Another worker now owns this connector's lease; this worker must stop and record nothing."""


class PluginError(ConnectorSyncError):
    """A connector plugin failed."""

    #: Whether trying the same sync again later may succeed.
    transient = False


class TransientError(PluginError):
    """A temporary failure (timeout, rate limit, server error); a retry may succeed."""

    transient = True

    def __init__(self, message: str | None = None, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        #: Seconds the source asked us to wait (e.g. HTTP Retry-After), if it said.
        self.retry_after = retry_after


class PermanentError(PluginError):
    """A failure that retrying cannot fix (bad config, authentication, missing source)."""


class RecordError(PermanentError):
    """A record the dataset cannot store (NaN, a NUL character PostgreSQL refuses, …)."""


class ConfigError(PermanentError, BadInput):
    """The connector configuration is not valid."""

    exit_code = EXIT_USAGE
