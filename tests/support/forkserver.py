"""A fork server for the `connector-sync` commands tests run as processes.

The docs alone run about two hundred commands through bash, and most of each command's
time went to Python importing the same modules again. Here one server per test worker
imports the command line once; a `connector-sync` shim (see `forked_command`) hands the
server its argv, environment, working directory and its stdin, stdout and stderr (the
descriptors themselves, over a Unix socket); the server forks, and the child becomes
that command: it takes the descriptors as 0, 1 and 2, the environment and the folder,
and runs `connector_sync.cli.main()` as the console script would, ending as a process
ends (atexit, flushed streams, its exit status). Each command is its own process with
its own database connections; the shim forwards the signals a shell or a test sends,
the server kills the command with SIGKILL when the shim's end of the socket closes
first (a kill -9 of the shim), and the shim exits with the command's status or dies of
its signal.

What a fork cannot give, and so what the tests that need it run the installed console
script for: a process group and controlling terminal of its own, and a fresh
interpreter. A module the server imported is imported already, so an import the code
forgot would go unnoticed here: the README's page, the acceptance scenario, the idle
run, the deploy files and one `serve` test run the real console script. Only modules are
imported before the fork: nothing reads the environment, opens a database or looks for
plugins until the child runs its command, and PYTHONPATH from the command's environment
goes on `sys.path` as Python would put it.
"""

from __future__ import annotations

import atexit
import contextlib
import ctypes
import functools
import gc
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

#: What the server imports before it forks: what most commands import anyway.
PRELOAD = (
    "connector_sync.cli",
    "connector_sync.operations",
    "connector_sync.render",
    "connector_sync.store.sqlite",
    "connector_sync.store.postgres",
    "connector_sync.runner",
    "connector_sync.db",
    "rich.console",
    "rich.table",
    "sqlalchemy",
    "psycopg",
    "httpx",
    "connector_sync.server.app",  # serve: FastAPI, uvicorn
    "uvicorn",
)

SHIM = """\
#!{python} -IS
# connector-sync through the tests' fork server (tests/support/forkserver.py).
import json, os, signal, socket, sys
server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
server.connect({path!r})
request = json.dumps(
    {{"argv": sys.argv[1:], "env": dict(os.environ), "cwd": os.getcwd()}}
).encode()
socket.send_fds(server, [len(request).to_bytes(8, "big")], [0, 1, 2])
server.sendall(request)
reply = server.makefile("r")
child = int(reply.readline())
def forward(signum, frame):
    try:
        os.kill(child, signum)
    except ProcessLookupError:
        pass
for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP, signal.SIGQUIT):
    signal.signal(signum, forward)
status = int(reply.readline())
if status < 0:
    signal.signal(-status, signal.SIG_DFL)
    os.kill(os.getpid(), -status)
sys.exit(status)
"""


def _receive(conn: socket.socket) -> tuple[dict[str, object], list[int]]:
    header, fds, _, _ = socket.recv_fds(conn, 8, 3)
    size = int.from_bytes(header, "big")
    body = bytearray()
    while len(body) < size:
        chunk = conn.recv(size - len(body))
        if not chunk:
            raise ConnectionError("the shim went away")
        body += chunk
    return json.loads(body), fds


def _become(request: dict[str, object], fds: list[int]) -> None:
    """In the child: take the command's descriptors, folder, environment and argv."""
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    env = request["env"]
    assert isinstance(env, dict)
    os.chdir(str(request["cwd"]))
    os.environ.clear()
    os.environ.update(env)
    time.tzset()
    extra = [entry for entry in env.get("PYTHONPATH", "").split(os.pathsep) if entry]
    sys.path[1:1] = extra
    # As Python opens them: stdout line-buffered on a terminal, stderr always.
    sys.stdin = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = open(  # noqa: SIM115
        1, "w", buffering=1 if os.isatty(1) else -1, encoding="utf-8", closefd=False
    )
    sys.stderr = open(  # noqa: SIM115
        2, "w", buffering=1, encoding="utf-8", errors="backslashreplace", closefd=False
    )
    argv = request["argv"]
    assert isinstance(argv, list)
    sys.argv = ["connector-sync", *argv]


def _die_with_parent(signum: int) -> None:
    """prctl(PR_SET_PDEATHSIG): no command outlives the server, no server its test worker."""
    ctypes.CDLL(None, use_errno=True).prctl(1, signum, 0, 0, 0)


