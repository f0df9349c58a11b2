"""`connector-sync serve` against real databases: real servers on 127.0.0.1 (in a thread of
the test, or the installed command as a subprocess), real HTTP, real runs."""

from __future__ import annotations

import json
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from connector_sync import operations
from connector_sync.db import SCHEMA_REVISION, Database
from connector_sync.server import runs as server_runs
from connector_sync.server.launch import HttpTrigger
from support.serving import AUTH, SECRET, Command, ServeProcess, client, served, wait_for

# -- helpers ---------------------------------------------------------------------------


def add(url: str, name: str, type: str = "demo", tenant: str = "default", **config: Any) -> int:
    with operations.session(url) as store:
        new = operations.NewConnector(
            name=name, type=type, config=config, sync_interval=3600, tenant=tenant
        )
        return operations.add_connector(store, new)


def query(url: str, sql: str) -> list[Any]:
    with Database(url) as db, db.begin() as conn:
        result = conn.exec_driver_sql(sql)
        return list(result.all()) if result.returns_rows else []


def snapshot(url: str) -> list[Any]:
    """Everything a request could change: connectors, syncs, datasets."""
    return [
        query(url, "SELECT * FROM connectors ORDER BY id"),
        query(url, "SELECT * FROM connector_syncs ORDER BY id"),
        query(url, "SELECT id, status, record_count FROM datasets ORDER BY id"),
    ]


def cli(url: str, *args: str, env: dict[str, str | None] | None = None) -> Any:
    """The command line, in-process: the same code as the installed command without its
    start-up time. CRON_SECRET is unset unless `env` sets it."""
    from connector_sync.cli import app

    return CliRunner().invoke(
        app, ["--database-url", url, *args], env={"CRON_SECRET": None, **(env or {})}
    )


def cli_json(url: str, *args: str) -> Any:
    """The command line's --json document."""
    done = cli(url, *args, "--json")
    assert done.exit_code in (0, 1), done.output
    return json.loads(done.stdout)


def one_line_detail(response: httpx.Response) -> str:
    detail = response.json()["detail"]
    assert isinstance(detail, str) and detail and "\n" not in detail
    return detail


# -- the Done-when, with the installed command ----------------------------------


def test_serve_lists_syncs_and_refuses_a_wrong_bearer(db_url: str) -> None:
    """CRON_SECRET=s connector-sync serve: GET lists the due connectors as `due --json`,
    a POST syncs them (datasets READY), a wrong or missing bearer is 401 and changes
    nothing; SIGTERM stops it with exit 0; the secret is in no log line."""
    for n in range(3):
        add(db_url, f"c{n}", records=4)
    with ServeProcess(db_url, secret="s") as serve:
        before = snapshot(db_url)
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic cw=="},
                        {"Authorization": "Bearer s2"}, {"Authorization": "Bearer"}):  # fmt: skip
            for method, body in (("GET", None), ("POST", {"limit": 10})):
                answer = httpx.request(
                    method, f"{serve.url}/api/connectors/sync", json=body, headers=headers
                )
                assert answer.status_code == 401
                assert answer.json() == {"detail": "unauthorized"}
        assert snapshot(db_url) == before

        bearer = {"Authorization": "Bearer s"}
        due = httpx.get(f"{serve.url}/api/connectors/sync?limit=10", headers=bearer)
        assert due.status_code == 200
        assert due.json() == cli_json(db_url, "due", "--limit", "10")
        assert [c["name"] for c in due.json()] == ["c0", "c1", "c2"]

        synced = httpx.post(
            f"{serve.url}/api/connectors/sync", json={"limit": 10}, headers=bearer, timeout=60
        )
        assert synced.status_code == 200
        syncs = synced.json()
        assert sorted(s["connector_name"] for s in syncs) == ["c0", "c1", "c2"]
        assert {s["status"] for s in syncs} == {"COMPLETED"}
        assert syncs == sorted(cli_json(db_url, "history", "--limit", "3"), key=lambda s: s["id"])
        assert (
            query(db_url, "SELECT status, record_count FROM datasets ORDER BY id")
            == [("READY", 4)] * 3
        )
        assert httpx.get(f"{serve.url}/api/connectors/sync", headers=bearer).json() == []
        assert serve.stop(signal.SIGTERM) == 0
    assert "Bearer s" not in serve.stderr
    assert '"POST /api/connectors/sync" 200' in serve.stderr
    assert '"GET /api/connectors/sync" 401' in serve.stderr


