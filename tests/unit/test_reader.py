"""The runner's reader thread: batches as they come, fetched counted for a failure too,
and, while it reads, fewer garbage collections and quicker GIL hand-overs."""

from __future__ import annotations

import gc
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from connector_sync.connectors.base import CheckResult, ConnectorPlugin
from connector_sync.runner import (
    READING_GC_THRESHOLD,
    READING_SWITCH_INTERVAL,
    ReaderThreads,
    _Reader,
)


class Counting(ConnectorPlugin):
    """Yields `records` records, noting the GC threshold it reads under; fails at `fail`."""

    type_name = "counting"

    def __init__(self, records: int, fail: int | None = None) -> None:
        super().__init__({})
        self.records, self.fail = records, fail
        self.thresholds: set[int] = set()
        self.intervals: set[float] = set()
        self.thread: threading.Thread | None = None

    def check(self) -> CheckResult:
        return CheckResult(True, "ok")

    def read(self) -> Iterator[dict[str, Any]]:
        self.thread = threading.current_thread()
        for n in range(self.records):
            if n == self.fail:
                raise RuntimeError(f"failed at {n}")
            self.thresholds.add(gc.get_threshold()[0])
            self.intervals.add(sys.getswitchinterval())
            yield {"n": n}


def drain(reader: _Reader) -> list[int]:
    return [len(batch.lines) for batch in reader.batches_until(time.monotonic() + 30, lambda: None)]


def test_batches_and_the_process_settings_while_reading() -> None:
    before, interval = gc.get_threshold(), sys.getswitchinterval()
    plugin = Counting(12)
    with _Reader(plugin, 5, "counting", ReaderThreads()) as reader:
        assert drain(reader) == [5, 5, 2]
    assert reader.done.wait(5)
    assert reader.fetched == 12
    assert plugin.thresholds == {max(before[0], READING_GC_THRESHOLD)}
    assert plugin.intervals == {min(interval, READING_SWITCH_INTERVAL)}
    assert (gc.get_threshold(), sys.getswitchinterval()) == (before, interval)  # put back


def test_a_failure_counts_the_records_read_before_it() -> None:
    before = gc.get_threshold()
    reader = _Reader(Counting(12, fail=7), 5, "counting", ReaderThreads())
    with reader, pytest.raises(RuntimeError, match="failed at 7"):
        drain(reader)
    assert reader.done.wait(5)
    assert reader.fetched == 7
    assert gc.get_threshold() == before


def test_a_reader_thread_serves_the_next_reader_and_ends_when_closed() -> None:
    threads = ReaderThreads()
    used = []
    for n in range(3):
        plugin = Counting(3)
        with _Reader(plugin, 5, f"c{n}", threads) as reader:
            assert drain(reader) == [3]
        assert reader.done.wait(5)
        deadline = time.monotonic() + 5
        while not threads._idle:  # back among the idle ones just after its reader is done
            assert time.monotonic() < deadline
            time.sleep(0.001)
        used.append(plugin.thread)
    assert used[0] is used[1] is used[2] and used[0] is not None
    assert used[0].name == "read-c2"
    threads.close()
    used[0].join(5)
    assert not used[0].is_alive()
