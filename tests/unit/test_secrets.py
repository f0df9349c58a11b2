"""Secrets: env references, what counts as secret, redaction and masking (pure functions)."""

from __future__ import annotations

import copy
import json
from typing import Any
from urllib.parse import quote, quote_plus

import pytest
from hypothesis import given
from hypothesis import strategies as st

from connector_sync.connectors.demo import DemoConnector
from connector_sync.connectors.http import HttpConnector
from connector_sync.connectors.registry import load_plugin, secret_fields
from connector_sync.connectors.sql import SqlConnector
from connector_sync.exceptions import ConfigError
from connector_sync.secrets import (
    check_env_refs,
    connector_secrets,
    is_env_ref,
    is_secret_name,
    mask_config,
    redact,
    redact_json,
    resolve_env_refs,
    secret_values,
    walk_json,
)

ENV = {"API_TOKEN": "tok-Zq81", "DATA_DIR": "/srv/data", "DB_PASSWORD": "pw-77", "EMPTY": ""}


def test_resolve_env_refs_at_any_depth_without_touching_the_original() -> None:
    config = {
        "url": "env:DATA_DIR",
        "headers": {"Authorization": "env:API_TOKEN"},
        "list": ["env:DB_PASSWORD", 3, {"x": "env:EMPTY"}],
        "plain": "environment: env:API_TOKEN is not a reference inside text",
        "n": 5,
        "none": None,
    }
    original = copy.deepcopy(config)
    assert resolve_env_refs(config, ENV) == {
        "url": "/srv/data",
        "headers": {"Authorization": "tok-Zq81"},
        "list": ["pw-77", 3, {"x": ""}],
        "plain": "environment: env:API_TOKEN is not a reference inside text",
        "n": 5,
        "none": None,
    }
    assert config == original


def test_a_missing_variable_is_a_config_error_naming_it_and_the_field() -> None:
    with pytest.raises(ConfigError) as raised:
        resolve_env_refs({"headers": {"X-Api-Key": "env:NOT_SET_ANYWHERE"}}, ENV)
    assert raised.value.message == (
        "config field 'headers.X-Api-Key' refers to environment variable NOT_SET_ANYWHERE, "
        "which is not set: set it where connector-sync runs"
    )
    assert raised.value.transient is False


def test_resolve_reads_os_environ_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CS_TEST_SECRET", "from-the-environment")
    assert resolve_env_refs({"token": "env:CS_TEST_SECRET"}) == {"token": "from-the-environment"}


def test_what_is_an_env_ref_and_a_secret_name() -> None:
    assert is_env_ref("env:GITHUB_TOKEN") and is_env_ref("env:_x1")
    assert not any(map(is_env_ref, ["env:", "env:1X", "env:A B", "ENV:X", " env:X", 5, None]))
    secret = ["token", "Authorization", "X-Api-Key", "api_key", "apikey", "Cookie", "password"]
    secret += ["client_secret", "access_key", "key", "sig", "DB_PASSWORD", "x-auth-token"]
    # a new user's pass found these shown in clear
    secret += ["Ocp-Apim-Subscription-Key", "DD-APPLICATION-KEY", "X-Functions-Key", "app_key"]
    secret += ["subscription-key", "master_key", "license_key", "functionkey"]
    plain = [
        "author",
        "author_id",
        "keyword",
        "monkey",
        "url",
        "page",
        "cursor_param",
        "passenger",
        "lang",
        "sort_key",
        "primary_key",
        "keys",
        "client_key_id",  # the new names only as a whole word at the end (review)
        "license_key_type",
        "whatsapp_key",
    ]
    assert all(map(is_secret_name, secret))
    assert not any(map(is_secret_name, plain))


HTTP_RAW: dict[str, Any] = {
    "url": "https://bob:url-pass@api.example.com/v1/items?access_token=qs-tok&lang=en",
    "token": "env:API_TOKEN",
    "headers": {"Authorization": "Basic dXNlcjpwYXNz", "Cookie": "sid=c00k", "Accept": "json"},
    "params": {"api_key": "prm-key", "q": "env:DB_PASSWORD", "dir": "env:DATA_DIR"},
}


