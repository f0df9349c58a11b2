"""The `file` connector (and its `csv` alias) against generated files and a real HTTP server."""

from __future__ import annotations

import csv
import io
import json
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from connector_sync.connectors.csvfile import CsvConnector
from connector_sync.connectors.file import FileConnector, iter_json_array
from connector_sync.connectors.registry import load_plugin
from connector_sync.exceptions import ConfigError, PermanentError, TransientError
from support.fake_api import FakeApi


def write(path: Path, text: str, encoding: str = "utf-8") -> Path:
    path.write_bytes(text.encode(encoding))
    return path


def read(config: dict[str, Any], state: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    return list(FileConnector(config, state).read())


def record(n: int) -> dict[str, Any]:
    return {"id": n, "name": f"name {n}", "note": 'say "hi", \\ ünï €', "tags": [n, None, True]}


# -- CSV -------------------------------------------------------------------------------


def test_a_200000_row_csv_with_quoted_commas_and_newlines(tmp_path: Path) -> None:
    path = tmp_path / "big.csv"
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["n", "text", "memo"])
        for n in range(200_000):
            writer.writerow([n, f"row {n}, with a comma", f'line one\nline "two" {n}'])
    reader = FileConnector({"path": str(path)}).read()
    assert next(reader) == {
        "n": "0",
        "text": "row 0, with a comma",
        "memo": 'line one\nline "two" 0',
    }
    rest = list(reader)
    assert len(rest) == 199_999
    last = rest[-1]
    assert last == {
        "n": "199999",
        "text": "row 199999, with a comma",
        "memo": 'line one\nline "two" 199999',
    }


def records_and_peak_memory(config: dict[str, Any]) -> tuple[int, int]:
    """How many records a file connector reads, and the peak bytes Python held meanwhile."""
    tracemalloc.start()
    try:
        count = sum(1 for _ in FileConnector(config).read())
        return count, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_csv_memory_stays_flat_on_a_large_file(tmp_path: Path) -> None:
    path = tmp_path / "wide.csv"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("n,text\n")
        for n in range(60_000):
            handle.write(f'{n},"{"x" * 150}, {n}"\n')
    assert path.stat().st_size > 9_000_000
    count, peak = records_and_peak_memory({"path": str(path)})
    assert count == 60_000
    assert peak < 2_000_000, f"peak {peak} bytes: the file was held in memory"


def test_csv_with_bom_tabs_and_no_header(tmp_path: Path) -> None:
    bom = write(tmp_path / "bom.csv", "\ufeffid,name\n1,Zoë\n")
    assert read({"path": str(bom)}) == [{"id": "1", "name": "Zoë"}]  # no "\ufeffid" key
    tsv = write(tmp_path / "t.tsv", "a\tb\n1\t2\n")
    assert read({"path": str(tsv)}) == [{"a": "1", "b": "2"}]  # tab guessed from .tsv
    bare = write(tmp_path / "bare.txt", "1;x\n2;y\n")
    rows = read({"path": str(bare), "format": "csv", "delimiter": ";", "has_header": False})
    assert rows == [{"column_1": "1", "column_2": "x"}, {"column_1": "2", "column_2": "y"}]
    ragged = write(tmp_path / "ragged.csv", "1,2\n3\n")
    with pytest.raises(PermanentError, match="line 2: 1 fields, the first row has 2"):
        read({"path": str(ragged), "has_header": False})


