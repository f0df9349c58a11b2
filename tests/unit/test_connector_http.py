"""The `http` connector against a real HTTP server on 127.0.0.1 (tests/support/fake_api.py)."""

from __future__ import annotations

import itertools
import json
import socket
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from connector_sync.connectors.http import HttpConnector, dot_get, retry_after_seconds
from connector_sync.connectors.registry import load_plugin
from connector_sync.exceptions import ConfigError, PermanentError, TransientError
from support.fake_api import FakeApi, item

FAST = {"retry_backoff": 0.01, "max_retries": 3}
ALL_ITEMS = [item(n) for n in range(1, 24)]


def connector(api: FakeApi, path: str, state: dict[str, Any] | None = None, **config: Any) -> Any:
    return HttpConnector({"url": api.url + path, **FAST, **config}, state)


PAGINATIONS = {
    "none": ("/items", {}, {}, 1),
    "page": (
        "/page",
        {"records_path": "data.items"},
        {"type": "page", "size_param": "per_page", "page_size": 5},
        6,  # five pages and the empty one that ends it
    ),
    "offset": ("/offset", {"records_path": "results"}, {"type": "offset", "page_size": 5}, 6),
    "cursor": (
        "/cursor",
        {"records_path": "items"},
        {"type": "cursor", "cursor_param": "cursor", "cursor_path": "meta.next"},
        5,
    ),
    "link": ("/link", {}, {"type": "link"}, 5),
    "next_url": (
        "/next",
        {"records_path": "records"},
        {"type": "next_url", "next_url_path": "next"},
        5,
    ),
}


@pytest.mark.parametrize("style", PAGINATIONS)
def test_every_pagination_style_reads_every_record_once(api: FakeApi, style: str) -> None:
    path, extra, pagination, requests = PAGINATIONS[style]
    records = list(connector(api, path, pagination=pagination, **extra).read())
    assert records == ALL_ITEMS
    assert len(api.requests) == requests


def test_page_and_offset_parameters_sent(api: FakeApi) -> None:
    page = {"type": "page", "size_param": "per_page", "page_size": 5, "start_page": 1}
    list(connector(api, "/page", records_path="data.items", pagination=page).read())
    assert [r.query for r in api.requests[:2]] == [
        {"page": "1", "per_page": "5"},
        {"page": "2", "per_page": "5"},
    ]
    api.requests.clear()
    offset = {"type": "offset", "offset_param": "offset", "limit_param": "limit", "page_size": 10}
    list(connector(api, "/offset", records_path="results", pagination=offset).read())
    assert [r.query["offset"] for r in api.requests] == ["0", "10", "20", "23"]


def test_reads_page_by_page_lazily(api: FakeApi) -> None:
    page = {"type": "page", "size_param": "per_page", "page_size": 5}
    reader = connector(api, "/page", records_path="data.items", pagination=page).read()
    assert next(reader) == item(1)
    assert len(api.requests) == 1  # nothing fetched ahead of what was asked for
    assert [next(reader)["id"] for _ in range(5)] == [2, 3, 4, 5, 6]
    assert len(api.requests) == 2


@pytest.mark.parametrize("style", ["page", "link", "cursor"])
def test_incremental_second_read_returns_only_new_records(api: FakeApi, style: str) -> None:
    path, extra, pagination, _ = PAGINATIONS[style]
    incremental = {"cursor_field": "updated", "cursor_param": "updated_since"}
    first = connector(api, path, pagination=pagination, incremental=incremental, **extra)
    assert list(first.read()) == ALL_ITEMS
    assert first.state == {"cursor": 230}
    assert "updated_since" not in api.requests[0].query  # no cursor yet, no initial value

    api.items.extend([item(24), item(25)])
    api.requests.clear()
    second = connector(
        api, path, first.state, pagination=pagination, incremental=incremental, **extra
    )
    assert list(second.read()) == [item(24), item(25)]
    assert api.requests[0].query["updated_since"] == "230"
    assert second.state == {"cursor": 250}

    third = connector(
        api, path, second.state, pagination=pagination, incremental=incremental, **extra
    )
    assert list(third.read()) == []
    assert third.state == {"cursor": 250}  # nothing new: the cursor stays


