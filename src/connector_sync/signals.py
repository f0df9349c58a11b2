"""SIGTERM and SIGINT, acted on in a thread of their own.

Python runs a signal handler in the main thread between two bytecodes of whatever that
thread was doing: in the middle of writing a log line, or holding a lock. A handler that
logs can then fail ("reentrant call inside <_io.BufferedWriter name=2>"), and the error
surfaces in the interrupted code instead, with the rest of the handler (the part that
stops the run or the server) never done; a handler that takes a lock the main thread
holds waits for ever. Either way the signal is lost. So the handler here only puts the
signal's number on a `queue.SimpleQueue`, whose `put` is reentrant by design, and a relay
thread takes it off and does the work: logging, locks, stopping runs. That work must
not wait for the thread that leaves the block: leaving joins the relay.
"""

from __future__ import annotations

import logging
import queue
import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Self

log = logging.getLogger("connector_sync")

#: The signals that stop a run or a server.
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class SignalRelay:
    """`handler` is the signal handler; `act(signum)` runs in the relay thread, one
    signal after another, while the relay is entered."""

    def __init__(self, act: Callable[[int], None], name: str = "signal-relay") -> None:
        self._act = act
        self._queue: queue.SimpleQueue[int | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._relay, name=name, daemon=True)

    def handler(self, signum: int, _frame: FrameType | None = None) -> None:
        """The signal handler: nothing but a reentrant put."""
        self._queue.put(signum)

    def _relay(self) -> None:
        while (signum := self._queue.get()) is not None:
            try:
                self._act(signum)
            except Exception:  # a bug; the next signal must still be heard
                log.exception("acting on signal %d failed", signum)

    def __enter__(self) -> Self:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        # Signals received before this are acted on first (the queue keeps their order).
        self._queue.put(None)
        self._thread.join()


@contextmanager
def relayed(
    act: Callable[[int], None], signals: tuple[int, ...] = STOP_SIGNALS
) -> Iterator[SignalRelay]:
    """While the block runs, `signals` call `act(signum)` in a relay thread. Outside the
    main thread, where Python cannot handle signals, no handler is installed; the relay
    yielded still takes signals handed to it by other handlers (uvicorn's)."""
    with SignalRelay(act) as relay:
        if threading.current_thread() is not threading.main_thread():
            yield relay
            return
        previous = {s: signal.signal(s, relay.handler) for s in signals}
        try:
            yield relay
        finally:
            for s, handler in previous.items():
                signal.signal(s, handler)