@pytest.mark.parametrize(
    ("args", "env", "expected"),
    [
        ((), {}, "serve needs a secret: set CRON_SECRET or give --secret-file PATH"),
        ((), {"CRON_SECRET": "  "}, "CRON_SECRET is empty"),
        (("--secret-file", "/nonexistent/secret"), {}, "--secret-file /nonexistent/secret: cannot"),
        (("--no-auth", "--host", "0.0.0.0"), {}, "--no-auth is allowed only on a loopback"),
        (
            ("--host", "no-such-host.invalid"),
            {"CRON_SECRET": SECRET},
            "--host no-such-host.invalid: cannot resolve it",
        ),
    ],
)
def test_serve_refuses_to_start_without_safe_settings(
    sqlite_url: str, args: tuple[str, ...], env: dict[str, str], expected: str
) -> None:
    done = cli(sqlite_url, "serve", "--port", "0", *args, env=env)
    assert done.exit_code == 2
    assert done.stderr.startswith(f"connector-sync: error: {expected}")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_serve_refuses_a_taken_port_and_a_missing_database(sqlite_url: str, tmp_path: Any) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = str(taken.getsockname()[1])
        done = cli(sqlite_url, "serve", "--port", port, env={"CRON_SECRET": SECRET})
    assert done.exit_code == 2
    assert f"--port {port}: cannot listen there (Address already in use)" in done.stderr
    missing = f"sqlite:///{tmp_path}/nothing-here.db"
    done = cli(missing, "serve", "--port", "0", env={"CRON_SECRET": SECRET})
    assert done.exit_code == 3
    assert "no connector-sync database at" in done.stderr
    assert not (tmp_path / "nothing-here.db").exists()


def test_serve_without_the_server_extra_says_how_to_install_it(sqlite_url: str) -> None:
    # As if fastapi were not installed: importing it fails.
    code = (
        "import sys; sys.modules['fastapi'] = None; sys.argv = ['connector-sync', "
        f"'--database-url', {sqlite_url!r}, 'serve']; "
        "from connector_sync.cli import main; main()"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env={"CRON_SECRET": "s"}
    )
    assert done.returncode == 2
    assert done.stderr == (
        "connector-sync: error: serve needs the server extra: "
        "pip install 'connector-sync[server]'\n"
    )


