"""The daemon's HTTP/JSON API (FastAPI), served on a Unix socket and, when asked, on loopback
TCP behind a token (``auth.py``); OpenAPI at /openapi.json, its page at /docs.

Every route maps one engine operation; errors are JSON ``{"error": message}`` with a 4xx
status, and no request can take the daemon down. State changes are POST/DELETE only.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import structlog
from fastapi import FastAPI, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

import ccd
from ccd.engine import Engine, JobEvent
from ccd.errors import CcdError, Conflict, NotFound, SpecError
from ccd.server import apidocs, auth
from ccd.server.auth import Credentials
from ccd.server.guards import BodyLimit
from ccd.server.openapi import allowed_methods, document_errors, errors

log = structlog.get_logger("ccd.api")

SSE_KEEPALIVE_S = 15.0
MAX_LOG_OFFSET = 1 << 53  # beyond any log; larger ones would overflow a file offset

# -- request bodies --------------------------------------------------------------------------


class SubmitRequest(BaseModel):
    yaml: str = Field(description="The workflow file's text")
    source: str = Field(description="The file's path, for messages and `ccctl graph`")
    base_dir: str = Field(description="Directory that relative script paths resolve against")
    request_id: str | None = Field(None, max_length=200, description="Makes a retry idempotent")
    fail_fast: bool = False


class JobsRequest(BaseModel):
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
    async def events(workflow: str | None = None) -> StreamingResponse:
        """Server-sent events: one ``data:`` line of JSON per committed change. With
        ``workflow``, the stream opens with that workflow's current state."""
        if workflow is not None:
            await engine.workflow(workflow)  # 404 now, before the stream starts
        return StreamingResponse(
            streams.follow(workflow),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store"},
        )

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
    }


# -- errors ----------------------------------------------------------------------------------


def _add_error_handlers(app: FastAPI) -> None:
    def error(status: int, message: str, **extra: Any) -> JSONResponse:
        return JSONResponse({"error": message, **extra}, status_code=status)

    @app.exception_handler(SpecError)
    async def spec_error(_: Request, exc: SpecError) -> JSONResponse:
        return error(422, str(exc), problems=[str(p) for p in exc.problems])

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


# -- server-sent events ----------------------------------------------------------------------


class EventStreams:
    """Fans committed engine events out to every open event stream; `close` ends them all."""

    def __init__(self, engine: Engine) -> None:
        self._engine = engine
        self._closing = asyncio.Event()

    def close(self) -> None:
        self._closing.set()

    async def follow(self, workflow: str | None) -> AsyncIterator[str]:
        queue: asyncio.Queue[JobEvent] = asyncio.Queue()

        def listener(event: JobEvent) -> None:
            if workflow is None or event.workflow_id == workflow:
                queue.put_nowait(event)

        unsubscribe = self._engine.subscribe(listener)
        try:
            if workflow is not None:
                # Read only once subscribed: a change in between is then in the queue too.
                state = (await self._engine.workflow(workflow)).state
                yield _sse({"workflow": workflow, "job": None, "state": state})
            while not self._closing.is_set():
                try:
                    event = await asyncio.wait_for(queue.get(), SSE_KEEPALIVE_S)
                except TimeoutError:
                    yield ": keepalive\n\n"  # also how a vanished client is noticed
                    continue
                yield _sse(
                    {
                        "workflow": event.workflow_id,
                        "job": event.job,
                        "state": event.state,
                        "at": event.at,
                        "reason": event.reason,
                        "progress": event.progress,
                    }
                )
        finally:
            unsubscribe()


def _sse(payload: dict[str, Any]) -> str:
    return f"data: {json.dumps(payload)}\n\n"
