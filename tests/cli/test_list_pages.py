"""`list` at scale: a table shows a page and says how many more, filters narrow it, --all
shows every connector (INACTIVE too), --inactive adds the INACTIVE ones, and --json keeps
its document (every connector but the INACTIVE ones, unless asked) however it is encoded."""

from __future__ import annotations

import json

import pytest

from connector_sync import render
from connector_sync.store import open_store
from connector_sync.store.base import ConnectorFilter, NewConnector
from support.cli import Cli

#: Sixty connectors: names with accents and a CJK character (JSON keeps them as they are),
#: three http ones, one INACTIVE and one in ERROR.
NAMES = [f"ç-{n:02}-連" for n in range(60)]


@pytest.fixture
def cli(db_url: str) -> Cli:
    with open_store(db_url) as store:
        for n, name in enumerate(NAMES):
            store.add_connector(NewConnector(name, "http" if n < 3 else "demo", {}, 3600))
        with store.database.begin() as conn:
            conn.exec_driver_sql(
                f"UPDATE connectors SET status = 'INACTIVE' WHERE name = '{NAMES[7]}'"
            )
            conn.exec_driver_sql(
                f"UPDATE connectors SET status = 'ERROR' WHERE name = '{NAMES[8]}'"
            )
    return Cli(db_url)


def shown(output: str) -> list[str]:
    """The connector names a table shows, in order."""
    return [word for line in output.splitlines() for word in line.split() if word in NAMES]


def listed(cli: Cli, *args: str) -> list[dict[str, object]]:
    result = cli("list", "--json", *args)
    assert result.exit_code == 0, result.output
    document: list[dict[str, object]] = json.loads(result.stdout)
    return document


def test_a_table_shows_a_page_of_fifty_and_how_many_more(cli: Cli) -> None:
    result = cli("list")
    assert result.exit_code == 0, result.output
    assert shown(result.stdout) == [n for n in NAMES if n != NAMES[7]][:50]
    assert result.stdout.rstrip().endswith("9 more — use --limit N or --all")


def test_limit_and_all_choose_the_page(cli: Cli) -> None:
    five = cli("list", "--limit", "5")
    assert shown(five.stdout) == NAMES[:5]
    assert "54 more — use --limit N or --all" in five.stdout
    every = cli("list", "--all")
    assert shown(every.stdout) == NAMES  # INACTIVE too
    assert "more —" not in every.stdout


def test_json_lists_every_connector_but_the_inactive_ones_as_it_always_has(
    cli: Cli, db_url: str
) -> None:
    result = cli("list", "--json")
    with open_store(db_url) as store:
        rows = store.list_connectors(ConnectorFilter(include_inactive=False))
    # Byte for byte what jsonable + json.dumps printed before orjson encoded listings.
    assert result.stdout == json.dumps(render.jsonable(rows), indent=2, ensure_ascii=False) + "\n"
    assert len(rows) == 59


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (("--all",), NAMES),
        (("--inactive", "--limit", "8"), NAMES[:8]),
        (("--status", "inactive"), [NAMES[7]]),
        (("--status", "Error"), [NAMES[8]]),
        (("--type", "http"), NAMES[:3]),
        (("--due", "--limit", "4"), NAMES[:4]),
        (("--tenant", "elsewhere"), []),
    ],
)
def test_filters_and_json(cli: Cli, args: tuple[str, ...], expected: list[str]) -> None:
    assert [c["name"] for c in listed(cli, *args)] == expected


def test_an_empty_listing_is_an_empty_array(cli: Cli) -> None:
    assert cli("list", "--json", "--type", "nothing").stdout == "[]\n"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("--status", "asleep"), "--status 'ASLEEP' is not a connector status; use one of"),
        (("--all", "--limit", "3"), "--all shows every connector: leave out --limit"),
    ],
)
def test_bad_options_are_one_line_and_exit_2(cli: Cli, args: tuple[str, ...], message: str) -> None:
    result = cli("list", *args)
    assert result.exit_code == 2
    assert message in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_due_pages_its_table_and_lists_every_one_in_json(cli: Cli) -> None:
    due = [n for n in NAMES if n not in (NAMES[7], NAMES[8])]  # not INACTIVE, not ERROR
    table = cli("due")
    assert table.exit_code == 0, table.output
    assert len(shown(table.stdout)) == 50
    assert table.stdout.rstrip().endswith("8 more — use --limit N or --json")
    document = cli("due", "--json")
    assert sorted(c["name"] for c in json.loads(document.stdout)) == sorted(due)


def test_health_shows_twenty_problems_and_counts_the_rest_by_kind(cli: Cli, db_url: str) -> None:
    with open_store(db_url) as store, store.database.begin() as conn:
        conn.exec_driver_sql("UPDATE connectors SET status = 'ERROR' WHERE status = 'ACTIVE'")
    table = cli("health")
    assert table.exit_code == 1
    assert len(shown(table.stdout)) == 20
    assert "39 more (ERROR 39) — health --json lists them" in table.stdout
    assert len(json.loads(cli("health", "--json").stdout)) == 59


def test_health_says_when_it_lists_only_the_most_overdue(cli: Cli, db_url: str) -> None:
    """It lists the 100 most overdue (bounded work when a stopped scheduler makes every
    connector overdue) and had claimed that --json lists every one (an adversarial pass)."""
    with open_store(db_url) as store:
        for n in range(60, 110):
            store.add_connector(NewConnector(f"late-{n}", "demo", {}, 3600))
        with store.database.begin() as conn:
            conn.exec_driver_sql("UPDATE connectors SET next_sync_at = '2000-01-01 00:00:00'")
    table = cli("health")
    assert "OVERDUE: the 100 most overdue connectors are listed, there may be more" in table.stdout
    overdue = [p for p in json.loads(cli("health", "--json").stdout) if p["problem"] == "OVERDUE"]
    assert len(overdue) == 100
    few = cli("health", "--tenant", "nobody")
    assert "most overdue" not in few.stdout
