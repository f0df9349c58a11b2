"""The config fields of the types that make HTTP requests, without importing httpx: the
`file` type declares them too, and reading a local file should not wait for httpx."""

from __future__ import annotations

from connector_sync.connectors.base import ConfigField

#: The longest timeout or retry wait, in seconds (a day); far more overflows the clocks.
MAX_WAIT_SECONDS = 86_400
#: The longest pause a server's Retry-After may impose on a connector, unless configured.
DEFAULT_MAX_RETRY_WAIT = 3600.0
#: The longest a request sleeps before trying again within a sync; a server asking for
#: longer ends the sync's try, and the connector is due again after that wait.
MAX_SLEEP_IN_REQUEST = 60.0
#: The most bytes one response (one page) of the http type may have, as sent and once
#: decompressed. A page is parsed whole, and a page of small records takes about 13 times
#: its size in memory once parsed (a 60 MB page of 27-byte records: 780 MB), so not more.
DEFAULT_MAX_RESPONSE_BYTES = 16 * 1024 * 1024
#: The most bytes a file downloaded by the file type may have, as sent and decompressed.
#: It is streamed (memory stays flat), but every record lands in the database: a source
#: that sends for ever must not fill the disk.
DEFAULT_MAX_DOWNLOAD_BYTES = 1024 * 1024 * 1024
#: The shortest timeout, in seconds, and the slowest rate limit, in requests per second.
MIN_TIMEOUT = 0.001


def max_retry_wait_field() -> ConfigField:
    """The `max_retry_wait` field of the types that make HTTP requests."""
    return ConfigField(
        "max_retry_wait",
        float,
        default=DEFAULT_MAX_RETRY_WAIT,
        minimum=0,
        maximum=MAX_WAIT_SECONDS,
        help="longest wait a server's Retry-After may impose, seconds (longer is cut to this); "
        f"a request itself waits at most {MAX_SLEEP_IN_REQUEST:g}s before trying again",
    )


def timeout_field(help: str) -> ConfigField:
    """The `timeout` field of the types that make HTTP requests (http, file from a url)."""
    return ConfigField(
        "timeout", float, default=30.0, minimum=MIN_TIMEOUT, maximum=MAX_WAIT_SECONDS, help=help
    )


def max_response_bytes_field(default: int, what: str) -> ConfigField:
    """The `max_response_bytes` field: the bound on `what` (a page, a download)."""
    return ConfigField(
        "max_response_bytes",
        int,
        default=default,
        minimum=1,
        help=f"{what}, as sent and decompressed; {byte_size(default)} by default",
    )


def byte_size(count: int) -> str:
    """A number of bytes as a message shows it: 64 MiB, 1 KiB, 1000 bytes."""
    for unit, size in (("GiB", 1 << 30), ("MiB", 1 << 20), ("KiB", 1 << 10)):
        if count >= size and count % size == 0:
            return f"{count // size} {unit}"
    return f"{count} bytes"
