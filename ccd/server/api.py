"""The daemon's HTTP/JSON API (FastAPI), served on a Unix socket and, when asked, on loopback
TCP behind a token (``auth.py``); OpenAPI at /openapi.json, its page at /docs.

Every route maps one engine operation; errors are JSON ``{"error": message}`` with a 4xx
status, and no request can take the daemon down. State changes are POST/DELETE only.
"""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import ccd
from ccd.engine import Engine
from ccd.engine.accounting import usage_json
from ccd.errors import CcdError, Conflict, NotFound, SpecError
from ccd.server import apidocs, auth, web
from ccd.server.auth import Credentials
from ccd.server.events import EventStreams
from ccd.server.guards import BodyLimit
from ccd.server.openapi import allowed_methods, document_errors, errors

__all__ = ["EventStreams", "create_app"]

log = structlog.get_logger("ccd.api")

MAX_LOG_OFFSET = 1 << 53  # beyond any log; larger ones would overflow a file offset
MAX_EVENT_ID = 1 << 62
AFTER_HELP = "Resume after this event id (as a browser's Last-Event-ID header does)"

# -- request bodies --------------------------------------------------------------------------


class SubmitRequest(BaseModel):
    # What /docs pre-fills, and what an API fuzzer starts from: a workflow that runs.
    model_config = ConfigDict(
        strict=True,  # a boolean is a boolean: 0 is not `false`, as the schema says
        json_schema_extra={
            "examples": [
                {
                    "yaml": "name: hello\njobs:\n  hello: {run: 'echo hello'}\n",
                    "source": "hello.yaml",
                    "base_dir": "/tmp",
                }
            ]
        },
    )

    yaml: str = Field(description="The workflow file's text")
    source: str = Field(description="The file's path, for messages and `ccctl graph`")
    base_dir: str = Field(description="Directory that relative script paths resolve against")
    request_id: str | None = Field(None, max_length=200, description="Makes a retry idempotent")
    fail_fast: bool = False


class AddJobsRequest(BaseModel):
    yaml: str = Field(description="A fragment of ccd's format: `jobs:` (and `defaults:`)")
    source: str = Field(description="The fragment file's path, for messages")
    base_dir: str = Field(description="Directory that relative script paths resolve against")


class JobsRequest(BaseModel):
    model_config = ConfigDict(strict=True)

    jobs: list[str] | None = Field(None, description="Job names; all jobs if omitted")


# -- the app ---------------------------------------------------------------------------------