def test_csv_encoding_errors_name_the_encoding(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("name\nJosé\n".encode("latin-1"))
    with pytest.raises(PermanentError, match="not valid utf-8-sig"):
        read({"path": str(path)})
    assert read({"path": str(path), "encoding": "latin-1"}) == [{"name": "José"}]


def test_csv_alias_keeps_its_config_and_messages(tmp_path: Path) -> None:
    assert load_plugin("csv") is CsvConnector
    assert issubclass(CsvConnector, FileConnector)
    assert [f.name for f in CsvConnector.config_fields] == ["path", "delimiter", "encoding"]
    with pytest.raises(ConfigError, match="unknown field"):
        CsvConnector({"path": "x.csv", "format": "json"})
    # A .json name does not matter: csv is csv.
    path = write(tmp_path / "really.json", "a\n1\n")
    assert list(CsvConnector({"path": str(path)}).read()) == [{"a": "1"}]
    with pytest.raises(PermanentError, match="csv file not found"):
        list(CsvConnector({"path": str(tmp_path / "nope.csv")}).read())
    with pytest.raises(ConfigError, match="csv config field 'delimiter' must be exactly one"):
        CsvConnector({"path": "x.csv", "delimiter": ";;"})


# -- JSON Lines ------------------------------------------------------------------------


def test_jsonl_with_bom_blank_lines_and_crlf(tmp_path: Path) -> None:
    text = "\ufeff" + json.dumps(record(1)) + "\r\n\r\n" + json.dumps(record(2)) + "\n"
    path = write(tmp_path / "r.jsonl", text)
    assert read({"path": str(path)}) == [record(1), record(2)]


def test_jsonl_malformed_line_names_the_line(tmp_path: Path) -> None:
    path = write(tmp_path / "bad.ndjson", '{"a": 1}\n\n {"a": 2,}\n{"a": 3}\n')
    reader = FileConnector({"path": str(path)}).read()
    assert next(reader) == {"a": 1}
    with pytest.raises(PermanentError) as raised:
        next(reader)
    assert raised.value.message == (
        f"{path}: line 3: not valid JSON (Expecting property name enclosed in double quotes "
        "at column 10)"
    )
    two = write(tmp_path / "two.jsonl", '{"a": 1} {"b": 2}\n')
    with pytest.raises(PermanentError, match="line 1: not valid JSON \\(extra data at column 10"):
        read({"path": str(two)})
    scalar = write(tmp_path / "scalar.jsonl", '{"a": 1}\n[1]\n')
    with pytest.raises(PermanentError, match="line 2: a record must be a JSON object, got list"):
        read({"path": str(scalar)})


# -- JSON arrays -----------------------------------------------------------------------


def test_json_array_pretty_printed(tmp_path: Path) -> None:
    records = [record(n) for n in range(50)]
    path = write(tmp_path / "a.json", "\ufeff" + json.dumps(records, indent=2, ensure_ascii=False))
    assert read({"path": str(path)}) == records
    empty = write(tmp_path / "e.json", " [ \n ] \n")
    assert read({"path": str(empty)}) == []


class Trickle(io.StringIO):
    """A text file that hands out a few characters per read: every value crosses an edge."""

    def read(self, size: int | None = -1) -> str:
        return super().read(3)


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=150, deadline=None)
@given(
    records=st.lists(st.dictionaries(st.text(max_size=5), json_values, max_size=5), max_size=8),
    indent=st.sampled_from([None, 0, 2]),
    ascii_only=st.booleans(),
)
def test_json_array_parser_agrees_with_json_loads(
    records: list[dict[str, Any]], indent: int | None, ascii_only: bool
) -> None:
    text = json.dumps(records, indent=indent, ensure_ascii=ascii_only)
    assert [value for _, value in iter_json_array(Trickle(text), "t")] == json.loads(text)
    assert [value for _, value in iter_json_array(io.StringIO(text), "t")] == json.loads(text)


def test_json_array_numbers_cut_at_a_buffer_edge_are_not_truncated() -> None:
    text = "[" + ",".join(["123456789.125e-3", "-0.5", "true", "false", "null"] * 3) + "]"
    values = [v for _, v in iter_json_array(Trickle(text), "t")]
    assert values == json.loads(text)


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[\n{"a": 1},\n{"a": 2\n,\n]', "line 5: not valid JSON (Expecting property name"),
        (
            '[\n{"a": 1},\n{"a": 2}\n',
            "line 4: unexpected end of file: the JSON array is not closed",
        ),
        ('[\n{"a": 1},\n]', "line 3: not valid JSON (a trailing comma before ']')"),
        ('[\n{"a": 1}\n{"a": 2}]', "line 3: not valid JSON (expected ',' or ']', found '{')"),
        ('{"a": 1}', "line 1: expected a JSON array ('['), found '{'"),
        ('[{"a": 1}] [', "line 1: unexpected '[' after the end of the JSON array"),
        ('[{"a": 1},\n\n 7]', "line 3: a record must be a JSON object, got int"),
        ("", "empty file, expected a JSON array"),
        ('[{"a": "unterminated}]', "line 1: not valid JSON (Unterminated string"),
    ],
)
def test_json_array_errors_name_the_line(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path / "bad.json", text)
    with pytest.raises(PermanentError) as raised:
        read({"path": str(path)})
    assert raised.value.message.startswith(f"{path}: ")
    assert message in raised.value.message


def test_json_array_memory_stays_flat(tmp_path: Path) -> None:
    path = tmp_path / "big.json"
    with path.open("w", encoding="utf-8") as handle:
        handle.write("[\n")
        for n in range(40_000):
            handle.write(("," if n else "") + json.dumps({"n": n, "pad": "p" * 200}) + "\n")
        handle.write("]\n")
    assert path.stat().st_size > 8_000_000
    count, peak = records_and_peak_memory({"path": str(path)})
    assert count == 40_000
    assert peak < 2_000_000, f"peak {peak} bytes: the array was held in memory"


# -- over http -------------------------------------------------------------------------