def test_secret_values_finds_every_secret_in_use_and_nothing_else() -> None:
    resolved = resolve_env_refs(HTTP_RAW, ENV)
    found = secret_values(HttpConnector.secret_fields(), HTTP_RAW, resolved)
    assert found == {
        "url-pass",  # the URL's password
        "Ym9iOnVybC1wYXNz",  # and base64("bob:url-pass"), sent as `Authorization: Basic`
        "qs-tok",  # a secret-looking query-string parameter
        "tok-Zq81",  # the declared secret field
        "Basic dXNlcjpwYXNz",  # a secret header, whole
        "dXNlcjpwYXNz",  # and its credential
        "sid=c00k",
        "prm-key",  # a secret-looking parameter
        "pw-77",  # read from a variable named like a secret
    }
    assert "/srv/data" not in found and "json" not in found and "en" not in found


def test_secret_values_of_sql_urls() -> None:
    raw = {"url": "postgresql://app:p%40ss@db/shop", "query": "SELECT 1"}
    assert secret_values(SqlConnector.secret_fields(), raw, raw) == {"p%40ss", "p@ss"}


def test_redact_replaces_secrets_url_passwords_and_secret_query_values() -> None:
    text = (
        "GET https://api.example.com/x?page=2&api_key=abc123&token=t1 failed: "
        "Bearer tok-Zq81 rejected; retry postgresql://app:pw-77@db/shop later"
    )
    assert redact(text, {"tok-Zq81", "Bearer tok-Zq81"}) == (
        "GET https://api.example.com/x?page=2&api_key=***&token=*** failed: "
        "*** rejected; retry postgresql://app:***@db/shop later"
    )
    assert redact("nothing to hide", set()) == "nothing to hide"
    assert redact("mysql://u:p@ss@host/db", set()) == "mysql://u:***@host/db"
    assert redact("http://host:8080/path?author=ann", set()) == "http://host:8080/path?author=ann"


@given(
    secret=st.text(min_size=4).filter(lambda s: "*" not in s),  # shorter: not searched for
    before=st.text(),
    after=st.text(),
)
def test_redact_never_leaves_a_known_secret(secret: str, before: str, after: str) -> None:
    assert secret not in redact(before + secret + after, {secret})


@given(
    password=st.text(st.characters(exclude_characters="/?#@\x00", exclude_categories=["Z", "C"]))
)
def test_redact_hides_any_url_password(password: str) -> None:
    assert redact(f"see postgresql://app:{password}@db/x", set()) == "see postgresql://app:***@db/x"


def test_mask_config_masks_for_display_and_shows_env_refs() -> None:
    original = copy.deepcopy(HTTP_RAW)
    assert mask_config(HttpConnector.secret_fields(), HTTP_RAW) == {
        "url": "https://bob:***@api.example.com/v1/items?access_token=***&lang=en",
        "token": "env:API_TOKEN",  # a reference is not the secret
        "headers": {"Authorization": "***", "Cookie": "***", "Accept": "json"},
        "params": {"api_key": "***", "q": "env:DB_PASSWORD", "dir": "env:DATA_DIR"},
    }
    assert original == HTTP_RAW
    literal = mask_config(
        HttpConnector.secret_fields(), {"token": "tok-Zq81", "body": {"password": "x", "n": 1}}
    )
    assert literal == {"token": "***", "body": {"password": "***", "n": 1}}


def test_plugins_mask_through_secrets() -> None:
    assert HttpConnector.mask_config({"token": "t"}) == {"token": "***"}
    assert DemoConnector.mask_config({"records": 5, "fail": False}) == {"records": 5, "fail": False}
    records = load_plugin("records")  # a third-party plugin declaring a secret field
    assert records.mask_config({"records": [], "token": "s3cr3t", "fail_after": None}) == {
        "records": [],
        "token": "***",
        "fail_after": None,
    }