def serve(path: str) -> None:
    """Accepts commands until killed; returns only in a forked child, as that command."""
    _die_with_parent(signal.SIGKILL)
    for name in PRELOAD:
        __import__(name)
    # Typer turns the app into a click command at every call; each child gets its own
    # copy of the one built here.
    import typer.main

    from connector_sync.cli import app

    typer.main.get_command = functools.cache(typer.main.get_command)
    typer.main.get_command(app)
    # What is imported now stays out of the children's collections: without this, each
    # child's exit spends 150 ms collecting (and copying) the server's objects.
    gc.freeze()
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(path)
    listener.listen(64)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ)
    waiting: dict[int, tuple[int, socket.socket]] = {}  # pidfd -> (pid, the shim's socket)
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    while True:
        for key, _ in selector.select():
            if key.fileobj is listener:
                conn, _ = listener.accept()
                try:
                    request, fds = _receive(conn)
                except (ConnectionError, ValueError, OSError):
                    conn.close()
                    continue
                pid = os.fork()
                if pid == 0:
                    _die_with_parent(signal.SIGKILL)
                    selector.close()
                    listener.close()
                    conn.close()
                    for _, other in waiting.values():
                        other.close()
                    for pidfd in waiting:
                        os.close(pidfd)
                    _become(request, fds)
                    return
                for fd in fds:
                    os.close(fd)
                pidfd = os.pidfd_open(pid)
                waiting[pidfd] = (pid, conn)
                selector.register(pidfd, selectors.EVENT_READ)
                selector.register(conn, selectors.EVENT_READ, pid)
                _send(conn, f"{pid}\n")
            elif key.data is not None:
                # The shim's end closed while its command runs: the shim was killed
                # (kill -9 cannot be forwarded), so the command dies the same way.
                selector.unregister(key.fileobj)
                with contextlib.suppress(ProcessLookupError):
                    os.kill(key.data, signal.SIGKILL)
            else:
                pidfd = key.fd
                pid, conn = waiting.pop(pidfd)
                selector.unregister(pidfd)
                os.close(pidfd)
                _, status = os.waitpid(pid, 0)
                if conn.fileno() in selector.get_map():
                    selector.unregister(conn)
                _send(conn, f"{os.waitstatus_to_exitcode(status)}\n")
                conn.close()


def _send(conn: socket.socket, text: str) -> None:
    # A shim that was killed cannot hear it; its command is reaped all the same.
    with contextlib.suppress(OSError):
        conn.sendall(text.encode())


_started: tuple[subprocess.Popen[str], Path] | None = None


def forked_command() -> str:
    """The path of a `connector-sync` that runs through this process's fork server,
    started on first use and stopped when this process exits. The server starts with
    neither a database URL nor PYTHONPATH; each command brings its own."""
    global _started
    if _started is None:
        folder = Path(tempfile.mkdtemp(prefix="forkserver-"))
        path = folder / "socket"
        shim = folder / "connector-sync"
        shim.write_text(SHIM.format(python=sys.executable, path=str(path)))
        shim.chmod(0o755)
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("CONNECTOR_SYNC_")
            and key not in {"DATABASE_URL", "PYTHONPATH", "CRON_SECRET"}
        }
        process = subprocess.Popen(
            [sys.executable, __file__, str(path)],
            env=env,
            cwd=folder,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            text=True,
        )
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", "the fork server did not start"
        _started = (process, folder)
        atexit.register(_stop)
    return str(_started[1] / "connector-sync")


def _stop() -> None:
    if _started is not None:
        process, folder = _started
        process.kill()
        process.wait()
        shutil.rmtree(folder, ignore_errors=True)


def _run_and_exit(main: Callable[[], object]) -> NoReturn:
    """In the child: run the command, then end the process the way CPython ends one
    (non-daemon threads joined, atexit handlers run, stdout and stderr flushed, the status
    of SystemExit, of an uncaught exception, death by SIGINT after an uncaught
    KeyboardInterrupt, 120 when stdout cannot be flushed), but without tearing the
    interpreter down: no module is freed and no `__del__` runs. That teardown frees every
    object the server imported, so it touched (and copied) every page the fork shares
    with the server: 35 ms of CPU in each command, more than a `--version` needs."""
    interrupted = False
    try:
        main()
        code = 0
    except SystemExit as exit:
        if exit.code is None or isinstance(exit.code, int):
            code = exit.code or 0
        else:
            print(exit.code, file=sys.stderr)
            code = 1
    except BaseException as exc:
        interrupted = isinstance(exc, KeyboardInterrupt)
        sys.excepthook(type(exc), exc, exc.__traceback__)
        code = 1
    threading._shutdown()  # type: ignore[attr-defined]  # what Py_FinalizeEx calls first
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        if stream is None or stream.closed:
            continue
        try:
            stream.flush()
        except Exception as exc:  # as CPython: reported, and the status becomes 120
            with contextlib.suppress(Exception):
                os.write(2, f"Exception ignored in: {stream!r}\n{exc!r}\n".encode())
            code = 120
    if interrupted:  # CPython ends by SIGINT so that the shell sees the interrupt
        signal.signal(signal.SIGINT, signal.SIG_DFL)
        os.kill(os.getpid(), signal.SIGINT)
    os._exit(code & 0xFF)


if __name__ == "__main__":
    # As the console script: its own folder is not on sys.path, the bin folder is.
    sys.path[0] = str(Path(sys.executable).parent)
    serve(sys.argv[1])
    from connector_sync.cli import main

    _run_and_exit(main)