def test_incremental_initial_value_is_sent_on_the_first_sync(api: FakeApi) -> None:
    incremental = {"cursor_field": "updated", "cursor_param": "updated_since", "initial_value": 200}
    plugin = connector(api, "/items", incremental=incremental)
    assert [r["id"] for r in plugin.read()] == [21, 22, 23]
    assert api.requests[0].query == {"updated_since": "200"}


def test_records_without_the_cursor_field_fail_clearly(api: FakeApi) -> None:
    incremental = {"cursor_field": "modified", "cursor_param": "since"}
    with pytest.raises(PermanentError, match="record 1: the record has no value for cursor field"):
        list(connector(api, "/items", incremental=incremental).read())


def test_headers_params_token_and_post_body_are_sent(api: FakeApi) -> None:
    plugin = connector(
        api,
        "/search",
        method="post",
        body={"q": "shoes", "size": 2},
        params={"lang": "en", "tags": ["a", "b"]},
        headers={"X-Trace": "t-1"},
        token="tok-123",
        records_path="hits",
    )
    assert [r["q"] for r in plugin.read()] == ["shoes", "shoes"]
    [request] = api.requests
    assert request.method == "POST" and request.body == {"q": "shoes", "size": 2}
    assert request.headers["authorization"] == "Bearer tok-123"
    assert request.headers["x-trace"] == "t-1"
    assert request.query == {"lang": "en", "tags": "b"}  # parse_qsl keeps the last


def test_500_then_success_is_retried(api: FakeApi) -> None:
    records = list(connector(api, "/flaky?run=a&fail=2&status=500").read())
    assert records == ALL_ITEMS[:3]
    assert len(api.requests) == 3


@pytest.mark.real_time
@pytest.mark.parametrize("retry_after", ["1", "date"])
def test_429_honours_retry_after_seconds_and_http_dates(api: FakeApi, retry_after: str) -> None:
    started = time.monotonic()
    records = list(connector(api, f"/flaky?run=b&status=429&retry_after={retry_after}").read())
    waited = time.monotonic() - started
    assert records == ALL_ITEMS[:3]
    [first, second] = api.requests
    # retry_backoff is 0.01s: only the server's Retry-After explains a second's wait.
    assert second.at - first.at >= 0.9
    assert waited < 3.5


def test_retry_after_beyond_max_retry_wait_gives_up_at_once(api: FakeApi) -> None:
    plugin = connector(api, "/flaky?run=c&status=429&retry_after=120", max_retry_wait=5)
    with pytest.raises(TransientError, match=r"HTTP 429 .*retry after 120s, longer than"):
        list(plugin.read())
    assert len(api.requests) == 1


def test_retries_are_bounded_and_the_error_says_so(api: FakeApi) -> None:
    plugin = connector(api, "/flaky?run=d&fail=100&status=503", max_retries=2)
    with pytest.raises(TransientError) as raised:
        list(plugin.read())
    assert len(api.requests) == 3
    assert raised.value.message == (
        f"GET {api.url}/flaky?run=d&fail=100&status=503: HTTP 503 Service Unavailable "
        "(gave up after 3 attempts)"
    )


@pytest.mark.parametrize(("status", "reason"), [(401, "Unauthorized"), (404, "Not Found")])
def test_401_and_404_fail_at_once_without_secrets(api: FakeApi, status: int, reason: str) -> None:
    plugin = connector(
        api, f"/status/{status}", token="s3cr3t-token", params={"api_key": "k3y-value", "q": "x"}
    )
    with pytest.raises(PermanentError) as raised:
        list(plugin.read())
    message = raised.value.message
    assert len(api.requests) == 1  # permanent: never retried
    assert message.startswith(
        f"GET {api.url}/status/{status}?api_key=***&q=x: HTTP {status} {reason}"
    )
    assert "bad credentials" in message  # the body's excerpt, which echoed both secrets
    assert "s3cr3t-token" not in message and "k3y-value" not in message
    assert "\n" not in message


@pytest.mark.real_time
def test_a_slow_response_times_out_and_is_retried(api: FakeApi) -> None:
    started = time.monotonic()
    with pytest.raises(TransientError, match=r"/slow\?delay=2: timed out after 0.2s"):
        list(connector(api, "/slow?delay=2", timeout=0.2, max_retries=1).read())
    assert len(api.requests) == 2
    assert time.monotonic() - started < 1.5


