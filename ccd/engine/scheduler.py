"""The event-driven scheduler: ready-set, dispatch under limits, retries, cancel, recovery.

Nothing here polls the job table. Each job keeps a counter of parents that have not yet
succeeded; a success decrements its children's counters and a counter reaching zero makes the
child ready (O(edges) over a whole run). Every state change is made in memory, queued in the
current `Batch`, and the actions it implies (starting a process, waking a waiter) run only
after the batch has been committed: state is written before it is acted on, and everything
that changed in one turn of the event loop shares one transaction.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from pathlib import Path

import structlog

from ccd.engine import accounting
from ccd.engine.attempts import Attempt, AttemptRunner
from ccd.engine.commit import Committer
from ccd.engine.dynamic import DynamicJobs
from ccd.engine.launch import (
    job_spec,
    launch_for,
    new_job,
    snapshot_files,
    spec_of_records,
    with_snapshot,
)
from ccd.engine.progress import LogTail
from ccd.engine.runs import JobEvent, JobRun, WorkflowRun
from ccd.engine.store import (
    AttemptRecord,
    JobNote,
    JobRecord,
    ProgressUpdate,
    Store,
    Transition,
    UsageRecord,
    WorkflowChange,
    WorkflowRecord,
    new_workflow_id,
)
from ccd.errors import Conflict, NotFound
from ccd.executors.base import Executor, Handle, ReportsUsage
from ccd.memory import gc_paused
from ccd.models import (
    IN_FLIGHT,
    RETRYABLE,
    TERMINAL,
    ExitStatus,
    JobState,
    Limits,
    Progress,
    WorkflowState,
    check_transition,
    failure_class,
    workflow_state,
)
from ccd.spec import JobSpec, WorkflowSpec
from ccd.usage import Request, Usage

log = structlog.get_logger("ccd.scheduler")

NEVER_STARTED = "never started (daemon restarted before launch)"
# A running job's reason once it has been asked to stop: a restarted daemon asks again.
CANCEL_REQUESTED = "cancel requested"

# A host without max_jobs runs this many of its jobs at once.
DEFAULT_HOST_MAX_JOBS = os.cpu_count() or 1


class Scheduler(DynamicJobs):
    """Runs workflows' jobs on executors; the store is its memory across restarts."""

    def __init__(
        self,
        store: Store,
        executors: Mapping[str, Executor],
        runs_root: Path,
        limits: Limits | None = None,
        *,
        host_max_jobs: Mapping[str, int] | None = None,
        batch_hosts: Iterable[str] = (),
    ) -> None:
        self._store = store
        self._executors = executors
        # Hosts whose jobs queue in a batch system first: their attempts start SUBMITTED.
        self.batch_hosts = set(batch_hosts)
        self._runs_root = runs_root
        self.limits = limits or Limits()
        self.host_max_jobs = dict(host_max_jobs or {})  # hosts without: DEFAULT_HOST_MAX_JOBS
        self._runner = AttemptRunner(
            executors,
            kill_grace_s=self.limits.kill_grace_s,
            progress_interval_s=self.limits.progress_interval_s,
        )
        self.workflows: dict[str, WorkflowRun] = {}
        self._ready: dict[str, deque[JobRun]] = {}
        self._running: dict[str, int] = {}  # per host, slots taken (running or starting)
        self._running_total = 0
        self._tasks: dict[JobRun, asyncio.Task[None]] = {}  # every attempt's owner
        self._timers: set[asyncio.TimerHandle] = set()
        self._commit = Committer(store, self._after_commit)
        self._listeners: list[Callable[[JobEvent], None]] = []
        self.adopt(executors.values())

    # -- public API -----------------------------------------------------------------------

    def subscribe(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every committed change; returns an unsubscribe function."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    async def submit(
        self, spec: WorkflowSpec, *, fail_fast: bool = False, request_id: str | None = None
    ) -> str:
        """Store a workflow (snapshotting its scripts) and start its root jobs.

        Idempotent on ``request_id``: a repeat returns the first submission's id."""
        if request_id is not None:
            existing = await self._store.find_request(request_id)
            if existing is not None:
                return existing
        wf_id = new_workflow_id()
        while wf_id in self.workflows:
            wf_id = new_workflow_id()
        snapshots = await asyncio.to_thread(snapshot_files, self._runs_root / wf_id, spec)
        # The specs as parsed (with snapshot paths), not rebuilt from the rows stored.
        jobs = [with_snapshot(job, snapshots.get(job.name)) for job in spec.jobs.values()]
        at = time.time()
        await self._store.put_workflow(
            WorkflowRecord(
                id=wf_id,
                name=spec.name,
                source=str(spec.source),
                base_dir=str(spec.base_dir),
                state=WorkflowState.RUNNING,
                fail_fast=fail_fast,
                request_id=request_id,
                created_at=at,
                updated_at=at,
            ),
            (new_job(job) for job in jobs),  # each row made as it is written
            spec.iter_edges(),
            [notifier.to_json() for notifier in spec.notify],
        )
        with gc_paused():
            run = self._load(wf_id, spec, fail_fast, [(job, JobState.WAITING, 0) for job in jobs])
        log.info("workflow_submitted", workflow=wf_id, name=spec.name, jobs=len(run.jobs))
        self._make_ready(run.jobs.values())
        self._kick()
        return wf_id

    async def wait(self, workflow_id: str) -> WorkflowState:
        """Return the workflow's state once it has finished."""
        run = self.workflows.get(workflow_id)
        if run is None:  # finished before (and forgotten): the store knows
            return (await self._store.get_workflow(workflow_id)).state
        await run.done.wait()
        return run.state

    def adopt(self, executors: Iterable[Executor]) -> None:
        """Listen to executors' news (queued jobs' states, host health, late usage)."""
        for executor in executors:
            executor.listen(self._on_executor_state, self._kick)
            if isinstance(executor, ReportsUsage):
                executor.listen_usage(self._on_usage)

    def running_count(self) -> int:
        return self._running_total

    def set_limits(self, limits: Limits) -> None:
        self.limits = limits
        self._runner.set_pacing(limits.kill_grace_s, limits.progress_interval_s)
        self._kick()

    async def committed(self) -> None:
        """Return once every change made so far (late usage figures too) is committed."""
        await self._commit.settled.wait()

    async def recover(self) -> None:
        """Load every unfinished workflow from the store; re-attach to running attempts."""
        for wf in await self._store.list_workflows(unfinished_only=True):
            records = await self._store.list_jobs(wf.id)
            run = self._load_records(wf, records)
            await self._load_outputs(run)
            cancelling = {r.name for r in records if r.reason == CANCEL_REQUESTED}
            latest: dict[str, AttemptRecord] = {}
            for a in await self._store.list_attempts(wf.id):  # ordered by attempt
                latest[a.job] = a
                run.jobs[a.job].budget_start += a.reason == NEVER_STARTED
            for job in run.jobs.values():
                if job.state in IN_FLIGHT:
                    self._resume(job, latest.get(job.name))
                    if job.name in cancelling and job.attempt is not None:
                        job.attempt.request_kill("cancelled")
                elif job.state is JobState.READY:
                    self._enqueue(job)
            self._make_ready(run.jobs.values())
            log.info("workflow_recovered", workflow=wf.id, unfinished=run.unfinished)
        self._kick()

    def cancel(self, workflow_id: str, jobs: Iterable[str] | None = None) -> list[str]:
        """Cancel the named jobs (all unfinished ones if None); their descendants are skipped.

        Running jobs get SIGTERM to their process group, SIGKILL after the grace period.
        Returns the names of the jobs that were not already finished."""
        run = self._get(workflow_id)
        targets = self._named(run, jobs)
        touched = [job.name for job in targets if job.state not in TERMINAL]
        for job in targets:
            self._cancel_job(job, "cancelled by user")
        self._kick()
        return touched

    async def retry(self, workflow_id: str, jobs: Iterable[str] | None = None) -> list[str]:
        """Run failed, cancelled or skipped jobs again (all of them if None), with their
        descendants that did not succeed. Returns the names of the jobs reset."""
        run = self.workflows.get(workflow_id) or await self._load_stored(
            await self._store.get_workflow(workflow_id)
        )
        targets = [j for j in self._named(run, jobs) if j.state in RETRYABLE]
        if jobs is not None and len(targets) != len(set(jobs)):
            bad = sorted(set(jobs) - {j.name for j in targets})
            raise Conflict(
                f"cannot retry {', '.join(bad)}: only failed, cancelled or "
                "skipped jobs can be retried"
            )
        reset = self._with_descendants(targets)
        for job in reset:
            self._transition(job, JobState.WAITING, "retry requested")
            job.budget_start = job.attempts
        for job in reset:
            job.waiting_on = sum(p.state is not JobState.SUCCEEDED for p in job.parents)
        self._make_ready(reset)
        self._kick()
        return [j.name for j in reset]

    async def delete(self, workflow_id: str) -> None:
        """Forget a finished workflow: its rows and its run directories."""
        run = self.workflows.get(workflow_id)
        if run is not None and run.unfinished:
            raise Conflict(f"workflow '{workflow_id}' is still running: cancel it first")
        await self._store.delete_workflow(workflow_id)
        self.workflows.pop(workflow_id, None)
        await asyncio.to_thread(shutil.rmtree, self._runs_root / workflow_id, True)

    async def close(self) -> None:
        """Stop watching (running jobs keep running), commit what is pending."""
        for timer in self._timers:
            timer.cancel()
        tasks = list(self._tasks.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._runner.close()
        await self._commit.drain()

    # -- loading --------------------------------------------------------------------------

    def _load(
        self,
        wf_id: str,
        spec: WorkflowSpec,
        fail_fast: bool,
        jobs: Iterable[tuple[JobSpec, JobState, int]],
    ) -> WorkflowRun:
        """Build the in-memory graph from (spec, state, attempts made) of every job."""
        run = WorkflowRun(wf_id, spec, fail_fast)
        for job_spec_, state, attempts in jobs:
            run.jobs[job_spec_.name] = JobRun(run, job_spec_, state, attempts=attempts)
            run.unfinished += state not in TERMINAL
        for job in run.jobs.values():
            for parent_name in job.spec.needs:
                parent = run.jobs[parent_name]
                parent.children.append(job)
                job.parents.append(parent)
                job.waiting_on += parent.state is not JobState.SUCCEEDED
        self._link_members(run)
        self.workflows[wf_id] = run
        if run.unfinished == 0:
            run.state = workflow_state([j.state for j in run.jobs.values()])
            run.done.set()
        return run

    async def _load_stored(self, wf: WorkflowRecord) -> WorkflowRun:
        run = self._load_records(wf, await self._store.list_jobs(wf.id))
        await self._load_outputs(run)
        return run

    async def _load_stored_id(self, workflow_id: str) -> WorkflowRun:
        return await self._load_stored(await self._store.get_workflow(workflow_id))

    def _load_records(self, wf: WorkflowRecord, records: list[JobRecord]) -> WorkflowRun:
        jobs = [(job_spec(rec), rec.state, rec.attempts) for rec in records]
        return self._load(wf.id, spec_of_records(wf, records), wf.fail_fast, jobs)

    async def stored_spec(self, workflow_id: str) -> WorkflowSpec:
        """The spec of a workflow as stored (for one not loaded in memory)."""
        wf = await self._store.get_workflow(workflow_id)
        return spec_of_records(wf, await self._store.list_jobs(workflow_id))

    def _get(self, workflow_id: str) -> WorkflowRun:
        try:
            return self.workflows[workflow_id]
        except KeyError:
            raise NotFound(f"no running workflow '{workflow_id}'") from None

    @staticmethod
    def _named(run: WorkflowRun, names: Iterable[str] | None) -> list[JobRun]:
        if names is None:
            return list(run.jobs.values())
        missing = sorted(set(names) - set(run.jobs))
        if missing:
            raise NotFound(f"workflow '{run.id}' has no job {', '.join(map(repr, missing))}")
        return [run.jobs[n] for n in dict.fromkeys(names)]

    @staticmethod
    def _with_descendants(jobs: list[JobRun]) -> list[JobRun]:
        seen: dict[JobRun, None] = dict.fromkeys(jobs)
        stack = list(jobs)
        while stack:
            for child in stack.pop().children:
                if child not in seen and child.state in RETRYABLE:
                    seen[child] = None
                    stack.append(child)
        return list(seen)

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
        at = _ended_at(exit)
        self._commit.batch.transitions.append(
            Transition(
                job.wf.id,
                job.name,
                old,
                new,
                at,
                reason,
                attempts=job.attempts if old is JobState.READY and new in IN_FLIGHT else None,
                exit_code=exit.code if exit else None,
                signal=exit.signal if exit else None,
            )
        )
        event = JobEvent(job.wf.id, job.name, new, at, reason)
        self._commit.after(lambda: self._announce(event))
        if old in TERMINAL:
            self._reopen(job.wf)
        if new in TERMINAL:
            self._finish_one(job.wf)

    def _reopen(self, run: WorkflowRun) -> None:
        run.unfinished += 1
        if run.state is not WorkflowState.RUNNING:
            self._set_workflow_state(run, WorkflowState.RUNNING, "retry requested")
            run.done = asyncio.Event()

    def _finish_one(self, run: WorkflowRun) -> None:
        run.unfinished -= 1
        if run.unfinished == 0:
            self._set_workflow_state(run, workflow_state([j.state for j in run.jobs.values()]))
            self._commit.after(run.done.set)
            self._commit.after(lambda: self._forget(run))
            log.info("workflow_finished", workflow=run.id, state=run.state)

    def _forget(self, run: WorkflowRun) -> None:
        """Drop a finished workflow from memory: the store has all of it, and a daemon that
        runs for months must not grow with every workflow it ever ran."""
        if run.unfinished == 0 and self.workflows.get(run.id) is run:
            del self.workflows[run.id]

    def _set_workflow_state(
        self, run: WorkflowRun, new: WorkflowState, reason: str | None = None
    ) -> None:
        old, run.state, at = run.state, new, time.time()
        self._commit.batch.workflows.append(WorkflowChange(run.id, old, new, at, reason))
        event = JobEvent(run.id, None, new, at, reason)
        self._commit.after(lambda: self._announce(event))

    def _announce(self, event: JobEvent) -> None:
        for listener in list(self._listeners):
            listener(event)

    def _make_ready(self, jobs: Iterable[JobRun]) -> None:
        for job in jobs:
            if job.state is JobState.WAITING and job.waiting_on == 0 and self._prepare(job):
                self._transition(job, JobState.READY)
                self._enqueue(job)

    def _cancel_job(self, job: JobRun, reason: str) -> None:
        if job.state in (JobState.WAITING, JobState.READY):
            self._transition(job, JobState.CANCELLED, reason)
            self._skip_descendants(job)
        elif job.state in IN_FLIGHT and job.attempt is not None:
            if job.attempt.kill_reason is None:
                self._note(job, CANCEL_REQUESTED)  # committed, so a restart cannot forget it
                job.cancel_reason = reason
            job.attempt.request_kill("cancelled")

    def _skip_descendants(self, job: JobRun) -> None:
        stack = list(job.children)
        while stack:
            child = stack.pop()
            if child.state is JobState.WAITING:
                self._transition(child, JobState.SKIPPED, f"ancestor '{job.name}' {job.state}")
                stack.extend(child.children)

    def _on_attempt_end(self, job: JobRun, status: ExitStatus) -> None:
        """Decide what an ended attempt means for the job and its descendants."""
        attempt, job.attempt = job.attempt, None
        self._release_slot(job)
        status, emitted = self._take_results(job, attempt, status)
        self._commit.batch.attempts.append(self._attempt_record(job, attempt, status))
        self._record_usage(job, attempt, status)
        cls = failure_class(status)
        if cls == "cancelled":  # by us, or by someone else (e.g. scancel)
            ours = attempt is not None and attempt.kill_reason == "cancelled"
            why = (job.cancel_reason or "cancelled by user") if ours else "cancelled outside ccd"
            job.cancel_reason = None
            self._transition(job, JobState.CANCELLED, why, exit=status)
            self._skip_descendants(job)
        elif status.ok:
            self._grow(job.wf, emitted, f"added by '{job.name}'")  # first: the workflow goes on
            self._transition(job, JobState.SUCCEEDED, exit=status)
            self._release_children(job)
        elif cls in job.spec.retry_on and job.attempts - job.budget_start <= job.spec.retries:
            self._transition(job, JobState.READY, f"retry after {status.describe()}", exit=status)
            self._retry_later(job)
        else:
            self._transition(job, JobState.FAILED, status.describe(), exit=status)
            self._skip_descendants(job)
            if job.wf.fail_fast:
                for other in job.wf.jobs.values():
                    self._cancel_job(other, f"fail-fast after '{job.name}' failed")
        self._kick()

    def _release_children(self, job: JobRun) -> None:
        for child in job.children:
            child.waiting_on -= 1
        self._make_ready(job.children)

    def _retry_later(self, job: JobRun) -> None:
        exponent = min(job.attempts - job.budget_start - 1, 64)  # a float takes 2**64, not 2**1024
        delay = min(self.limits.retry_backoff_s * 2**exponent, self.limits.retry_backoff_max_s)

        def fire() -> None:
            self._timers.discard(timer)
            self._enqueue(job)
            self._kick()

        timer = asyncio.get_running_loop().call_later(delay, fire)
        self._timers.add(timer)

    # -- dispatch -------------------------------------------------------------------------

    def _enqueue(self, job: JobRun) -> None:
        self._ready.setdefault(job.spec.host, deque()).append(job)

    def _host_limit(self, host: str) -> int:
        return self.host_max_jobs.get(host, DEFAULT_HOST_MAX_JOBS)

    def _take_slot(self, job: JobRun) -> None:
        self._running[job.spec.host] = self._running.get(job.spec.host, 0) + 1
        self._running_total += 1

    def _release_slot(self, job: JobRun) -> None:
        self._running[job.spec.host] -= 1
        self._running_total -= 1

    def _dispatch(self) -> None:
        """Start ready jobs while their host and the global limit have room."""
        global_cap = self.limits.max_jobs
        for host, queue in self._ready.items():
            executor = self._executors.get(host)  # None: not in the config (any more)
            if queue and (executor is None or executor.health().state != "ok"):
                continue  # its jobs wait (READY) until the host is back
            limit = self._host_limit(host)
            while queue and self._running.get(host, 0) < limit:
                if global_cap is not None and self._running_total >= global_cap:
                    return
                job = queue.popleft()
                if job.state is JobState.READY and job.attempt is None:  # else cancelled
                    self._start(job)

    def _start(self, job: JobRun) -> None:
        self._take_slot(job)
        job.attempts += 1
        job.progress = None
        first = JobState.SUBMITTED if job.spec.host in self.batch_hosts else JobState.RUNNING
        self._transition(job, first, f"attempt {job.attempts}")
        attempt = self._new_attempt(job, queued=first is JobState.SUBMITTED)
        self._commit.batch.attempts.append(self._attempt_record(job, attempt, None))
        self._commit.after(lambda: self._own(job, self._runner.run(attempt)))

    def _resume(self, job: JobRun, record: AttemptRecord | None) -> None:
        """Watch an attempt that was running when the previous daemon stopped."""
        self._take_slot(job)
        attempt = self._new_attempt(job, queued=job.state is JobState.SUBMITTED)
        if record is not None:
            attempt.tail = LogTail(record.log_offset)
            attempt.started_at = record.started_at
        self._own(job, self._runner.resume(attempt))

    def _new_attempt(self, job: JobRun, *, queued: bool) -> Attempt:
        launch = launch_for(
            job.spec,
            job.wf.id,
            job.attempts,
            self._runs_root,
            retries_so_far=max(0, job.attempts - job.budget_start - 1),
            oom_mem_kib=job.oom_mem_kib,
        )
        attempt = Attempt(
            launch,
            job.spec.host,
            job.spec.timeout_s,
            lambda m, off: self._on_progress(job, m, off),
            queued=queued,
        )
        job.attempt = attempt
        return attempt

    def _own(self, job: JobRun, outcome: Awaitable[ExitStatus | None]) -> None:
        """Run an attempt as a task owned by the job; its end feeds `_on_attempt_end`."""

        async def follow() -> None:
            status = await outcome
            if status is None:
                self._relaunch_never_started(job)
            else:
                self._on_attempt_end(job, status)

        task = asyncio.create_task(follow(), name=f"{job.wf.id}/{job.name}")
        self._tasks[job] = task
        task.add_done_callback(lambda t: self._reap(job, t))

    def _relaunch_never_started(self, job: JobRun) -> None:
        attempt, job.attempt = job.attempt, None
        self._release_slot(job)
        self._commit.batch.attempts.append(
            self._attempt_record(job, attempt, ExitStatus(None, reason=NEVER_STARTED))
        )
        job.budget_start += 1
        self._transition(job, JobState.READY, NEVER_STARTED)
        self._enqueue(job)
        self._kick()

    def _reap(self, job: JobRun, task: asyncio.Task[None]) -> None:
        if self._tasks.get(job) is task:
            del self._tasks[job]
        if not task.cancelled() and (error := task.exception()) is not None:
            log.error("attempt_crashed", workflow=job.wf.id, job=job.name, exc_info=error)
            if job.attempt is not None and job.state in IN_FLIGHT:
                # Its end was never decided: a failure, not a job running forever.
                self._on_attempt_end(job, ExitStatus(None, reason=f"ccd error: {error!r}"))

    def _on_executor_state(self, handle: Handle, state: str, reason: str | None) -> None:
        """A batch system's word on a queued attempt: still pending (and why), or running."""
        run = self.workflows.get(handle.workflow_id)
        job = run.jobs.get(handle.job) if run else None
        if run is None or job is None or job.attempts != handle.attempt:
            return  # an old attempt's late news
        if job.state not in IN_FLIGHT:
            return
        if state == "running" and job.state is JobState.SUBMITTED:
            self._transition(job, JobState.RUNNING, reason)
            if job.attempt is not None:
                job.attempt.mark_running()
        elif state == "pending" and reason and reason != job.pending_reason:
            job.pending_reason = reason
            if job.attempt is None or job.attempt.kill_reason is None:  # else: cancel requested
                self._note(job, reason)
        self._kick()

    def _record_usage(self, job: JobRun, attempt: Attempt | None, status: ExitStatus) -> None:
        """What the ended attempt used (as far as known now), and, if it ran out of memory,
        how much it had: its retry escalates from there."""
        launch = attempt.launch if attempt is not None else None
        record = accounting.record_of(
            job.wf.id, job.name, job.attempts, status, launch, job.spec.timeout_s
        )
        if record is not None:
            self._commit.batch.usage.append(record)
        job.oom_mem_kib = accounting.oom_mem_kib(status, record) or job.oom_mem_kib

    def _on_usage(self, handle: Handle, usage: Usage, request: Request | None) -> None:
        """A batch system's late word on what an ended attempt used and was given."""
        self._commit.batch.usage.append(
            UsageRecord(handle.workflow_id, handle.job, handle.attempt, usage, request)
        )
        run = self.workflows.get(handle.workflow_id)
        job = run.jobs.get(handle.job) if run else None
        if job is not None and job.oom_mem_kib is not None and job.attempts == handle.attempt:
            known = max(usage.max_rss_bytes or 0, (request.mem_bytes or 0) if request else 0)
            job.oom_mem_kib = max(job.oom_mem_kib, -(-known // 1024))
        self._commit.schedule()

    def _note(self, job: JobRun, reason: str) -> None:
        """Record why a job is in its state, without changing it."""
        at = time.time()
        self._commit.batch.notes.append(JobNote(job.wf.id, job.name, job.state, reason, at))
        event = JobEvent(job.wf.id, job.name, job.state, at, reason)
        self._commit.after(lambda: self._announce(event))

    def _on_progress(self, job: JobRun, marker: Progress, offset: int) -> None:
        job.progress = marker.percent
        self._commit.batch.progress.append(
            ProgressUpdate(
                job.wf.id, job.name, job.attempts, marker.percent, marker.message, offset
            )
        )
        event = JobEvent(job.wf.id, job.name, job.state, time.time(), progress=marker.percent)
        self._commit.after(lambda: self._announce(event))
        self._kick()

    # -- commit ---------------------------------------------------------------------------

    def _kick(self) -> None:
        """Dispatch what can start, then commit this turn's changes (once per turn)."""
        self._dispatch()
        self._commit.schedule()

    def _after_commit(self) -> None:
        self._dispatch()

    def _attempt_record(
        self, job: JobRun, attempt: Attempt | None, status: ExitStatus | None
    ) -> AttemptRecord:
        handle = attempt.handle if attempt else None
        now = _ended_at(status)
        return AttemptRecord(
            job.wf.id,
            job.name,
            job.attempts,
            job.spec.host,
            str(attempt.launch.run_dir) if attempt else "",
            attempt.started_at if attempt else now,
            pid=handle.pid if handle else None,
            ended_at=now if status else None,
            exit_code=status.code if status else None,
            signal=status.signal if status else None,
            reason=status.reason if status else None,
            log_offset=attempt.tail.resume_offset if attempt else 0,
        )


def _ended_at(status: ExitStatus | None) -> float:
    """When an attempt ended, as its status says (read from a record after a restart), else
    now: the moment we learn of it."""
    return status.ended_at if status is not None and status.ended_at is not None else time.time()
