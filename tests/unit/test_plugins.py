"""The built-in demo and csv plugins and the plugin registry: no database needed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from connector_sync.connectors.csvfile import CsvConnector
from connector_sync.connectors.demo import DemoConnector, DemoFailure, demo_record
from connector_sync.connectors.registry import available_types, load_plugin
from connector_sync.exceptions import BadInput, ConfigError, PermanentError


def test_demo_records_are_about_300_bytes_with_about_ten_fields() -> None:
    sizes = [len(json.dumps(demo_record(n), separators=(",", ":"))) for n in range(0, 10**6, 9973)]
    assert min(sizes) >= 250 and max(sizes) <= 350
    assert 9 <= len(demo_record(0)) <= 12
    assert demo_record(5) == demo_record(5)  # deterministic


def test_demo_reads_lazily_and_fails_halfway_when_asked() -> None:
    reader = DemoConnector({"records": 10**12}).read()  # a generator: nothing made up front
    assert next(reader)["id"] == 0
    failing = DemoConnector({"records": 10, "fail": True}).read()
    got = []
    with pytest.raises(DemoFailure, match="after 5 records"):
        got.extend(failing)
    assert len(got) == 5


def test_config_validation_names_the_field() -> None:
    with pytest.raises(ConfigError, match="missing required field 'path'"):
        CsvConnector({})
    with pytest.raises(ConfigError, match="'records' must be integer"):
        DemoConnector({"records": True})
    with pytest.raises(ConfigError, match="unknown field"):
        DemoConnector({"record": 1})
    assert DemoConnector({"delay_ms": 2}).config["delay_ms"] == 2.0  # ints are numbers


def test_registry_loads_builtins_through_entry_points() -> None:
    assert {"csv", "demo"} <= set(available_types())
    assert load_plugin("csv") is CsvConnector
    with pytest.raises(BadInput, match="unknown connector type 'nope'"):
        load_plugin("nope")
    with pytest.raises(PermanentError, match="failed to load"):
        load_plugin("broken")


def test_third_party_plugin_registers_like_a_builtin() -> None:
    plugin = load_plugin("records")
    assert plugin.type_name == "records"
    assert plugin({"records": [{"a": 1}]}).check().ok


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def test_csv_quoted_delimiters_newlines_and_bom(tmp_path: Path) -> None:
    path = write(tmp_path / "a.csv", '\ufeffid,note\n1,"a, b"\n2,"line1\nline2"\n3,"say ""hi"""\n')
    rows = list(CsvConnector({"path": str(path)}).read())
    assert rows == [
        {"id": "1", "note": "a, b"},
        {"id": "2", "note": "line1\nline2"},
        {"id": "3", "note": 'say "hi"'},
    ]


def test_csv_delimiter_and_encoding(tmp_path: Path) -> None:
    path = write(tmp_path / "b.csv", "name;city\nJosé;Zürich\n", encoding="latin-1")
    connector = CsvConnector({"path": str(path), "delimiter": ";", "encoding": "latin-1"})
    assert list(connector.read()) == [{"name": "José", "city": "Zürich"}]


def test_csv_errors_name_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "c.csv", "a,b\n1,2\n3,4,5\n")
    with pytest.raises(PermanentError, match="line 3: 3 fields, the header has 2"):
        list(CsvConnector({"path": str(path)}).read())
    quoted = write(tmp_path / "d.csv", 'a,b\n1,2\n"x"y,2\n')
    with pytest.raises(PermanentError, match="line 3"):
        list(CsvConnector({"path": str(quoted)}).read())
    with pytest.raises(PermanentError, match="csv file not found"):
        list(CsvConnector({"path": str(tmp_path / "missing.csv")}).read())
    empty = write(tmp_path / "e.csv", "")
    with pytest.raises(PermanentError, match="empty file"):
        CsvConnector({"path": str(empty)}).check()


def test_csv_check_reports_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "f.csv", "x,y,z\n1,2,3\n")
    result = CsvConnector({"path": str(path)}).check()
    assert result.ok and result.details["columns"] == ["x", "y", "z"]


def test_csv_streams_a_large_file_row_by_row(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w") as handle:
        handle.write("n,text\n")
        for n in range(200_000):
            handle.write(f'{n},"row {n}, with a comma"\n')
    reader = CsvConnector({"path": str(path)}).read()
    assert next(reader) == {"n": "0", "text": "row 0, with a comma"}
    assert sum(1 for _ in reader) == 199_999


@pytest.mark.parametrize(
    "url",
    [
        "sqlite:///a.db", "sqlite:////tmp/x.db", "sqlite+pysqlite:///rel/x.db", "sqlite://",
        "sqlite:///:memory:", "sqlite:///a%20b.db", "sqlite:///x.db?mode=ro", "sqlite:////",
        "postgresql://u:p@h:5433/db", "postgresql+psycopg://h/db?sslmode=require", "not a url",
    ],
)  # fmt: skip
def test_the_own_sqlite_file_is_read_from_the_url_as_sqlalchemy_reads_it(url: str) -> None:
    # A sync's check reads the usual forms without importing SQLAlchemy (a fifth of a
    # second of a file sync's start-up); the answer must be SQLAlchemy's.
    import sqlalchemy as sa

    from connector_sync.connectors.base import own_sqlite_file

    try:
        parsed = sa.make_url(url)
    except sa.exc.ArgumentError:
        expected = None
    else:
        sqlite = parsed.get_backend_name() == "sqlite"
        expected = parsed.database if sqlite and parsed.database not in ("", ":memory:") else None
    assert own_sqlite_file(url) == expected
