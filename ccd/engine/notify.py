"""Notifications sent: when a workflow ends (and, if asked, when one of its jobs fails), run
a command and/or POST the event as JSON to a URL, as its ``notify:`` settings say
(`ccd.spec.notify`).

A notification never holds up or breaks a workflow: each runs as a task owned by the
`Notifier`, after the state it reports is committed, under a timeout; a command that fails or
hangs (killed with its process group), a URL that refuses or never answers, is logged and
forgotten. URLs are logged by scheme and host only: webhook URLs carry their secret in the
path or query, and user info may hold a password.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import json
import os
import signal
import urllib.error
import urllib.request
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import structlog

from ccd.spec.notify import JOB_FAILED, NotifySpec

log = structlog.get_logger("ccd.notify")

STDERR_TAIL = 500  # bytes of a failing command's stderr kept in the log
_URL_WORKERS = 4  # URL posts run in threads of their own (urllib blocks), never the loop's pool


def redact(url: str) -> str:
    """What of a URL may be logged: scheme, host and port (no user info, path or query)."""
    parts = urlsplit(url)
    host = parts.hostname or "?"
    port = f":{parts.port}" if parts.port else ""
    return f"{parts.scheme}://{host}{port}/..."


@dataclass(frozen=True, slots=True)
class Occasion:
    """Something a notifier may be told of: a workflow's end, or one of its jobs failing."""

    workflow_id: str
    event: str  # one of EVENTS
    job: str | None = None
    at: float = 0.0


# Read when an occasion comes: a workflow's own notifiers; its status (the `--json` shape),
# only if some notifier wants to hear of the occasion.
SpecsOf = Callable[[str], Awaitable[Sequence[NotifySpec]]]
StatusOf = Callable[[str], Awaitable[Mapping[str, Any]]]


class Notifier:
    """Runs notifications as tasks of its own; `close` waits for them (each is bounded by
    its timeout), so that `ccctl run` does not exit with one half sent."""

    def __init__(
        self, defaults: Sequence[NotifySpec], specs_of: SpecsOf, status_of: StatusOf
    ) -> None:
        self.defaults = tuple(defaults)
        self._specs_of = specs_of
        self._status_of = status_of
        self._tasks: set[asyncio.Task[None]] = set()
        self._pool: concurrent.futures.ThreadPoolExecutor | None = None
        self.sent = 0  # notifications delivered (commands exited 0, URLs answered 2xx)
        self.failed = 0

    def tell(self, occasion: Occasion) -> None:
        """Notify of ``occasion`` in the background (called from the scheduler's listener)."""
        task = asyncio.create_task(self._tell(occasion), name=f"notify-{occasion.workflow_id}")
        self._tasks.add(task)
        task.add_done_callback(self._reap)

    async def close(self) -> None:
        """Let running notifications finish (each within its timeout)."""
        while self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)
        if self._pool is not None:
            self._pool.shutdown(wait=False, cancel_futures=True)

    def _reap(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("notify_crashed", exc_info=error)

    async def _tell(self, occasion: Occasion) -> None:
        try:
            own = await self._specs_of(occasion.workflow_id)
            specs = [s for s in (*self.defaults, *own) if occasion.event in s.events]
            if not specs:
                return
            status = await self._status_of(occasion.workflow_id)  # only when it is wanted
        except Exception as exc:  # e.g. the workflow was deleted meanwhile
            log.warning("notify_skipped", workflow=occasion.workflow_id, error=str(exc))
            return
        event = event_json(occasion, status)
        await asyncio.gather(*(self._send(spec, event) for spec in specs))

    async def _send(self, spec: NotifySpec, event: dict[str, Any]) -> None:
        if spec.command is not None:
            self._count(await self._run_command(spec.command, event, spec.timeout_s))
        if spec.url is not None:
            self._count(await self._post(spec.url, event, spec.timeout_s))

    def _count(self, ok: bool) -> None:
        if ok:
            self.sent += 1
        else:
            self.failed += 1

    async def _run_command(
        self, argv: tuple[str, ...], event: dict[str, Any], timeout_s: float
    ) -> bool:
        where = _where(event, argv[0])
        try:
            proc = await asyncio.create_subprocess_exec(
                *argv,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=asyncio.subprocess.PIPE,
                start_new_session=True,
                env={**os.environ, **event_env(event)},
            )
        except OSError as exc:
            log.warning("notify_failed", **where, error=str(exc))
            return False
        try:
            _, err = await asyncio.wait_for(proc.communicate(_encode(event)), timeout_s)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)  # the command and whatever it started
            await proc.wait()
            log.warning("notify_failed", **where, error=f"no exit within {timeout_s:g}s: killed")
            return False
        if proc.returncode != 0:
            tail = err[-STDERR_TAIL:].decode(errors="replace").strip()
            log.warning("notify_failed", **where, returncode=proc.returncode, stderr=tail)
            return False
        log.info("notify_sent", **where)
        return True

    async def _post(self, url: str, event: dict[str, Any], timeout_s: float) -> bool:
        where = _where(event, redact(url))
        if self._pool is None:
            self._pool = concurrent.futures.ThreadPoolExecutor(_URL_WORKERS, "ccd-notify")
        loop = asyncio.get_running_loop()
        post = loop.run_in_executor(self._pool, _post_json, url, _encode(event), timeout_s)
        try:
            # Bounded here too: urllib's timeout is per socket operation, not for the whole.
            status = await asyncio.wait_for(post, timeout_s)
        except TimeoutError:
            log.warning("notify_failed", **where, error=f"no answer within {timeout_s:g}s")
            return False
        except (OSError, ValueError) as exc:
            log.warning("notify_failed", **where, error=_safe_error(exc, url))
            return False
        if not 200 <= status < 300:
            log.warning("notify_failed", **where, http_status=status)
            return False
        log.info("notify_sent", **where, http_status=status)
        return True