def test_redact_keeps_the_punctuation_after_a_secret_query_value() -> None:
    text = "GET http://h/status/401?api_key=abc123: HTTP 401 at 10:15:00"
    assert redact(text, set()) == "GET http://h/status/401?api_key=***: HTTP 401 at 10:15:00"
    assert redact("http://h/?token=a:b:c&x=1", set()) == "http://h/?token=***&x=1"


@pytest.mark.parametrize(
    ("secret", "echoed"),
    [
        ('LEAK"q18\\z', 'LEAK\\"q18\\\\z'),  # JSON: quote and backslash escaped
        ("LEAKé20", "LEAK\\u00e920"),  # JSON with ensure_ascii
        ("LEAKé20", "LEAKé20"),  # JSON without ensure_ascii
        ("ab/cd+ef==", "ab\\/cd+ef=="),  # JSON with `/` escaped as `\/`
        ('k/"é', 'k\\/\\"\\u00e9'),  # all of these at once
        ('k/"é', 'k\\/\\"é'),
        ("ab/cd+ef==", "ab%2Fcd%2Bef%3D%3D"),  # quote(safe="")
        ("ab/cd+ef==", "ab/cd%2Bef%3D%3D"),  # quote() keeping `/`
        ("pa ss/wörd", "pa+ss%2Fw%C3%B6rd"),  # quote_plus
        ("pa ss/wörd", "pa%20ss%2Fw%C3%B6rd"),
    ],
)
def test_redact_masks_a_secret_as_a_server_echoes_it(secret: str, echoed: str) -> None:
    text = f'HTTP 401: {{"error": "bad key {echoed}", "hint": "rotate it"}}'
    assert redact(text, {secret}) == 'HTTP 401: {"error": "bad key ***", "hint": "rotate it"}'


@given(secret=st.text(min_size=4).filter(lambda s: "*" not in s), ensure_ascii=st.booleans())
def test_redact_masks_the_json_encoding_of_any_secret(secret: str, ensure_ascii: bool) -> None:
    body = json.dumps({"message": f"invalid token {secret}"}, ensure_ascii=ensure_ascii)
    redacted = redact(body, {secret})
    # Not `== {"message": "invalid token ***"}`: a secret such as "message" or "en en"
    # also occurs around or overlapping its echo.
    assert json.dumps(secret, ensure_ascii=ensure_ascii)[1:-1] not in redacted
    assert "***" in redacted


@given(secret=st.text(min_size=4).filter(lambda s: "*" not in s))
def test_redact_masks_the_percent_encoding_of_any_secret(secret: str) -> None:
    for encoded in (quote(secret, safe=""), quote_plus(secret)):
        redacted = redact(f"GET /x?q={encoded}&page=2", {secret})
        # Not `== "GET /x?q=***&page=2"`: a secret such as "page" also occurs around it.
        assert encoded not in redacted and "***" in redacted


def test_every_caller_of_redact_masks_escaped_forms_of_a_connectors_secrets() -> None:
    hidden = connector_secrets(
        secret_fields("http"), {"url": "https://h/x", "token": 'Bearer t/"ok"é'}
    )
    text = 'HTTP 403 {"detail": "token t\\/\\"ok\\"\\u00e9 revoked", "q": "t%2F%22ok%22%C3%A9"}'
    assert redact(text, hidden) == 'HTTP 403 {"detail": "token *** revoked", "q": "***"}'


@pytest.mark.parametrize("secret", ['"', "/", "a b", "x/", "%", "é"])
def test_redact_leaves_a_secret_shorter_than_four_characters_and_its_escapes(secret: str) -> None:
    text = 'a JSON body {"k": "v\\"w\\/"} with \\u00e9, é, %2F, %20, %C3%A9, a b and a+b'
    assert redact(text, {secret}) == text


