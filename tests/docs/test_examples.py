"""Every command the docs show is run, page by page, and exits as the page says.

Each page's console commands run in order in one bash (so `export` and `cd` carry
on), in a fresh temporary folder, with `connector-sync` first on the PATH and no
database URL set: a fresh SQLite file unless the page sets one. The README, where a
new user starts, runs the installed console script (REAL_PROCESS_PAGES); the other pages
run it through the fork server of support/forkserver.py: the same command line, not
imported again for each of their two hundred commands. A
command ends with `  # exits N` when it should fail; every other must exit 0.

Sample output (the lines under a command) is checked where that is cheap and
robust: each line of it that is not a table row (widths follow the terminal) or `...`
must be a line of the real output, with every run of digits standing for any number
(ids, times, durations, ports change from run to run) and any host:pid for a worker.

A page that needs more than an empty folder says so in PAGES: a PostgreSQL database,
the fake HTTP API of tests/support/fake_api.py, or files. The page then shows the address
a reader would use (`http://127.0.0.1:8765`, `postgresql://postgres@127.0.0.1:5432/...`)
and the test replaces it, in the commands only, with the real one it made.
"""

from __future__ import annotations

import os
import sqlite3
import sys
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import sqlalchemy as sa
from doc_blocks import (
    blocks,
    page_commands,
    page_id,
    pages,
    run_commands,
    unmatched_sample_lines,
)
from doc_blocks import commands as console_commands

from support.fake_api import DOCS_FILES, FakeApi
from support.forkserver import forked_command

BIN = Path(sys.executable).parent  # the virtualenv's bin, where connector-sync is installed
FAKE_API = "http://127.0.0.1:8765"
PAGE_TIMEOUT = 120
REAL_PROCESS_PAGES = {"README.md"}


@dataclass
class Page:
    """What one page's commands run with."""

    path: Path
    workdir: Path
    env: dict[str, str]
    replace: dict[str, str] = field(default_factory=dict)
    after: list[Callable[[], None]] = field(default_factory=list)
    #: Run only the set-up commands of the page's first console block (checked elsewhere).
    set_up_only: bool = False


# -- what each page needs ------------------------------------------------------------


def _postgres(request: pytest.FixtureRequest, page: Page, shown: str, *, migrated: bool) -> str:
    """A PostgreSQL database for the URL the page shows; returns the real URL."""
    url = str(request.getfixturevalue("pg_url" if migrated else "empty_pg_url"))
    page.replace[shown] = url
    return url


def _fake_api(request: pytest.FixtureRequest, page: Page) -> FakeApi:
    api: FakeApi = request.getfixturevalue("api")
    page.replace[FAKE_API] = api.url
    return api


def choose_database(request: pytest.FixtureRequest, page: Page) -> None:
    _postgres(request, page, "postgresql://postgres@127.0.0.1:5432/connector_sync", migrated=False)


def http_page(request: pytest.FixtureRequest, page: Page) -> None:
    _fake_api(request, page)


def files_page(request: pytest.FixtureRequest, page: Page) -> None:
    _fake_api(request, page).files.update(DOCS_FILES)


def sql_page(request: pytest.FixtureRequest, page: Page) -> None:
    shop = sqlite3.connect(page.workdir / "shop.db")
    with shop:
        shop.executescript(SHOP_DB)
    shop.close()
    url = _postgres(request, page, "postgresql://postgres@127.0.0.1:5432/billing", migrated=False)
    engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
    with engine.begin() as conn:
        conn.exec_driver_sql(BILLING_DB)
    engine.dispose()


SHOP_DB = """
CREATE TABLE orders (id INTEGER PRIMARY KEY, customer TEXT, total NUMERIC);
INSERT INTO orders VALUES (1, 'Ada', 120.5), (2, 'Grace', 80), (3, 'Ada', 42.25);
"""
BILLING_DB = """
CREATE TABLE invoices (
    id serial PRIMARY KEY, customer text, amount numeric(12,2), issued date,
    updated_at timestamptz, ref uuid, tags text[]
);
INSERT INTO invoices (customer, amount, issued, updated_at, ref, tags) VALUES
    ('Ada', 1234.50, '2026-11-01', '2026-11-28 09:00:00+00',
     'a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11', '{vip}'),
    ('Grace', 99.00, '2026-11-02', '2026-11-28 09:05:00+00',
     'b1ffcd00-ad1c-4ef8-bb6d-6bb9bd380a22', '{}');
"""


