"""Real `serve` servers for the tests: in a thread of the test process (HttpTrigger on a
socket bound to 127.0.0.1, any free port), or as a `connector-sync serve` subprocess
(through the fork server of support/forkserver.py unless `real` asks for the installed
console script)."""

from __future__ import annotations

import io
import logging
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any, Self

import httpx

from connector_sync import operations
from connector_sync.server.launch import HttpTrigger, bind, resolve
from support.forkserver import forked_command

COMMAND = str(Path(sys.executable).parent / "connector-sync")  # the installed console script
SECRET = "test-secret-0123456789"
AUTH = {"Authorization": f"Bearer {SECRET}"}


@contextmanager
def logs_kept_in(stream: IO[str]) -> Iterator[None]:
    """connector_sync's log records (uvicorn's too, which take its handlers) go to `stream`
    meanwhile: a server thread logs an access line after its answer is sent, which can be
    after the test is over, when pytest no longer captures stderr and the line would land
    in the middle of the progress dots (a CLI test run in-process leaves a stderr handler)."""
    logger = logging.getLogger("connector_sync")
    handlers, level = logger.handlers, logger.level
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logging.Formatter("%(levelname)s %(message)s"))
    logger.handlers = [handler]
    logger.setLevel(logging.INFO)
    try:
        yield
    finally:
        logger.handlers = handlers
        logger.setLevel(level)  # (clears the loggers' cached levels, as the set-up did)


@contextmanager
def served(url: str, *, secret: str | None = SECRET, grace: float = 5.0) -> Iterator[HttpTrigger]:
    """A server on the database at `url`, in a thread; stopped (and drained) at the end.
    Its log lines are kept, and shown (on stderr, which pytest captures) if the block
    fails."""
    log = io.StringIO()
    with operations.session(url) as store, logs_kept_in(log):
        listener = bind(resolve("127.0.0.1", 0))
        trigger = HttpTrigger(store, listener, None if secret is None else secret.encode(), grace)
        thread = threading.Thread(target=trigger.run, name="test-server", daemon=True)
        thread.start()
        try:
            wait_for(lambda: trigger.server.started, what="the server to start")
            yield trigger
        except BaseException:
            sys.stderr.write(f"the server's log:\n{log.getvalue()}")
            raise
        finally:
            trigger.stop("the test is over")
            thread.join(30)
            listener.close()
            assert not thread.is_alive(), f"the server did not stop; its log:\n{log.getvalue()}"


def client(base_url: str, *, auth: bool = True, timeout: float = 30.0) -> httpx.Client:
    return httpx.Client(base_url=base_url, headers=AUTH if auth else None, timeout=timeout)


def wait_for(predicate: Any, timeout: float = 20.0, what: str = "the condition") -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.02)
    raise AssertionError(f"timed out waiting for {what}")


class Command:
    """`connector-sync` as a subprocess, its stderr collected line by line as it comes (a
    reader thread: the pipe never fills); the installed console script when `real`."""

    def __init__(self, *args: str, secret: str | None = None, real: bool = False) -> None:
        env = {k: v for k, v in os.environ.items() if k != "CRON_SECRET"}
        if secret is not None:
            env["CRON_SECRET"] = secret
        self.process = subprocess.Popen(
            [COMMAND if real else forked_command(), *args],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        self.lines: list[str] = []
        self._stdout: list[str] = []
        self._readers = [
            threading.Thread(target=self._read, args=(self.process.stderr, self.lines)),
            threading.Thread(target=self._read, args=(self.process.stdout, self._stdout)),
        ]
        for reader in self._readers:
            reader.daemon = True
            reader.start()

    @staticmethod
    def _read(stream: IO[str] | None, into: list[str]) -> None:
        assert stream is not None
        for line in stream:
            into.append(line)

    def _join_readers(self) -> None:
        for reader in self._readers:
            reader.join(5)

    @property
    def stderr(self) -> str:
        return "".join(self.lines)

    def logged(self, text: str) -> bool:
        """Whether a stderr line holds `text` (raises if the process ended without it)."""
        if any(text in line for line in list(self.lines)):
            return True
        if self.process.poll() is not None:
            self._join_readers()
            if any(text in line for line in self.lines):
                return True
            raise AssertionError(f"exited {self.process.returncode}: {self.stderr}")
        return False

    def wait(self, timeout: float = 60.0) -> tuple[int, str]:
        """The exit code and stdout, once the process ended."""
        code = self.process.wait(timeout)
        self._join_readers()
        return code, "".join(self._stdout)

    def stop(self, signum: int = signal.SIGTERM, timeout: float = 30.0) -> int:
        """Send `signum`; the exit code once the process ended."""
        if self.process.poll() is None:
            self.process.send_signal(signum)
        return self.wait(timeout)[0]

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


class ServeProcess(Command):
    """`connector-sync serve --port 0`; `url` once it listens."""

    def __init__(
        self,
        database_url: str,
        *args: str,
        secret: str | None = SECRET,
        log_format: str = "plain",
        real: bool = False,
    ) -> None:
        super().__init__(
            "--database-url", database_url, "--log-format", log_format,
            "serve", "--port", "0", *args, secret=secret, real=real,
        )  # fmt: skip
        wait_for(lambda: self.logged("serving on http://"), timeout=30, what="serve to listen")
        found = re.search(r"serving on (http://[^ \"]+)", self.stderr)
        assert found is not None
        self.url = found[1]