def test_connection_refused_is_transient() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]  # closed again before the request: nobody listens
    plugin = HttpConnector({"url": f"http://127.0.0.1:{port}/x", **FAST, "max_retries": 1})
    with pytest.raises(TransientError, match=f"GET http://127.0.0.1:{port}/x: .*gave up after 2"):
        list(plugin.read())


def test_response_shape_errors_are_permanent_and_clear(api: FakeApi) -> None:
    with pytest.raises(PermanentError, match=r"the response has no 'data.rows' \(records_path\)"):
        list(connector(api, "/page", records_path="data.rows").read())
    with pytest.raises(PermanentError, match="the response body is an object, expected a list"):
        list(connector(api, "/page").read())
    with pytest.raises(PermanentError, match=r"not-json: the response is not JSON \(text/html\)"):
        list(connector(api, "/not-json").read())
    with pytest.raises(PermanentError, match=r"'data\.page' is a number, expected a list"):
        list(connector(api, "/page", records_path="data.page").read())
    with pytest.raises(PermanentError, match="scalars: record 2 is a string, expected an object"):
        list(connector(api, "/scalars").read())


def test_endless_pagination_is_stopped(api: FakeApi) -> None:
    plugin = connector(api, "/endless", pagination={"type": "page", "max_pages": 3})
    with pytest.raises(PermanentError, match=r"did not end after 3 pages \(pagination.max_pages\)"):
        list(plugin.read())
    assert len(api.requests) == 3
    same = connector(
        api,
        "/same-cursor",
        records_path="items",
        pagination={"type": "cursor", "cursor_param": "c", "cursor_path": "meta.next"},
    )
    with pytest.raises(PermanentError, match="repeats a cursor already followed"):
        list(same.read())


def test_a_next_page_on_another_host_is_not_followed(api: FakeApi) -> None:
    plugin = connector(
        api,
        "/elsewhere",
        token="tok",
        records_path="records",
        pagination={"type": "next_url", "next_url_path": "next"},
    )
    with pytest.raises(PermanentError, match="is on another origin"):
        list(plugin.read())
    assert [r.path for r in api.requests] == ["/elsewhere"]  # the token stayed home


def test_urls_httpx_cannot_parse_fail_at_once_without_retries(api: FakeApi) -> None:
    """A Location header or next-page URL that does not parse never will: permanent."""
    redirect = connector(api, "/redirect?to=http://h:x/")  # port x
    with pytest.raises(PermanentError, match="Invalid URL in location header") as raised:
        list(redirect.read())
    assert not isinstance(raised.value, TransientError)
    assert len(api.requests) == 1
    api.requests.clear()
    api.files["next.json"] = json.dumps({"records": [], "next": "http://h:x/"}).encode()
    paged = connector(
        api,
        "/files/next.json",
        records_path="records",
        pagination={"type": "next_url", "next_url_path": "next"},
    )
    with pytest.raises(
        PermanentError, match=r"the next page 'http://h:x/' is not a usable URL \(Invalid port"
    ):
        list(paged.read())
    assert len(api.requests) == 1


@pytest.mark.real_time
def test_rate_limit_spaces_requests(api: FakeApi) -> None:
    page = {"type": "page", "size_param": "per_page", "page_size": 5}
    plugin = connector(
        api, "/page", records_path="data.items", pagination=page, max_requests_per_second=10
    )
    assert len(list(plugin.read())) == 23
    times = [r.at for r in api.requests]
    assert len(times) == 6
    # 10 a second is one each 100 ms when sent; arrival times at the server jitter a little.
    assert times[-1] - times[0] >= 0.45
    assert min(b - a for a, b in itertools.pairwise(times)) >= 0.06


