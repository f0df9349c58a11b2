"""What a POST body may hold: the run's fields only, of the right types, within bounds."""

from __future__ import annotations

from typing import Any, get_args

import pytest
from pydantic import ValidationError

from connector_sync.constants import MAX_COUNT, SYNC_STATUSES
from connector_sync.server.schemas import SyncRequest, SyncStatus


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
