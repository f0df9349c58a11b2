"""A signal that comes while the main thread writes a log line is not lost (signals.py).

Found by `serve` under load: SIGTERM arrived while the main thread wrote an access-log
line, the handler's own log line failed ("reentrant call inside <_io.BufferedWriter
name=2>"), the rest of the handler (the stop) never ran, and the server went on serving.
"""

from __future__ import annotations

import logging
import os
import signal
import threading

import pytest

from connector_sync.signals import relayed


class Stream:
    """A stream that, like io.BufferedWriter, refuses a write re-entered by the thread
    already writing (as a signal handler does), and makes another thread wait."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.signal_mid_write = False
        self._lock = threading.Lock()
        self._writer: int | None = None

    def write(self, text: str) -> None:
        if self._writer == threading.get_ident():
            raise RuntimeError("reentrant call inside Stream")
        with self._lock:
            self._writer = threading.get_ident()
            try:
                if self.signal_mid_write:
                    self.signal_mid_write = False
                    os.kill(os.getpid(), signal.SIGTERM)  # handled before the next bytecode
                self.lines.append(text)
            finally:
                self._writer = None

    def flush(self) -> None:
        pass


def test_a_signal_during_a_log_write_is_acted_on_and_logs() -> None:
    stream = Stream()
    handler = logging.StreamHandler(stream)  # type: ignore[arg-type]
    logger = logging.getLogger("test_signals")
    logger.addHandler(handler)
    logger.propagate = False
    acted = threading.Event()
    seen: list[int] = []

    def act(signum: int) -> None:
        logger.warning("%s received", signal.Signals(signum).name)
        seen.append(signum)
        acted.set()

    before = signal.getsignal(signal.SIGTERM)
    try:
        with relayed(act):
            stream.signal_mid_write = True
            logger.warning("an access-log line")
            assert acted.wait(10), "the signal was lost"
    finally:
        logger.removeHandler(handler)
    assert seen == [signal.SIGTERM]
    assert stream.lines == ["an access-log line\n", "SIGTERM received\n"]
    # The handlers are given back when the block ends.
    assert signal.getsignal(signal.SIGTERM) is before


def test_a_signal_while_the_main_thread_holds_the_lock_the_act_takes() -> None:
    lock = threading.Lock()
    took: list[bool] = []
    acted = threading.Event()

    def act(signum: int) -> None:
        # Acting in the handler, this would wait for ever on the main thread: give up.
        took.append(lock.acquire(timeout=5))
        if took[-1]:
            lock.release()
        acted.set()

    with relayed(act):
        with lock:
            os.kill(os.getpid(), signal.SIGINT)
            assert not acted.wait(0.2)
        assert acted.wait(10)
    assert took == [True]


def test_an_act_that_fails_is_logged_and_the_next_signal_still_heard(
    caplog: pytest.LogCaptureFixture,
) -> None:
    seen: list[int] = []
    second = threading.Event()

    def act(signum: int) -> None:
        seen.append(signum)
        if len(seen) == 1:
            raise RuntimeError("a bug in the stop")
        second.set()

    with caplog.at_level(logging.ERROR, logger="connector_sync"), relayed(act):
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        assert second.wait(10)
    assert seen == [signal.SIGTERM, signal.SIGTERM]
    assert "acting on signal 15 failed" in caplog.text
