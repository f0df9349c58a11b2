"""What the API accepts (request models, validated at the edge) and the documents it answers
with, as the OpenAPI document describes them."""

from __future__ import annotations

import datetime as dt
import json
import unicodedata
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, model_validator

from connector_sync.constants import MAX_COUNT, MAX_NAME_LENGTH
from connector_sync.documents import RepeatedKey, unique_keys
from connector_sync.operations import Connector, DatasetSummary, Sync

#: At most this many connectors named in one request.
MAX_CONNECTORS_PER_RUN = 1000


#: No control characters (Unicode category Cc), as the OpenAPI document states it.
NO_CONTROL_CHARACTERS = r"^[^\x00-\x1f\x7f-\x9f]*$"


def _plain_text(value: str) -> str:
    """Refuse what no name or tenant holds and PostgreSQL cannot take (NUL, lone
    surrogates), with a clearer message than the pattern's."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("is not valid Unicode text") from None
    if any(unicodedata.category(ch) == "Cc" for ch in value):
        raise ValueError("holds a control character")
    return value


def _integral(value: object) -> object:
    """2.0 is an integer to JSON Schema: take it as 2 (2.5, "2" and true stay refused)."""
    return int(value) if isinstance(value, float) and value.is_integer() else value


_Name = Annotated[
    str,
    Field(
        min_length=1,
        max_length=MAX_NAME_LENGTH,
        json_schema_extra={"pattern": NO_CONTROL_CHARACTERS},
    ),
    AfterValidator(_plain_text),
]
#: A tenant, as stored (a filter: a tenant that does not exist matches nothing).
Tenant = _Name
#: A connector's id or name.
ConnectorRef = _Name
#: How many connectors at most.
Limit = Annotated[int, Field(ge=1, le=MAX_COUNT), BeforeValidator(_integral)]
#: A sync's status, as stored.
SyncStatus = Literal["IN_PROGRESS", "COMPLETED", "FAILED", "CANCELLED"]


class SyncRequest(BaseModel):
    """`POST /api/connectors/sync`: the due connectors (at most `limit`, of `tenant`), or the
    connectors named, due or not — as `connector-sync run` does."""

    model_config = ConfigDict(
        extra="forbid",
        strict=True,
        json_schema_extra={"not": {"required": ["limit", "connectors"]}},
    )

    limit: Limit | None = None
    tenant: Tenant | None = None
    connectors: (
        Annotated[list[ConnectorRef], Field(min_length=1, max_length=MAX_CONNECTORS_PER_RUN)] | None
    ) = None

    @model_validator(mode="after")
    def _limit_or_names(self) -> SyncRequest:
        if {"limit", "connectors"} <= self.model_fields_set:
            raise ValueError("limit applies to due connectors; with connectors, name fewer")
        return self


class BodyNotAccepted(ValueError):
    """A request body that is JSON but not what any route takes; the message says why."""


_JSON_KINDS = {type(None): "null", list: "an array", str: "a string", bool: "a boolean"}


def json_object(body: bytes) -> dict[str, Any]:
    """The JSON object `body` holds.

    Raises:
        json.JSONDecodeError: not JSON at all.
        BodyNotAccepted: JSON but not an object (`null` is not "no body"), or an object
            with a key given twice (which one would count?).
    """
    try:
        value = json.loads(body, object_pairs_hook=unique_keys)
    except RepeatedKey as exc:
        raise BodyNotAccepted(f"body: {exc}") from None
    if not isinstance(value, dict):
        kind = _JSON_KINDS.get(type(value), "a number")
        raise BodyNotAccepted(f"body: must be a JSON object, not {kind}")
    return value


# -- query parameters: a model each, so an unknown one (`?limt=10`) is refused, not ignored --


class _Query(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TenantQuery(_Query):
    tenant: Tenant | None = Field(None, description="Only this tenant.")


class DueQuery(TenantQuery):
    limit: Limit | None = Field(None, description="At most N.")
    run: bool = Field(False, description="Sync them (as POST does) instead of listing them.")
    wait: bool = Field(True, description="With run=true: false answers 202 at once.")


class WaitQuery(_Query):
    wait: bool = Field(
        True, description="false: answer 202 at once with the run's id and where to poll it."
    )


class HistoryQuery(TenantQuery):
    connector: ConnectorRef | None = Field(None, description="Only this connector (id or name).")
    status: SyncStatus | None = Field(None, description="Only syncs in this status.")
    limit: Limit = Field(20, description="At most N.")


# -- documents (the same as the CLI's --json: they are rendered by documents.jsonable) -------


@dataclass
class ConnectorDocument(Connector):
    """`GET /api/connectors/{connector}`, as `show --json`: the config masked."""

    recent_syncs: list[Sync]
    datasets: list[DatasetSummary]


RunStatus = Literal["RUNNING", "FINISHED", "ERROR"]


@dataclass(frozen=True)
class RunDocument:
    """A run started through the API: `syncs` once it has FINISHED (as `run --json`), or
    `error` when the run itself could not go on (the database went away)."""

    id: str
    status: RunStatus
    #: Where to ask how it went: `GET` this path.
    poll: str
    started_at: dt.datetime
    finished_at: dt.datetime | None
    syncs: list[Sync] | None
    error: str | None


@dataclass(frozen=True)
class Liveness:
    status: Literal["ok"]


@dataclass(frozen=True)
class Readiness:
    status: Literal["ready", "not ready"]
    #: Why not, in words that name no host or database.
    reason: str | None = None


@dataclass(frozen=True)
class Problem:
    """Every error: one line saying what was wrong."""

    detail: str
