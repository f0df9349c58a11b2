"""The built-in http and file connectors through the runner into datasets, on both
databases: incremental state saved by one sync is what the next one reads from."""

from __future__ import annotations

import json
from pathlib import Path

from connector_sync.store import Store
from connector_sync.store.base import HistoryFilter, NewConnector
from support.fake_api import FakeApi, item
from support.runs import run_and_read

FAST = {"retry_backoff": 0.01, "max_retries": 3}
ALL_ITEMS = [item(n) for n in range(1, 24)]


def add(store: Store, name: str, type: str, config: dict[str, object]) -> int:
    return store.add_connector(NewConnector(name=name, type=type, config=config, sync_interval=60))


def test_http_incremental_through_the_runner(store: Store, api: FakeApi) -> None:
    config = {
        "url": f"{api.url}/page",
        "records_path": "data.items",
        "pagination": {"type": "page", "size_param": "per_page", "page_size": 10},
        "incremental": {"cursor_field": "updated", "cursor_param": "updated_since"},
        **FAST,
    }
    connector_id = add(store, "api", "http", config)
    _, records = run_and_read(store)
    assert len(store.history(HistoryFilter())) == 1
    assert records == ALL_ITEMS
    assert store.find_connector("api").state == {"cursor": 230}

    api.items.append(item(24))
    _, records = run_and_read(store, connector_ids=[connector_id])
    assert records == [item(24)]
    assert store.find_connector("api").state == {"cursor": 240}
    assert api.requests[-2].query["updated_since"] == "230"


def test_file_incremental_through_the_runner(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "feed.jsonl"
    path.write_text("".join(json.dumps({"id": n, "v": n}) + "\n" for n in range(1, 1001)))
    connector_id = add(
        store, "feed", "file", {"path": str(path), "incremental": {"cursor_field": "id"}}
    )
    _, records = run_and_read(store, batch_size=300)
    assert len(store.history(HistoryFilter())) == 1
    assert records == [{"id": n, "v": n} for n in range(1, 1001)]
    assert store.find_connector("feed").state == {"cursor": 1000}

    with path.open("a") as handle:
        handle.write(json.dumps({"id": 1001, "v": 0}) + "\n")
    _, records = run_and_read(store, connector_ids=[connector_id])
    assert records == [{"id": 1001, "v": 0}]
    assert store.find_connector("feed").state == {"cursor": 1001}


def test_csv_alias_through_the_runner(store: Store, tmp_path: Path) -> None:
    path = tmp_path / "people.csv"
    path.write_text('name,city\n"Doe, J.",Paris\n')
    add(store, "people", "csv", {"path": str(path)})
    _, records = run_and_read(store)
    assert len(store.history(HistoryFilter())) == 1
    assert records == [{"name": "Doe, J.", "city": "Paris"}]
