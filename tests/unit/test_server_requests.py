"""What a POST body may hold: the run's fields only, of the right types, within bounds."""

from __future__ import annotations

import json
from typing import Any, get_args

import pytest
from pydantic import ValidationError

from connector_sync.constants import MAX_COUNT, SYNC_STATUSES
from connector_sync.server.schemas import BodyNotAccepted, SyncRequest, SyncStatus, json_object


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"limit": 1},
        {"limit": MAX_COUNT, "tenant": "acme"},
        {"connectors": ["a", "17", "naïve ünïcode ✓"]},
        {"connectors": ["a"], "tenant": "acme"},
    ],
)
def test_a_run_request_takes_a_limit_a_tenant_or_names(body: dict[str, Any]) -> None:
    request = SyncRequest.model_validate(body)
    assert request.model_dump(exclude_unset=True) == body


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        ({"limit": 0}, "greater_than_equal"),
        ({"limit": -5}, "greater_than_equal"),
        ({"limit": MAX_COUNT + 1}, "less_than_equal"),
        ({"limit": "10"}, "int_type"),  # strict: a string is not a number
        ({"limit": 2.5}, "int_type"),
        ({"limit": float("nan")}, "int_type"),
        ({"limit": True}, "int_type"),
        ({"tenant": ""}, "string_too_short"),
        ({"tenant": "x" * 201}, "string_too_long"),
        ({"tenant": "a\x00b"}, "value_error"),
        ({"tenant": "line\nbreak"}, "value_error"),
        ({"tenant": "\ud800"}, "string_unicode"),  # a lone surrogate cannot be stored
        ({"connectors": []}, "too_short"),
        ({"connectors": ["a"] * 1001}, "too_long"),
        ({"connectors": "a"}, "list_type"),
        ({"connectors": [1]}, "string_type"),
        ({"connectors": ["a"], "limit": 2}, "value_error"),
        ({"limit": 1, "wait": False}, "extra_forbidden"),
        ({"Limit": 1}, "extra_forbidden"),
    ],
)
def test_a_bad_run_request_is_refused(body: dict[str, Any], problem: str) -> None:
    with pytest.raises(ValidationError) as raised:
        SyncRequest.model_validate(body)
    assert raised.value.errors()[0]["type"] == problem


def test_an_integral_float_is_an_integer_as_json_schema_says() -> None:
    limit = SyncRequest.model_validate({"limit": 2.0}).limit
    assert limit == 2 and isinstance(limit, int)


def test_the_status_filter_names_exactly_the_sync_statuses() -> None:
    assert get_args(SyncStatus) == SYNC_STATUSES


@pytest.mark.parametrize(
    ("body", "problem"),
    [
        (b"null", "must be a JSON object, not null"),
        (b"[]", "must be a JSON object, not an array"),
        (b'"x"', "must be a JSON object, not a string"),
        (b"1.5", "must be a JSON object, not a number"),
        (b"false", "must be a JSON object, not a boolean"),
        (b'{"limit": 1, "limit": 2}', "the key 'limit' is given more than once: give it once"),
        (b'{"a": {"b": 1, "b": 1}}', "the key 'b' is given more than once"),
        (b'{"%s": 1, "%s": 2}' % (b"k" * 50, b"k" * 50), "the key '" + "k" * 40 + "'… is given"),
    ],
)
def test_a_body_must_be_one_object_with_each_key_once(body: bytes, problem: str) -> None:
    with pytest.raises(BodyNotAccepted) as raised:
        json_object(body)
    assert str(raised.value) == f"body: {problem}" or problem in str(raised.value)


def test_a_body_that_is_an_object_is_taken_and_one_that_is_not_json_is_not() -> None:
    assert json_object(b'{"limit": 1, "tenant": "t"}') == {"limit": 1, "tenant": "t"}
    assert json_object(b"{}") == {}
    with pytest.raises(json.JSONDecodeError):
        json_object(b'{"limit": 1')
