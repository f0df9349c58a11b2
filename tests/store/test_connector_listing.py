"""Listing connectors at scale: ConnectorFilter's filters, the count a page leaves out, and
the streamed listing (`list --all --json`), the same on SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import pytest

from connector_sync.store import Store, open_store
from connector_sync.store.base import ConnectorFilter, ManualClock, NewConnector

START = dt.datetime(2030, 1, 1, tzinfo=dt.UTC)


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(START)


@pytest.fixture
def fleet(db_url: str, clock: ManualClock) -> Iterator[Store]:
    """Eleven connectors in two tenants: two http, one parked in ERROR, one INACTIVE, and
    (an hour on) all due but the three added with an hour's delay."""
    with open_store(db_url, clock=clock) as store:
        for n in range(8):
            later = START + dt.timedelta(hours=2) if n < 3 else None
            kind = "http" if n in (1, 2) else "demo"
            store.add_connector(NewConnector(f"c{n:02}", kind, {}, 3600, next_sync_at=later))
        for n in range(3):
            store.add_connector(NewConnector(f"t{n}", "demo", {}, 3600, tenant="other"))
        with store.database.begin() as conn:
            conn.exec_driver_sql("UPDATE connectors SET status = 'ERROR' WHERE name = 'c03'")
            conn.exec_driver_sql("UPDATE connectors SET status = 'INACTIVE' WHERE name = 'c04'")
        clock.advance(3600)
        yield store


def names(store: Store, where: ConnectorFilter) -> list[str]:
    return [row.name for row in store.list_connectors(where)]


@pytest.mark.parametrize(
    ("where", "expected"),
    [
        (ConnectorFilter(include_inactive=False, tenant="default"),
         ["c00", "c01", "c02", "c03", "c05", "c06", "c07"]),
        (ConnectorFilter(tenant="default"),
         ["c00", "c01", "c02", "c03", "c04", "c05", "c06", "c07"]),
        (ConnectorFilter(status="INACTIVE", include_inactive=False), ["c04"]),
        (ConnectorFilter(status="ERROR"), ["c03"]),
        (ConnectorFilter(type="http"), ["c01", "c02"]),
        (ConnectorFilter(due=True, tenant="default"), ["c05", "c06", "c07"]),
        (ConnectorFilter(due=True, type="demo", limit=2), ["c05", "c06"]),
        (ConnectorFilter(tenant="nobody"), []),
    ],
)  # fmt: skip
def test_filters_choose_by_tenant_and_name(
    fleet: Store, where: ConnectorFilter, expected: list[str]
) -> None:
    assert names(fleet, where) == expected


def test_every_connector_by_tenant_then_name(fleet: Store) -> None:
    rows = fleet.list_connectors()
    assert [(r.tenant, r.name) for r in rows] == sorted((r.tenant, r.name) for r in rows)
    assert len(rows) == 11


def test_a_count_ignores_the_limit(fleet: Store) -> None:
    assert fleet.count_connectors(ConnectorFilter(limit=2)) == 11
    assert fleet.count_connectors(ConnectorFilter(include_inactive=False)) == 10
    assert fleet.count_connectors(ConnectorFilter(due=True)) == 6
    assert fleet.count_connectors(ConnectorFilter(status="SYNCING")) == 0


@pytest.mark.parametrize("limit", [None, 1, 4, 11, 50])
def test_the_stream_is_the_listing_in_chunks(fleet: Store, limit: int | None) -> None:
    where = ConnectorFilter(limit=limit)
    chunks = list(fleet.stream_connectors(where, chunk=3))
    assert [row for chunk in chunks for row in chunk] == fleet.list_connectors(where)
    assert all(0 < len(chunk) <= 3 for chunk in chunks)


def test_a_stream_closed_early_stops(fleet: Store) -> None:
    stream = fleet.stream_connectors(ConnectorFilter(), chunk=2)
    first = next(stream)
    stream.close()
    assert [row.name for row in first] == ["c00", "c01"]
    assert len(fleet.list_connectors()) == 11  # the store is usable afterwards
