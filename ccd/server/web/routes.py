"""The dashboard's pages: the workflows, one workflow (its picture and job table), one job
(its attempts and log). Server-rendered; each page then follows one event stream.

Every URL a page uses is relative (its ``<base>`` is the daemon's root, however deep the page),
so the dashboard works behind ``ssh -L`` to the port or to the socket alike.
"""

from __future__ import annotations

import shutil
import time
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from urllib.parse import quote

from fastapi import FastAPI, Query, Request, Response
from fastapi.responses import HTMLResponse, StreamingResponse

from ccd.engine import Engine
from ccd.engine.store import WorkflowRecord
from ccd.errors import NotFound
from ccd.server.events import EventStreams
from ccd.server.web import graph, streams, views
from ccd.server.web.templates import Templates, load_static

COUNTS_CACHED = 4096  # finished workflows whose counts are kept (they change only on retry)
SSE_HEADERS = {"Cache-Control": "no-store", "X-Accel-Buffering": "no"}


class Dashboard:
    def __init__(self, engine: Engine, feed: EventStreams) -> None:
        self.engine = engine
        self.feed = feed
        self.static = load_static()
        self.templates = Templates(self.static)
        self.pictures = graph.PictureCache(lambda: shutil.which("dot") is not None)
        self._counts: OrderedDict[tuple[str, float], dict[str, int]] = OrderedDict()

    async def summaries(self, records: Sequence[WorkflowRecord]) -> list[views.WorkflowSummary]:
        """Summaries of workflows; counts of finished ones come from a cache."""
        missing = [w.id for w in records if (w.id, w.updated_at) not in self._counts]
        fresh = await self.engine.state_counts(missing) if missing else {}
        result = []
        for wf in records:
            key = (wf.id, wf.updated_at)
            counts = fresh.get(wf.id) if wf.id in fresh else self._counts.get(key)
            counts = counts or {}
            if wf.state != "running":
                self._counts[key] = counts
                self._counts.move_to_end(key)
            result.append(views.summarize(wf, counts))
        while len(self._counts) > COUNTS_CACHED:
            self._counts.popitem(last=False)
        return result

    def page(
        self, request: Request, template: str, status: int = 200, **context: object
    ) -> Response:
        depth = request.url.path.count("/") - 1
        html = self.templates.render(
            template, root="../" * depth or "./", now=time.time(), **context
        )
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def not_found(self, request: Request, err: NotFound) -> Response:
        return self.page(request, "missing.html", 404, cursor="", message=str(err))

    def row_html(self, summary: views.WorkflowSummary) -> str:
        return self.templates.macro("macros.html", "workflow_row", summary, time.time())


def mount(app: FastAPI, engine: Engine, feed: EventStreams) -> Dashboard:
    """Add the dashboard's routes to the API's app (none in its OpenAPI document)."""
    board = Dashboard(engine, feed)
    _add_pages(app, board)
    _add_streams(app, board)

    @app.get("/static/{name}", include_in_schema=False)
    async def static(name: str) -> Response:
        file = board.static.get(name)
        if file is None:
            return Response("no such file", status_code=404, media_type="text/plain")
        headers = {"Cache-Control": "public, max-age=31536000, immutable"}
        return Response(file.body, media_type=file.media_type, headers=headers)

    return board


def _add_pages(app: FastAPI, board: Dashboard) -> None:
    engine = board.engine

    @app.get("/", include_in_schema=False, response_class=HTMLResponse)
    async def workflows(request: Request, page: int = Query(1, ge=1, le=1 << 30)) -> Response:
        per_page = views.WORKFLOWS_PER_PAGE
        cursor, _ = await engine.event_cursor(None)
        total, records = await engine.workflows_page((page - 1) * per_page, per_page)
        return board.page(
            request, "workflows.html", cursor=cursor, page=page, total=total,
            pages=max(1, -(-total // per_page)), summaries=await board.summaries(records),
            home=str(Path.home()),
        )  # fmt: skip

    @app.get("/w/{workflow_id}", include_in_schema=False, response_class=HTMLResponse)
    async def workflow(
        request: Request,
        workflow_id: str,
        state: str | None = Query(None, max_length=20),
        q: str | None = Query(None, max_length=100),
        box: int | None = Query(None, ge=0, le=1 << 20),
        page: int = Query(1, ge=1, le=1 << 30),
    ) -> Response:
        try:
            snap = await engine.snapshot(workflow_id)
        except NotFound as err:
            return board.not_found(request, err)
        names = [job.name for job in snap.jobs]
        picture = await board.pictures.get(names, snap.edges)
        only = None
        if box is not None and box < len(picture.boxes):
            only = frozenset(picture.boxes[box].members)
        state = state if state in views.STATE_ORDER else None
        table = views.job_table(snap.jobs, state=state, text=q, only=only, page=page)
        href = f"w/{quote(workflow_id)}"
        states = {job.name: job.state.value for job in snap.jobs}
        counts = graph.box_counts(picture, states) if picture.grouped else []
        svg = graph.render(
            picture,
            states,
            {job.name: job.progress for job in snap.jobs if job.progress is not None},
            job_href=lambda name: f"{href}/j/{quote(name)}",
            group_href=lambda i: f"{href}?box={i}#jobs",
            counts=counts,
        )
        summary = views.summarize(snap.workflow, views.count_states(snap.jobs))
        graph_data = {
            "box_of": picture.box_of,
            "grouped": picture.grouped,
            "counts": summary.counts,
            "box_counts": counts,
        }
        return board.page(
            request, "workflow.html", cursor=snap.last_event_id, wf=summary, svg=svg,
            picture=picture, graph_data=graph_data, table=table,
            filters={"state": state, "q": q, "box": box},
            box_label=picture.boxes[box].label if only is not None and box is not None else None,
        )  # fmt: skip

    @app.get("/w/{workflow_id}/j/{job}", include_in_schema=False, response_class=HTMLResponse)
    async def job_page(request: Request, workflow_id: str, job: str) -> Response:
        try:
            cursor, _ = await engine.event_cursor(workflow_id)
            wf = await engine.workflow(workflow_id)
            rows = await engine.jobs_now(workflow_id, names=[job])
            if not rows:
                raise NotFound(f"workflow '{workflow_id}' has no job '{job}'")
            attempts = await engine.attempts(workflow_id, job)
        except NotFound as err:
            return board.not_found(request, err)
        return board.page(request, "job.html", cursor=cursor, wf=wf, job=rows[0], attempts=attempts)


def _add_streams(app: FastAPI, board: Dashboard) -> None:
    @app.get("/web/events", include_in_schema=False)
    async def workflows_events(
        request: Request, after: int | None = Query(None, ge=0, le=1 << 62)
    ) -> StreamingResponse:
        return StreamingResponse(
            streams.workflows(board, streams.resume_from(request, after)),
            media_type="text/event-stream", headers=SSE_HEADERS,
        )  # fmt: skip

    @app.get("/web/events/{workflow_id}/{job}", include_in_schema=False)
    async def job_events(
        request: Request, workflow_id: str, job: str, after: str | None = Query(None, max_length=80)
    ) -> StreamingResponse:
        rows = await board.engine.jobs_now(workflow_id, names=[job])  # NotFound: a 404 now
        if not rows:
            raise NotFound(f"workflow '{workflow_id}' has no job '{job}'")
        place = streams.LogPlace.parse(request.headers.get("last-event-id") or after)
        return StreamingResponse(
            streams.job(board, workflow_id, job, place),
            media_type="text/event-stream", headers=SSE_HEADERS,
        )  # fmt: skip
