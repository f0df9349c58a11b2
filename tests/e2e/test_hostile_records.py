"""Records a source sends that no database can store as they are (a lone surrogate, a
NUL where PostgreSQL refuses it) fail the sync as a RecordError naming the record."""

from __future__ import annotations

from pathlib import Path

import pytest

from connector_sync.connectors.incremental import Cursor, Incremental
from connector_sync.exceptions import PermanentError
from connector_sync.runner import Runner, RunOptions
from connector_sync.store.base import HistoryFilter, NewConnector, Store

GOOD = '{"id": 1, "name": "ok"}\n'
# JSON Lines text (escapes as JSON writes them) of a second record, and whether
# SQLite stores it: JSON text may hold an escaped NUL, never a lone surrogate.
HOSTILE = {
    "surrogate_value": ('{"id": 2, "name": "\\ud800"}', False),
    "surrogate_name": ('{"id": 2, "na\\udfffme": "x"}', False),
    "nul_value": ('{"id": 2, "name": "a\\u0000b"}', True),
    "nul_name": ('{"id": 2, "na\\u0000me": "x"}', True),
}


def test_records_no_database_can_store_fail_their_syncs_naming_them(
    store: Store, db_url: str, tmp_path: Path
) -> None:
    for case, (line, _) in HOSTILE.items():
        path = tmp_path / f"{case}.jsonl"
        path.write_text(GOOD + line + "\n" + GOOD)
        store.add_connector(
            NewConnector(name=case, type="file", config={"path": str(path)}, sync_interval=60)
        )
    store.add_connector(
        NewConnector(name="fine", type="demo", config={"records": 2}, sync_interval=60)
    )
    Runner(store, RunOptions(attempts=1, batch_size=2)).run()
    syncs = {s.connector_name: s for s in store.history(HistoryFilter())}
    assert syncs.pop("fine").status == "COMPLETED"
    for case, sync in syncs.items():
        if HOSTILE[case][1] and db_url.startswith("sqlite"):
            assert sync.status == "COMPLETED", sync
            continue
        assert (sync.status, sync.error_type) == ("FAILED", "RecordError"), sync
        assert "record 2 " in sync.error, sync.error
        assert "\x00" not in sync.error and "\ud800" not in sync.error


def test_a_cursor_error_lists_field_names_with_their_control_characters_escaped() -> None:
    cursor = Cursor(Incremental("updated"), {})
    with pytest.raises(PermanentError) as raised:
        cursor.value_of({"a\x00b": 1, "c\ud800": 2, "x" * 500: 3}, "line 7")
    message = raised.value.message
    assert "a\\x00b" in message and "c\\ud800" in message
    assert "\x00" not in message and "\ud800" not in message
    message.encode("utf-8")  # storable
    assert len(message) < 300


@pytest.mark.parametrize("value", ["\ud800", "a\x00b"])
def test_a_cursor_value_no_database_can_store_fails_naming_the_record(value: str) -> None:
    cursor = Cursor(Incremental("updated"), {})
    with pytest.raises(PermanentError, match="line 7: cursor field 'updated'"):
        cursor.value_of({"updated": value}, "line 7")
