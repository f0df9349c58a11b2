"""Dataset records never outlive their dataset, on both databases: on SQLite through the
foreign key, on PostgreSQL (migration 0006) through a lock per batch and a delete
trigger, which cost one statement per batch instead of a lookup per record."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
import sqlalchemy as sa

from connector_sync.store import Store, open_store
from connector_sync.store.base import Claim, ClaimRequest, NewConnector


@pytest.fixture
def store(db_url: str) -> Iterator[Store]:
    with open_store(db_url) as store:
        yield store


def claimed(store: Store, name: str) -> Claim:
    """A claim of a new demo connector: its sync and BUILDING dataset are open."""
    cid = store.add_connector(
        NewConnector(name=name, type="demo", config={"records": 0}, sync_interval=3600)
    )
    [claim] = store.claim(
        ClaimRequest(worker="test:1", limit=1, lease_seconds=60, connector_ids=[cid])
    )
    return claim


def records(store: Store, dataset_id: int | None = None) -> int:
    """Records of one dataset, or (None) of no dataset at all: orphans."""
    if dataset_id is None:
        where = sa.text("dataset_id NOT IN (SELECT id FROM datasets)")
    else:
        where = sa.text("dataset_id = :id").bindparams(id=dataset_id)
    with store.database.begin() as conn:
        query = sa.select(sa.func.count()).select_from(sa.table("dataset_records")).where(where)
        return int(conn.execute(query).scalar_one())


def test_records_go_with_their_dataset_and_their_connector(store: Store) -> None:
    first, second = claimed(store, "first"), claimed(store, "second")
    for claim in (first, second):
        store.append_records(claim.dataset_id, 0, ['{"n":1}', '{"n":2}'])
        store.append_records(claim.dataset_id, 2, ['{"n":3}'])
    assert records(store, first.dataset_id) == records(store, second.dataset_id) == 3
    store.delete_datasets([first.dataset_id])  # a dataset deleted: its records go
    assert records(store, first.dataset_id) == 0
    assert records(store, second.dataset_id) == 3
    store.delete_connector(second.connector_id)  # its datasets cascade, their records too
    assert records(store, second.dataset_id) == 0
    assert records(store) == 0


def test_no_batch_is_written_into_a_dataset_that_is_gone(store: Store) -> None:
    claim = claimed(store, "gone")
    store.append_records(claim.dataset_id, 0, ['{"n":1}'])
    store.delete_connector(claim.connector_id)
    with pytest.raises(Exception, match="is gone"):
        store.append_records(claim.dataset_id, 1, ['{"n":2}'])
    assert records(store) == 0


def test_a_batch_larger_than_a_copy_piece_is_stored_whole_or_not_at_all(store: Store) -> None:
    import json

    from connector_sync.datasets import DatasetWriter, encode_batch
    from connector_sync.exceptions import RecordError

    claim = claimed(store, "pieces")
    writer = DatasetWriter(store, claim.dataset_id)
    rows = [{"n": n, "path": f"C:\\dir\\{n}", "tab": "a\tb"} for n in range(1, 1201)]
    writer.write(encode_batch(rows[:7]))
    writer.write(encode_batch(rows[7:]))  # PostgreSQL: COPY in pieces of 500 rows
    with store.database.begin() as conn:
        stored = conn.execute(
            sa.text("SELECT seq, data FROM dataset_records WHERE dataset_id = :id ORDER BY seq"),
            {"id": claim.dataset_id},
        ).all()
    assert [seq for seq, _ in stored] == list(range(1, 1201))
    assert [data if isinstance(data, dict) else json.loads(data) for _, data in stored] == rows
    bad = [{"n": n, "text": "\ud800" if n == 2300 else "ok"} for n in range(1201, 2401)]
    with pytest.raises(RecordError, match="record 2300 holds a lone surrogate"):
        writer.write(encode_batch(bad))  # the bad record is in the third piece
    assert records(store, claim.dataset_id) == 1200


def test_the_store_s_key_order_stores_the_same_documents(store: Store, db_url: str) -> None:
    from connector_sync.datasets import DatasetWriter, encode_batch

    rows = [{"year": 2013, "dest": "IAH", "day": n, "arr_delay": None} for n in range(50)]
    plain, ordered = claimed(store, "plain"), claimed(store, "ordered")
    DatasetWriter(store, plain.dataset_id).write(encode_batch(rows))
    batch = encode_batch(rows, key_order=store.record_key_order)
    DatasetWriter(store, ordered.dataset_id).write(batch)
    text = "data::text" if db_url.startswith("postgresql") else "data"

    def stored(dataset_id: int) -> list[str]:
        with store.database.begin() as conn:
            query = f"SELECT {text} FROM dataset_records WHERE dataset_id = :id ORDER BY seq"
            return list(conn.execute(sa.text(query), {"id": dataset_id}).scalars())

    assert stored(ordered.dataset_id) == stored(plain.dataset_id)
    if store.record_key_order is None:  # SQLite keeps the text: the record's own order
        assert stored(plain.dataset_id)[0] == '{"year":2013,"dest":"IAH","day":0,"arr_delay":null}'
    else:  # jsonb keeps its own order, whatever order the keys came in
        assert batch.lines[0] == '{"day":0,"dest":"IAH","year":2013,"arr_delay":null}'
