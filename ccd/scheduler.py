"""The event-driven scheduler: ready-set, dispatch under limits, retries, timeouts, cancel.

Nothing here polls the job table. Each job keeps a counter of parents that have not yet
succeeded; a success decrements its children's counters and a counter reaching zero makes the
child ready (O(edges) over a whole run). Every state change is made in memory, queued in the
current `Batch`, and the actions it implies (starting a process, waking a waiter) run only
after the batch has been committed: state is written before it is acted on, and everything
that changed in one turn of the event loop shares one transaction.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import structlog

from ccd.executors.base import Executor, Handle, Launch
from ccd.models import (
    TERMINAL,
    ExitStatus,
    JobState,
    WorkflowState,
    check_transition,
    workflow_state,
)
from ccd.progress import LogTail
from ccd.spec import JobSpec, WorkflowSpec
from ccd.store import (
    AttemptRecord,
    Batch,
    JobRecord,
    ProgressUpdate,
    Store,
    Transition,
    WorkflowChange,
    WorkflowRecord,
    new_workflow_id,
)

log = structlog.get_logger("ccd.scheduler")

INLINE_SCRIPT = "run.sh"  # the file an inline `run:` command is written to in the run dir


@dataclass(frozen=True, slots=True)
class Limits:
    """How much runs at once, and how retries and kills are paced."""

    max_jobs: int | None = None  # across every host and workflow; None: no global cap
    host_max_jobs: Mapping[str, int] = field(default_factory=dict)
    default_host_max_jobs: int = os.cpu_count() or 1
    retry_backoff_s: float = 1.0  # first retry's delay; doubles per attempt
    retry_backoff_max_s: float = 300.0
    kill_grace_s: float = 5.0  # SIGTERM, then SIGKILL after this long
    progress_interval_s: float = 1.0  # how often running jobs' logs are read


@dataclass(frozen=True, slots=True)
class JobEvent:
    """A committed change, as told to listeners (live views, the API's event stream)."""

    workflow_id: str
    job: str | None  # None: the workflow itself changed state
    state: str
    at: float
    reason: str | None = None
    progress: int | None = None


@dataclass(eq=False, slots=True)
class JobRun:
    """The scheduler's in-memory view of one job."""

    wf: WorkflowRun
    spec: JobSpec
    state: JobState
    waiting_on: int  # parents that have not succeeded yet
    children: list[JobRun] = field(default_factory=list)
    attempts: int = 0
    handle: Handle | None = None
    tail: LogTail | None = None
    progress: int | None = None
    kill_reason: str | None = None  # "timeout" or "cancelled" once we decided to kill it
    kill: asyncio.Future[None] | None = None  # resolved to ask the running attempt to die
    exit: ExitStatus | None = None

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(eq=False, slots=True)
class WorkflowRun:
    id: str
    name: str
    spec: WorkflowSpec | None
    fail_fast: bool
    jobs: dict[str, JobRun] = field(default_factory=dict)
    unfinished: int = 0
    state: WorkflowState = WorkflowState.RUNNING
    done: asyncio.Event = field(default_factory=asyncio.Event)


class Scheduler:
    """Runs workflows' jobs on executors; the store is its memory across restarts."""

    def __init__(
        self,
        store: Store,
        executors: Mapping[str, Executor],
        runs_root: Path,
        limits: Limits | None = None,
    ) -> None:
        self._store = store
        self._executors = executors
        self._runs_root = runs_root
        self.limits = limits or Limits()
        self.workflows: dict[str, WorkflowRun] = {}
        self._ready: dict[str, deque[JobRun]] = {}
        self._running: dict[str, int] = {}  # per host, slots taken (running or starting)
        self._running_total = 0
        self._tasks: dict[JobRun, asyncio.Task[None]] = {}  # every attempt's owner
        self._timers: set[asyncio.TimerHandle] = set()
        self._batch = Batch()
        self._after_commit: list[Callable[[], None]] = []
        self._flushing: asyncio.Task[None] | None = None
        self._progress_task: asyncio.Task[None] | None = None
        self._listeners: list[Callable[[JobEvent], None]] = []
        self._idle = asyncio.Event()
        self._idle.set()

    # -- public API -----------------------------------------------------------------------

    def subscribe(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every committed change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def submit(
        self, spec: WorkflowSpec, *, fail_fast: bool = False, request_id: str | None = None
    ) -> str:
        """Store a workflow (snapshotting its scripts) and start its root jobs."""
        if request_id is not None:
            existing = await self._store.find_request(request_id)
            if existing is not None:
                return existing
        wf_id = new_workflow_id()
        while wf_id in self.workflows:
            wf_id = new_workflow_id()
        snapshots = await asyncio.to_thread(self._snapshot_scripts, wf_id, spec)
        records = [_job_record(wf_id, job, snapshots.get(job.name)) for job in spec.jobs.values()]
        at = time.time()
        await self._store.put_workflow(
            WorkflowRecord(
                wf_id, spec.name, str(spec.source), str(spec.base_dir), WorkflowState.RUNNING,
                fail_fast, request_id, at, at,
            ),
            records,
            spec.edges(),
        )  # fmt: skip
        run = self._load_workflow(wf_id, spec.name, spec, fail_fast, records, spec.edges())
        log.info("workflow_submitted", workflow=wf_id, name=spec.name, jobs=len(run.jobs))
        self._start_roots(run)
        return wf_id

    async def wait(self, workflow_id: str) -> WorkflowState:
        run = self.workflows[workflow_id]
        await run.done.wait()
        return run.state

    async def run_until_idle(self) -> None:
        """Return once no job runs or waits to run and every change is committed."""
        await self._idle.wait()

    def cancel(self, workflow_id: str, jobs: Iterable[str] | None = None) -> None:
        """Cancel the named jobs (all unfinished ones if None); their descendants are skipped.

        Running jobs get SIGTERM to their process group, SIGKILL after the grace period."""
        run = self.workflows[workflow_id]
        targets = list(run.jobs.values()) if jobs is None else [run.jobs[n] for n in jobs]
        for job in targets:
            self._cancel_job(job)
        self._kick()

    async def close(self) -> None:
        """Stop watching (running jobs keep running), commit what is pending."""
        for timer in self._timers:
            timer.cancel()
        tasks = [*self._tasks.values(), *([self._progress_task] if self._progress_task else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._commit_pending()

    # -- loading --------------------------------------------------------------------------

    def _snapshot_scripts(self, wf_id: str, spec: WorkflowSpec) -> dict[str, Path]:
        """Copy each script once, at submit, so later edits do not change this run.

        Jobs sharing a script share its snapshot. Inline commands need no file: their text
        is stored with the job."""
        snap_dir = self._runs_root / wf_id / ".scripts"
        copies: dict[Path, Path] = {}
        result: dict[str, Path] = {}
        for job in spec.jobs.values():
            if job.script is None:
                continue
            if job.script not in copies:
                target = snap_dir / f"{len(copies)}" / job.script.name
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(job.script, target)
                copies[job.script] = target
            result[job.name] = copies[job.script]
        return result

    def _load_workflow(
        self,
        wf_id: str,
        name: str,
        spec: WorkflowSpec | None,
        fail_fast: bool,
        records: Iterable[JobRecord],
        edges: Iterable[tuple[str, str]],
    ) -> WorkflowRun:
        run = WorkflowRun(wf_id, name, spec, fail_fast)
        for rec in records:
            run.jobs[rec.name] = JobRun(run, _job_spec(rec), rec.state, 0, attempts=rec.attempts)
            run.unfinished += rec.state not in TERMINAL
        for parent_name, child_name in edges:
            parent, child = run.jobs[parent_name], run.jobs[child_name]
            parent.children.append(child)
            child.waiting_on += parent.state is not JobState.SUCCEEDED
        self.workflows[wf_id] = run
        if run.unfinished == 0:
            run.state = workflow_state([j.state for j in run.jobs.values()])
            run.done.set()
        return run

    def _start_roots(self, run: WorkflowRun) -> None:
        for job in run.jobs.values():
            if job.state is JobState.WAITING and job.waiting_on == 0:
                self._transition(job, JobState.READY)
                self._enqueue(job)
        self._kick()

    # -- state changes --------------------------------------------------------------------

    def _transition(
        self,
        job: JobRun,
        new: JobState,
        reason: str | None = None,
        *,
        exit: ExitStatus | None = None,
    ) -> None:
        """The one place a job changes state: checked, queued for commit, announced after."""
        old = job.state
        check_transition(job.name, old, new)
        job.state = new
        at = time.time()
        self._batch.transitions.append(
            Transition(
                job.wf.id, job.name, old, new, at, reason,
                attempts=job.attempts if new is JobState.RUNNING else None,
                exit_code=exit.code if exit else None,
                signal=exit.signal if exit else None,
            )
        )  # fmt: skip
        event = JobEvent(job.wf.id, job.name, new, at, reason)
        self._after_commit.append(lambda: self._announce(event))
        if new in TERMINAL:
            self._finish_one(job.wf)

    def _finish_one(self, run: WorkflowRun) -> None:
        run.unfinished -= 1
        if run.unfinished:
            return
        old, run.state = run.state, workflow_state([j.state for j in run.jobs.values()])
        at = time.time()
        self._batch.workflows.append(WorkflowChange(run.id, old, run.state, at))
        log.info("workflow_finished", workflow=run.id, state=run.state)
        event = JobEvent(run.id, None, run.state, at)
        self._after_commit.append(lambda: self._announce(event))
        self._after_commit.append(run.done.set)

    def _announce(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _cancel_job(self, job: JobRun, reason: str = "cancelled by user") -> None:
        if job.state in (JobState.WAITING, JobState.READY):
            self._transition(job, JobState.CANCELLED, reason)
            self._skip_descendants(job)
        elif job.state is JobState.RUNNING:
            self._request_kill(job, "cancelled")

    def _skip_descendants(self, job: JobRun) -> None:
        stack = list(job.children)
        while stack:
            child = stack.pop()
            if child.state is JobState.WAITING:
                self._transition(child, JobState.SKIPPED, f"ancestor '{job.name}' {job.state}")
                stack.extend(child.children)

    def _on_attempt_end(self, job: JobRun, status: ExitStatus) -> None:
        """Decide what an ended attempt means for the job and its descendants."""
        job.exit = status
        job.handle = None
        host = job.spec.host
        self._running[host] -= 1
        self._running_total -= 1
        self._batch.attempts.append(self._attempt_record(job, status))
        if job.kill_reason == "cancelled":
            self._transition(job, JobState.CANCELLED, "cancelled by user", exit=status)
            self._skip_descendants(job)
        elif status.ok:
            self._transition(job, JobState.SUCCEEDED, exit=status)
            self._release_children(job)
        elif job.attempts <= job.spec.retries:
            self._transition(job, JobState.READY, f"retry after {_describe(status)}", exit=status)
            self._retry_later(job)
        else:
            self._transition(job, JobState.FAILED, _describe(status), exit=status)
            self._skip_descendants(job)
            if job.wf.fail_fast:
                for other in job.wf.jobs.values():
                    self._cancel_job(other, f"fail-fast after '{job.name}' failed")
        self._kick()

    def _release_children(self, job: JobRun) -> None:
        for child in job.children:
            child.waiting_on -= 1
            if child.waiting_on == 0 and child.state is JobState.WAITING:
                self._transition(child, JobState.READY)
                self._enqueue(child)

    def _retry_later(self, job: JobRun) -> None:
        delay = min(
            self.limits.retry_backoff_s * 2 ** (job.attempts - 1), self.limits.retry_backoff_max_s
        )
        loop = asyncio.get_running_loop()

        def fire() -> None:
            self._timers.discard(timer)
            self._enqueue(job)
            self._kick()
            self._check_idle()

        timer = loop.call_later(delay, fire)
        self._timers.add(timer)

    # -- dispatch -------------------------------------------------------------------------

    def _enqueue(self, job: JobRun) -> None:
        self._ready.setdefault(job.spec.host, deque()).append(job)

    def _host_limit(self, host: str) -> int:
        return self.limits.host_max_jobs.get(host, self.limits.default_host_max_jobs)

    def _dispatch(self) -> None:
        """Start ready jobs while their host and the global limit have room."""
        global_cap = self.limits.max_jobs
        for host, queue in self._ready.items():
            limit = self._host_limit(host)
            while queue and self._running.get(host, 0) < limit:
                if global_cap is not None and self._running_total >= global_cap:
                    return
                job = queue.popleft()
                if job.state is JobState.READY:  # else cancelled while queued
                    self._start(job)

    def _start(self, job: JobRun) -> None:
        host = job.spec.host
        self._running[host] = self._running.get(host, 0) + 1
        self._running_total += 1
        job.attempts += 1
        job.kill_reason = None
        job.kill = asyncio.get_running_loop().create_future()
        job.progress = None
        self._transition(job, JobState.RUNNING, f"attempt {job.attempts}")
        launch = self._launch_for(job)
        self._batch.attempts.append(
            AttemptRecord(job.wf.id, job.name, job.attempts, host, str(launch.run_dir), time.time())
        )
        self._after_commit.append(lambda: self._spawn_attempt(job, launch))

    def _launch_for(self, job: JobRun) -> Launch:
        spec = job.spec
        run_dir = self._runs_root / job.wf.id / spec.name / str(job.attempts)
        script = spec.script if spec.script is not None else run_dir / INLINE_SCRIPT
        return Launch(
            job.wf.id, spec.name, job.attempts, run_dir, script, _argv(spec, script.name),
            spec.env, inline=spec.run,
        )  # fmt: skip

    def _spawn_attempt(self, job: JobRun, launch: Launch) -> None:
        task = asyncio.create_task(self._run_attempt(job, launch), name=f"{job.wf.id}/{job.name}")
        self._tasks[job] = task
        task.add_done_callback(lambda t: self._reap(job, t))
        self._ensure_progress_task()

    def _reap(self, job: JobRun, task: asyncio.Task[None]) -> None:
        if self._tasks.get(job) is task:
            del self._tasks[job]
        self._check_idle()
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("attempt_crashed", workflow=job.wf.id, job=job.name, exc_info=error)

    # -- one attempt ----------------------------------------------------------------------

    async def _run_attempt(self, job: JobRun, launch: Launch) -> None:
        executor = self._executors[job.spec.host]
        try:
            handle = await executor.start(launch)
        except Exception as exc:  # a job that cannot start is a failed job, not a crash
            log.warning("attempt_start_failed", workflow=job.wf.id, job=job.name, error=str(exc))
            self._on_attempt_end(job, ExitStatus(None, reason=f"could not start: {exc}"))
            return
        job.handle = handle
        job.tail = LogTail()
        self._batch.attempts.append(self._attempt_record(job, None))
        status = await self._supervise(job, executor, handle)
        await self._read_progress(job, executor, handle)
        if job.kill_reason is not None and status.reason is None:
            status = ExitStatus(status.code, status.signal, job.kill_reason)
        self._on_attempt_end(job, status)

    async def _supervise(self, job: JobRun, executor: Executor, handle: Handle) -> ExitStatus:
        """Wait for the attempt; on timeout or a kill request, SIGTERM its process group and
        SIGKILL it if it outlives the grace period."""
        waiter = asyncio.ensure_future(executor.wait(handle))
        try:
            assert job.kill is not None
            either: list[asyncio.Future[Any]] = [waiter, job.kill]
            await asyncio.wait(either, timeout=job.spec.timeout_s,
                               return_when=asyncio.FIRST_COMPLETED)  # fmt: skip
            if not waiter.done():
                if job.kill_reason is None:
                    job.kill_reason = "timeout"
                log.info("attempt_kill", workflow=job.wf.id, job=job.name, why=job.kill_reason)
                await executor.signal(handle, signal.SIGTERM)
                await asyncio.wait({waiter}, timeout=self.limits.kill_grace_s)
                if not waiter.done():
                    await executor.signal(handle, signal.SIGKILL)
            return await waiter
        finally:
            waiter.cancel()

    def _request_kill(self, job: JobRun, reason: str) -> None:
        if job.kill_reason is None:
            job.kill_reason = reason
        if job.kill is not None and not job.kill.done():
            job.kill.set_result(None)

    # -- progress -------------------------------------------------------------------------

    def _ensure_progress_task(self) -> None:
        if self._progress_task is None or self._progress_task.done():
            self._progress_task = asyncio.create_task(self._progress_loop())
            self._progress_task.add_done_callback(_surface_error)

    async def _progress_loop(self) -> None:
        """Read running jobs' new log bytes now and then; exits when nothing runs."""
        while self._tasks:
            await asyncio.sleep(self.limits.progress_interval_s)
            for job in [j for j in self._tasks if j.handle is not None]:
                assert job.handle is not None
                await self._read_progress(job, self._executors[job.spec.host], job.handle)

    async def _read_progress(self, job: JobRun, executor: Executor, handle: Handle) -> None:
        tail = job.tail
        if tail is None:
            return
        data = await executor.read_log(handle, tail.offset)
        marker = tail.feed(data)
        if marker is None or (marker.percent == job.progress and marker.message is None):
            return
        job.progress = marker.percent
        self._batch.progress.append(
            ProgressUpdate(
                job.wf.id, job.name, job.attempts, marker.percent, marker.message, tail.offset
            )
        )
        event = JobEvent(job.wf.id, job.name, job.state, time.time(), progress=marker.percent)
        self._after_commit.append(lambda: self._announce(event))
        self._kick()

    # -- commit ---------------------------------------------------------------------------

    def _kick(self) -> None:
        """Dispatch what can start, then commit this turn's changes (once per turn)."""
        self._dispatch()
        if self._flushing is None and (self._batch or self._after_commit):
            self._idle.clear()
            self._flushing = asyncio.create_task(self._flush())
            self._flushing.add_done_callback(_surface_error)

    async def _flush(self) -> None:
        try:
            while self._batch or self._after_commit:
                await self._commit_pending()
        finally:
            self._flushing = None
            self._check_idle()

    def _check_idle(self) -> None:
        if not (self._tasks or self._timers or self._batch or self._flushing):
            self._idle.set()

    async def _commit_pending(self) -> None:
        batch, actions = self._batch, self._after_commit
        self._batch, self._after_commit = Batch(), []
        await asyncio.shield(self._store.apply(batch))
        for action in actions:
            action()
        self._dispatch()

    def _attempt_record(self, job: JobRun, status: ExitStatus | None) -> AttemptRecord:
        run_dir = self._runs_root / job.wf.id / job.name / str(job.attempts)
        pid = job.handle.pid if job.handle else None
        return AttemptRecord(
            job.wf.id, job.name, job.attempts, job.spec.host, str(run_dir), time.time(), pid,
            ended_at=time.time() if status else None,
            exit_code=status.code if status else None,
            signal=status.signal if status else None,
            reason=status.reason if status else None,
            log_offset=job.tail.offset if job.tail else 0,
        )  # fmt: skip


def _surface_error(task: asyncio.Task[None]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.error("task_crashed", task=task.get_name(), exc_info=task.exception())


def _describe(status: ExitStatus) -> str:
    if status.reason is not None:
        return status.reason
    if status.signal is not None:
        return f"killed by signal {status.signal}"
    return f"exit code {status.code}"


def _argv(spec: JobSpec, script_name: str) -> tuple[str, ...]:
    """The job's command line inside its run dir. ``./`` keeps a name like ``-x.sh`` from
    being read as an option."""
    path = f"./{script_name}"
    if spec.kind == "py":
        return (spec.python, path, *spec.args)
    if spec.kind == "ipynb":
        return (sys.executable, "-m", "ccd.notebook", path, *spec.args)
    shell = "bash" if spec.kind == "sh" and _wants_bash(spec.script) else "sh"
    return (shell, path, *spec.args)


def _wants_bash(script: Path | None) -> bool:
    if script is None:
        return False
    with contextlib.suppress(OSError), script.open("rb") as f:
        return b"bash" in f.readline()
    return False


def _job_record(wf_id: str, job: JobSpec, snapshot: Path | None) -> JobRecord:
    spec = {
        "kind": job.kind,
        "run": job.run,
        "script": str(snapshot) if snapshot else None,
        "args": list(job.args),
        "env": dict(job.env),
        "needs": list(job.needs),
        "retries": job.retries,
        "timeout_s": job.timeout_s,
        "python": job.python,
    }
    return JobRecord(wf_id, job.name, JobState.WAITING, job.host, spec)


def _job_spec(rec: JobRecord) -> JobSpec:
    s = rec.spec
    return JobSpec(
        name=rec.name, kind=s["kind"], run=s["run"],
        script=Path(s["script"]) if s["script"] else None, args=tuple(s["args"]),
        env=s["env"], needs=tuple(s["needs"]), host=rec.host, retries=s["retries"],
        timeout_s=s["timeout_s"], python=s["python"],
    )  # fmt: skip