@pytest.mark.parametrize(
    ("config", "text", "redacted"),
    [
        (  # a one-letter token: every `e` of every message would be ***
            {"url": "https://h/x", "token": "e"},
            'HTTP 401: {"message": "token rejected"}',
            'HTTP 401: {"message": "token rejected"}',
        ),
        (  # a one-letter password: still masked in its URL, found by its place
            {"url": "postgresql+psycopg://postgres:s@db/shop", "query": "SELECT 1"},
            "postgresql+psycopg://postgres:s@db/shop: password authentication failed",
            "postgresql+psycopg://postgres:***@db/shop: password authentication failed",
        ),
        (  # four characters are searched for, and masked wherever they appear
            {"url": "https://h/x", "token": "e2e4"},
            'HTTP 401: {"message": "token e2e4 rejected"}',
            'HTTP 401: {"message": "token *** rejected"}',
        ),
        (
            {"url": "https://h/x", "token": "Bearer e2e4"},  # the credential after Bearer
            "HTTP 401: token e2e4 rejected, see https://h/x?e2e4=1",
            "HTTP 401: token *** rejected, see https://h/x?***=1",
        ),
    ],
)
def test_a_secret_shorter_than_four_characters_leaves_messages_readable(
    config: dict[str, Any], text: str, redacted: str
) -> None:
    type_name = "sql" if config["url"].startswith("postgresql") else "http"
    hidden = connector_secrets(secret_fields(type_name), config)
    assert redact(text, hidden) == redacted


def test_a_shown_config_masks_secrets_of_any_length() -> None:
    """`mask_config` masks by place (a secret field, a secret-named key, a URL password),
    not by searching text: a one-character secret is masked there as any other."""
    config = {"url": "https://u:p@h/x?token=t", "token": "e", "headers": {"X-Api-Key": "k"}}
    assert mask_config(secret_fields("http"), config) == {
        "url": "https://u:***@h/x?token=***",
        "token": "***",
        "headers": {"X-Api-Key": "***"},
    }


@pytest.mark.parametrize(
    "config",
    [
        {},
        {"token": "env:MY_TOKEN", "url": "env:_x9", "n": 3, "flag": True, "none": None},
        {"headers": {"Authorization": "Bearer env:MY-TOKEN"}},  # text containing env:, a literal
        {"query": "SELECT 'env:'", "list": ["environment", "ENV:NOT-A-REF", {"k": ["env:A1"]}]},
    ],
)
def test_check_env_refs_accepts_valid_references_and_plain_values(config: dict[str, Any]) -> None:
    check_env_refs(config)


@pytest.mark.parametrize(
    ("config", "path", "value"),
    [
        ({"token": "env:MY-TOKEN"}, "token", "env:MY-TOKEN"),
        ({"headers": {"Authorization": "env:MY-TOKEN"}}, "headers.Authorization", "env:MY-TOKEN"),
        ({"params": {"items": [1, {"key": "env:9LIVES"}]}}, "params.items[1].key", "env:9LIVES"),
        ({"a": {"b": ["ok", "env:"]}}, "a.b[1]", "'env:'"),
        ({"url": "env:API_TOKEN "}, "url", "env:API_TOKEN "),
        ({"url": "env:postgresql://u:Sup3rSecret@h/db"}, "url", "env:postgresql://u:Sup3rSecret"),
    ],
)
def test_add_refuses_a_malformed_env_reference_naming_its_field_not_its_value(
    config: dict[str, Any], path: str, value: str
) -> None:
    with pytest.raises(ConfigError) as raised:
        check_env_refs(config)
    assert raised.value.message == (
        f"config field '{path}' starts with env: but is not a valid env: reference: use "
        "env:NAME where NAME is letters, digits and _ (not starting with a digit)"
    )
    assert value not in raised.value.message  # it may be a mistyped secret


