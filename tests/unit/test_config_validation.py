"""Bad connector configs are rejected by `validate_config` (so at `add`), with one line
naming the field, what is wrong and what to do; never accepted to fail at sync time."""

from __future__ import annotations

import math
from typing import Any

import pytest

from connector_sync.connectors.base import ConfigField, validate_fields
from connector_sync.connectors.registry import load_plugin
from connector_sync.exceptions import ConfigError

SQL = {"query": "SELECT 1"}
HTTP = {"url": "https://api.example.com/v1"}
REMOTE = {"url": "https://files.example.com/a.csv"}

# (type, config, fragments the message must hold)
REJECTED: list[tuple[str, dict[str, Any], list[str]]] = [
    # -- numbers: bounds, NaN, Infinity ------------------------------------------------
    ("demo", {"records": -5}, ["demo config field 'records' must be 0 or more, got -5"]),
    ("demo", {"delay_ms": -1}, ["demo config field 'delay_ms' must be 0 or more, got -1"]),
    ("demo", {"delay_ms": math.nan}, ["'delay_ms' must be a finite number, got nan"]),
    ("demo", {"delay_ms": math.inf}, ["'delay_ms' must be a finite number, got inf"]),
    ("demo", {"delay_ms": -math.inf}, ["'delay_ms' must be a finite number, got -inf"]),
    ("demo", {"delay_ms": 10**400}, ["'delay_ms' must be a finite number"]),
    ("demo", {"delay_ms": 1e20}, ["'delay_ms' must be 86400000 or less, got 1e+20"]),
    ("http", {**HTTP, "timeout": 0}, ["http config field 'timeout' must be 0.001 or more, got 0"]),
    ("http", {**HTTP, "timeout": math.nan}, ["'timeout' must be a finite number"]),
    ("http", {**HTTP, "timeout": 1e12}, ["'timeout' must be 86400 or less"]),
    ("http", {**HTTP, "max_retries": -1}, ["'max_retries' must be 0 or more, got -1"]),
    ("http", {**HTTP, "retry_backoff": -0.5}, ["'retry_backoff' must be 0 or more, got -0.5"]),
    ("http", {**HTTP, "max_retry_wait": 1e15}, ["'max_retry_wait' must be 86400 or less"]),
    ("http", {**HTTP, "max_requests_per_second": 0}, ["'max_requests_per_second' must be 0.001"]),
    ("http", {**HTTP, "max_requests_per_second": 1e-300}, ["'max_requests_per_second' must"]),
    ("http", {**HTTP, "max_requests_per_second": math.inf}, ["'max_requests_per_second' must"]),
    (
        "http",
        {**HTTP, "pagination": {"type": "page", "page_size": 0}},
        ["http config field 'pagination.page_size' must be 1 or more, got 0"],
    ),
    (
        "http",
        {**HTTP, "pagination": {"type": "page", "max_pages": 0}},
        ["'pagination.max_pages' must be 1 or more, got 0"],
    ),
    ("file", {**REMOTE, "timeout": -1}, ["file config field 'timeout' must be 0.001 or more"]),
    ("file", {**REMOTE, "timeout": math.inf}, ["'timeout' must be a finite number"]),
    ("file", {**REMOTE, "max_retries": -2}, ["'max_retries' must be 0 or more, got -2"]),
    ("sql", {**SQL, "url": "sqlite://", "batch_size": 0}, ["'batch_size' must be 1 or more"]),
    # only databases the connector can open read-only
    ("sql", {**SQL, "url": "mysql://u:hunter2@h/db"}, ["mysql is not supported"]),
    # -- empty paths and URLs ------------------------------------------------------------
    ("csv", {"path": ""}, ["csv config field 'path' must not be empty"]),
    ("csv", {"path": "   "}, ["csv config field 'path' must not be empty"]),
    ("file", {"path": ""}, ["file config field 'path' must not be empty"]),
    ("file", {"path": "", "format": "csv"}, ["file config field 'path' must not be empty"]),
    ("file", {"url": ""}, ["file config field 'url' must not be empty"]),
    ("http", {"url": ""}, ["http config field 'url' must not be empty"]),
    ("csv", {"path": "a\x00.csv"}, ["csv config field 'path' must not contain a NUL"]),
    ("file", {"path": "~no_such_user_xyz/a.csv"}, ["'path' starts with ~no_such_user_xyz"]),
    # -- http(s) URLs -----------------------------------------------------------------------
    ("http", {"url": "http://[bad/x"}, ["http config field 'url'", "IPv6"]),
    ("http", {"url": "http://127.0.0.1:99999/x"}, ["http config field 'url' has an invalid port"]),
    ("http", {"url": "http://127.0.0.1:0/x"}, ["'url' has an invalid port", "1 to 65535"]),
    ("http", {"url": "http://u:hunter2@h:12x/x"}, ["'url' has an invalid port"]),
    ("http", {"url": "http:///x"}, ["http config field 'url' has no host"]),
    ("http", {"url": "http://a b/x"}, ["'url' has white space or control characters in its"]),
    ("http", {"url": "http://ex\x00.com/x"}, ["'url' has white space or control characters"]),
    ("http", {"url": "https://h/\x7f"}, ["http config field 'url' is not a usable URL"]),
    ("file", {"url": "http://[bad/x.csv"}, ["file config field 'url'", "IPv6"]),
    ("file", {"url": "http://h:99999/x.csv"}, ["file config field 'url' has an invalid port"]),
    ("file", {"url": "https:///x.csv"}, ["file config field 'url' has no host"]),
    # -- headers, token, body, params --------------------------------------------------------
    ("http", {**HTTP, "headers": {"X-Name": "Jos\u00e9"}}, ["'headers.X-Name' must be ASCII"]),
    ("http", {**HTTP, "headers": {"X-A": "a\r\nX-B: b"}}, ["'headers.X-A' must be ASCII"]),
    ("http", {**HTTP, "headers": {"Bad Name": "v"}}, ["'headers' has an invalid header name"]),
    ("http", {**HTTP, "headers": {"": "v"}}, ["'headers' has an invalid header name"]),
    ("file", {**REMOTE, "headers": {"X-Key": "\u00e9"}}, ["file config field 'headers.X-Key'"]),
    ("http", {**HTTP, "token": "t\u00f6ken"}, ["http config field 'token' must be ASCII"]),
    ("http", {**HTTP, "token": "tok\nen"}, ["http config field 'token' must be ASCII"]),
    (
        "http",
        {**HTTP, "method": "POST", "body": {"q": {"min": math.nan}}},
        ["http config field 'body' holds NaN or Infinity"],
    ),
    ("http", {**HTTP, "params": {"x": math.inf}}, ["'params.x' must be a finite number"]),
    ("http", {**HTTP, "params": {"x": [1, math.nan]}}, ["'params.x' must be a finite number"]),
    # -- CSV delimiter and encoding --------------------------------------------------------
    ("csv", {"path": "a.csv", "delimiter": ";;"}, ["'delimiter' must be exactly one character"]),
    ("csv", {"path": "a.csv", "delimiter": ""}, ["'delimiter' must be exactly one character"]),
    ("csv", {"path": "a.csv", "delimiter": "\n"}, ["csv config field 'delimiter' must not be"]),
    ("file", {"path": "a.csv", "delimiter": "\r"}, ["file config field 'delimiter' must not be"]),
    ("file", {"path": "a.csv", "delimiter": '"'}, ["'delimiter' must not be", "quote"]),
    ("csv", {"path": "a.csv", "encoding": "rot13"}, ["'encoding': 'rot13' is not a text"]),
    ("file", {**REMOTE, "encoding": "hex"}, ["file config field 'encoding': 'hex' is not a text"]),
    # -- sql URLs ----------------------------------------------------------------------------
    (
        "sql",
        {**SQL, "url": "postgresql://a:hunter2@127.0.0.1:notaport/x"},
        ["sql config field 'url' has an invalid port", "1 to 65535"],
    ),
    (
        "sql",
        {**SQL, "url": "postgresql://a:hunter2@127.0.0.1:99999/x"},
        ["sql config field 'url' has an invalid port"],
    ),
    ("sql", {**SQL, "url": "postgresql://a:hunter2@[::1/x"}, ["sql config field 'url'"]),
    ("sql", {**SQL, "url": "sqlite:///a\x00b.db?uri=true"}, ["'url' must not contain a NUL"]),
    ("sql", {**SQL, "url": "postgress://a:hunter2@h/x"}, ["no SQLAlchemy dialect postgress"]),
    ("sql", {**SQL, "url": "postgresql+nodriver://h/x"}, ["'url'", "postgresql+nodriver"]),
]