def test_check_makes_one_request_and_counts_the_first_page(api: FakeApi) -> None:
    page = {"type": "page", "size_param": "per_page", "page_size": 5}
    result = connector(api, "/page", records_path="data.items", pagination=page).check()
    assert result.ok
    assert result.details == {"status": 200, "records": 5}
    assert result.message == (
        f"GET {api.url}/page?page=1&per_page=5: HTTP 200, 5 records on the first page"
    )
    assert len(api.requests) == 1
    with pytest.raises(PermanentError, match="HTTP 401"):
        connector(api, "/status/401").check()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"url": "ftp://x"}, "'url' must start with http:// or https://"),
        ({"method": "DELETE"}, "'method' must be GET or POST"),
        ({"body": {"a": 1}}, "'body' is sent only with method POST"),
        ({"pagination": {"type": "pages"}}, "'pagination.type' must be one of none, page"),
        ({"pagination": {"type": "cursor", "cursor_param": "c"}}, "'pagination.cursor_path'"),
        ({"pagination": {"type": "link", "page_size": 3}}, "page_size, which pagination type"),
        ({"pagination": {"type": "page", "max_pages": "9"}}, "'pagination.max_pages' must be"),
        ({"pagination": {"nope": 1}}, "'pagination' has unknown field"),
        ({"incremental": {"cursor_field": "u"}}, "'incremental.cursor_param'"),
        ({"incremental": {"cursor_param": "u"}}, "missing required field 'incremental.cursor_f"),
        ({"headers": {"X-N": 5}}, "'headers.X-N' must be a string"),
        ({"token": "t", "headers": {"authorization": "x"}}, "not both"),
        ({"timeout": 0}, "'timeout' must be 0.001 or more, got 0$"),
        ({"token": 123}, "'token' must be string, got int$"),  # the value is not echoed
    ],
)
def test_config_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        HttpConnector({"url": "https://api.example.com/v1", **config})


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # httpx would send the URL's credentials as Basic over the token or the header.
        (
            {"url": "https://u:p@api.example.com/v1", "token": "t"},
            "^http config: give credentials in 'url' or a 'token', not both$",
        ),
        (
            {"url": "https://u@api.example.com/v1", "headers": {"AUTHORIZATION": "Bearer x"}},
            "^http config: give credentials in 'url' or an Authorization header, not both$",
        ),
        ({"url": "https://:p@api.example.com/v1", "token": "env:T"}, "credentials in 'url'"),
    ],
)
def test_a_new_config_gives_one_authorization(config: dict[str, Any], message: str) -> None:
    """A rule for configs being added or changed: one stored before it still builds."""
    with pytest.raises(ConfigError, match=message):
        HttpConnector.check_new_config(config)
    HttpConnector(config)


@pytest.mark.parametrize(
    "config",
    [
        {"url": "https://u:p@api.example.com/v1"},
        {"url": "https://u:p@api.example.com/v1", "headers": {"X-Api-Key": "k"}},
        {"url": "https://@api.example.com/v1", "token": "t"},  # no credentials: no Basic
        {"url": "env:CS_TEST_URL", "token": "t"},  # not looked into
    ],
)
def test_credentials_in_the_url_alone_are_accepted(config: dict[str, Any]) -> None:
    HttpConnector.check_new_config(config)
    HttpConnector(config)


def test_registered_as_http() -> None:
    assert load_plugin("http") is HttpConnector


def test_retry_after_parsing() -> None:
    now = datetime(2026, 1, 1, 12, 0, 0, tzinfo=UTC)
    assert retry_after_seconds({"retry-after": "7"}, now) == 7
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 12:00:30 GMT"}, now) == 30
    assert retry_after_seconds({"retry-after": "Thu, 01 Jan 2026 11:00:00 GMT"}, now) == 0
    assert retry_after_seconds({"retry-after": "soon"}, now) is None
    assert retry_after_seconds({}, now) is None


def test_dot_paths() -> None:
    data = {"a": {"b": [{"c": 1}]}}
    assert dot_get(data, "a.b.0.c") == (True, 1)
    assert dot_get(data, "") == (True, data)
    assert dot_get(data, "a.x") == (False, None)
    assert dot_get(data, "a.b.5") == (False, None)


def test_a_query_string_in_the_url_is_kept_next_to_params(api: FakeApi) -> None:
    plugin = connector(
        api,
        "/page?per_page=3",
        records_path="data.items",
        params={"lang": "en"},
        pagination={"type": "page"},
    )
    records = list(plugin.read())
    assert records == ALL_ITEMS
    first = api.requests_to("/page")[0]
    assert first.query == {"per_page": "3", "lang": "en", "page": "1"}