def test_a_malformed_env_reference_stored_earlier_is_sent_as_written_and_masked() -> None:
    """Before `add` checked, `env:eu-west-1` was a literal; such connectors keep working,
    and a secret field holding one is still masked wherever the connector reports."""
    config = {"url": "https://h/x", "token": "env:ghp_abc-XYZ", "params": {"r": "env:eu-west-1"}}
    assert resolve_env_refs(config, {}) == config
    hidden = connector_secrets(secret_fields("http"), config)
    assert "env:ghp_abc-XYZ" in hidden and "env:eu-west-1" not in hidden
    assert redact("401: bad token env:ghp_abc-XYZ", hidden) == "401: bad token ***"


def test_walk_json_names_each_place_and_whether_it_is_secret() -> None:
    doc = {
        "token": 1,
        "url": "u",
        "headers": {"X-Api-Key": ["a", {"b": "c"}], "Accept": "json"},
        "nested": {"url": "v"},  # declared secret fields are top-level fields
        "list": [{"password": None}, "x"],
    }
    places: list[tuple[str, bool]] = []
    walk_json(doc, lambda _, place: places.append((place.path, place.secret)), {"url"})
    assert places == [
        ("token", True),
        ("url", True),
        ("headers.X-Api-Key[0]", True),
        ("headers.X-Api-Key[1].b", True),
        ("headers.Accept", False),
        ("nested.url", False),
        ("list[0].password", True),
        ("list[1]", False),
    ]


def test_redact_json_redacts_every_string_and_keeps_everything_else() -> None:
    details = {
        "url": "https://h/x?token=abc&page=2",
        "seen": ["tok-Zq81 rejected", 3, 2.5, None, True, {"why": "tok-Zq81"}],
    }
    original = copy.deepcopy(details)
    assert redact_json(details, {"tok-Zq81"}) == {
        "url": "https://h/x?token=***&page=2",
        "seen": ["*** rejected", 3, 2.5, None, True, {"why": "***"}],
    }
    assert details == original


@pytest.mark.parametrize(
    ("written", "sent"),
    [
        (
            "https://Hooks.Example.COM/services/T0/tok-Zq81",
            "https://hooks.example.com/services/T0/tok-Zq81",
        ),
        ("http://h.example:80/hook/tok-Zq81", "http://h.example/hook/tok-Zq81"),
        ("https://h.example/a b/tok-Zq81", "https://h.example/a%20b/tok-Zq81"),
        ("https://h.example/x/../hook/tok-Zq81#top", "https://h.example/hook/tok-Zq81"),
        ("https://bücher.example/tok-Zq81", "https://xn--bcher-kva.example/tok-Zq81"),
    ],
)
def test_a_secret_url_is_masked_as_httpx_sends_it(written: str, sent: str) -> None:
    hidden = secret_values(frozenset(), {"url": "env:HOOK_SECRET"}, {"url": written})
    assert redact(f"GET {sent}: HTTP 401", hidden) == "GET ***: HTTP 401"
    assert redact(json.dumps({"url": sent}), hidden) == '{"url": "***"}'


def test_a_secret_url_is_masked_when_the_connector_adds_query_parameters() -> None:
    written = "https://H.example/hook/a b/tok-Zq81?v=1"
    hidden = secret_values(frozenset(), {"url": "env:HOOK_SECRET"}, {"url": written})
    for sent in (
        "https://h.example/hook/a%20b/tok-Zq81?v=1&page=2",
        "https://h.example/hook/a%20b/tok-Zq81?page=2",
    ):
        redacted = redact(f"GET {sent}: HTTP 401", hidden)
        assert "tok-Zq81" not in redacted and redacted.startswith("GET ***")


def test_a_url_password_and_secret_query_values_are_masked_as_httpx_encodes_them() -> None:
    url = "https://bob:p w+x!$@h.example/x?token=a b+c&page=2"
    hidden = secret_values(frozenset(), {"url": url}, {"url": url})
    echoed = "401: password p%20w+x!$ or token a%20b+c refused"
    assert redact(echoed, hidden) == "401: password *** or token *** refused"
