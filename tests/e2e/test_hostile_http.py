"""Hostile HTTP sources: what a server sends back never parks, floods or leaks.

Against real servers on 127.0.0.1 (tests/fake_api.py).
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest

from connector_sync.connectors.file import FileConnector
from connector_sync.connectors.http import HttpConnector
from connector_sync.exceptions import PermanentError, TransientError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store.base import HistoryFilter, NewConnector, Store
from support.fake_api import FakeApi

FAST = {"retry_backoff": 0.01, "max_retries": 1}


@pytest.fixture
def api() -> Iterator[FakeApi]:
    with FakeApi.serve() as api:
        yield api


def asking_to_wait(api: FakeApi, value: str, run: str) -> str:
    return f"{api.url}/flaky?run={run}&fail=100&status=429&retry_after={quote(value)}"


# -- Retry-After -------------------------------------------------------------------------

HOUR = 3600.0
# What the server sends, and the wait the connector reports (None: no usable wait).
RETRY_AFTERS = {
    "1e12": HOUR,
    "1e9": HOUR,
    "9" * 400: HOUR,  # more than a float holds
    "inf": HOUR,
    "nan": None,
    # no wait at all: retried at once, then given up as any failure
    "-5": None,
    "-Infinity": None,
    "Fri, 31 Dec 9999 23:59:59 GMT": HOUR,
    "Sat, 01 Jan 10000 00:00:00 GMT": None,  # not a date
}


@pytest.mark.parametrize("value", RETRY_AFTERS)
def test_any_retry_after_becomes_a_finite_wait_of_at_most_max_retry_wait(
    api: FakeApi, value: str
) -> None:
    plugin = HttpConnector({"url": asking_to_wait(api, value, "r"), **FAST})
    with pytest.raises(TransientError) as raised:
        list(plugin.read())
    wait = raised.value.retry_after
    assert wait == RETRY_AFTERS[value]
    assert wait is None or (math.isfinite(wait) and 0 <= wait <= HOUR)


def test_max_retry_wait_defaults_to_an_hour_and_caps_what_the_server_asks() -> None:
    assert HttpConnector.validate_config({"url": "http://h/"})["max_retry_wait"] == HOUR
    assert FileConnector.validate_config({"url": "http://h/a.csv"})["max_retry_wait"] == HOUR


def test_a_file_download_caps_retry_after_too(api: FakeApi) -> None:
    url = asking_to_wait(api, "1e12", "f") + "&x=.csv"
    plugin = FileConnector({"url": url, "format": "csv", **FAST, "max_retry_wait": 120})
    with pytest.raises(TransientError) as raised:
        list(plugin.read())
    assert raised.value.retry_after == 120


def test_a_run_against_retry_after_1e12_and_a_nul_in_a_401_body_records_both(
    store: Store, api: FakeApi
) -> None:
    config: dict[str, Any] = {"url": asking_to_wait(api, "1e12", "run"), **FAST}
    store.add_connector(NewConnector(name="parked", type="http", config=config, sync_interval=60))
    config = {"url": f"{api.url}/status/401?raw=1", **FAST}
    store.add_connector(NewConnector(name="nul", type="http", config=config, sync_interval=60))
    store.add_connector(
        NewConnector(name="fine", type="demo", config={"records": 3}, sync_interval=60)
    )
    Runner(store, RunOptions(attempts=1)).run()
    syncs = {s.connector_name: s for s in store.history(HistoryFilter())}
    assert syncs["fine"].status == "COMPLETED"
    assert syncs["parked"].status == "FAILED"
    parked = store.find_connector("parked")
    assert parked.next_sync_at is not None and parked.last_sync_at is not None
    wait = parked.next_sync_at - parked.last_sync_at
    assert dt.timedelta(0) < wait <= dt.timedelta(seconds=HOUR + 5)
    assert syncs["nul"].status == "FAILED"
    assert (syncs["nul"].error or "").endswith(
        "HTTP 401 Unauthorized: nul\\x00 bell\\x07 esc\\x1b[31m"
    )


# -- secrets -----------------------------------------------------------------------------

TOKEN = "tok-0123456789abcdefghij"


def test_an_error_excerpt_is_cut_after_redaction_so_no_part_of_a_token_shows(
    api: FakeApi,
) -> None:
    # {"message": "<pad>bad credentials: Bearer tok-...": the token crosses the 200th
    # character of the excerpt for some of these paddings.
    for pad in range(140, 185, 3):
        plugin = HttpConnector({"url": f"{api.url}/status/401?pad={pad}", "token": TOKEN, **FAST})
        with pytest.raises(PermanentError) as raised:
            list(plugin.read())
        message = raised.value.message
        assert "HTTP 401" in message
        shown = [TOKEN[:n] for n in range(4, len(TOKEN) + 1) if TOKEN[:n] in message]
        assert shown == [], f"pad {pad}: {message}"


@pytest.fixture
def elsewhere() -> Iterator[FakeApi]:
    with FakeApi.serve() as other:
        yield other


@pytest.mark.parametrize("status", [307, 308])
def test_a_post_redirected_to_another_origin_is_refused_and_its_body_not_resent(
    api: FakeApi, elsewhere: FakeApi, status: int
) -> None:
    body = {"q": "secret query", "size": 1}
    target = quote(f"{elsewhere.url}/search")
    url = f"{api.url}/redirect?status={status}&to={target}"
    plugin = HttpConnector({"url": url, "method": "POST", "body": body, **FAST})
    with pytest.raises(PermanentError) as raised:
        list(plugin.read())
    assert f"HTTP {status}" in raised.value.message
    assert f"redirects to {elsewhere.url}/search, another origin" in raised.value.message
    assert elsewhere.requests == []


def test_a_post_redirected_within_its_origin_or_a_get_redirected_anywhere_is_followed(
    api: FakeApi, elsewhere: FakeApi
) -> None:
    body = {"q": "shoes", "size": 2}
    same = f"{api.url}/redirect?status=307&to={quote('/search')}"
    post = HttpConnector({"url": same, "method": "POST", "body": body, "records_path": "hits"})
    assert [r["q"] for r in post.read()] == ["shoes", "shoes"]
    away = f"{api.url}/redirect?status=307&to={quote(elsewhere.url + '/items')}"
    assert len(list(HttpConnector({"url": away}).read())) == 23


def test_an_error_body_with_control_characters_gives_a_storable_one_line_excerpt(
    api: FakeApi,
) -> None:
    plugin = HttpConnector({"url": f"{api.url}/status/401?pad=3&raw=1", **FAST})
    with pytest.raises(PermanentError) as raised:
        list(plugin.read())
    message = raised.value.message
    assert "nul\\x00 bell\\x07 esc\\x1b[31m" in message, message
    assert message.isprintable()