def test_json_array_and_csv_over_http(api: FakeApi) -> None:
    records = [record(n) for n in range(3000)]  # about 250 kB, sent in 4 kB pieces
    api.files["export.json"] = json.dumps(records, ensure_ascii=False).encode()
    assert read({"url": f"{api.url}/files/export.json"}) == records
    api.files["export.csv"] = '\ufeffa,b\n1,"x,\ny"\n'.encode()
    assert read({"url": f"{api.url}/files/export.csv?v=2"}) == [{"a": "1", "b": "x,\ny"}]
    api.files["data.bin"] = b'{"a": 1}\n'
    plugin = FileConnector(
        {"url": f"{api.url}/files/data.bin", "format": "jsonl", "headers": {"X-Api-Key": "k"}}
    )
    assert list(plugin.read()) == [{"a": 1}]
    assert api.requests[-1].headers["x-api-key"] == "k"


def test_a_download_is_streamed_not_held(api: FakeApi) -> None:
    lines = (json.dumps({"n": n, "pad": "p" * 200}) for n in range(30_000))
    api.files["big.json"] = ("[" + ",\n".join(lines) + "]").encode()
    assert len(api.files["big.json"]) > 6_000_000
    count, peak = records_and_peak_memory({"url": f"{api.url}/files/big.json"})
    assert count == 30_000
    assert peak < 2_000_000, f"peak {peak} bytes: the download was held in memory"


def test_redirects_keep_secret_headers_on_their_origin(api: FakeApi) -> None:
    api.files["x.jsonl"] = b'{"a": 1}\n'
    headers = {"X-Api-Key": "k3y", "Authorization": "Bearer t0k", "Accept": "*/*"}
    same = f"{api.url}/redirect?to=/files/x.jsonl"
    assert read({"url": same, "headers": headers, "format": "jsonl"}) == [{"a": 1}]
    assert api.requests_to("/files/x.jsonl")[0].headers["x-api-key"] == "k3y"
    with FakeApi.serve() as bucket:
        bucket.files["x.jsonl"] = b'{"a": 2}\n'
        elsewhere = f"{api.url}/redirect?to={bucket.url}/files/x.jsonl"
        assert read({"url": elsewhere, "headers": headers, "format": "jsonl"}) == [{"a": 2}]
        [request] = bucket.requests
    assert "x-api-key" not in request.headers and "authorization" not in request.headers
    assert request.headers["accept"] == "*/*"


def test_http_errors_name_the_url_without_secrets(api: FakeApi) -> None:
    with pytest.raises(PermanentError) as raised:
        read({"url": f"{api.url}/files/missing.json?token=t0k3n"})
    assert raised.value.message.startswith(
        f"GET {api.url}/files/missing.json?token=***: HTTP 404 Not Found"
    )
    assert "t0k3n" not in raised.value.message
    with pytest.raises(TransientError, match="HTTP 503"):
        read({"url": f"{api.url}/flaky/x.json?run=f&fail=100&status=503", "retry_backoff": 0})
    assert len(api.requests_to("/flaky/x.json")) == 5  # 4 retries by default
    assert (
        read({"url": f"{api.url}/flaky/y.json?run=g&fail=1", "retry_backoff": 0}) == api.items[:3]
    )


def test_check(tmp_path: Path, api: FakeApi) -> None:
    path = write(tmp_path / "c.csv", "x,y,z\n1,2,3\n")
    result = FileConnector({"path": str(path)}).check()
    assert result.ok and result.details == {"columns": ["x", "y", "z"]}
    assert result.message == f"{path}: readable csv, 3 columns"
    api.files["c.jsonl"] = b'{"a": 1, "b": 2}\n' * 1000
    remote = FileConnector({"url": f"{api.url}/files/c.jsonl"}).check()
    assert remote.ok and remote.details == {"fields": ["a", "b"]}
    empty = write(tmp_path / "e.json", "[]")
    assert FileConnector({"path": str(empty)}).check().message.endswith("readable json, no records")


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({}, "needs exactly one of 'path' and 'url'"),
        ({"path": "a.csv", "url": "http://x/a.csv"}, "needs exactly one of 'path' and 'url'"),
        ({"url": "ftp://x/a.csv"}, "'url' must start with http:// or https://"),
        ({"path": "a.dat"}, "cannot guess the format of a.dat from its extension; set 'format'"),
        ({"path": "a.csv", "format": "xml"}, "'format' must be one of csv, jsonl, json"),
        ({"path": "a.csv", "encoding": "klingon"}, "unknown encoding 'klingon'"),
        ({"path": "a.csv", "incremental": {"cursor_field": "u", "cursor_param": "p"}}, "unknown"),
        ({"path": "a.csv", "incremental": {"cursor_field": "u", "initial_value": [1]}}, "string"),
    ],
)
def test_config_errors_name_the_field(config: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        FileConnector(config)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        # a download's settings with a local file were ignored without a word
        ({"path": "a.csv", "headers": {"X-Api-Key": "k"}}, "'headers' applies to a download"),
        ({"path": "a.csv", "timeout": 5}, "'timeout' applies to a download"),
        ({"path": "a.csv", "max_retry_wait": 5}, "'max_retry_wait' applies to a download"),
        ({"url": "https://u:p@x/a.csv", "headers": {"Authorization": "B"}}, "credentials in"),
    ],
)
def test_a_new_config_says_only_what_applies(config: dict[str, Any], message: str) -> None:
    """Rules for configs being added or changed: one stored before them still builds."""
    with pytest.raises(ConfigError, match=message):
        FileConnector.check_new_config(config)
    FileConnector(config)
    FileConnector.check_new_config({"path": "a.csv", "headers": None})  # null: not given