def plugin_page(request: pytest.FixtureRequest, page: Page) -> None:
    """Installs the page's own plugin (its python and toml blocks) as a distribution."""
    text = page.path.read_text(encoding="utf-8")
    [module] = [b.body for b in blocks(text) if b.language == "python"]
    [project] = [
        tomllib.loads(b.body)["project"]
        for b in blocks(text)
        if b.language == "toml" and "[project]" in b.body
    ]
    site = page.workdir.parent / "site"
    info = site / f"{project['name'].replace('-', '_')}-{project['version']}.dist-info"
    info.mkdir(parents=True)
    entry_points = project["entry-points"]["connector_sync.connectors"]
    for value in entry_points.values():
        (site / f"{value.split(':')[0]}.py").write_text(module, encoding="utf-8")
    (info / "METADATA").write_text(
        f"Metadata-Version: 2.1\nName: {project['name']}\nVersion: {project['version']}\n"
    )
    (info / "entry_points.txt").write_text(
        "[connector_sync.connectors]\n"
        + "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    )
    page.env["PYTHONPATH"] = str(site)


def monitor_page(request: pytest.FixtureRequest, page: Page, database: str) -> None:
    """The page's commands on SQLite, then its SQL for SQLite; its set-up on PostgreSQL,
    then its SQL for PostgreSQL."""
    if database == "postgresql":
        url = str(request.getfixturevalue("pg_url"))
        page.env["DATABASE_URL"] = url
        page.set_up_only = True
        page.after.append(lambda: run_sql(page, "PostgreSQL", postgres_runner(url)))
    else:
        page.after.append(
            lambda: run_sql(page, "SQLite", sqlite_runner(page.workdir / "connector-sync.db"))
        )


PAGES: dict[str, Callable[..., None]] = {
    "howto/choose-database.md": choose_database,
    "howto/http.md": http_page,
    "howto/files.md": files_page,
    "howto/incremental.md": http_page,
    "howto/secrets.md": http_page,
    "howto/sql.md": sql_page,
    "howto/write-a-plugin.md": plugin_page,
}
DATABASE_PAGES = {"howto/monitor.md": monitor_page}  # run once per database


# -- SQL shown on a page ---------------------------------------------------------------


def sqlite_runner(path: Path) -> Callable[[str], list[tuple[object, ...]]]:
    def run(sql: str) -> list[tuple[object, ...]]:
        with sqlite3.connect(path) as conn:
            return conn.execute(sql).fetchall()

    return run


def postgres_runner(url: str) -> Callable[[str], list[tuple[object, ...]]]:
    def run(sql: str) -> list[tuple[object, ...]]:
        engine = sa.create_engine(sa.make_url(url).set(drivername="postgresql+psycopg"))
        try:
            with engine.connect() as conn:
                return [tuple(row) for row in conn.exec_driver_sql(sql.replace("%", "%%"))]
        finally:
            engine.dispose()

    return run


def run_sql(page: Page, database: str, run: Callable[[str], list[tuple[object, ...]]]) -> None:
    """Every ```sql block whose title names `database` runs on it without error."""
    text = page.path.read_text(encoding="utf-8")
    queries = [b for b in blocks(text) if b.language == "sql" and database in b.title]
    assert queries, f"{page_id(page.path)} shows no SQL titled {database}"
    for query in queries:
        try:
            run(query.body)
        except Exception as exc:
            pytest.fail(f"{page_id(page.path)}:{query.line}: {database} query failed: {exc}")


# -- running a page --------------------------------------------------------------------


def _cases() -> Iterator[object]:
    for path in pages():
        name = page_id(path)
        if not page_commands(path):
            continue
        if name in DATABASE_PAGES:
            for database in ("sqlite", "postgresql"):
                yield pytest.param(path, database, id=f"{name}[{database}]")
        else:
            yield pytest.param(path, None, id=name)


def clean_environment(workdir: Path, first: Path | None = None) -> dict[str, str]:
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith("CONNECTOR_SYNC_")
        and key not in {"DATABASE_URL", "PYTHONPATH", "VIRTUAL_ENV"}
    }
    path = os.pathsep.join([*([str(first)] if first else []), str(BIN), env.get("PATH", "")])
    env.update(PATH=path, COLUMNS="120", NO_COLOR="1")
    env.update(HOME=str(workdir), TMPDIR=str(workdir.parent))
    return env


@pytest.mark.parametrize(("path", "database"), list(_cases()))
def test_page_commands(
    path: Path, database: str | None, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    name = page_id(path)
    workdir = tmp_path / "work"
    workdir.mkdir()
    first = None if name in REAL_PROCESS_PAGES else Path(forked_command()).parent
    page = Page(path=path, workdir=workdir, env=clean_environment(workdir, first))
    if database is not None:
        DATABASE_PAGES[name](request, page, database)
    elif name in PAGES:
        PAGES[name](request, page)
    for shown in page.replace:
        assert shown in path.read_text(encoding="utf-8"), f"{name} no longer shows {shown}"
    commands = page_commands(path)
    if page.set_up_only:
        first = next(b for b in blocks(path.read_text(encoding="utf-8")) if b.language == "console")
        commands = console_commands(first)
    results = tmp_path / "results"
    results.mkdir()
    ran = run_commands(
        commands,
        workdir=workdir,
        results=results,
        env=page.env,
        replace=page.replace,
        timeout=PAGE_TIMEOUT,
    )
    for command, result in zip(commands, ran, strict=True):
        where = f"{name}:{command.line}: $ {command.text}"
        assert result is not None, f"{where}: did not run (an earlier command ended bash)"
        print(f"{result.seconds:6.2f}s  {command.text[:100]}")  # shown with -rA or on failure
        shown = f"stdout:\n{result.stdout[-2000:]}\nstderr:\n{result.stderr[-2000:]}"
        assert result.status == command.expected_status, (
            f"{where}\nexited {result.status}, the page says {command.expected_status}\n{shown}"
        )
        unmatched = unmatched_sample_lines(command, result, page.replace)
        assert unmatched == [], (
            f"{where}\nsample output not in the real output:\n"
            + "\n".join(unmatched)
            + f"\n{shown}"
        )
    for check in page.after:
        check()
