"""Secrets and incremental state through the real command line, runner and database."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from connector_sync.db import Database
from support.cli import Cli
from support.fake_api import FakeApi, item

TOKEN = "tok-7f3a9c1e5b"
API_KEY = "key-0d2e4f6a8c"
FAST = {"retry_backoff": 0.01, "max_retries": 2}


def everything_stored(url: str) -> str:
    """Every text column a secret could leak into, as one string."""
    with Database(url) as db, db.begin() as conn:
        rows = (
            conn.exec_driver_sql("SELECT error, error_type, worker FROM connector_syncs").all()
            + conn.exec_driver_sql(
                "SELECT name, last_sync_error, lease_owner FROM connectors"
            ).all()
        )
    return json.dumps([list(r) for r in rows])


def test_a_failing_sync_never_stores_or_prints_its_secrets(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    monkeypatch.setenv("CS_TEST_TOKEN", TOKEN)
    monkeypatch.setenv("CS_TEST_API_KEY", API_KEY)
    config = {
        "url": f"{api.url}/status/401",
        "token": "env:CS_TEST_TOKEN",
        "params": {"api_key": "env:CS_TEST_API_KEY"},
        **FAST,
    }
    assert cli("add", "api", "--type", "http", "--config", json.dumps(config)).exit_code == 0
    run = cli("run", "--json")
    assert run.exit_code == 1
    [sync] = json.loads(run.stdout)
    assert sync["status"] == "FAILED" and "401" in sync["error"]
    # The server saw the real secrets (so the failure is not a config error)...
    [request] = api.requests_to("/status/401")
    assert request.headers["authorization"] == f"Bearer {TOKEN}"
    assert request.query["api_key"] == API_KEY
    # ...and they appear nowhere we write.
    outputs = [
        run.output,
        caplog.text,
        everything_stored(cli.url),
        cli("history", "--json").output,
        cli("show", "api", "--json").output,
        cli("show", "api").output,
        cli("test", "api", "--json").output,
        cli("health", "--json").output,
    ]
    for text in outputs:
        assert TOKEN not in text and API_KEY not in text
    shown = json.loads(cli("show", "api", "--json").stdout)
    assert shown["config"]["token"] == "env:CS_TEST_TOKEN"  # a reference is not a secret


def test_a_literal_token_is_masked_in_show_and_errors(cli: Cli, api: FakeApi) -> None:
    config = {"url": f"{api.url}/status/403?api_key={API_KEY}", "token": TOKEN, **FAST}
    assert cli("add", "api", "--type", "http", "--config", json.dumps(config)).exit_code == 0
    run = cli("run")
    assert run.exit_code == 1
    shown = json.loads(cli("show", "api", "--json").stdout)
    assert shown["config"]["token"] == "***"
    for text in (run.output, everything_stored(cli.url), json.dumps(shown)):
        assert TOKEN not in text and API_KEY not in text


def test_a_missing_environment_variable_fails_clearly_without_retrying(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CS_TEST_NOT_SET", raising=False)
    config = {"url": f"{api.url}/items", "token": "env:CS_TEST_NOT_SET"}
    assert cli("add", "api", "--type", "http", "--config", json.dumps(config)).exit_code == 0
    [sync] = json.loads(cli("run", "--json").stdout)
    assert sync["status"] == "FAILED" and sync["attempts"] == 1
    assert "CS_TEST_NOT_SET" in sync["error"]
    assert api.requests == []
    check = cli("test", "api")
    assert check.exit_code == 1 and "CS_TEST_NOT_SET" in check.stdout


def test_incremental_sync_fetches_only_new_records_until_reset(cli: Cli, api: FakeApi) -> None:
    config = {
        "url": f"{api.url}/items",
        "incremental": {"cursor_field": "updated", "cursor_param": "updated_since"},
    }
    assert cli("add", "api", "--type", "http", "--config", json.dumps(config)).exit_code == 0
    [first] = json.loads(cli("run", "--json").stdout)
    assert first["records_processed"] == 23
    assert json.loads(cli("show", "api", "--json").stdout)["state"] == {"cursor": 230}

    api.items.append(item(24))
    [second] = json.loads(cli("run", "--connector", "api", "--json").stdout)
    assert second["records_processed"] == 1
    assert api.requests[-1].query["updated_since"] == "230"

    reset = cli("reset-state", "api")
    assert reset.exit_code == 0 and "state cleared" in reset.stdout
    assert json.loads(cli("show", "api", "--json").stdout)["state"] is None
    [third] = json.loads(cli("run", "--connector", "api", "--json").stdout)
    assert third["records_processed"] == 24


def test_a_missing_secret_variable_is_named_with_its_reference(
    cli: Cli, api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CS_TEST_NOT_SET", raising=False)
    config = {"url": f"{api.url}/items", "token": "env:CS_TEST_NOT_SET"}
    cli("add", "api", "--type", "http", "--config", json.dumps(config))
    [sync] = json.loads(cli("run", "--json").stdout)
    assert sync["error"] == (
        "config field 'token' refers to environment variable CS_TEST_NOT_SET, which is not "
        "set: set it where connector-sync runs"
    )


def test_a_long_retry_after_fails_now_and_backs_off_that_long(cli: Cli, api: FakeApi) -> None:
    url = f"{api.url}/flaky?run=long&fail=100&status=429&retry_after=900"
    config = {"url": url, "max_retry_wait": 1000, "retry_backoff": 0.01}
    cli("add", "api", "--type", "http", "--config", json.dumps(config))
    [sync] = json.loads(cli("run", "--json").stdout)
    assert (sync["status"], sync["attempts"]) == ("FAILED", 1)
    assert "retry after 900s" in sync["error"]
    assert len(api.requests_to("/flaky")) == 1
    [connector] = json.loads(cli("list", "--json").stdout)
    wait = dt.datetime.fromisoformat(connector["next_sync_at"]) - dt.datetime.fromisoformat(
        connector["last_sync_at"]
    )
    assert dt.timedelta(seconds=899) <= wait <= dt.timedelta(seconds=901)


@pytest.mark.parametrize(
    "written",
    [
        "http://LocalHost:{port}/status/401/{token}",  # httpx lower-cases the host
        "http://127.0.0.1:{port}/status/401/a b/{token}",  # and sends a space as %20
        "http://127.0.0.1:80/status/401/{token}",  # and drops the default port
    ],
)
def test_a_secret_url_is_masked_in_the_form_httpx_sends(
    cli: Cli,
    api: FakeApi,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
    written: str,
) -> None:
    """A webhook-style URL whose path is the secret fails with an error that echoes the
    URL as httpx normalised it; that form is masked too, wherever the failure is told."""
    secret_url = written.format(port=api.port, token=TOKEN)
    monkeypatch.setenv("CS_TEST_SECRET_URL", secret_url)
    config = {"url": "env:CS_TEST_SECRET_URL", **FAST}
    assert cli("add", "hook", "--type", "http", "--config", json.dumps(config)).exit_code == 0
    run = cli("run", "--json", "--attempts", "1")  # port 80 refuses: not tried again
    assert run.exit_code == 1
    [sync] = json.loads(run.stdout)
    assert sync["status"] == "FAILED" and "GET ***" in sync["error"]
    outputs = [
        run.output,
        caplog.text,
        everything_stored(cli.url),
        cli("history", "--json").output,
        cli("show", "hook").output,
        cli("test", "hook", "--json").output,
    ]
    for text in outputs:
        assert TOKEN not in text
