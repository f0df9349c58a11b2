"""schemathesis fuzzes the API from its own OpenAPI document, against a real server on
127.0.0.1 and a real SQLite file: valid and invalid requests alike, no 500, every answer
as documented (status, content type, schema), and /api refuses what has no bearer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from connector_sync import operations
from connector_sync.server.launch import HttpTrigger
from support.serving import AUTH, served

#: Every operation of the API; a test below fails when the document has one more or less,
#: so no route escapes the fuzzing.
OPERATIONS = (
    "GET /api/connectors/sync",
    "POST /api/connectors/sync",
    "GET /api/runs/{run_id}",
    "GET /api/connectors",
    "GET /api/connectors/{connector}",
    "GET /api/syncs",
    "GET /metrics",
    "GET /healthz",
    "GET /readyz",
)
EXAMPLES_PER_OPERATION = 30


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpTrigger]:
    """One server for the module: the fuzzing takes a few seconds, not one start per case."""
    url = f"sqlite:///{tmp_path_factory.mktemp('fuzz') / 'connector-sync.db'}"
    with operations.session(url, create=True) as store:
        for name, tenant in (("alpha", "default"), ("beta", "default"), ("alpha", "other")):
            operations.add_connector(
                store,
                operations.NewConnector(
                    name=name, type="demo", config={"records": 2}, sync_interval=60, tenant=tenant
                ),
            )
    with served(url) as trigger:
        yield trigger


@pytest.fixture(scope="module")
def api_schema(server: HttpTrigger) -> Any:
    import schemathesis  # here, not at collection: a second of imports in every test process

    loaded = schemathesis.openapi.from_url(f"{server.url}/openapi.json")
    # Every case sends the right bearer (a mutated one would be overwritten, and then read
    # as "invalid data accepted"); the ignored_auth check still tries none and wrong ones.
    loaded.config.generation.update(with_security_parameters=False)
    # A body of any shape past 64 KiB is refused before it is read, with 413 (documented).
    from schemathesis.config._checks import (
        NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES,
        NegativeDataRejectionConfig,
    )

    loaded.config.checks.negative_data_rejection = NegativeDataRejectionConfig(
        expected_statuses=[*NEGATIVE_DATA_REJECTION_EXPECTED_STATUSES, "413"]
    )
    return loaded


@pytest.mark.parametrize("operation", OPERATIONS)
def test_the_api_answers_every_request_as_documented(api_schema: Any, operation: str) -> None:
    """Valid requests (positive) and invalid ones (negative), each answered as documented."""
    from schemathesis.generation import GenerationMode

    method, path = operation.split(" ")
    endpoint = api_schema[path][method]
    cases = st.one_of(
        endpoint.as_strategy(GenerationMode.POSITIVE), endpoint.as_strategy(GenerationMode.NEGATIVE)
    )

    @given(case=cases)
    @settings(
        max_examples=EXAMPLES_PER_OPERATION,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    def answered_as_documented(case: Any) -> None:
        case.call_and_validate(headers=AUTH)

    answered_as_documented()


def test_every_operation_is_fuzzed(server: HttpTrigger) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    found = {f"{m.upper()} {path}" for path, methods in document["paths"].items() for m in methods}
    assert found == set(OPERATIONS)


def test_the_document_declares_the_bearer_on_every_api_route(server: HttpTrigger) -> None:
    document = httpx.get(f"{server.url}/openapi.json").json()
    assert document["components"]["securitySchemes"]["HTTPBearer"]["scheme"] == "bearer"
    for path, methods in document["paths"].items():
        for operation in methods.values():
            secured = bool(operation.get("security"))
            assert secured is (path.startswith("/api/") or path == "/metrics"), path


def test_the_module_uses_a_real_file(server: HttpTrigger) -> None:
    assert Path(server.store.database.sqlite_path() or "").exists()


def test_the_document_declares_what_the_gate_refuses_before_any_route(server: HttpTrigger) -> None:
    """The fuzzer once sent a schema-valid body of 125 KB: the 413 it got was undocumented."""
    document = httpx.get(f"{server.url}/openapi.json").json()
    for path, methods in document["paths"].items():
        if path.startswith("/api/"):
            for operation in methods.values():
                assert {"411", "413"} <= set(operation["responses"]), path
    big = {"connectors": ["x" * 70_000]}
    answer = httpx.post(f"{server.url}/api/connectors/sync", json=big, headers=AUTH)
    assert answer.status_code == 413
