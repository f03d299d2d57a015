"""Server-sent event streams of committed changes, each carrying its row id in the store's
append-only ``events`` table as the SSE ``id``.

A stream reads the table, not a queue: the scheduler's announcements only wake it, and it
reads every row after the last id it sent. So a client that reconnects with ``Last-Event-ID``
(browsers do so by themselves) gets exactly what it missed, from the table, then carries on
live; and a slow client never makes the daemon hold more than the set of jobs that progressed
since it last read. Progress updates are not history rows: they carry no id of their own
(the client keeps its last one), and a stream that resumes sends the running jobs' progress
as it is after the replay.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from typing import Any

from ccd.engine import Engine, JobEvent
from ccd.engine.core import JobStatus
from ccd.engine.store import EventRecord

KEEPALIVE_S = 15.0
READ_ROWS = 1000  # events read per query: a replay of a million is many small reads
PACE_S = 0.02  # after sending, wait this long before reading again
RETRY_MS = 1000  # how soon a browser reconnects after the stream breaks (a daemon restart)


class Watch:
    """What a stream has not yet read: whether anything was committed (an event to wait on),
    and which jobs reported progress. Use as a context manager: subscribed inside it."""

    def __init__(
        self, engine: Engine, workflow: str | None, job: str | None, registry: set[Watch]
    ) -> None:
        self._engine = engine
        self._registry = registry  # the feed's open watches, to wake them all on close
        self._workflow = workflow
        self._job = job
        self.changed = asyncio.Event()
        self.progressed: set[tuple[str, str]] = set()  # (workflow, job)
        self._unsubscribe: Callable[[], None] = _nothing

    def __enter__(self) -> Watch:
        self._unsubscribe = self._engine.subscribe(self._on_event)
        self._registry.add(self)
        return self

    def __exit__(self, *_: object) -> None:
        self._registry.discard(self)
        self._unsubscribe()

    def _on_event(self, event: JobEvent) -> None:
        if self._workflow is not None and event.workflow_id != self._workflow:
            return
        if self._job is not None and event.job not in (None, self._job):
            return
        if event.progress is not None and event.job is not None:
            self.progressed.add((event.workflow_id, event.job))
        self.changed.set()

    def take_progressed(self) -> set[tuple[str, str]]:
        taken, self.progressed = self.progressed, set()
        return taken

    async def wait(self, timeout_s: float) -> bool:
        """Wait for news; False if ``timeout_s`` passed without any."""
        try:
            await asyncio.wait_for(self.changed.wait(), timeout_s)
        except TimeoutError:
            return False
        return True


class EventStreams:
    """The daemon's event streams; `close` ends them all (a shutdown must not wait on them)."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.closing = False
        self._watches: set[Watch] = set()

    def close(self) -> None:
        self.closing = True
        for watch in self._watches:
            watch.changed.set()

    def watch(self, workflow: str | None, job: str | None = None) -> Watch:
        return Watch(self.engine, workflow, job, self._watches)

    async def follow(self, workflow: str | None, after: int | None) -> AsyncIterator[str]:
        """The JSON event stream: every committed change after ``after`` (from now if None;
        then a workflow's stream opens with its current state), then progress as it comes."""
        with self.watch(workflow) as watch:
            if after is None:
                after, state = await self.engine.event_cursor(workflow)
                opening = {"workflow": workflow, "job": None, "state": state}
                yield retry_line() + (sse(opening, after) if workflow else f"id: {after}\n\n")
            else:
                yield retry_line()
            replaying = True
            while not self.closing:
                watch.changed.clear()
                chunk, after, more = await self.stored_events(workflow, None, after)
                if replaying and not more:
                    replaying = False
                    if workflow is not None:
                        running = await self.engine.jobs_now(workflow, running=True)
                        chunk += progress_events(running, workflow)
                chunk += await self.progress_of(watch.take_progressed())
                if chunk:
                    yield chunk
                if more:
                    continue
                if chunk:
                    # A burst (a big workflow commits many times a second): let what follows
                    # gather, so one read serves many commits instead of one read each.
                    await asyncio.sleep(PACE_S)
                if not await watch.wait(KEEPALIVE_S):
                    yield ": keepalive\n\n"  # also how a vanished client is noticed

    async def stored_events(
        self, workflow: str | None, job: str | None, after: int
    ) -> tuple[str, int, bool]:
        """SSE text of the events after id ``after``, the last id read, and whether more
        are waiting."""
        rows = await self.engine.events_after(workflow, after, READ_ROWS, job=job)
        text = "".join(sse(event_json(event, now), event.id) for event, now in rows)
        return text, (rows[-1][0].id if rows else after), len(rows) == READ_ROWS

    async def progress_of(self, jobs: set[tuple[str, str]]) -> str:
        by_workflow: dict[str, list[str]] = {}
        for workflow, job in jobs:
            by_workflow.setdefault(workflow, []).append(job)
        chunks = [
            progress_events(await self.engine.jobs_now(workflow, names=names), workflow)
            for workflow, names in by_workflow.items()
        ]
        return "".join(chunks)


def _nothing() -> None:
    pass


def retry_line() -> str:
    return f"retry: {RETRY_MS}\n\n"


def sse(payload: dict[str, Any], event_id: int | str | None = None, kind: str | None = None) -> str:
    """One server-sent event; JSON has no raw newline, so ``data`` is one line."""
    head = "" if event_id is None else f"id: {event_id}\n"
    if kind is not None:
        head += f"event: {kind}\n"
    return f"{head}data: {json.dumps(payload, separators=(',', ':'))}\n\n"


def job_json(job: JobStatus) -> dict[str, Any]:
    """A job's row as it is now, as the pages show it."""
    return {
        "state": job.state.value,
        "host": job.host,
        "attempts": job.attempts,
        "exit_code": job.exit_code,
        "signal": job.signal,
        "reason": job.reason,
        "progress": job.progress,
        "message": job.message,
        "started_at": job.started_at,
        "ended_at": job.ended_at,
    }


def event_json(event: EventRecord, now: JobStatus | None) -> dict[str, Any]:
    """A stored change. ``progress`` is None, as before ids (clients tell progress updates
    by it); the job's row as it is now (progress included) is under ``now``."""
    payload: dict[str, Any] = {
        "id": event.id,
        "workflow": event.workflow_id,
        "job": event.job,
        "state": event.new,
        "old": event.old,
        "at": event.at,
        "reason": event.reason,
        "progress": None,
    }
    if now is not None:
        payload["now"] = job_json(now)
    return payload


def progress_events(jobs: Iterable[JobStatus], workflow: str) -> str:
    return "".join(sse(p) for p in _progress_payloads(jobs, workflow))


def _progress_payloads(jobs: Iterable[JobStatus], workflow: str) -> Iterator[dict[str, Any]]:
    at = time.time()
    for job in jobs:
        if job.progress is None:  # a new attempt began since: nothing to show yet
            continue
        yield {
            "workflow": workflow,
            "job": job.name,
            "state": job.state.value,
            "at": at,
            "reason": None,
            "progress": job.progress,
            "message": job.message,
            "now": job_json(job),
        }
