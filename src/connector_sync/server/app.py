"""The FastAPI application: each route calls one operation and answers with the document the
CLI's --json prints for it (documents.jsonable), so scripts read the same keys either way.

Routes that touch the database are plain `def`: FastAPI runs them in its threadpool, so a
run or a slow query never blocks the event loop.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Callable, Coroutine
from dataclasses import replace
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, HTTPException, Path, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import APIRoute
from fastapi.security import HTTPBearer
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector_sync import __version__, operations
from connector_sync.documents import json_text
from connector_sync.exceptions import ConnectorSyncError, DatabaseError
from connector_sync.operations import RunOptions
from connector_sync.server.auth import bearer_matches
from connector_sync.server.errors import ShuttingDown, one_line, status_of, unexpected
from connector_sync.server.runs import RunRegistry, TriggeredRun
from connector_sync.server.schemas import (
    BodyNotAccepted,
    ConnectorDocument,
    ConnectorRef,
    DueQuery,
    HistoryQuery,
    Liveness,
    Problem,
    Readiness,
    RunDocument,
    SyncRequest,
    TenantQuery,
    WaitQuery,
    json_object,
)

access_log = logging.getLogger("connector_sync.server.access")
log = logging.getLogger("connector_sync.server")

#: Request bodies larger than this are refused (413) before they are read: the API takes a
#: few fields, and an unauthenticated client must not make the server buffer megabytes.
MAX_BODY_BYTES = 64 * 1024
#: Seconds a client is asked to wait (Retry-After) when the server is shutting down.
RETRY_AFTER_SHUTDOWN = 30


def _problem(status: int, detail: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse({"detail": one_line(detail)}, status_code=status, headers=headers)


def _document(value: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(
        json_text(value, indent=False),
        status_code=status,
        headers=headers,
        media_type="application/json",
    )


def _answers(model: Any, *errors: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI: 200 answers with `model`, each of `errors` with a Problem."""
    return {200: {"model": model}, **{code: {"model": Problem} for code in errors}}


# Every /api route (and /metrics) may answer these.
_API_ERRORS: dict[int | str, dict[str, Any]] = {
    # 411 and 413: a body sent without a Content-Length, or over MAX_BODY_BYTES.
    code: {"model": Problem}
    for code in (400, 401, 411, 413, 422, 503)
}


#: What a POST without a body asks for: everything due, as `{}` does.
_NO_BODY = SyncRequest()


class _JsonObjectRequest(Request):
    """A request whose JSON body must be one object, each key once (`json_object`): FastAPI
    reads `null` as no body at all, and json keeps the last of a key given twice."""

    async def json(self) -> Any:
        if not hasattr(self, "_json"):
            try:
                self._json = json_object(await self.body())
            except BodyNotAccepted as exc:
                # FastAPI answers an HTTPException raised while it reads the body as such;
                # any other exception there becomes a 400 that does not say why.
                raise HTTPException(422, str(exc)) from None
        return self._json