# -- incremental -----------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "json"])
def test_incremental_second_read_returns_only_new_records(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / f"data.{fmt}"

    def save(rows: list[dict[str, Any]]) -> None:
        if fmt == "csv":
            text = "id,updated\n" + "".join(f"{r['id']},{r['updated']}\n" for r in rows)
        elif fmt == "jsonl":
            text = "".join(json.dumps(r) + "\n" for r in rows)
        else:
            text = json.dumps(rows)
        path.write_text(text)

    def expected(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
        return [{k: str(v) for k, v in r.items()} for r in rows] if fmt == "csv" else rows

    rows = [{"id": n, "updated": n * 5} for n in (1, 2, 3)]  # 5, 10, 15: "10" < "5" as text
    save(rows)
    config = {"path": str(path), "incremental": {"cursor_field": "updated"}}
    first = FileConnector(config)
    assert list(first.read()) == expected(rows)
    assert first.state["cursor"] in (15, "15")

    more = [{"id": 4, "updated": 20}, {"id": 5, "updated": 100}]
    save([rows[1], *more, rows[0]])  # out of order, old records still there
    second = FileConnector(config, first.state)
    assert list(second.read()) == expected(more)
    assert second.state["cursor"] in (100, "100")

    third = FileConnector(config, second.state)
    assert list(third.read()) == []
    assert third.state == second.state


def test_incremental_initial_value_and_missing_cursor(tmp_path: Path) -> None:
    path = write(tmp_path / "t.jsonl", '{"at": "2026-01-01"}\n{"at": "2026-02-01"}\n{"x": 1}\n')
    config = {
        "path": str(path),
        "incremental": {"cursor_field": "at", "initial_value": "2026-01-15"},
    }
    reader = FileConnector(config).read()
    assert next(reader) == {"at": "2026-02-01"}
    with pytest.raises(
        PermanentError, match=r"t\.jsonl: line 3: the record has no value for cursor"
    ):
        next(reader)


def test_check_names_an_encoding_error_in_the_header(tmp_path: Path) -> None:
    path = tmp_path / "latin.csv"
    path.write_bytes("nombre,año\nJosé,1\n".encode("latin-1"))
    with pytest.raises(PermanentError, match=r"not valid utf-8-sig.*set 'encoding'"):
        FileConnector({"path": str(path)}).check()


@pytest.mark.parametrize(
    ("name", "text"),
    [("a.csv", "a,b\n1,2\n"), ("a.jsonl", '{"a": 1}\n'), ("a.json", '[{"a": 1}]')],
)
def test_a_codec_error_that_is_not_a_decode_error_fails_clearly(
    tmp_path: Path, name: str, text: str
) -> None:
    """UTF-16 without its byte order mark raises a bare UnicodeError, not UnicodeDecodeError."""
    plugin = FileConnector({"path": str(write(tmp_path / name, text)), "encoding": "utf-16"})
    for attempt in (plugin.check, lambda: list(plugin.read())):
        with pytest.raises(PermanentError, match="UTF-16 stream does not start with BOM"):
            attempt()


def test_bad_paths_and_delimiters_are_rejected_before_any_read(tmp_path: Path) -> None:
    """What used to pass validation and fail in read with AssertionError or ValueError."""
    csv_path = str(write(tmp_path / "a.csv", "a,b\n1,2\n"))
    for plugin, config, message in [
        (CsvConnector, {"path": ""}, "csv config field 'path' must not be empty"),
        (FileConnector, {"path": "", "format": "csv"}, "file config field 'path' must not be"),
        (FileConnector, {"path": csv_path + "\0"}, "'path' must not contain a NUL character"),
        (CsvConnector, {"path": csv_path, "delimiter": '"'}, "must not be the quote character"),
        (CsvConnector, {"path": csv_path, "delimiter": "\n"}, "must not be a line break"),
        (FileConnector, {"url": "http://[::1/a.csv"}, "'url' has an unmatched '\\['"),
    ]:
        with pytest.raises(ConfigError, match=message):
            plugin(config)