def create_app(
    engine: Engine,
    streams: EventStreams,
    *,
    started_at: float,
    max_request_bytes: int,
    credentials: Credentials,
    http_url: str | None = None,
) -> FastAPI:
    """The API over ``engine``; ``/events`` serves ``streams``, which its owner closes to end
    every open stream (a server's shutdown would wait on them). ``http_url`` is where its TCP
    door listens (None: the socket only)."""
    app = FastAPI(
        title="ccd",
        version=ccd.__version__,
        description="Submit, watch and control workflows of the ccd daemon.",
        docs_url=None,  # FastAPI's pages load their scripts from a CDN: apidocs serves ours
        redoc_url=None,
    )
    _add_error_handlers(app)
    app.add_middleware(BodyLimit, max_bytes=max_request_bytes)
    _add_read_routes(app, engine, started_at)
    _add_control_routes(app, engine)
    _add_auth_routes(app, credentials, http_url)
    apidocs.add_docs(app)
    document_errors(app)

    @app.get(
        "/events",
        response_class=StreamingResponse,
        responses={
            200: {"content": {"text/event-stream": {}}, "description": "The event stream"},
            **errors(404),
        },
    )
    async def events(
        workflow: str | None = None,
        after: int | None = Query(None, ge=0, le=MAX_EVENT_ID, description=AFTER_HELP),
        last_event_id: str | None = Header(None, max_length=40),
    ) -> StreamingResponse:
        """Server-sent events: one ``data:`` line of JSON per change. A stored change has an
        ``id:`` (its row in the events table, also in the JSON as ``id``); a progress update
        has none. With ``workflow``, a stream that does not resume opens with that
        workflow's current state."""
        if workflow is not None:
            await engine.workflow(workflow)  # 404 now, before the stream starts
        if last_event_id is not None and last_event_id.isdigit():
            after = min(int(last_event_id), MAX_EVENT_ID)  # the browser's own reconnect
        return StreamingResponse(
            streams.follow(workflow, after),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

    web.mount(app, engine, streams)
    return app


def _add_read_routes(app: FastAPI, engine: Engine, started_at: float) -> None:
    @app.get("/health")
    async def health() -> dict[str, Any]:
        return {
            "status": "ok",
            "version": ccd.__version__,
            "pid": os.getpid(),
            "uptime_s": round(time.time() - started_at, 3),
            "workflows_running": engine.workflows_running(),
            "jobs_running": engine.jobs_running(),
            "hosts": {
                name: {"state": h.state, "reason": h.reason}
                for name in engine.hosts
                for h in [engine.host_health(name)]
            },
        }

    @app.get("/workflows")
    async def list_workflows() -> dict[str, Any]:
        records = await engine.list_workflows()
        return {
            "workflows": [
                {
                    "id": w.id,
                    "name": w.name,
                    "state": w.state,
                    "source": w.source,
                    "created_at": w.created_at,
                    "updated_at": w.updated_at,
                }
                for w in records
            ]
        }

    @app.get("/workflows/{workflow_id}", responses=errors(404))
    async def status(workflow_id: str) -> dict[str, Any]:
        return (await engine.status(workflow_id)).to_json()

    @app.get("/workflows/{workflow_id}/jobs/{job}/attempts", responses=errors(404))
    async def attempts(workflow_id: str, job: str) -> dict[str, Any]:
        records = await engine.attempts(workflow_id, job)
        return {"attempts": [_attempt_json(a) for a in records]}

    @app.get(
        "/workflows/{workflow_id}/jobs/{job}/log",
        response_class=Response,
        responses={
            200: {"content": {"application/octet-stream": {}}, "description": "Log bytes"},
            **errors(404),
        },
    )
    async def job_log(
        workflow_id: str,
        job: str,
        offset: int = Query(0, ge=0, le=MAX_LOG_OFFSET),
        attempt: int | None = Query(None, ge=1),
    ) -> Response:
        record, data = await engine.read_log(workflow_id, job, attempt, offset)
        headers = {
            "X-Ccd-Offset": str(offset + len(data)),
            "X-Ccd-Attempt": str(record.attempt),
            "X-Ccd-Done": "1" if record.ended_at is not None else "0",
        }
        return Response(data, media_type="application/octet-stream", headers=headers)

    @app.get("/workflows/{workflow_id}/graph", responses=errors(404))
    async def graph(workflow_id: str) -> dict[str, Any]:
        return {"dot": await engine.graph_dot(workflow_id)}

    @app.get(
        "/workflows/{workflow_id}/export",
        response_model=None,
        responses={
            200: {
                "content": {"application/yaml": {}, "application/json": {}},
                "description": "A workflow file (yaml), or the jobs with their state (json)",
            },
            **errors(404),
        },
    )
    async def export(
        workflow_id: str, format: str = Query("yaml", pattern="^(yaml|json)$")
    ) -> Response | dict[str, Any]:
        """The workflow as it stands: a workflow file that re-runs the same DAG (yaml), or
        every job with its state, attempts and outputs (json)."""
        if format == "json":
            return await engine.export_json(workflow_id)
        return Response(await engine.export_yaml(workflow_id), media_type="application/yaml")


def _add_control_routes(app: FastAPI, engine: Engine) -> None:
    @app.post("/workflows", status_code=201, responses=errors(422))
    async def submit(body: SubmitRequest) -> dict[str, Any]:
        if body.request_id is not None:
            existing = await engine.find_request(body.request_id)
            if existing is not None:
                return {"id": existing, "existing": True}
        spec = await engine.parse(body.yaml, Path(body.source), Path(body.base_dir))
        wf_id = await engine.submit(spec, fail_fast=body.fail_fast, request_id=body.request_id)
        return {"id": wf_id, "existing": False}

    @app.post("/workflows/{workflow_id}/cancel", responses=errors(404, 409))
    async def cancel(workflow_id: str, body: JobsRequest) -> dict[str, Any]:
        return {"cancelled": await engine.cancel(workflow_id, body.jobs)}

    @app.post("/workflows/{workflow_id}/jobs", responses=errors(404, 409, 422))
    async def add_jobs(workflow_id: str, body: AddJobsRequest) -> dict[str, Any]:
        """Add jobs to a workflow, checked as a whole against it (their `needs` may name its
        jobs); jobs already there with the same definition are left alone."""
        return await engine.add_jobs(workflow_id, body.yaml, Path(body.source), Path(body.base_dir))

    @app.post("/workflows/{workflow_id}/retry", responses=errors(404, 409))
    async def retry(workflow_id: str, body: JobsRequest) -> dict[str, Any]:
        return {"retried": await engine.retry(workflow_id, body.jobs)}

    @app.delete("/workflows/{workflow_id}", responses=errors(404, 409))
    async def delete(workflow_id: str) -> dict[str, Any]:
        await engine.delete(workflow_id)
        return {"deleted": workflow_id}


def _add_auth_routes(app: FastAPI, credentials: Credentials, http_url: str | None) -> None:
    """Credentials for the TCP door; they answer on the Unix socket only (auth.TcpGuard)."""

    @app.post(auth.LOGIN_CODE_PATH, responses=errors(409))
    async def login_code() -> dict[str, Any]:
        """A one-time browser login link (``ccctl web``): it sets a session cookie."""
        if http_url is None:
            raise Conflict(
                "the daemon does not listen on TCP: start it with --http 127.0.0.1:8787 "
                "(or set http.listen in its config)"
            )
        code = credentials.new_login_code()
        return {
            "url": http_url,
            "login_url": f"{http_url}{auth.LOGIN_PATH.lstrip('/')}?code={code}",
            "expires_in_s": auth.LOGIN_CODE_TTL_S,
        }

    @app.post(auth.ROTATE_PATH)
    async def rotate_token() -> dict[str, Any]:
        """A new token: the old one and every session cookie stop working at once."""
        credentials.rotate()
        return {"token_file": str(credentials.token_path)}


def _attempt_json(a: Any) -> dict[str, Any]:
    return {
        "attempt": a.attempt,
        "host": a.host,
        "run_dir": a.run_dir,
        "pid": a.pid,
        "started_at": a.started_at,
        "ended_at": a.ended_at,
        "exit_code": a.exit_code,
        "signal": a.signal,
        "reason": a.reason,
        **usage_json(a.usage),
    }


# -- errors ----------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(SpecError)
    async def spec_error(_: Request, exc: SpecError) -> JSONResponse:
        located = [
            {"file": p.file, "line": p.line, "job": p.job, "field": p.field, "message": p.message}
            for p in exc.problems
        ]
        return error(422, str(exc), problems=[str(p) for p in exc.problems], located=located)

    @app.exception_handler(NotFound)
    async def not_found(_: Request, exc: NotFound) -> JSONResponse:
        return error(404, str(exc))

    @app.exception_handler(Conflict)
    async def conflict(_: Request, exc: Conflict) -> JSONResponse:
        return error(409, str(exc))

    @app.exception_handler(CcdError)
    async def ccd_error(_: Request, exc: CcdError) -> JSONResponse:
        return error(400, str(exc))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        response = error(exc.status_code, str(exc.detail))  # e.g. an unknown path or method
        if exc.status_code == 405:
            response.headers["Allow"] = ", ".join(allowed_methods(app, request))
        return response

    @app.exception_handler(RequestValidationError)
    async def bad_request(_: Request, exc: RequestValidationError) -> JSONResponse:
        first = exc.errors()[0] if exc.errors() else {}
        where = ".".join(str(p) for p in first.get("loc", ()))
        return error(400, f"bad request: {where}: {first.get('msg', 'invalid')}")
