"""Hostile sources cannot inflate memory or time: bodies, decompression, records and
`test` are bounded, and an abandoned read lets go of its connection at once.

The limits are lowered in most tests (the same code path, faster); one `run` per
database goes against every hostile source with the default limits, in a subprocess
whose peak RSS is measured.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from connector_sync.connectors.file import FileConnector
from connector_sync.connectors.http import HttpConnector
from connector_sync.exceptions import PermanentError, PluginError, TransientError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store.base import HistoryFilter, NewConnector, Store
from support.database import count_rows
from support.fake_api import FakeApi

MiB = 1024 * 1024
FAST = {"retry_backoff": 0.01, "max_retries": 0}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi.serve() as api:
        yield api


def fails(call: Callable[[], Any], error: type[PluginError], *fragments: str) -> float:
    """Seconds until `call` raised `error` holding each fragment."""
    started = time.monotonic()
    with pytest.raises(error) as raised:
        call()
    for fragment in fragments:
        assert fragment in raised.value.message, raised.value.message
    return time.monotonic() - started


def eventually(condition: Callable[[], bool], seconds: float = 3.0) -> bool:
    give_up = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > give_up:
            return False
        time.sleep(0.02)
    return True


def one_line_of(size: int, path: Path, header: bytes = b"id,name\n1,") -> Path:
    """A file whose second line is `size` bytes long, sparse: nothing big is written."""
    with path.open("wb") as handle:
        handle.write(header)
        handle.truncate(size)
    return path


# -- http: bytes per response, as sent and decompressed --------------------------------


def test_an_endless_body_fails_at_max_response_bytes_and_hangs_up(api: FakeApi) -> None:
    plugin = HttpConnector({"url": f"{api.url}/endless-body", "max_response_bytes": MiB, **FAST})
    fails(
        lambda: list(plugin.read()),
        PermanentError,
        "the response is more than 1 MiB (max_response_bytes); raise max_response_bytes",
    )
    assert eventually(lambda: api.counters.get("hung up: /endless-body", 0) == 1)


def test_a_gzip_bomb_fails_at_max_response_bytes_once_decompressed(api: FakeApi) -> None:
    plugin = HttpConnector({"url": f"{api.url}/gzip-bomb", "max_response_bytes": MiB, **FAST})
    fails(lambda: list(plugin.read()), PermanentError, "decompresses to more than 1 MiB")
    fails(plugin.check, PermanentError, "decompresses to more than 1 MiB")


def test_a_page_announced_larger_than_the_limit_is_not_downloaded(api: FakeApi) -> None:
    plugin = HttpConnector({"url": f"{api.url}/big-page?mb=300", **FAST})
    seconds = fails(
        lambda: list(plugin.read()),
        PermanentError,
        "bytes, more than 16 MiB (max_response_bytes)",
    )
    assert seconds < 2


# -- file: bytes per download (a url), as sent and decompressed ------------------------------


def test_an_endless_download_fails_at_max_response_bytes_and_hangs_up(api: FakeApi) -> None:
    plugin = FileConnector({"url": f"{api.url}/endless-lines/x.jsonl", "max_response_bytes": MiB})
    fails(
        lambda: sum(1 for _ in plugin.read()),
        PermanentError,
        "the file is more than 1 MiB (max_response_bytes); "
        "raise max_response_bytes if the file really is this large",
    )
    assert eventually(lambda: api.counters.get("hung up: /endless-lines/x.jsonl", 0) == 1)


def test_a_downloaded_gzip_bomb_fails_at_max_response_bytes_once_decompressed(
    api: FakeApi,
) -> None:
    plugin = FileConnector({"url": f"{api.url}/gzip-bomb/x.json", "max_response_bytes": MiB})
    fails(lambda: list(plugin.read()), PermanentError, "decompresses to more than 1 MiB")


def test_a_download_announced_larger_than_the_limit_is_not_read(api: FakeApi) -> None:
    plugin = FileConnector({"url": f"{api.url}/big-page/x.json?mb=300", "max_response_bytes": MiB})
    seconds = fails(
        lambda: list(plugin.read()), PermanentError, "bytes, more than 1 MiB (max_response_bytes)"
    )
    assert seconds < 2


def test_a_download_within_the_limit_is_read_whole_and_the_default_is_1_gib(
    api: FakeApi,
) -> None:
    api.files["rows.csv"] = b"n\n" + b"".join(b"%d\n" % n for n in range(100_000))
    size = len(api.files["rows.csv"])
    plugin = FileConnector({"url": f"{api.url}/files/rows.csv", "max_response_bytes": size})
    assert sum(1 for _ in plugin.read()) == 100_000
    assert FileConnector({"url": f"{api.url}/files/rows.csv"}).config["max_response_bytes"] == (
        1 << 30
    )


def test_a_sync_of_an_endless_download_fails_naming_the_limit_and_keeps_nothing(
    store: Store, db_url: str, api: FakeApi
) -> None:
    config = {"url": f"{api.url}/endless-lines/x.jsonl", "max_response_bytes": MiB}
    store.add_connector(
        NewConnector(name="endless", type="file", config=config, sync_interval=3600)
    )
    Runner(store, RunOptions()).run()
    sync = store.history(HistoryFilter(limit=1))[0]
    assert sync.status == "FAILED"
    assert sync.error is not None
    assert "the file is more than 1 MiB (max_response_bytes); raise max_response_bytes" in (
        sync.error
    )
    assert count_rows(db_url, "dataset_records") == 0
    assert count_rows(db_url, "datasets") == 0


@pytest.mark.parametrize("encoding", ["gzip", "deflate", "raw-deflate", "gzip-members", ""])
def test_compressed_pages_are_read_as_before(api: FakeApi, encoding: str) -> None:
    records = list(HttpConnector({"url": f"{api.url}/encoded?as={encoding}"}).read())
    assert len(records) == 23


def test_an_encoding_that_cannot_be_undone_is_named(api: FakeApi) -> None:
    plugin = HttpConnector({"url": f"{api.url}/encoded?as=br", **FAST})
    fails(
        lambda: list(plugin.read()),
        PermanentError,
        "cannot decompress the body (Content-Encoding 'br'): connector-sync accepts only gzip",
    )
    assert api.requests[0].headers["accept-encoding"] == "gzip, deflate"


# -- file: bytes per record ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "header"), [("long.csv", b"id,name\n1,"), ("long.jsonl", b'{"id": "')]
)
def test_one_500_mb_line_fails_at_max_record_chars(
    tmp_path: Path, name: str, header: bytes
) -> None:
    path = one_line_of(500 * MiB, tmp_path / name, header)
    plugin = FileConnector({"path": str(path)})
    seconds = fails(
        lambda: list(plugin.read()),
        PermanentError,
        "a record is longer than 16777216 characters (max_record_chars)",
    )
    assert seconds < 5


def test_a_csv_record_spanning_lines_is_bounded_too(tmp_path: Path) -> None:
    path = tmp_path / "quoted.csv"
    path.write_text('id,note\n1,"' + "x\n" * 100 + '"\n2,short\n')
    plugin = FileConnector({"path": str(path), "max_record_chars": 150})
    fails(lambda: list(plugin.read()), PermanentError, "line 75: a record is longer than 150")
    assert len(list(FileConnector({"path": str(path), "max_record_chars": 250}).read())) == 2


def test_an_endless_line_over_a_url_fails_at_max_record_chars(api: FakeApi) -> None:
    url = f"{api.url}/endless-line/data.csv"
    plugin = FileConnector({"url": url, "max_record_chars": MiB, **FAST})
    fails(lambda: list(plugin.read()), PermanentError, "longer than 1048576 characters")
    header = FileConnector({"url": f"{url}?first=endless", "max_record_chars": MiB, **FAST})
    fails(header.check, PermanentError, "line 1: a record is longer than 1048576 characters")
    assert eventually(lambda: api.counters.get("hung up: /endless-line/data.csv", 0) == 2)


def test_a_json_array_element_is_bounded(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    path.write_text('[{"a": 1}, {"text": "' + "x" * 5000 + '"}]')
    plugin = FileConnector({"path": str(path), "max_record_chars": 1000})
    fails(lambda: list(plugin.read()), PermanentError, "(max_record_chars)")


# -- test (check) has a deadline ------------------------------------------------------------


@pytest.mark.parametrize("path", ["/silent", "/trickle?every=0.1"])
def test_check_gives_up_at_check_timeout_on_a_silent_or_trickling_server(
    api: FakeApi, path: str
) -> None:
    for plugin in (
        HttpConnector({"url": api.url + path, "check_timeout": 0.5, "max_retries": 3}),
        FileConnector({"url": api.url + path, "format": "json", "check_timeout": 0.5}),
    ):
        seconds = fails(plugin.check, TransientError, "not done within 0.5s (check_timeout)")
        assert seconds < 2


# -- an abandoned read lets go at once --------------------------------------------------------


def test_closing_a_download_hangs_up_at_once(api: FakeApi) -> None:
    reader = FileConnector({"url": f"{api.url}/endless-lines/x.jsonl"}).read()
    assert next(reader) == {"n": 1}
    reader.close()  # what the runner does to a read it abandons
    assert eventually(lambda: api.counters.get("hung up: /endless-lines/x.jsonl", 0) == 1)


def test_closing_a_paged_read_closes_its_connection_and_asks_no_more(api: FakeApi) -> None:
    config = {"url": f"{api.url}/endless", "pagination": {"type": "page"}}
    reader = HttpConnector(config).read()
    assert next(reader)["id"] == 1
    asked = len(api.requests)
    reader.close()
    assert eventually(lambda: api.counters.get("connections closed", 0) == 1)
    time.sleep(0.1)
    assert len(api.requests) == asked


def test_closing_a_local_read_closes_the_file(tmp_path: Path) -> None:
    path = tmp_path / "rows.csv"
    path.write_text("n\n" + "".join(f"{n}\n" for n in range(1000)))
    reader = FileConnector({"path": str(path)}).read()
    next(reader)

    def open_here() -> bool:
        fds = Path("/proc/self/fd")
        return any(os.path.realpath(fds / fd) == str(path) for fd in os.listdir(fds))

    assert open_here()
    reader.close()
    assert not open_here()


# -- one run against every hostile source, default limits, memory measured ----------------------


def test_a_run_against_hostile_sources_stays_under_300_mb_and_fails_each_naming_the_limit(
    store: Store, db_url: str, api: FakeApi, tmp_path: Path
) -> None:
    hostile = {
        "endless-body": ("http", {"url": f"{api.url}/endless-body"}, "(max_response_bytes)"),
        "gzip-bomb": ("http", {"url": f"{api.url}/gzip-bomb"}, "decompresses to more than"),
        "big-page": ("http", {"url": f"{api.url}/big-page?mb=300"}, "(max_response_bytes)"),
        "long-line": (
            "file",
            {"path": str(one_line_of(500 * MiB, tmp_path / "long.csv"))},
            "(max_record_chars)",
        ),
        "endless-line": (
            "file",
            {"url": f"{api.url}/endless-line/data.csv"},
            "(max_record_chars)",
        ),
    }
    for name, (kind, config, _) in hostile.items():
        store.add_connector(NewConnector(name=name, type=kind, config=config, sync_interval=3600))
    store.add_connector(
        NewConnector(name="fine", type="demo", config={"records": 10}, sync_interval=3600)
    )
    command = [sys.executable, "-m", "connector_sync", "--database-url", db_url, "run", "--json"]
    peak, output = peak_rss_of(command)
    syncs = {s["connector_name"]: s for s in json.loads(output)}
    assert syncs["fine"]["status"] == "COMPLETED"
    for name, (_, _, limit) in hostile.items():
        assert syncs[name]["status"] == "FAILED", name
        assert limit in syncs[name]["error"], syncs[name]["error"]
    assert peak < 300 * MiB, f"peak RSS {peak // MiB} MiB"


def peak_rss_of(command: list[str]) -> tuple[int, str]:
    """The peak resident memory of `command` in bytes (its own, not that of other
    children of this process), and its standard output."""
    with subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL) as child:
        stdout = child.stdout
        assert stdout is not None
        chunks: list[bytes] = []
        drain = threading.Thread(target=lambda: chunks.append(stdout.read()))
        drain.start()
        timer = threading.Timer(60, child.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(child.pid, 0)
        finally:
            timer.cancel()
        child.returncode = os.waitstatus_to_exitcode(status)
        drain.join()
    return usage.ru_maxrss * 1024, b"".join(chunks).decode()
