"""The event streams of the workflows page and of a job's page (a workflow's page follows the
API's own ``/events``). One stream per page; each resumes where the browser's
``Last-Event-ID`` says.

- Workflows: a summary row (as HTML, from the page's own template) for each workflow that
  changed, at most every `SUMMARY_EVERY_S` (a workflow of 10,000 jobs changes thousands of
  times a second; its row needs redrawing once). Its ids are events-table ids.
- A job: its state and attempts (HTML) when it changes, and the tail of its log as it grows
  (read through the engine, so ssh and Slurm jobs' logs too). Its ids are
  ``EVENT:ATTEMPT:OFFSET``: the events-table id, and how far into which attempt's log the
  browser has read.
"""

from __future__ import annotations

import asyncio
import codecs
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import TYPE_CHECKING

from fastapi import Request

from ccd.errors import NotFound
from ccd.models import IN_FLIGHT
from ccd.server.events import KEEPALIVE_S, READ_ROWS, job_json, retry_line, sse

if TYPE_CHECKING:  # routes imports this module; the dashboard object is only passed in
    from ccd.server.web.routes import Dashboard

SUMMARY_EVERY_S = 0.5
LOG_POLL_S = 1.0  # how often a running job's log is read while its page is open
TAIL_BYTES = 64 << 10  # a page opens on the last this many bytes of the log


def resume_from(request: Request, after: int | None) -> int | None:
    """Where a stream resumes: the browser's ``Last-Event-ID`` (set when it reconnects by
    itself), else the page's ``after`` (set when the page reconnects, or first connects)."""
    header = request.headers.get("last-event-id", "")
    return int(header) if header.isdigit() else after


async def workflows(board: Dashboard, after: int | None) -> AsyncIterator[str]:
    engine = board.engine
    with board.feed.watch(None) as watch:
        if after is None:
            after, _ = await engine.event_cursor(None)
        yield retry_line() + f"id: {after}\n\n"
        while not board.feed.closing:
            watch.changed.clear()
            watch.take_progressed()  # a job's progress does not change a workflow's row
            touched, after = await engine.workflows_touched(after)
            if touched:
                summaries = await board.summaries(await engine.workflows_by_id(touched))
                yield "".join(
                    sse({"id": s.id, "html": board.row_html(s)}, after, "workflow")
                    for s in summaries
                )
                await asyncio.sleep(SUMMARY_EVERY_S)  # pace: later changes join the next row
            elif not await watch.wait(KEEPALIVE_S):
                yield ": keepalive\n\n"


@dataclass(slots=True)
class LogPlace:
    """How far a job page has read: events, and which attempt's log up to which byte."""

    event: int | None = None
    attempt: int | None = None
    offset: int = 0

    @classmethod
    def parse(cls, text: str | None) -> LogPlace:
        parts = (text or "").split(":")
        if not all(p.isdigit() for p in parts) or len(parts) not in (1, 3):
            return cls()
        if len(parts) == 1:
            return cls(int(parts[0]))
        return cls(int(parts[0]), int(parts[1]) or None, int(parts[2]))

    def __str__(self) -> str:
        return f"{self.event or 0}:{self.attempt or 0}:{self.offset}"


class _JobStream:
    def __init__(self, board: Dashboard, workflow: str, job: str, place: LogPlace) -> None:
        self.board = board
        self.engine = board.engine
        self.workflow = workflow
        self.job = job
        self.place = place
        self.decoder = codecs.getincrementaldecoder("utf-8")(errors="replace")
        self.running = True

    async def changes(self) -> str:
        """The job's row and attempts, if any event of it came since the last look."""
        rows = await self.engine.events_after(
            self.workflow, self.place.event or 0, READ_ROWS, job=self.job
        )
        if not rows:
            return ""
        self.place.event = rows[-1][0].id
        return await self.job_event()

    async def job_event(self) -> str:
        (now,) = await self.engine.jobs_now(self.workflow, names=[self.job])
        self.running = now.state in IN_FLIGHT
        attempts = await self.engine.attempts(self.workflow, self.job)
        html = {
            name: self.board.templates.macro("macros.html", name, now, attempts, time.time())
            for name in ("job_facts", "attempt_rows")
        }
        payload = {"job": job_json(now), "html": html}
        return sse(payload, str(self.place), "job")

    async def log(self) -> str:
        """New log text of the latest attempt (a new attempt starts its own log)."""
        attempts = await self.engine.attempts(self.workflow, self.job)
        if not attempts:
            return ""
        latest = attempts[-1]
        text = ""
        if latest.attempt != self.place.attempt:
            text = self._start_attempt(latest.attempt, latest.log_offset)
        chunks = [text] if text else []
        while True:
            try:
                _, data = await self.engine.read_log(
                    self.workflow, self.job, latest.attempt, self.place.offset
                )
            except NotFound:
                break
            if not data:
                break
            self.place.offset += len(data)
            chunks.append(self._text(self.decoder.decode(data), self.place.offset))
        return "".join(chunks)

    def _start_attempt(self, attempt: int, log_size_hint: int) -> str:
        """Follow another attempt's log, from its last `TAIL_BYTES` (the hint is where the
        progress reader got to: about the log's size)."""
        self.place.attempt = attempt
        self.decoder.reset()
        self.place.offset = max(0, log_size_hint - TAIL_BYTES)
        payload = {"attempt": attempt, "start": True, "skipped": self.place.offset, "text": ""}
        return sse(payload, str(self.place), "log")

    def _text(self, text: str, offset: int) -> str:
        pending = len(self.decoder.getstate()[0])
        payload = {"attempt": self.place.attempt, "text": text}
        place = LogPlace(self.place.event, self.place.attempt, offset - pending)
        return sse(payload, str(place), "log")


async def job(board: Dashboard, workflow: str, name: str, place: LogPlace) -> AsyncIterator[str]:
    stream = _JobStream(board, workflow, name, place)
    with board.feed.watch(workflow, name) as watch:
        if place.event is None:  # read before the job's row: a change in between is replayed
            place.event, _ = await board.engine.event_cursor(workflow)
        yield retry_line() + await stream.job_event()
        sent_at = time.monotonic()
        while not board.feed.closing:
            watch.changed.clear()
            watch.take_progressed()  # progress means the log grew: it is read below anyway
            chunk = await stream.changes() + await stream.log()
            if chunk:
                yield chunk
                sent_at = time.monotonic()
            elif time.monotonic() - sent_at > KEEPALIVE_S:
                yield ": keepalive\n\n"
                sent_at = time.monotonic()
            await watch.wait(LOG_POLL_S if stream.running else KEEPALIVE_S)
