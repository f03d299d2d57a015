"""Submitting attempts to one Slurm cluster: few ``sbatch`` calls, none twice, none given up
for a "not now".

Attempts handed over in the same moment queue here and go out together: those of one
workflow with the same batch options as one job array (see `slurm_arrays`), at most
``MaxArraySize`` elements each; an attempt alone (a retry, say), or any attempt on a host with
``arrays: false``, as a single job. One ``sbatch`` at a time per cluster; what becomes ready
meanwhile joins the next one.

sbatch's refusals are read three ways (`refusal`):

- *never* (an invalid partition or account, a request beyond the partition's limits, any
  message not known to mean otherwise): the attempts fail, with Slurm's words;
- *later* (a submit limit of the QOS or association, "Job violates accounting/QOS policy", a
  busy controller): not a failure. An array is halved and tried again at once, down to one
  element, so that a limit of N queued jobs takes N; then every queued attempt is *held*,
  with the reason in its status, and tried again after a backoff (5 s doubling to 5 min);
- *unsure* (no answer: the controller unreachable, the transport lost): the job may exist.
  It is looked up by its tag (its job name) once Slurm answers again, and submitted again
  only if it is not there: an attempt never becomes two jobs.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum

import structlog

from ccd.errors import ExecutorError
from ccd.executors.base import Launch
from ccd.executors.shell import CommandResult
from ccd.executors.slurm_arrays import (
    MARKER_NAME,
    array_tag,
    arrays_dir,
    element_id,
    marker_text,
    render_array,
)
from ccd.executors.slurm_parse import BATCH_NAME, JobRow, job_tag, parse_sbatch

log = structlog.get_logger("ccd.slurm")

WINDOW_S = 0.02  # attempts handed over within this long share an sbatch
HOLD_BACKOFF_S = (5.0, 10.0, 20.0, 40.0, 80.0, 160.0, 300.0)  # then 300 s each time
UNSURE_RETRY_S = (1.0, 2.0, 5.0, 10.0, 30.0, 60.0)  # then 60 s each time


class Refusal(StrEnum):
    NEVER = "never"
    LATER = "later"
    UNSURE = "unsure"


# sbatch's words for "not now" (limits that free up as jobs end; a controller too busy to
# take the job: "Resource temporarily unavailable" is EAGAIN, after sbatch's own retries).
_LATER_RE = re.compile(
    r"MaxSubmitJob|GrpSubmitJob|MaxSubmitJobsPer|violates accounting/QOS policy"
    r"|Resource temporarily unavailable|temporarily unable to accept job",
    re.IGNORECASE,
)
# ...and for "no answer": the job may or may not have been taken.
_UNSURE_RE = re.compile(
    r"Socket timed out|Unable to contact slurm controller|Zero Bytes were transmitted"
    r"|Connection (?:refused|reset|timed out)|Transport endpoint",
    re.IGNORECASE,
)


def refusal(stderr: str) -> Refusal:
    """What a failed sbatch's message means for the job (see the module's docstring)."""
    if _UNSURE_RE.search(stderr):
        return Refusal.UNSURE
    if _LATER_RE.search(stderr):
        return Refusal.LATER
    return Refusal.NEVER


def short_reason(stderr: str) -> str:
    """sbatch's message on one line, without its "sbatch: error:" prefixes (the limit's name
    comes on a line of its own before the generic one)."""
    lines = [_PREFIX_RE.sub("", line).strip() for line in stderr.strip().splitlines()]
    return "; ".join(line for line in lines if line) or "no message"


_PREFIX_RE = re.compile(r"^sbatch: error: (?:Batch job submission failed: )?")


@dataclass(eq=False, slots=True)
class Entry:
    """One attempt waiting to be submitted. ``outcome`` is its first word: the Slurm job id
    once taken, None once it is held for a later try (``held`` then says why, and
    `Cluster.accepted`/`refused` tell its fate), or an `ExecutorError` if refused for good."""

    launch: Launch
    run_dir: str  # on the cluster
    key: tuple[str, ...]  # who it may share an array with (see slurm_arrays.group_key)
    files: Mapping[str, bytes]  # its run dir's files, job.sbatch included, by path
    outcome: asyncio.Future[str | None] = field(
        default_factory=lambda: asyncio.get_running_loop().create_future()
    )
    held: str | None = None  # why it waits for a later try
    written: bool = False
    marked: bool = False  # a marker naming an array was written to its run dir
    submitting: bool = False  # in an sbatch whose answer is not known yet

    @property
    def tag(self) -> str:
        return job_tag(self.launch.workflow_id, self.launch.job, self.launch.attempt)


@dataclass(frozen=True, slots=True)
class Cluster:
    """What the queue needs of its executor."""

    sbatch: Callable[[Sequence[str]], Awaitable[CommandResult]]  # raises ExecutorError: no answer
    lookup: Callable[[str], Awaitable[JobRow | None]]  # the newest job of a tag
    write_files: Callable[[Mapping[str, bytes]], Awaitable[None]]
    max_array_size: Callable[[], Awaitable[int]]  # 1: no arrays
    accepted: Callable[[Entry, str], None]  # a held entry was taken, with its job id
    refused: Callable[[Entry, str], None]  # a held entry was refused for good
    holding: Callable[[Sequence[Entry]], None]  # these wait for a later try (see Entry.held)


@dataclass(slots=True)
class _Batch:
    entries: list[Entry]
    tag: str
    argv: list[str]


class SubmitQueue:
    """The submissions of one cluster, one sbatch at a time. ``throttle`` is each array's
    ``%N`` (the host's max_jobs), or None."""

    def __init__(self, cluster: Cluster, throttle: int | None) -> None:
        self._cluster = cluster
        self._throttle = throttle
        self._queue: list[Entry] = []
        self._task: asyncio.Task[None] | None = None
        self._cap: int | None = None  # elements per array now: halved on a limit, regrown
        self._limited = False  # a limit was hit since the last wait: do not regrow yet
        self._backoff = 0  # index into HOLD_BACKOFF_S while holding
        self._holding: str | None = None  # why everything waits, during a backoff
        self.sbatch_calls = 0
        self.arrays = 0

    def add(self, entry: Entry) -> None:
        self._queue.append(entry)
        if self._holding is not None:
            self._hold([entry], self._holding)
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._drain(), name="slurm-submit")

    def cancel(self, entry: Entry) -> bool:
        """Take a not yet submitted entry out; False if it is in an sbatch right now (or
        gone already)."""
        if entry.submitting or entry not in self._queue:
            return False
        self._queue.remove(entry)
        return True

    async def close(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        for entry in self._queue:
            if not entry.outcome.done():
                entry.outcome.cancel()
        self._queue.clear()

    async def _drain(self) -> None:
        await asyncio.sleep(WINDOW_S)  # let the rest of this moment's attempts join
        while self._queue:
            size = await self._size()
            key = self._queue[0].key
            batch = [e for e in self._queue if e.key == key][:size]
            try:
                await self._submit(batch)
            except Exception as exc:  # e.g. the run dirs cannot be written: these fail
                log.warning("slurm_submit_failed", error=repr(exc))
                self._settle_never(batch, str(exc))

    async def _size(self) -> int:
        limit = max(1, await self._cluster.max_array_size())
        if self._cap is None:
            self._cap = limit
        return max(1, min(self._cap, limit))

    async def _submit(self, entries: list[Entry]) -> None:
        """Submit these (one workflow, one key) until taken, refused for good, or halved."""
        batch = await self._prepare(entries)
        while batch.entries:
            kind, message, job_id = await self._sbatch(batch)
            if job_id is not None:
                self._accept(batch, job_id)
                return
            if kind is Refusal.NEVER:
                self._settle_never(batch.entries, f"sbatch failed: {short_reason(message)}")
                return
            if kind is Refusal.LATER:
                if len(batch.entries) > 1:  # a limit on queued jobs: try with half as many
                    self._cap = len(batch.entries) // 2
                    self._limited = True
                    log.info(
                        "slurm_submit_halved",
                        tag=batch.tag,
                        elements=self._cap,
                        reason=short_reason(message),
                    )
                    return  # still queued: the next round takes fewer
                await self._wait_out(message)
            # Unsure and not found, or held and waited out: again, without the cancelled.
            batch = await self._prepare([e for e in batch.entries if e in self._queue])

    async def _sbatch(self, batch: _Batch) -> tuple[Refusal, str, str | None]:
        """One sbatch (and, if it got no answer, the lookup of its tag): the refusal and
        message, or the job id taken."""
        for entry in batch.entries:
            entry.submitting = True
        try:
            self.sbatch_calls += 1
            try:
                result = await self._cluster.sbatch(batch.argv)
            except ExecutorError as exc:
                kind, message = Refusal.UNSURE, str(exc)
            else:
                if result.returncode == 0:
                    return Refusal.NEVER, "", parse_sbatch(result.stdout.decode())
                message = result.stderr.decode(errors="replace")
                kind = refusal(message)
            if kind is Refusal.UNSURE:
                row = await self._find(batch, message)
                if row is not None:
                    return kind, message, row.job_id.split("_", 1)[0]
            return kind, message, None
        finally:
            for entry in batch.entries:
                entry.submitting = False

    async def _prepare(self, entries: list[Entry]) -> _Batch:
        """Render the sbatch of these entries and write what they need before it runs:
        their run dirs' files (once), and for an array its script and every element's
        marker (so a restarted daemon can find the array by its tag)."""
        files: dict[str, bytes] = {}
        for entry in entries:
            if not entry.written:
                files.update(entry.files)
        if len(entries) == 1:
            entry = entries[0]
            if entry.marked:  # it was in an array that never went: it goes alone now
                files[f"{entry.run_dir}/{MARKER_NAME}"] = b""
            argv = ["sbatch", "--parsable", f"{entry.run_dir}/{BATCH_NAME}"]
            batch = _Batch(entries, entry.tag, argv)
        elif entries:
            token = secrets.token_hex(4)
            tag = array_tag(entries[0].launch.workflow_id, token)
            home = f"{arrays_dir(entries[0].run_dir)}/{token}"
            dirs = [e.run_dir for e in entries]
            script, argv = render_array(tag, dirs, entries[0].key[1:], self._throttle, home)
            files[f"{home}/{BATCH_NAME}"] = script.encode()
            for index, entry in enumerate(entries):
                files[f"{entry.run_dir}/{MARKER_NAME}"] = marker_text(tag, index).encode()
            batch = _Batch(entries, tag, argv)
        else:
            return _Batch([], "", [])
        if files:
            await self._cluster.write_files(files)
        for entry in entries:
            entry.written = True
            entry.marked = len(entries) > 1
        return batch

    def _accept(self, batch: _Batch, job_id: str) -> None:
        self._backoff = 0
        if not self._limited:
            self._cap = (self._cap or 1) * 2
        self.arrays += len(batch.entries) > 1
        for index, entry in enumerate(batch.entries):
            if entry in self._queue:
                self._queue.remove(entry)
            element = element_id(job_id, index) if len(batch.entries) > 1 else job_id
            if not entry.outcome.done():
                entry.outcome.set_result(element)
            else:
                entry.held = None
                self._cluster.accepted(entry, element)
        log.info("slurm_submitted", tag=batch.tag, job_id=job_id, elements=len(batch.entries))

    def _settle_never(self, entries: Sequence[Entry], message: str) -> None:
        for entry in entries:
            if entry in self._queue:
                self._queue.remove(entry)
            if not entry.outcome.done():
                entry.outcome.set_exception(ExecutorError(message))
            else:
                self._cluster.refused(entry, message)

    async def _find(self, batch: _Batch, message: str) -> JobRow | None:
        """After an sbatch without an answer: its job, once Slurm answers again (None: it
        was not taken). Never gives up: submitting again without knowing could run it
        twice."""
        log.warning("slurm_submit_unsure", tag=batch.tag, error=message)
        attempt = 0
        while True:
            delay_s = UNSURE_RETRY_S[min(attempt, len(UNSURE_RETRY_S) - 1)]
            attempt += 1
            if attempt > 2:  # some seconds now: say why these wait
                self._hold(
                    batch.entries, f"held: the cluster does not answer ({short_reason(message)})"
                )
            await asyncio.sleep(delay_s)
            with contextlib.suppress(ExecutorError):
                return await self._cluster.lookup(batch.tag)

    async def _wait_out(self, message: str) -> None:
        """Hold everything queued until the backoff has passed."""
        delay_s = HOLD_BACKOFF_S[min(self._backoff, len(HOLD_BACKOFF_S) - 1)]
        self._backoff += 1
        self._cap = 1
        self._holding = (
            f"held: sbatch said not now ({short_reason(message)}); next try in {delay_s:.0f}s"
        )
        log.info("slurm_submit_held", reason=self._holding, queued=len(self._queue))
        self._hold(list(self._queue), self._holding)
        try:
            await asyncio.sleep(delay_s)
        finally:
            self._holding = None
            self._limited = False  # from one at a time, doubling while they are taken

    def _hold(self, entries: Sequence[Entry], why: str) -> None:
        for entry in entries:
            entry.held = why
            if not entry.outcome.done():
                entry.outcome.set_result(None)
        self._cluster.holding(entries)