def test_help_does_not_import_the_server() -> None:
    code = (
        "import sys; sys.argv = ['connector-sync', '--help']\n"
        "from connector_sync.cli import main\n"
        "try:\n    main()\nexcept SystemExit:\n    pass\n"
        "heavy = {'fastapi', 'uvicorn', 'starlette', 'connector_sync.server.app'}\n"
        "print(sorted(heavy & set(sys.modules)))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.stdout.strip().endswith("[]"), done.stdout
    assert "serve" in done.stdout  # the command is listed


@pytest.mark.postgres
def test_two_servers_and_two_runs_sync_each_connector_exactly_once(pg_url: str) -> None:
    """Two `serve` processes (two POSTs each) and two `run` processes on one database, all
    claiming at once: each connector synced once, by one of them."""
    count = 24
    for n in range(count):
        add(pg_url, f"c{n:03d}", type="sleepy", records=1, seconds=0.1)
    with ServeProcess(pg_url) as first, ServeProcess(pg_url) as second:
        runs = [Command("--database-url", pg_url, "run", "--json") for _ in range(2)]
        # The runs are syncing when the POSTs arrive: the two kinds of worker overlap.
        wait_for(lambda: any(run.logged("synced c") for run in runs), what="a run to sync")
        answers: list[httpx.Response] = []

        def post(url: str) -> None:
            answers.append(httpx.post(f"{url}/api/connectors/sync", headers=AUTH, timeout=120))

        posts = [threading.Thread(target=post, args=(s.url,)) for s in (first, second) * 2]
        for thread in posts:
            thread.start()
        for thread in posts:
            thread.join(120)
        outputs = [run.wait() for run in runs]
        assert [code for code, _ in outputs] == [0, 0], [run.stderr for run in runs]
        assert [a.status_code for a in answers] == [200] * 4
        assert first.stop() == 0 and second.stop() == 0
    by_api = [s["connector_id"] for a in answers for s in a.json()]
    by_run = [s["connector_id"] for _, stdout in outputs for s in json.loads(stdout)]
    assert by_api and by_run
    assert sorted(by_api + by_run) == list(range(1, count + 1))
    # Counted by the database: one sync per connector, each COMPLETED with a READY dataset.
    syncs_per_connector = query(
        pg_url,
        "SELECT connector_id, count(*), min(status), max(status) FROM connector_syncs "
        "GROUP BY connector_id ORDER BY connector_id",
    )
    assert syncs_per_connector == [(n, 1, "COMPLETED", "COMPLETED") for n in range(1, count + 1)]
    assert query(pg_url, "SELECT status, count(*) FROM datasets GROUP BY status") == [
        ("READY", count)
    ]


# -- the API, on an in-process server ----------------------------------------------------


def test_get_with_run_true_triggers_a_run_for_crons_that_only_send_get(db_url: str) -> None:
    """What Vercel Cron sends: GET with the bearer. run=true syncs; wait=false answers 202
    and the run is polled until FINISHED."""
    add(db_url, "a", records=2)
    add(db_url, "b", records=3)
    with served(db_url) as server, client(server.url) as http:
        first = http.get("/api/connectors/sync", params={"run": "true", "limit": 1})
        assert first.status_code == 200
        assert [s["connector_name"] for s in first.json()] == ["a"]
        assert first.json()[0]["status"] == "COMPLETED"

        accepted = http.get("/api/connectors/sync", params={"run": "true", "wait": "false"})
        assert accepted.status_code == 202
        run = accepted.json()
        assert accepted.headers["location"] == run["poll"] == f"/api/runs/{run['id']}"
        assert run["status"] in ("RUNNING", "FINISHED")
        wait_for(lambda: http.get(run["poll"]).json()["status"] == "FINISHED", what="the run")
        finished = http.get(run["poll"]).json()
        assert [s["connector_name"] for s in finished["syncs"]] == ["b"]
        assert finished["error"] is None and finished["finished_at"] is not None
        assert http.get("/api/connectors/sync").json() == []
        unknown = http.get("/api/runs/0123456789abcdef")
        assert unknown.status_code == 404
        assert "kept in memory" in one_line_detail(unknown)


def test_post_syncs_the_connectors_named_and_a_wrong_name_changes_nothing(db_url: str) -> None:
    add(db_url, "a", records=1)
    add(db_url, "b", records=1)
    add(db_url, "b", tenant="other", records=1)
    with served(db_url) as server, client(server.url) as http:
        before = snapshot(db_url)
        missing = http.post("/api/connectors/sync", json={"connectors": ["a", "nope"]})
        assert missing.status_code == 404
        assert one_line_detail(missing).startswith("no connector 'nope'")
        ambiguous = http.post("/api/connectors/sync", json={"connectors": ["b"]})
        assert ambiguous.status_code == 400
        assert "exists in tenants default, other" in one_line_detail(ambiguous)
        assert snapshot(db_url) == before

        named = http.post(
            "/api/connectors/sync", json={"connectors": ["b", "2"], "tenant": "other"}
        )
        assert named.status_code == 404  # "2" is b of tenant default, not of tenant other
        names = {"connectors": ["b", "1", "a"], "tenant": "default"}
        synced = http.post("/api/connectors/sync", json=names)
        assert synced.status_code == 200
        assert [(s["connector_name"], s["tenant"], s["trigger"]) for s in synced.json()] == [
            ("b", "default", "manual"),
            ("a", "default", "manual"),
        ]


SYNC = "/api/connectors/sync"
JSON = {"content-type": "application/json"}


@pytest.mark.parametrize(
    ("method", "path", "send", "status", "detail"),
    [
        ("POST", SYNC, {"json": {"limit": -1}}, 422, "limit: Input should be greater"),
        ("POST", SYNC, {"json": {"limit": 10**12}}, 422, "limit: Input should be less"),
        ("POST", SYNC, {"json": {"limit": "10"}}, 422, "limit: Input should be a valid integer"),
        ("POST", SYNC, {"json": {"limit": 1.5}}, 422, "limit: Input should be a valid integer"),
        ("POST", SYNC, {"json": {"limit": True}}, 422, "limit: Input should be a valid integer"),
        ("POST", SYNC, {"json": {"limits": 10}}, 422, "limits: Extra inputs are not permitted"),
        ("POST", SYNC, {"json": {"tenant": 5}}, 422, "tenant: Input should be a valid string"),
        ("POST", SYNC, {"json": {"tenant": "a\x00b"}}, 422, "tenant: holds a control character"),
        ("POST", SYNC, {"json": {"connectors": []}}, 422, "connectors: List should have at least"),
        ("POST", SYNC, {"json": {"connectors": "a"}}, 422, "connectors: Input should be a valid"),
        ("POST", SYNC, {"json": {"connectors": ["a"], "limit": 1}}, 422, "limit applies to due"),
        ("POST", SYNC, {"json": [1, 2]}, 422, "body: must be a JSON object, not an array"),
        ("POST", SYNC, {"content": b"null", "headers": JSON}, 422,
         "body: must be a JSON object, not null"),
        ("POST", SYNC, {"content": b' "all"', "headers": JSON}, 422,
         "body: must be a JSON object, not a string"),
        ("POST", SYNC, {"content": b"10", "headers": JSON}, 422,
         "body: must be a JSON object, not a number"),
        ("POST", SYNC, {"content": b'{"limit": 1, "limit": 500}', "headers": JSON}, 422,
         "body: the key 'limit' is given more than once: give it once"),
        ("POST", SYNC, {"content": b'{"tenant": "a", "limit": 1, "tenant": "b"}',
                        "headers": {"content-type": "application/json; charset=utf-8"}}, 422,
         "body: the key 'tenant' is given more than once: give it once"),
        ("POST", SYNC, {"content": b'{"limit": 1', "headers": JSON}, 422, "body: not valid JSON"),
        ("POST", SYNC, {"content": b"limit=1", "headers": {"content-type": "text/plain"}}, 422,
         "Input should be a valid dictionary"),
        ("POST", SYNC, {"content": b"x" * 70_000, "headers": JSON}, 413, "the body is over 65536"),
        ("POST", f"{SYNC}?wait=maybe", {}, 422, "wait: Input should be a valid boolean"),
        ("POST", f"{SYNC}?wiat=false", {}, 422, "wiat: Extra inputs are not permitted"),
        ("GET", f"{SYNC}?limit=0", {}, 422, "limit: Input should be greater than or equal to 1"),
        ("GET", f"{SYNC}?limit=ten", {}, 422, "limit: Input should be a valid integer"),
        ("GET", f"{SYNC}?limt=10&run=true", {}, 422, "limt: Extra inputs are not permitted"),
        ("GET", f"{SYNC}?run=true&limit=-3", {}, 422, "limit: Input should be greater"),
        ("GET", f"{SYNC}?run=true&tenant=a&tenant=b", {}, 422, "tenant: given more than once"),
        ("GET", f"{SYNC}?tenant=%00", {}, 422, "tenant: holds a control character"),
        ("GET", "/api/syncs?status=DONE", {}, 422, "status: Input should be"),
        ("GET", "/api/syncs?status=completed", {}, 422, "status: Input should be"),
        ("GET", "/api/syncs?limit=99999999999999999999", {}, 422, "limit: Input should be"),
        ("GET", "/api/connectors/nope", {}, 404, "no connector 'nope'"),
        ("GET", "/api/connectors/³", {}, 404, "no connector '³'"),  # a digit, not a number
        ("GET", "/api/connectors/99999999999999999999", {}, 404, "no connector '9999"),
    ],
)  # fmt: skip
def test_bad_requests_get_one_line_and_change_nothing(
    bad_request_server: tuple[str, HttpTrigger],
    method: str,
    path: str,
    send: dict[str, Any],
    status: int,
    detail: str,
) -> None:
    url, server = bad_request_server
    with client(server.url) as http:
        before = snapshot(url)
        answer = http.request(method, path, **send)
        assert answer.status_code == status, answer.text
        assert one_line_detail(answer).startswith(detail) or detail in one_line_detail(answer)
        assert snapshot(url) == before


@pytest.fixture(scope="module")
def bad_request_server(
    sqlite_template: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[tuple[str, HttpTrigger]]:
    """One server for every bad request: each is refused and changes nothing (its own
    test compares the database before and after), so the next one meets the same state."""
    path = tmp_path_factory.mktemp("bad-requests") / "connector-sync.db"
    shutil.copy(sqlite_template, path)
    url = f"sqlite:///{path}"
    add(url, "a", records=1)
    with served(url) as server:
        yield url, server


def test_reads_answer_the_same_documents_as_the_cli(db_url: str) -> None:
    add(db_url, "a", records=2)
    add(db_url, "secretive", type="records", records=[{"x": 1}], token="hunter2-token")
    add(db_url, "t", tenant="other", records=1)
    with served(db_url) as server, client(server.url) as http:
        assert http.post("/api/connectors/sync", json={}).status_code == 200
        assert http.get("/api/connectors").json() == cli_json(db_url, "list")
        assert http.get("/api/connectors", params={"tenant": "other"}).json() == cli_json(
            db_url, "list", "--tenant", "other"
        )
        shown = http.get("/api/connectors/secretive")
        assert shown.json() == cli_json(db_url, "show", "secretive")
        assert shown.json()["config"]["token"] == "***"
        assert "hunter2" not in shown.text
        assert http.get("/api/connectors/1").json()["name"] == "a"
        assert http.get("/api/syncs").json() == cli_json(db_url, "history")
        filtered = {"connector": "a", "status": "COMPLETED", "limit": 1}
        assert http.get("/api/syncs", params=filtered).json() == cli_json(
            db_url, "history", "--connector", "a", "--status", "completed", "--limit", "1"
        )
        assert http.get("/api/syncs", params={"tenant": "other"}).json() == cli_json(
            db_url, "history", "--tenant", "other"
        )


def test_metrics_are_the_metrics_command_s_text_behind_the_bearer(db_url: str) -> None:
    """As the alerts page says (it was documented, not served: an adversarial pass)."""
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4
    from prometheus_client.parser import text_string_to_metric_families

    add(db_url, "a", records=2)
    add(db_url, "t", tenant="other", records=1)
    with served(db_url) as server, client(server.url) as http:
        assert http.post("/api/connectors/sync", json={}).status_code == 200
        answer = http.get("/metrics")
        assert answer.status_code == 200
        assert answer.headers["content-type"] == CONTENT_TYPE_PLAIN_0_0_4  # as the text is written
        families = {f.name: f for f in text_string_to_metric_families(answer.text)}
        synced = {
            s.labels["status"]: s.value for s in families["connector_sync_window_syncs"].samples
        }
        assert synced["COMPLETED"] == 2.0
        other = http.get("/metrics", params={"tenant": "other"}).text
        assert 'connector="t"' in other and 'connector="a"' not in other
        assert http.get("/metrics", params={"tenants": "other"}).status_code == 422  # a typo
        with client(server.url, auth=False) as stranger:
            assert stranger.get("/metrics").status_code == 401


def test_probes_need_no_secret_and_readyz_sees_the_schema(db_url: str) -> None:
    with served(db_url) as server, client(server.url, auth=False) as http:
        assert http.get("/healthz").json() == {"status": "ok"}
        assert http.get("/readyz").json() == {"status": "ready", "reason": None}
        assert http.get("/api/connectors").status_code == 401
        assert http.get("/api/no-such-route").status_code == 401  # no route list for strangers
        query(db_url, "UPDATE alembic_version SET version_num = '0001'")
        try:
            not_ready = http.get("/readyz")
        finally:  # the shared test database goes back to the schema it has
            query(db_url, f"UPDATE alembic_version SET version_num = '{SCHEMA_REVISION}'")
        assert not_ready.status_code == 503
        assert not_ready.json()["status"] == "not ready"
        assert "run 'connector-sync db upgrade'" in not_ready.json()["reason"]


def test_no_auth_on_loopback_serves_without_a_secret(sqlite_url: str) -> None:
    with ServeProcess(sqlite_url, "--no-auth", secret=None) as serve:
        assert httpx.get(f"{serve.url}/api/connectors").status_code == 200
        assert serve.stop() == 0
    assert "authentication: off" in serve.stderr


# -- shutting down -------------------------------------------------------------------------


def test_a_post_arriving_while_the_server_stops_gets_503(sqlite_url: str) -> None:
    add(sqlite_url, "a", records=1)
    body = b'{"limit": 1}'
    with served(sqlite_url) as server:
        host, port = server.listener.getsockname()[:2]
        with socket.create_connection((host, port), timeout=10) as conn:
            # The request has begun (headers sent) when the server is told to stop; its
            # body arrives after.
            conn.sendall(
                b"POST /api/connectors/sync HTTP/1.1\r\nHost: x\r\n"
                + f"Authorization: Bearer {SECRET}\r\n".encode()
                + b"Content-Type: application/json\r\n"
                + f"Content-Length: {len(body)}\r\n\r\n".encode()
            )
            time.sleep(0.2)
            server.stop("the test stops it")
            conn.sendall(body)
            received = b""
            while b"shutting down" not in received and (chunk := conn.recv(65536)):
                received += chunk
    answer = received.decode()
    assert answer.startswith("HTTP/1.1 503")
    assert "retry-after: 30" in answer.lower()
    assert "the server is shutting down" in answer
    assert query(sqlite_url, "SELECT count(*) FROM connector_syncs") == [(0,)]


def test_a_connection_made_while_the_server_drains_is_refused_at_once(sqlite_url: str) -> None:
    """uvicorn's graceful shutdown stops listening first (as its docs say: stop listening,
    close idle connections, let the others finish), so a request that had not reached the
    server is refused by the system at once, and its client (or a load balancer) can try
    another instance; one whose headers had arrived gets the 503 above."""
    add(sqlite_url, "hung", type="sleepy", records=1, seconds=60)
    with served(sqlite_url, grace=30) as server, client(server.url) as http:
        address = server.listener.getsockname()[:2]
        run = http.post(f"{SYNC}?wait=false").json()
        wait_for(lambda: query(sqlite_url, "SELECT count(*) FROM connector_syncs") == [(1,)])
        server.stop("the test stops it")

        def refused() -> bool:
            try:
                socket.create_connection(address, timeout=5).close()
            except ConnectionRefusedError:
                return True
            return False

        wait_for(refused, what="connections to be refused")
        draining = server.runs.get(run["id"])
        assert draining is not None and not draining.done.is_set()  # the run goes on
        server.stop("the test is over", force=True)


def test_sigterm_drains_a_run_in_flight_within_the_grace(sqlite_url: str) -> None:
    add(sqlite_url, "slow", type="sleepy", records=3, seconds=0.4)
    # The installed console script: one `serve` in a fresh interpreter, as deployed.
    with ServeProcess(sqlite_url, "--grace", "20", log_format="json", real=True) as serve:
        answers: list[httpx.Response] = []
        posting = threading.Thread(
            target=lambda: answers.append(
                httpx.post(f"{serve.url}/api/connectors/sync", headers=AUTH, timeout=60)
            )
        )
        posting.start()
        wait_for(lambda: query(sqlite_url, "SELECT count(*) FROM connector_syncs") == [(1,)])
        assert serve.stop(signal.SIGTERM) == 0
        posting.join(30)
    assert answers[0].status_code == 200
    assert [s["status"] for s in answers[0].json()] == ["COMPLETED"]
    lines = [json.loads(line) for line in serve.lines]  # every line is a JSON log line
    messages = [line["message"] for line in lines]
    assert any(m.startswith("SIGTERM received: no new runs") for m in messages)
    assert any('"POST /api/connectors/sync" 200' in m for m in messages)
    assert SECRET not in serve.stderr


def hung_run(serve: ServeProcess, url: str) -> None:
    """A run started over HTTP (wait=false) whose one sync has begun and hangs."""
    with client(serve.url) as http:
        run = http.post("/api/connectors/sync?wait=false").json()
        wait_for(lambda: http.get(run["poll"]).json()["status"] == "RUNNING")
        wait_for(lambda: query(url, "SELECT count(*) FROM connector_syncs") == [(1,)])


def test_sigterm_cancels_what_outlives_the_grace(sqlite_url: str) -> None:
    add(sqlite_url, "hung", type="sleepy", records=1, seconds=60)
    with ServeProcess(sqlite_url, "--grace", "0.5") as serve:
        hung_run(serve, sqlite_url)
        began = time.monotonic()
        assert serve.stop(signal.SIGTERM) == 0
        assert time.monotonic() - began < 10
    assert query(sqlite_url, "SELECT status FROM connector_syncs") == [("CANCELLED",)]
    assert query(sqlite_url, "SELECT status FROM connectors") == [("ACTIVE",)]


def test_a_second_sigterm_during_the_drain_cancels_the_runs_at_once(sqlite_url: str) -> None:
    add(sqlite_url, "hung", type="sleepy", records=1, seconds=60)
    with ServeProcess(sqlite_url, "--grace", "30") as serve:
        hung_run(serve, sqlite_url)
        serve.process.send_signal(signal.SIGTERM)
        wait_for(lambda: serve.logged("runs in flight get 30s"), what="the first stop")
        began = time.monotonic()
        # uvicorn has stopped serving (nothing was connected): this one comes in the drain.
        assert serve.stop(signal.SIGTERM) == 0
        assert time.monotonic() - began < 10
    assert "runs in flight get 0s to finish" in serve.stderr
    assert query(sqlite_url, "SELECT status FROM connector_syncs") == [("CANCELLED",)]


def test_finished_runs_beyond_the_kept_number_are_forgotten(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server_runs, "KEEP_FINISHED", 2)
    with served(sqlite_url) as server, client(server.url) as http:
        polls = []
        for _ in range(3):
            polls.append(http.post("/api/connectors/sync?wait=false").json()["poll"])
            wait_for(lambda: http.get(polls[-1]).json()["status"] == "FINISHED")
        assert [http.get(poll).status_code for poll in polls] == [404, 200, 200]