@pytest.mark.parametrize(
    ("type_name", "config", "fragments"),
    REJECTED,
    ids=[f"{t}-{i}" for i, (t, _, _) in enumerate(REJECTED)],
)
def test_bad_config_is_rejected_with_one_clear_line(
    type_name: str, config: dict[str, Any], fragments: list[str]
) -> None:
    with pytest.raises(ConfigError) as raised:
        load_plugin(type_name).validate_config(config)
    message = raised.value.message
    for fragment in fragments:
        assert fragment in message
    assert "\n" not in message
    assert "hunter2" not in message  # a URL password is never echoed
    assert "t\u00f6ken" not in message and "tok\nen" not in message  # nor a secret field


ACCEPTED: list[tuple[str, dict[str, Any]]] = [
    ("demo", {"records": 0, "delay_ms": 0}),
    ("demo", {"delay_ms": 86_400_000}),
    ("http", {**HTTP, "timeout": 0.001, "max_retries": 0, "retry_backoff": 0}),
    ("http", {**HTTP, "max_requests_per_second": 0.001, "max_retry_wait": 86400}),
    ("http", {"url": "http://[::1]:8080/v1"}),
    ("http", {"url": "https://h\u00e9.example/v1?a=b c"}),
    ("http", {**HTTP, "headers": {"X-Tab": "a\tb", "X-Key": "env:API_KEY"}, "token": "env:TOK"}),
    ("http", {**HTTP, "method": "POST", "body": {"q": 1.5}, "params": {"a": [1, "b", True]}}),
    ("file", {"path": "a.tsv", "delimiter": "\t"}),
    ("file", {"path": "a.csv", "delimiter": " ", "encoding": "latin-1"}),
    ("csv", {"path": "a.csv", "delimiter": "\u00a7"}),
    ("sql", {**SQL, "url": "postgresql://a:b@127.0.0.1:5432/x"}),
    ("sql", {**SQL, "url": "postgres://a:b@h/x"}),
    # env:NAME references are checked at run time, once resolved
    ("csv", {"path": "env:CSV_PATH", "delimiter": "env:CSV_DELIMITER", "encoding": "env:ENC"}),
    ("file", {"url": "env:FILE_URL", "format": "csv", "headers": {"X": "env:X"}}),
    ("http", {"url": "env:API_URL"}),
    ("sql", {**SQL, "url": "env:DATABASE_URL"}),
]


