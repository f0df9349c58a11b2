"""`health --notify` and `run --notify` through apprise's json:// to a real HTTP receiver on
127.0.0.1: each problem once, its clearing once, failures as they happen, secrets masked."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from conftest import Cli
from connector_sync.db import Database

SECRET = "s3cret-Pa55"


class Receiver:
    """An HTTP server on 127.0.0.1 keeping each JSON body posted to it (apprise's json://)."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.status = 200
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                receiver.messages.append(json.loads(body))
                receiver.headers.append(dict(self.headers))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"json://alerts:{SECRET}@127.0.0.1:{self.server.server_address[1]}/hook/{SECRET}"

    def titles(self) -> list[str]:
        return [m["title"] for m in self.messages]


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    receiver.thread.start()
    yield receiver
    receiver.server.shutdown()
    receiver.server.server_close()


def add(cli: Cli, name: str, config: str) -> None:
    result = cli("add", name, "--type", "demo", "--config", config)
    assert result.exit_code == 0, result.stderr


def no_secret(*texts: str) -> None:
    for text in texts:
        assert SECRET not in text


def test_health_sends_each_problem_once_and_its_clearing_once(cli: Cli, receiver: Receiver) -> None:
    add(cli, "broken", '{"fail": true}')
    add(cli, "fine", '{"records": 3}')
    cli("run")
    assert cli("health", "--notify", receiver.url).exit_code == 0
    assert receiver.messages == []  # one failure: no problem yet
    cli("run", "-c", "broken")
    runs = [cli("health", "--notify", receiver.url) for _ in range(3)]
    for result in runs:
        assert result.exit_code == 0, result.stderr  # a warning only
        no_secret(result.stdout, result.stderr)
    assert "notified: 1 message(s) sent via json://alerts:****@127.0.0.1:" in runs[0].stderr
    assert "notified: 0 message(s) sent" in runs[2].stderr
    # under cron (--quiet), a run with nothing new prints nothing: any output is mailed
    quiet = cli("--quiet", "health", "--notify", receiver.url)
    assert (quiet.exit_code, quiet.stdout, quiet.stderr) == (0, "", "")
    assert len(receiver.messages) == 1
    [message] = receiver.messages
    assert message["title"] == "connector-sync warning: FAILING on broken (id 1)"
    assert "2 failures in a row" in message["message"]
    assert message["type"] == "warning"
    assert receiver.headers[0]["Authorization"].startswith("Basic ")  # the password was used
    assert cli("enable", "broken").exit_code == 0  # fixed: failures forgotten
    result = cli("health", "--notify", receiver.url)
    assert result.exit_code == 0
    assert receiver.titles()[1:] == ["connector-sync resolved: FAILING on broken (id 1)"]
    assert receiver.messages[1]["type"] == "success"
    cli("health", "--notify", receiver.url)
    assert len(receiver.messages) == 2


def test_an_escalation_is_sent_again_and_critical_exits_1(cli: Cli, receiver: Receiver) -> None:
    result = cli("add", "broken", "--type", "demo", "--config", '{"fail": true}',
                 "--max-failures", "3")  # fmt: skip
    assert result.exit_code == 0
    for _ in range(2):
        cli("run", "-c", "broken")
    assert cli("health", "--notify", receiver.url).exit_code == 0
    assert cli("health", "--strict").exit_code == 1  # a warning fails only with --strict
    cli("run", "-c", "broken")  # the third failure parks it in ERROR
    result = cli("health", "--notify", receiver.url, "--json")
    assert result.exit_code == 1
    [parked] = json.loads(result.stdout)
    assert (parked["problem"], parked["severity"], parked["check"]) == (
        "ERROR", "critical", "failures",
    )  # fmt: skip
    assert receiver.titles() == [
        "connector-sync warning: FAILING on broken (id 1)",
        "connector-sync critical: ERROR on broken (id 1)",
    ]
    assert receiver.messages[1]["type"] == "failure"


def test_an_undelivered_notification_exits_1_and_is_sent_by_the_next_run(
    cli: Cli, receiver: Receiver, db_url: str
) -> None:
    add(cli, "broken", '{"fail": true}')
    cli("run")
    cli("run", "-c", "broken")
    receiver.status = 500
    failed = cli("health", "--notify", receiver.url)
    assert failed.exit_code == 1
    assert "not delivered" in failed.stderr
    no_secret(failed.stdout, failed.stderr)
    receiver.status = 200
    delivered = cli("health", "--notify", receiver.url)
    assert delivered.exit_code == 0, delivered.stderr
    assert receiver.titles() == ["connector-sync warning: FAILING on broken (id 1)"] * 2
    with Database(db_url) as db, db.begin() as conn:  # no URL, no secret kept
        rows = conn.exec_driver_sql("SELECT * FROM health_alerts").all()
    no_secret(repr(rows))
    assert len(rows) == 1


def test_a_failed_delivery_names_the_url_that_refused_it(cli: Cli, receiver: Receiver) -> None:
    """With several URLs, the log said 'not delivered to every URL of [...]', and two URLs
    of one host looked the same once masked (an adversarial pass)."""
    add(cli, "broken", '{"fail": true}')
    cli("run")
    cli("run", "-c", "broken")
    failed = cli("health", "--notify", receiver.url, "--notify", "json://127.0.0.1:9/hook")
    assert failed.exit_code == 1
    assert "not delivered to notify URL #2 (json://127.0.0.1:9/***)" in failed.stderr
    assert receiver.titles() == ["connector-sync warning: FAILING on broken (id 1)"]


def test_the_notify_urls_come_from_the_environment_too(cli: Cli, receiver: Receiver) -> None:
    add(cli, "broken", '{"fail": true}')
    cli("run")
    cli("run", "-c", "broken")
    other = Receiver()
    other.thread.start()
    try:
        urls = f"{receiver.url} {other.url}"
        assert cli("health", env={"CONNECTOR_SYNC_NOTIFY": urls}).exit_code == 0
    finally:
        other.server.shutdown()
        other.server.server_close()
    assert len(receiver.messages) == len(other.messages) == 1


def test_a_notify_url_apprise_cannot_use_is_bad_input_without_echoing_it(
    cli: Cli, db_url: str
) -> None:
    add(cli, "broken", '{"fail": true}')
    for command in (("health",), ("run",)):
        result = cli(*command, "--notify", f"nosuch://user:{SECRET}@host/x")
        assert result.exit_code == 2
        assert result.stderr.count("\n") == 1
        assert "--notify URL #1 (scheme 'nosuch') is not one apprise can send to" in result.stderr
        no_secret(result.stdout, result.stderr)
    with Database(db_url) as db, db.begin() as conn:  # nothing ran, nothing recorded
        assert conn.exec_driver_sql("SELECT count(*) FROM connector_syncs").scalar() == 0
        assert conn.exec_driver_sql("SELECT count(*) FROM health_alerts").scalar() == 0


def test_run_notifies_each_failure_as_it_happens(cli: Cli, receiver: Receiver) -> None:
    add(cli, "broken", '{"fail": true}')
    add(cli, "fine", '{"records": 3}')
    result = cli("run", "--notify", receiver.url)
    assert result.exit_code == 1
    no_secret(result.stdout, result.stderr)
    [message] = receiver.messages
    assert message["title"] == "connector-sync: sync of broken failed (1 in a row)"
    assert "demo connector configured to fail" in message["message"]
    assert cli("run", "-c", "fine", "--notify", receiver.url).exit_code == 0
    assert len(receiver.messages) == 1
    assert cli("enable", "broken").exit_code == 0  # due now again
    looped = cli("run", "--loop", "--max-runs", "1", "--notify", receiver.url)
    assert looped.exit_code == 1
    assert receiver.titles()[1:] == ["connector-sync: sync of broken failed (1 in a row)"]
