"""Secrets in the forms they are sent in: a URL's user and password go out as
`Authorization: Basic base64(user:password)`, and a server that echoes the header must
not put that credential in anything connector-sync reports."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import quote

import httpx
import pytest

from connector_sync.connectors.http import HttpConnector
from connector_sync.connectors.registry import secret_fields
from connector_sync.exceptions import PermanentError
from connector_sync.secrets import connector_secrets, redact, secret_values
from support.fake_api import FakeApi

FAST = {"retry_backoff": 0.01, "max_retries": 0}
# base64("alice:pw-SECRETBASIC"), as httpx sends it for http://alice:pw-SECRETBASIC@…
BASIC = "YWxpY2U6cHctU0VDUkVUQkFTSUM="


def test_a_url_password_echoed_as_basic_auth_is_masked(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The real connector against a real server whose 401 echoes the Authorization header:
    the error (what `test`, `run`, the logs and the database get) shows `Basic ***`."""
    url = f"http://alice:pw-SECRETBASIC@127.0.0.1:{api.port}/status/401"
    connector = HttpConnector({"url": url, **FAST})
    with pytest.raises(PermanentError) as checked:
        connector.check()  # `test`
    with pytest.raises(PermanentError) as read:
        list(connector.read())  # a sync
    # httpx did send the credential, and the server did echo it...
    assert {r.headers["authorization"] for r in api.requests} == {f"Basic {BASIC}"}
    for error in (checked.value, read.value):
        # ...and the connector's error masks it, as it masks the password in the URL.
        assert "HTTP 401" in str(error) and "bad credentials: Basic *** " in str(error)
        assert BASIC not in str(error) and BASIC.rstrip("=") not in str(error)
        assert "pw-SECRETBASIC" not in str(error)

    # The runner and `test` redact what any plugin reports with the secrets of the stored
    # config, its URL in a variable here: the echo is masked there too.
    monkeypatch.setenv("CS_TEST_BASIC_URL", url)
    hidden = connector_secrets(secret_fields("http"), {"url": "env:CS_TEST_BASIC_URL"})
    echo = f'HTTP 401: {{"message": "bad credentials: Basic {BASIC} "}}'
    assert redact(echo, hidden) == 'HTTP 401: {"message": "bad credentials: Basic *** "}'


def _sent_authorization(url: str) -> str:
    """The Authorization header httpx itself sends for `url` (no network)."""
    seen: list[str] = []

    def answer(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        return httpx.Response(401)

    with httpx.Client(transport=httpx.MockTransport(answer)) as client:
        client.get(url)
    return seen[0]


@pytest.mark.parametrize(
    "url",
    [
        "http://alice:pw-SECRETBASIC@api.example/x",
        "https://bob:pw%3F%3F%3F%3E@api.example/x",  # base64 with `/`: `Ym9iOnB3Pz8/Pg==`
        "https://bob:pw%20%3F%3E%3F@api.example/x",  # base64 with `+`: `Ym9iOnB3ID8+Pw==`
        "https://jo%40mail.example:p%C3%A4ssw%C3%B6rt@api.example/x",  # decoded, UTF-8
        "https://:only-a-password@api.example/x",  # no user: base64(":password")
        "HTTPS://bob:pw-SECRETBASIC@API.example:443/x?page=2",
    ],
)
def test_the_basic_credential_httpx_sends_is_masked_in_every_echoed_form(url: str) -> None:
    header = _sent_authorization(url)
    scheme, _, credential = header.partition(" ")
    assert scheme == "Basic"
    hidden = secret_values(secret_fields("http"), {"url": url}, {"url": url})
    echoes: list[Any] = [
        header,  # as is
        json.dumps({"message": f"bad credentials: {header}"}),  # JSON
        json.dumps({"message": header}).replace("/", "\\/"),  # JSON with `\/`
        f"/login?next={quote(header, safe='')}",  # percent-encoded
    ]
    for echo in echoes:
        redacted = redact(echo, hidden)
        assert credential not in redacted and credential.rstrip("=") not in redacted
        assert "***" in redacted


def test_a_url_user_without_a_password_is_the_key_and_a_secret() -> None:
    """`https://sk_live_...@host` (Stripe's form) sends `Basic base64("sk_live_...:")`: the
    user alone is the credential, and it and its Basic form are masked (review; it was
    taken for a user name). Other schemes' users (postgresql://postgres@) are not."""
    url = "https://sk_live_abcdef123456@api.example/v1/charges"
    header = _sent_authorization(url)
    hidden = secret_values(secret_fields("http"), {"url": url}, {"url": url})
    echo = f"HTTP 401: you sent Authorization: {header} for sk_live_abcdef123456"
    assert redact(echo, hidden) == "HTTP 401: you sent Authorization: Basic *** for ***"
    sql_url = "postgresql://postgres@127.0.0.1:5432/shop"
    assert secret_values(secret_fields("sql"), {"url": sql_url}, {"url": sql_url}) == set()
