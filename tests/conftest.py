"""Fixtures shared by every layer: a real SQLite file and a real PostgreSQL database per
test, the store on them (on the database's clock, or on a ManualClock the test moves), the
in-process CLI, and the test plugins.

The layers: tests/unit (no database), tests/store (the Store contract, the same tests on
SQLite and PostgreSQL), tests/cli (the command line in-process on a real database),
tests/e2e (the runner with real plugins and sources, `connector-sync` subprocesses,
signals, kill -9, concurrency). Helpers that tests import live in tests/support.

PostgreSQL is required, never skipped: when the server at CONNECTOR_SYNC_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/postgres) is unreachable, every
PostgreSQL test fails with the reason. Each test run creates its own databases
(a migrated template, cloned per test) and drops them at the end.
"""

from __future__ import annotations

import functools
import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa
import typer.testing

from connector_sync.connectors import registry
from connector_sync.db import Database
from connector_sync.models import metadata
from connector_sync.store import Store, open_store
from connector_sync.store.base import ManualClock
from support.cli import Cli
from support.fake_api import FakeApi

ADMIN_URL = os.environ.get(
    "CONNECTOR_SYNC_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
RUN_ID = uuid.uuid4().hex[:8]
TESTS_DIR = Path(__file__).parent

# Rich wraps tables to the terminal; give the CLI tests a wide, colourless one.
os.environ["COLUMNS"] = "250"
os.environ["NO_COLOR"] = "1"
os.environ.pop("DATABASE_URL", None)
os.environ.pop("CONNECTOR_SYNC_DATABASE_URL", None)


# -- test plugins, registered through the real entry-point mechanism ---------------


@pytest.fixture(scope="session", autouse=True)
def test_plugins(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Installs support/plugins as a distribution with entry points (a .dist-info on sys.path)."""
    site = tmp_path_factory.mktemp("site")
    shutil.copytree(TESTS_DIR / "support" / "plugins", site / "cs_test_plugins")
    info = site / "cs_test_plugins-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: cs-test-plugins\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(
        textwrap.dedent(
            """\
            [connector_sync.connectors]
            flaky = cs_test_plugins.plugins:FlakyConnector
            sleepy = cs_test_plugins.plugins:SleepyConnector
            records = cs_test_plugins.plugins:RecordsConnector
            steal = cs_test_plugins.plugins:StealLeaseConnector
            broken = cs_test_plugins.missing_module:Nothing
            """
        )
    )
    sys.path.insert(0, str(site))
    os.environ["PYTHONPATH"] = os.pathsep.join(
        [str(site), *filter(None, [os.environ.get("PYTHONPATH")])]
    )
    registry._entry_points.cache_clear()
    registry.load_plugin.cache_clear()
    yield site


# -- databases -----------------------------------------------------------------------


def _admin_engine() -> sa.Engine:
    return sa.create_engine(
        sa.make_url(ADMIN_URL).set(drivername="postgresql+psycopg"),
        isolation_level="AUTOCOMMIT",
        connect_args={"connect_timeout": 5},
    )


def _database_url(name: str) -> str:
    return sa.make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)


@contextmanager
def _scratch_database() -> Iterator[str]:
    """A new, empty PostgreSQL database, dropped afterwards."""
    engine = _admin_engine()
    name = f"cs_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"')
    except sa.exc.OperationalError as exc:
        pytest.fail(
            f"PostgreSQL is required for the test suite and is unreachable at "
            f"{ADMIN_URL}: {exc.orig}. Start it, or set CONNECTOR_SYNC_TEST_POSTGRES_URL.",
            pytrace=False,
        )
    try:
        yield name
    finally:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        engine.dispose()


class _KeptPgDatabase:
    """A PostgreSQL database this test process keeps for its whole session and empties
    for each test that asks for it, in milliseconds (cloning a database per test and
    dropping it again took most of the suite's time).

    Before each test, whatever the last one left connected (a killed worker, an engine
    never disposed) is disconnected, as DROP DATABASE ... WITH (FORCE) would do. After
    each test, the database must still hold only what it held when it was made: a test
    that adds tables or schemas (or restamps the schema revision) fails, and the next
    test gets a rebuilt database.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.url = _database_url(name)
        self.build()
        self.conn = psycopg.connect(self.url, autocommit=True)
        self.made = self.objects()

    def build(self) -> None:
        """Give the database its contents: none here."""

    def objects(self) -> list[tuple[Any, ...]]:
        """Every schema and every relation in one (tables, sequences, indexes, views)."""
        return self.conn.execute(
            "SELECT n.nspname, c.relname, c.relkind FROM pg_namespace n "
            "LEFT JOIN pg_class c ON c.relnamespace = n.oid "
            "WHERE n.nspname NOT LIKE 'pg\\_%' AND n.nspname <> 'information_schema' "
            "ORDER BY 1, 2"
        ).fetchall()

    def empty(self) -> None:
        self.conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        if self.objects() != self.made:
            self.rebuild()
        self.delete_rows()

    def delete_rows(self) -> None:
        """Empty the tables of the database's own making: none here."""

    def rebuild(self) -> None:
        schemas = [row[0] for row in self.conn.execute(
            "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
            "AND nspname <> 'information_schema'"
        )]  # fmt: skip
        for schema in schemas:
            self.conn.execute(f'DROP SCHEMA "{schema}" CASCADE')
        self.conn.execute("CREATE SCHEMA public")
        self.build()

    def check_untouched(self) -> None:
        now = self.objects()
        if now != self.made:
            added = sorted(set(now) - set(self.made))
            removed = sorted(set(self.made) - set(now))
            pytest.fail(
                f"the test changed the schema of the shared database {self.name} "
                f"(added {added}, removed {removed}): give it a database of its own "
                "(empty_pg_url), or move the objects elsewhere",
                pytrace=False,
            )

    def close(self) -> None:
        self.conn.close()


class _KeptMigratedPgDatabase(_KeptPgDatabase):
    """The kept database, migrated: emptying deletes every row and restarts every id."""

    def build(self) -> None:
        with Database(self.url) as database:
            database.upgrade()

    def objects(self) -> list[tuple[Any, ...]]:
        """The relations, and the schema revision the database is stamped with."""
        try:
            stamped = self.conn.execute("SELECT 'alembic', version_num, '' FROM alembic_version")
        except psycopg.errors.UndefinedTable:
            return [*super().objects(), ("alembic", None, "")]
        return [*super().objects(), *stamped.fetchall()]

    def delete_rows(self) -> None:
        deletes = [f"DELETE FROM {table.name}" for table in reversed(metadata.sorted_tables)]
        self.conn.execute(
            "; ".join(
                [
                    *deletes,
                    "SELECT setval(c.oid::regclass, 1, false) FROM pg_class c "
                    "WHERE c.relkind = 'S' AND c.relnamespace = 'public'::regnamespace",
                ]
            )
        )


@contextmanager
def _kept(kind: type[_KeptPgDatabase]) -> Iterator[_KeptPgDatabase]:
    with _scratch_database() as name:
        kept = kind(name)
        try:
            yield kept
        finally:
            kept.close()


@pytest.fixture(scope="session")
def _migrated_pg() -> Iterator[_KeptPgDatabase]:
    with _kept(_KeptMigratedPgDatabase) as kept:
        yield kept


@pytest.fixture(scope="session")
def _empty_pg() -> Iterator[_KeptPgDatabase]:
    with _kept(_KeptPgDatabase) as kept:
        yield kept


@pytest.fixture
def pg_url(_migrated_pg: _KeptPgDatabase) -> Iterator[str]:
    """A migrated PostgreSQL database with no rows (ids start at 1)."""
    _migrated_pg.empty()
    yield _migrated_pg.url
    _migrated_pg.check_untouched()


@pytest.fixture
def empty_pg_url(_empty_pg: _KeptPgDatabase) -> str:
    """A PostgreSQL database with no schema at all (only an empty `public`); the test may
    create what it likes in it, the next one gets it empty again."""
    _empty_pg.empty()
    return _empty_pg.url


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    with Database(f"sqlite:///{path}") as database:
        database.upgrade()
    # Closing the last connection checkpoints the WAL into the file, so one file copies.
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture
def sqlite_url(sqlite_template: Path, tmp_path: Path) -> str:
    path = tmp_path / "connector-sync.db"
    shutil.copy(sqlite_template, path)
    return f"sqlite:///{path}"


@pytest.fixture(params=["sqlite", "postgresql"])
def db_url(request: pytest.FixtureRequest) -> str:
    """The same test against a SQLite file and a PostgreSQL database."""
    fixture = "sqlite_url" if request.param == "sqlite" else "pg_url"
    return str(request.getfixturevalue(fixture))


@pytest.fixture
def database(db_url: str) -> Iterator[Database]:
    db = Database(db_url)
    yield db
    pool: Any = db.engine.pool
    assert pool.checkedout() == 0, "a connection was left checked out"
    db.close()


# -- the store -----------------------------------------------------------------------


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    """The store on the test's database, on the database's own clock."""
    with open_store(database) as store:
        yield store


@pytest.fixture
def clock() -> ManualClock:
    """A clock that stands still until the test moves it (`clock.advance(seconds)`)."""
    return ManualClock()


@pytest.fixture
def clocked_store(database: Database, clock: ManualClock) -> Iterator[Store]:
    """The store on the test's database whose every "now" is `clock`'s: tests move time
    instead of sleeping."""
    with open_store(database, clock=clock) as store:
        yield store


# -- sources ---------------------------------------------------------------------------


@pytest.fixture
def api() -> Iterator[FakeApi]:
    """A real HTTP server on 127.0.0.1 (support/fake_api.py) for the http and file connectors."""
    with FakeApi.serve() as api:
        yield api


@pytest.fixture(scope="session", autouse=True)
def _cli_command_built_once() -> Iterator[None]:
    """Typer's CliRunner builds the click command from the app at every invocation, which
    costs as much as most commands' own work here (25 ms, well over a thousand times a
    run); the app does not change, so the tests build it once. Should a newer typer lose
    this private name, every invocation builds the command again, as before."""
    build = getattr(typer.testing, "_get_command", None)
    if build is None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(typer.testing, "_get_command", functools.cache(build))
        yield


# -- CLI -----------------------------------------------------------------------------


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)