def _where(event: Mapping[str, Any], notifier: str) -> dict[str, Any]:
    """The log fields naming a notification."""
    return {"workflow": event["workflow"]["id"], "notify": notifier, "occasion": event["event"]}


def _post_json(url: str, body: bytes, timeout_s: float) -> int:
    """POST ``body``; the HTTP status (an error status is an answer, not an exception)."""
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "ccd-notify"},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            status: int = response.status
            return status
    except urllib.error.HTTPError as err:
        return err.code


def _safe_error(exc: BaseException, url: str) -> str:
    """An error's text without the URL's secret parts, should a library have quoted it."""
    text = str(exc.reason) if isinstance(exc, urllib.error.URLError) else str(exc)
    return text.replace(url, redact(url))


_JOB_KEYS = ("name", "state", "exit_code", "reason", "attempts", "host")


def event_json(occasion: Occasion, status: Mapping[str, Any]) -> dict[str, Any]:
    """The event a notifier is told: what happened, the workflow, the job (for a failure),
    counts of job states and the names of the jobs that failed."""
    jobs = status.get("jobs", [])
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job["state"]] = counts.get(job["state"], 0) + 1
    job = next((j for j in jobs if j["name"] == occasion.job), None)
    return {
        "event": "job_failed" if occasion.event == JOB_FAILED else "workflow_finished",
        "workflow": dict(status.get("workflow", {"id": occasion.workflow_id})),
        "state": occasion.event if occasion.event != JOB_FAILED else "failed",
        "at": occasion.at,
        "job": None if job is None else {key: job.get(key) for key in _JOB_KEYS},
        "counts": counts,
        "failed_jobs": [j["name"] for j in jobs if j["state"] == "failed"],
    }


def event_env(event: Mapping[str, Any]) -> dict[str, str]:
    """The event, in environment variables for a command."""
    env = {
        "CCD_EVENT": event["event"],
        "CCD_WORKFLOW": str(event["workflow"].get("id", "")),
        "CCD_WORKFLOW_NAME": str(event["workflow"].get("name", "")),
        "CCD_STATE": event["state"],
    }
    if event.get("job"):
        env["CCD_JOB"] = str(event["job"]["name"])
        env["CCD_REASON"] = str(event["job"].get("reason") or "")
    return env


def _encode(event: Mapping[str, Any]) -> bytes:
    return json.dumps(event).encode()
