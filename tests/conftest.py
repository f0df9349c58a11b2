"""Fixtures: a real SQLite file and a real PostgreSQL database per test, and test plugins.

PostgreSQL is required, never skipped: when the server at CONNECTOR_SYNC_TEST_POSTGRES_URL
(default postgresql://postgres@127.0.0.1:5432/postgres) is unreachable, every
PostgreSQL test fails with the reason. Each test run creates its own databases
(a migrated template, cloned per test) and drops them at the end.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from typer.testing import CliRunner

from connector_sync.connectors import registry
from connector_sync.db import Database
from connector_sync.store import Store, open_store

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
    """Installs tests/plugins as a distribution with entry points (a .dist-info on sys.path)."""
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
def _scratch_database(template: str | None = None) -> Iterator[str]:
    """A new PostgreSQL database (a clone of `template`, or empty), dropped afterwards."""
    engine = _admin_engine()
    name = f"cs_test_{RUN_ID}_{uuid.uuid4().hex[:10]}"
    clause = f' TEMPLATE "{template}"' if template else ""
    try:
        with engine.connect() as conn:
            conn.exec_driver_sql(f'CREATE DATABASE "{name}"{clause}')
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


@pytest.fixture(scope="session")
def pg_template() -> Iterator[str]:
    """A migrated PostgreSQL database that each test clones."""
    with _scratch_database() as name:
        with Database(_database_url(name)) as database:
            database.upgrade()
        yield name


@pytest.fixture
def pg_url(pg_template: str) -> Iterator[str]:
    with _scratch_database(pg_template) as name:
        yield _database_url(name)


@pytest.fixture
def empty_pg_url() -> Iterator[str]:
    """A PostgreSQL database with no schema at all."""
    with _scratch_database() as name:
        yield _database_url(name)


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


@pytest.fixture
def store(database: Database) -> Iterator[Store]:
    with open_store(database) as opened:
        yield opened


# -- CLI -----------------------------------------------------------------------------


class Cli:
    """Invokes the real command line in-process against one database URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.runner = CliRunner()

    def __call__(self, *args: str, env: dict[str, str] | None = None) -> Any:
        from connector_sync.cli import app

        return self.runner.invoke(app, ["--database-url", self.url, *args], env=env)


@pytest.fixture
def cli(db_url: str) -> Cli:
    return Cli(db_url)


def count_rows(url: str, table: str) -> int:
    with Database(url) as db, db.engine.connect() as conn:
        return int(conn.exec_driver_sql(f"SELECT count(*) FROM {table}").scalar_one())
