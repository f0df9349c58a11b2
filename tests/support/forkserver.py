"""A fork server for `connector-sync` commands run by shell scripts in tests.

The docs run about two hundred commands through bash, and most of each command's time
was Python importing the same modules again. Here one server process per test worker
imports the command line once; a `connector-sync` shim placed first on a test's PATH
hands the server its argv, environment, working directory and its stdin, stdout and
stderr (the descriptors themselves, over a Unix socket); the server forks, and the child
becomes that command: it takes the descriptors as 0, 1 and 2, the environment and the
folder, and runs `connector_sync.cli.main()` as the console script would, ending as a
process ends (atexit, flushed streams, its exit status). The shim forwards the signals
a shell or a timeout sends and exits with the child's status, or dies of its signal.

What a fork cannot give the child, and so what tests that need it do not use this for:
its own process group and controlling terminal (a kill -9 of the shim is passed on: the
server kills the command when the shim's end of the socket closes before it ends), and a fresh interpreter (a module the
server imported is imported already; the e2e tests and the README's page run the real
console script, which would catch an import the code forgot). Only modules are imported
before the fork: nothing reads the environment, opens a database or discovers plugins
until the child runs the command; `PYTHONPATH` from the command's environment is put on
`sys.path` as Python would.
"""

from __future__ import annotations

import contextlib
import ctypes
import functools
import gc
import json
import os
import selectors
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

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
)

SHIM = '''\
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
'''


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
    sys.stdin = sys.__stdin__ = open(0, encoding="utf-8", closefd=False)  # noqa: SIM115
    sys.stdout = sys.__stdout__ = open(  # noqa: SIM115
        1, "w", buffering=1 if os.isatty(1) else -1, encoding="utf-8", closefd=False
    )
    sys.stderr = sys.__stderr__ = open(  # noqa: SIM115
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
    try:
        conn.sendall(text.encode())
    except OSError:
        pass  # the shim was killed; its child runs on and is reaped all the same


@contextmanager
def forkserver(folder: Path, env: dict[str, str]) -> Iterator[Path]:
    """Starts a fork server; yields a folder holding its `connector-sync` shim, to put
    first on a PATH. The server stops when the context ends."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "socket"
    (folder / "connector-sync").write_text(SHIM.format(python=sys.executable, path=str(path)))
    (folder / "connector-sync").chmod(0o755)
    process = subprocess.Popen(
        [sys.executable, __file__, str(path)],
        env=env,
        cwd=folder,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert process.stdout is not None
        assert process.stdout.readline() == "ready\n", "the fork server did not start"
        yield folder
    finally:
        process.kill()
        process.wait()
        path.unlink(missing_ok=True)


if __name__ == "__main__":
    # As the console script: its own folder is not on sys.path, the bin folder is.
    sys.path[0] = str(Path(sys.executable).parent)
    serve(sys.argv[1])
    from connector_sync.cli import main

    main()