class _JsonObjectRoute(APIRoute):
    """A route whose body is read by `_JsonObjectRequest` (FastAPI's documented way to
    change how a request is read: a custom APIRoute class)."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handle = super().get_route_handler()

        async def strictly(request: Request) -> Response:
            return await handle(_JsonObjectRequest(request.scope, request.receive))

        return strictly


def create_app(
    store: operations.Store,
    runs: RunRegistry,
    *,
    secret: bytes | None,
    run_options: RunOptions,
) -> FastAPI:
    """The API on `store`. `secret` None turns authentication off (serve allows that only on
    a loopback address); `run_options` are the defaults of the runs the API starts."""
    app = FastAPI(
        title="connector-sync",
        version=__version__,
        description="Trigger and watch connector syncs over HTTP (`connector-sync serve`).",
    )
    # The scheme, for the OpenAPI document; the check itself is in the gate (middleware),
    # before any body is read or any route looked up.
    bearer = HTTPBearer(auto_error=False, description="The server's CRON_SECRET.")
    api = APIRouter(
        prefix="/api",
        dependencies=[Depends(bearer)],
        responses=_API_ERRORS,
        route_class=_JsonObjectRoute,
    )

    # -- connectors --------------------------------------------------------------------

    @api.get(
        "/connectors/sync",
        summary="The due connectors, or (run=true) sync them: for crons that only send GET",
        responses={
            200: {"model": list[operations.ConnectorSummary] | list[operations.Sync]},
            202: {"model": RunDocument},
        },
    )
    def due_or_sync(query: Annotated[DueQuery, Query()]) -> Response:
        """Without `run`: the connectors due now, most overdue first, as `due --json`.
        With `run=true`: the same as `POST` with `{"limit": N, "tenant": T}`."""
        if query.run:
            return _sync(SyncRequest(limit=query.limit, tenant=query.tenant), query.wait)
        return _document(operations.due_connectors(store, query.limit, query.tenant))

    @api.post(
        "/connectors/sync",
        summary="Sync the due connectors (or the ones named), as `connector-sync run`",
        status_code=200,
        responses={**_answers(list[operations.Sync], 404), 202: {"model": RunDocument}},
    )
    def sync(query: Annotated[WaitQuery, Query()], body: SyncRequest = _NO_BODY) -> Response:
        """Recover expired leases, claim, sync, record: the syncs of this run, as
        `run --json` (a failed sync is in the list with its error; the request succeeded).
        No body is `{}`; a body of `null` is refused, as any that is not an object."""
        return _sync(body, query.wait)

    def _sync(request: SyncRequest, wait: bool) -> Response:
        if not runs.accepting:
            raise ShuttingDown()
        options = replace(run_options, limit=request.limit, tenant=request.tenant)
        run = runs.start(operations.prepare_run(store, options, request.connectors or ()))
        if not wait:
            return _document(run.document(), 202, {"Location": run.poll})
        run.done.wait()
        if run.error is not None:
            raise run.error
        assert run.result is not None
        return _document(run.result.syncs)

    @api.get(
        "/runs/{run_id}",
        summary="How a run started with wait=false goes",
        responses=_answers(RunDocument, 404),
    )
    def run_status(run_id: Annotated[str, Path(max_length=64)]) -> Response:
        """RUNNING, then FINISHED with its syncs (as `run --json`), or ERROR."""
        run: TriggeredRun | None = runs.get(run_id)
        if run is None:
            return _problem(
                404,
                f"no run '{run_id}' on this server process: runs are kept in memory, the last "
                "100 finished ones, by the process that started them",
            )
        return _document(run.document())

    @api.get(
        "/connectors",
        summary="Every connector, as `list --json`",
        responses=_answers(list[operations.ConnectorSummary]),
    )
    def list_connectors(query: Annotated[TenantQuery, Query()]) -> Response:
        return _document(operations.list_connectors(store, query.tenant))

    @api.get(
        "/connectors/{connector}",
        summary="One connector (config masked), its recent syncs and datasets, as `show --json`",
        responses=_answers(ConnectorDocument, 404),
    )
    def show_connector(
        connector: Annotated[ConnectorRef, Path(description="Its id or name.")],
        query: Annotated[TenantQuery, Query()],
    ) -> Response:
        return _document(operations.connector_detail(store, connector, query.tenant))

    @api.get(
        "/syncs",
        summary="Sync history, newest first, as `history --json`",
        responses=_answers(list[operations.Sync], 404),
    )
    def history(query: Annotated[HistoryQuery, Query()]) -> Response:
        return _document(
            operations.history(
                store,
                connector=query.connector,
                status=query.status,
                tenant=query.tenant,
                limit=query.limit,
            )
        )

    app.include_router(api)

    # -- metrics (behind the bearer, as the API: they name every connector) ------------

    # The content type prometheus_client itself pairs with generate_latest's text.
    from prometheus_client import CONTENT_TYPE_PLAIN_0_0_4

    @app.get(
        "/metrics",
        summary="The Prometheus text of `metrics` (scrape with the bearer)",
        dependencies=[Depends(bearer)],
        responses={
            **_API_ERRORS,
            200: {"content": {CONTENT_TYPE_PLAIN_0_0_4: {"schema": {"type": "string"}}}},
        },
        response_class=Response,
    )
    def metrics(query: Annotated[TenantQuery, Query()]) -> Response:
        request = operations.MetricsRequest(tenant=query.tenant)
        text = operations.metrics_text(store, request)
        return Response(text, media_type=CONTENT_TYPE_PLAIN_0_0_4)

    # -- probes (no authentication: they tell nothing about the data) --------------------

    @app.get("/healthz", summary="Liveness: the process answers", response_model=Liveness)
    async def healthz() -> Liveness:
        return Liveness("ok")

    @app.get(
        "/readyz",
        summary="Readiness: the database answers and its schema is current",
        responses={200: {"model": Readiness}, 503: {"model": Readiness}},
    )
    def readyz() -> Response:
        try:
            revision = operations.readiness(store)
        except DatabaseError as exc:
            log.warning("not ready: %s", exc.message)
            return _document(Readiness("not ready", "the database does not answer"), 503)
        if not revision.current:
            reason = (
                f"the database schema is at {revision.revision or 'none'}, this version needs "
                f"{revision.expected}: run 'connector-sync db upgrade'"
            )
            return _document(Readiness("not ready", reason), 503)
        return _document(Readiness("ready"))

    _install_error_handlers(app)
    app.add_middleware(_Gate, secret=secret)
    return app


def _install_error_handlers(app: FastAPI) -> None:
    async def failed(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, ConnectorSyncError)
        if isinstance(exc, DatabaseError):
            log.warning("%s", exc.message)
        return _problem(status_of(exc), exc.message)

    async def shutting_down(_request: Request, _exc: Exception) -> Response:
        return _problem(
            503,
            "the server is shutting down and starts no new run: try again (another instance)",
            {"Retry-After": str(RETRY_AFTER_SHUTDOWN)},
        )

    async def invalid(_request: Request, exc: Exception) -> Response:
        assert isinstance(exc, RequestValidationError)
        return _problem(422, _validation_line(exc))

    app.add_exception_handler(ConnectorSyncError, failed)
    app.add_exception_handler(ShuttingDown, shutting_down)
    app.add_exception_handler(RequestValidationError, invalid)


def _validation_line(exc: RequestValidationError) -> str:
    """The first problem as `where: what` (never the value sent), and how many more."""
    errors = list(exc.errors())
    if not errors:
        return "the request is not valid"
    first = errors[0]
    loc = list(first.get("loc", ()))
    if loc and loc[0] in ("body", "query", "path", "header"):
        loc = loc[1:]  # the field's own name says where it goes
    where = ".".join(str(part) for part in loc) or "body"
    if first.get("type") == "json_invalid":
        reason = f"not valid JSON ({first.get('ctx', {}).get('error', 'cannot parse it')})"
        where = "body"
    else:
        reason = str(first.get("msg", "not valid")).removeprefix("Value error, ")
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {reason}{more}"


class _Gate:
    """The middleware every request passes: /api and /metrics need the bearer secret (401
    with no detail otherwise: a wrong scheme, a wrong secret and an unknown path look the
    same), bodies are bounded, a bug becomes a 500 with one line (no traceback, which may
    quote data, reaches a client), and one access line is logged (never a header).

    Plain ASGI, not Starlette's BaseHTTPMiddleware: that one streams every response
    through a task and a queue of its own, which cost a third of a listing's requests/s.
    """

    def __init__(self, app: ASGIApp, secret: bytes | None) -> None:
        self.app = app
        self.secret = secret

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        request = Request(scope)
        path = str(scope["path"])  # what the routes match
        status = 500
        sent = False

        async def sending(message: Message) -> None:
            nonlocal status, sent
            if message["type"] == "http.response.start":
                status, sent = int(message["status"]), True
            await send(message)

        if (
            self.secret is not None
            and (path == "/api" or path.startswith("/api/") or path == "/metrics")
            and not bearer_matches(request.headers.get("authorization"), self.secret)
        ):
            refused: Response | None = _problem(401, "unauthorized", {"WWW-Authenticate": "Bearer"})
        else:
            refused = _refuse_shape(request)
        try:
            if refused is not None:
                await refused(scope, receive, sending)
            else:
                await self.app(scope, receive, sending)
        except Exception as exc:
            if sent:
                raise  # the answer is on its way: the connection is cut instead
            await _problem(500, unexpected(exc, f"{request.method} {path}"))(
                scope, receive, sending
            )
        client = f"{request.client.host}:{request.client.port}" if request.client else "-"
        query = scope.get("query_string", b"").decode("latin-1")
        access_log.info(
            '%s "%s %s" %d %.0fms',
            client,
            request.method,
            path + (f"?{query}" if query else ""),
            status,
            (time.perf_counter() - started) * 1000,
        )


def _refuse_shape(request: Request) -> Response | None:
    """What no route takes: a query parameter given twice (which one would count?), a
    body without a length, or over MAX_BODY_BYTES."""
    counted = Counter(name for name, _ in request.query_params.multi_items())
    repeated = sorted(name for name, count in counted.items() if count > 1)
    if repeated:
        return _problem(422, f"{repeated[0]}: given more than once: give it once")
    length = request.headers.get("content-length")
    if length is None:
        if "transfer-encoding" in request.headers:
            return _problem(411, "send the body with a Content-Length")
        return None
    if not (length.isascii() and length.isdigit()):
        return _problem(400, "Content-Length is not a number")
    if int(length) > MAX_BODY_BYTES:
        return _problem(413, f"the body is over {MAX_BODY_BYTES} bytes: the API takes a few fields")
    return None
