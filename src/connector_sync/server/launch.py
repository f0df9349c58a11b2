"""`connector-sync serve`: check the secret, bind, open the store, run uvicorn (one
process, one event loop, runs in threads), and on SIGTERM drain the runs in flight.

The checks come first and fail closed: no secret (and no --no-auth on a loopback
address), an address that cannot be bound, or a database that is not there ends the
command with one line and exit 2 or 3 before anything is served.
"""

from __future__ import annotations

import logging
import math
import signal
import socket
import threading
from dataclasses import dataclass
from types import FrameType
from typing import Any

import uvicorn

from connector_sync import operations
from connector_sync.exceptions import BadInput
from connector_sync.operations import RunOptions
from connector_sync.server import ServeOptions
from connector_sync.server.app import create_app
from connector_sync.server.auth import SECRET_ENVVAR, is_loopback, load_secret
from connector_sync.server.runs import RunRegistry
from connector_sync.signals import SignalRelay, relayed

log = logging.getLogger("connector_sync.server")

#: Seconds past --grace that a stopping server gives cancelled syncs to be recorded and the
#: last answers to be sent.
SHUTDOWN_MARGIN = 5.0


def serve_until_stopped(url: str, options: ServeOptions) -> None:
    """Check the secret, bind, open the store, serve; returns once the runs are drained."""
    secret = None if options.no_auth else load_secret(options.secret_file, options.secret_env)
    address = resolve(options.host, options.port)
    if options.no_auth and not is_loopback(address.sockaddr[0]):
        raise BadInput(
            f"--no-auth is allowed only on a loopback address (127.0.0.1, ::1); --host "
            f"{options.host} is reachable from other machines: set {SECRET_ENVVAR} or give "
            "--secret-file instead"
        )
    with bind(address) as listener, operations.session(url) as store:
        HttpTrigger(store, listener, secret, options.grace).run()


@dataclass(frozen=True)
class Address:
    """Where to listen, as getaddrinfo resolved --host and --port."""

    host: str
    port: int
    family: socket.AddressFamily
    sockaddr: tuple[Any, ...]


def resolve(host: str, port: int) -> Address:
    """The first address `host` resolves to (a name: as the system resolves it)."""
    try:
        family, _, _, _, sockaddr = socket.getaddrinfo(
            host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )[0]
    except (socket.gaierror, UnicodeError) as exc:
        reason = getattr(exc, "strerror", None) or str(exc)
        raise BadInput(f"--host {host}: cannot resolve it ({reason}): give an IP address") from None
    return Address(host, port, family, sockaddr)


def bind(address: Address) -> socket.socket:
    """A listening TCP socket on the address (port 0: any free port).

    Bound here rather than by uvicorn so a taken port is one clear line and the port
    actually bound can be logged. Nothing is served before uvicorn starts: a connection
    waits in the backlog.
    """
    # IPPROTO_TCP said outright: asyncio sets TCP_NODELAY only on sockets whose proto says
    # TCP, and without it every answer's last segment waited for the client's delayed ACK
    # (40 ms: 22 requests/s on one connection).
    listener = socket.socket(address.family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(address.sockaddr)
        listener.listen(2048)
    except OSError as exc:
        listener.close()
        raise BadInput(
            f"--host {address.host} --port {address.port}: cannot listen there "
            f"({exc.strerror}): choose another --port, or stop what uses it"
        ) from None
    return listener


class HttpTrigger:
    """One server: the app on a bound socket, the runs it started, and their drain."""

    def __init__(
        self,
        store: operations.Store,
        listener: socket.socket,
        secret: bytes | None,
        grace: float,
        run_options: RunOptions | None = None,
    ) -> None:
        self.store = store
        self.listener = listener
        self.grace = grace
        self.runs = RunRegistry(store)
        self.stopped = threading.Event()
        app = create_app(
            store,
            self.runs,
            secret=secret,
            run_options=run_options or RunOptions(grace=grace),
        )
        adopt_uvicorn_logging()
        config = uvicorn.Config(
            app,
            log_config=None,  # our handler and format (plain or JSON lines), set below
            access_log=False,  # the app logs one access line per request itself
            lifespan="off",
            server_header=False,  # no need to tell strangers what answers
            # uvicorn waits this long for in-flight requests (a run with wait=true answers
            # once its syncs end, within the grace) before it cancels them.
            timeout_graceful_shutdown=math.ceil(grace + SHUTDOWN_MARGIN),
        )
        self.server = _Server(config)
        self.auth = "off (--no-auth, loopback only)" if secret is None else "bearer secret"

    @property
    def url(self) -> str:
        host, port = self.listener.getsockname()[:2]
        return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"

    def run(self) -> None:
        """Serve until stopped (a signal in the main thread, or `stop`), then drain.

        The signals are ours until the drain is over: uvicorn's handlers (which hand them
        to the same relay) are in place only while it serves, and a second signal during
        the drain must still cancel the runs at once, as the first one's message says.
        """
        log.info("serving on %s (authentication: %s)", self.url, self.auth)
        with relayed(self.on_signal) as relay:
            self.server.relay = relay
            try:
                self.server.run(sockets=[self.listener])
            finally:
                self.stop("the server stopped")  # no-op when a signal already did
                if not self.runs.join(self.grace + SHUTDOWN_MARGIN):
                    log.error(
                        "runs still going after the grace period: their leases expire and "
                        "the next run recovers them"
                    )
        log.info("stopped")

    def stop(self, why: str, *, force: bool = False) -> None:
        """Stop serving: no new runs (503); the runs in flight get the grace period to
        finish their syncs, none with `force`.

        uvicorn's shutdown closes the listener first (its documented graceful shutdown), so
        a connection made from now on is refused, not answered 503: a client or a load
        balancer goes elsewhere at once. Keeping the socket open to answer 503 would mean
        overriding uvicorn's shutdown; only a request already read gets the 503.
        """
        first = not self.stopped.is_set()
        self.stopped.set()
        try:
            if first or force:
                grace = 0.0 if force else self.grace
                log.warning(
                    "%s: no new runs; runs in flight get %gs to finish their syncs%s",
                    why,
                    grace,
                    "" if force else " (signal again to cancel them now)",
                )
                self.runs.stop(grace, f"cancelled: {why}, grace of {grace:g}s over")
        finally:  # whatever went wrong above, the server stops
            self.server.should_exit = True
            if force:
                self.server.force_exit = True

    def on_signal(self, signum: int) -> None:
        """The first SIGTERM or SIGINT stops gracefully, a second cancels syncs at once."""
        self.stop(f"{signal.Signals(signum).name} received", force=self.stopped.is_set())


class _Server(uvicorn.Server):
    """uvicorn's Server, whose signals stop our runs too (HttpTrigger.on_signal), acted on
    in the relay thread: the stop logs and takes the run registry's lock, which a signal
    handler must not (signals.py)."""

    relay: SignalRelay | None = None

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        # Not uvicorn's own either: it re-raises the signal after shutdown, which would end
        # the process with 143 after a clean drain.
        if self.relay is not None:
            self.relay.handler(sig, frame)


def adopt_uvicorn_logging() -> None:
    """uvicorn's own messages (startup, shutdown, protocol errors) through connector_sync's
    handler, so they come in the same plain or JSON-line format."""
    ours = logging.getLogger("connector_sync")
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.handlers = list(ours.handlers) if name == "uvicorn" else []
        logger.setLevel(ours.level)
        logger.propagate = name != "uvicorn"