@pytest.mark.parametrize(("type_name", "config"), ACCEPTED)
def test_good_config_and_env_references_are_accepted(
    type_name: str, config: dict[str, Any]
) -> None:
    load_plugin(type_name).validate_config(config)


@pytest.mark.parametrize(
    ("type_name", "config", "field"),
    [
        ("csv", {"path": "env:P"}, "path"),
        ("http", {"url": "env:U"}, "url"),
        ("sql", {**SQL, "url": "env:U"}, "url"),
    ],
)
def test_env_reference_resolved_at_run_time_is_validated_then(
    type_name: str, config: dict[str, Any], field: str
) -> None:
    """The runner builds the plugin from the resolved config: the same checks apply."""
    resolved = {**config, field: "http://[bad/x" if field == "url" else ""}
    with pytest.raises(ConfigError, match=f"config field '{field}'"):
        load_plugin(type_name)(resolved)


def test_number_bounds_are_described() -> None:
    fields = {f["name"]: f for f in load_plugin("demo").describe()["fields"]}
    assert fields["records"]["minimum"] == 0 and fields["records"]["maximum"] is None
    assert fields["delay_ms"]["minimum"] == 0 and fields["delay_ms"]["maximum"] == 86_400_000
    assert fields["seed"]["minimum"] is None and fields["seed"]["maximum"] is None
    http = {f["name"]: f for f in load_plugin("http").describe()["fields"]}
    assert (http["timeout"]["minimum"], http["timeout"]["maximum"]) == (0.001, 86400)
    assert http["url"]["minimum"] is None  # not a number


def test_config_field_bounds_apply_within_objects_and_never_echo_a_secret() -> None:
    fields = (ConfigField("pin", int, secret=True, minimum=1000, maximum=9999),)
    with pytest.raises(ConfigError) as raised:
        validate_fields("t", fields, {"pin": 12}, within="auth")
    assert raised.value.message == "t config field 'auth.pin' must be 1000 or more"
    with pytest.raises(ConfigError) as raised:
        validate_fields("t", (ConfigField("x", float, secret=True),), {"x": math.nan})
    assert raised.value.message == "t config field 'x' must be a finite number"


def test_config_field_bounds_are_only_for_numbers() -> None:
    with pytest.raises(TypeError, match="minimum"):
        ConfigField("name", str, minimum=1)
    with pytest.raises(TypeError, match="minimum"):
        ConfigField("n", int, minimum=5, maximum=1)
