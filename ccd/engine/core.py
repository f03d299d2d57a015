"""The engine assembled: store + executors + scheduler over one state directory.

`ccctl run` uses it in-process; the daemon wraps the same object in an API.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ccd import paths
from ccd.engine import accounting, export, reads
from ccd.engine.notify import Notifier, Occasion
from ccd.engine.runs import JobEvent, WorkflowRun
from ccd.engine.scheduler import Scheduler
from ccd.engine.store import (
    AttemptRecord,
    EventRecord,
    JobRecord,
    Store,
    UsageRecord,
    WorkflowRecord,
)
from ccd.errors import Conflict, NotFound, Problem, SpecError
from ccd.executors.base import Executor, Handle, HostHealth, ReportsUsage, backend_class
from ccd.models import JobState, Limits, WorkflowState
from ccd.spec import LOCAL_HOST as LOCAL
from ccd.spec import HostSpec, JobSpec, WorkflowSpec, dag, parse
from ccd.spec.hosts import SlurmOptions
from ccd.spec.notify import JOB_FAILED, WORKFLOW_ENDS, NotifySpec, spec_of_json

# How long `ccctl run` waits, after the end, for a cluster's accounting of its last jobs.
USAGE_SETTLE_S = 10.0


@dataclass(frozen=True, slots=True)
class JobStatus:
    name: str
    state: JobState
    host: str
    attempts: int
    exit_code: int | None
    signal: int | None
    reason: str | None
    progress: int | None
    message: str | None
    started_at: float | None
    ended_at: float | None
    outputs: Mapping[str, str] = dataclasses.field(default_factory=dict)
    usage: UsageRecord | None = None  # of its latest attempt

    @property
    def duration_s(self) -> float | None:
        if self.started_at is None or self.ended_at is None:
            return None
        return max(0.0, self.ended_at - self.started_at)


@dataclass(frozen=True, slots=True)
class WorkflowStatus:
    id: str
    name: str
    state: str
    created_at: float
    updated_at: float
    jobs: list[JobStatus]
    hosts: dict[str, HostHealth]  # of the hosts its jobs run on

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` shape of a workflow's status."""
        return {
            "workflow": {"id": self.id, "name": self.name, "state": self.state},
            "hosts": {n: {"state": h.state, "reason": h.reason} for n, h in self.hosts.items()},
            "jobs": [
                {
                    "name": j.name,
                    "state": j.state.value,
                    "exit_code": j.exit_code,
                    "signal": j.signal,
                    "reason": j.reason,
                    "attempts": j.attempts,
                    "progress": j.progress,
                    "host": j.host,
                    "duration_s": j.duration_s,
                    "outputs": dict(j.outputs),
                    **accounting.usage_json(j.usage),
                }
                for j in self.jobs
            ],
        }


@dataclass(frozen=True, slots=True)
class WorkflowSnapshot:
    """A workflow as of one event id (see `ccd.engine.reads.Snapshot`)."""

    last_event_id: int
    workflow: WorkflowRecord
    jobs: list[JobStatus]
    edges: list[tuple[str, str]]


class Engine:
    """The one way in for the API and the CLI: owns the store, the executors and the
    scheduler, and answers every request they make. (`store` and `scheduler` stay public for
    tests and benchmarks, which look underneath; callers do not.)"""

    def __init__(
        self,
        store: Store,
        scheduler: Scheduler,
        executors: dict[str, Executor],
        hosts: Mapping[str, HostSpec],
        notify: Sequence[NotifySpec] = (),
    ) -> None:
        self.store = store
        self.scheduler = scheduler
        self._executors = executors
        self.hosts = dict(hosts)
        self.notifier = Notifier(notify, self._notifiers_of, self._status_json)
        scheduler.subscribe(self._maybe_notify)

    @classmethod
    async def open(
        cls,
        state_dir: Path,
        hosts: Mapping[str, HostSpec],
        limits: Limits | None = None,
        *,
        notify: Sequence[NotifySpec] = (),
    ) -> Engine:
        """The engine over ``state_dir``; ``notify``: notifiers for every workflow (the
        daemon's config), besides each workflow's own."""
        paths.prepare_state_dir(state_dir)
        store = await Store.open(state_dir / paths.DB_NAME)
        executors = make_executors(hosts)
        scheduler = Scheduler(
            store,
            executors,
            state_dir / paths.RUNS_NAME,
            limits or Limits(),
            host_max_jobs=_host_max_jobs(hosts),
            batch_hosts=_batch_hosts(hosts),
        )
        engine = cls(store, scheduler, executors, hosts, notify)
        scheduler.parse_fragment = engine.parse_fragment
        return engine

    def reload(
        self,
        hosts: Mapping[str, HostSpec],
        limits: Limits,
        notify: Sequence[NotifySpec] | None = None,
    ) -> None:
        """Apply a new config: new hosts become usable, limits apply from the next dispatch,
        notifiers from the next notification. Hosts in use are kept (their jobs are
        running)."""
        if notify is not None:
            self.notifier.defaults = tuple(notify)
        new = {name: host for name, host in hosts.items() if name not in self._executors}
        added = make_executors(new, self._executors)
        self._executors.update(added)
        self.scheduler.adopt(added.values())
        self.hosts.update(hosts)
        self.scheduler.batch_hosts |= _batch_hosts(hosts)
        self.scheduler.host_max_jobs = _host_max_jobs(self.hosts)
        self.scheduler.set_limits(limits)

    async def parse(self, text: str, source: Path, base_dir: Path) -> WorkflowSpec:
        """Validate a workflow's YAML against this engine's hosts (off the event loop:
        a 100,000-job file takes seconds). Its jobs may run only on those hosts: a host the
        file defines for itself has no executor here, nor one after a restart."""
        spec = await asyncio.to_thread(
            parse, text, source=source, base_dir=base_dir, extra_hosts=self.hosts
        )
        problems = self._foreign_hosts(spec)
        if problems:
            raise SpecError(problems)
        return spec

    def parse_fragment(
        self, text: str, source: Path, base_dir: Path, existing: Mapping[str, JobSpec]
    ) -> WorkflowSpec:
        """Validate jobs to add to a workflow whose jobs are ``existing`` (synchronous:
        fragments are small, and a job's are read as it ends)."""
        spec = parse(
            text, source=source, base_dir=base_dir, extra_hosts=self.hosts, existing=existing
        )
        problems = self._foreign_hosts(spec)
        if problems:
            raise SpecError(problems)
        return spec

    async def add_jobs(
        self, workflow_id: str, text: str, source: Path, base_dir: Path
    ) -> dict[str, list[str]]:
        """Add a fragment of jobs (ccd's format) to a workflow, checked as a whole against
        it: ``{"added": [...], "existing": [...]}`` (the latter: there already, the same)."""
        existing = await self.scheduler.job_specs(workflow_id)
        spec = await asyncio.to_thread(self.parse_fragment, text, source, base_dir, existing)
        return await self.scheduler.add_jobs(workflow_id, spec)

    async def export_yaml(self, workflow_id: str) -> str:
        return await export.as_yaml(self.store, workflow_id, self.hosts)

    async def export_json(self, workflow_id: str) -> dict[str, Any]:
        return await export.as_json(self.store, workflow_id)

    def _foreign_hosts(self, spec: WorkflowSpec) -> list[Problem]:
        """A problem for the first job on each host the file defines unlike this engine."""
        problems: dict[str, Problem] = {}
        ours = ", ".join(sorted(self.hosts))
        for job in spec.jobs.values():
            if job.host in problems or self.hosts.get(job.host) == spec.hosts[job.host]:
                continue
            problems[job.host] = Problem(
                str(spec.source),
                job.line,
                f"host '{job.host}' is defined in the workflow file; the daemon runs jobs only"
                f" on the hosts of its config ({ours}): define it there, or use `ccctl run`",
                job=job.name,
                field="host",
            )
        return list(problems.values())

    # -- commands ---------------------------------------------------------------------

    async def recover(self) -> None:
        """Load every unfinished workflow from the store; re-attach to running attempts."""
        await self.scheduler.recover()

    async def find_request(self, request_id: str) -> str | None:
        """The id of the workflow submitted with ``request_id``, if one was."""
        return await self.store.find_request(request_id)

    async def submit(
        self, spec: WorkflowSpec, *, fail_fast: bool = False, request_id: str | None = None
    ) -> str:
        """Store a workflow and start its root jobs; idempotent on ``request_id``."""
        return await self.scheduler.submit(spec, fail_fast=fail_fast, request_id=request_id)

    async def wait(self, workflow_id: str) -> WorkflowState:
        """The workflow's state once it has finished."""
        return await self.scheduler.wait(workflow_id)

    async def cancel(self, workflow_id: str, jobs: Iterable[str] | None = None) -> list[str]:
        """Cancel the named jobs (all unfinished ones if None) of a running workflow; returns
        the names of those that were not finished. NotFound for an unknown workflow,
        Conflict for one that has finished."""
        await self.store.get_workflow(workflow_id)
        if workflow_id not in self.scheduler.workflows:
            raise Conflict(f"workflow '{workflow_id}' has already finished")
        return self.scheduler.cancel(workflow_id, jobs)

    async def retry(self, workflow_id: str, jobs: Iterable[str] | None = None) -> list[str]:
        """Run failed, cancelled or skipped jobs again; returns the names of those reset."""
        return await self.scheduler.retry(workflow_id, jobs)

    async def delete(self, workflow_id: str) -> None:
        """Forget a finished workflow: its rows and its run directories."""
        await self.scheduler.delete(workflow_id)

    def subscribe(self, listener: Callable[[JobEvent], None]) -> Callable[[], None]:
        """Call ``listener`` with every committed change; returns an unsubscribe function."""
        return self.scheduler.subscribe(listener)

    # -- queries ----------------------------------------------------------------------

    async def workflow(self, workflow_id: str) -> WorkflowRecord:
        """The stored workflow; NotFound if there is none."""
        return await self.store.get_workflow(workflow_id)

    def live_run(self, workflow_id: str) -> WorkflowRun | None:
        """The scheduler's in-memory view of a running workflow (for views that redraw
        without reading the store); None once it has finished."""
        return self.scheduler.workflows.get(workflow_id)

    def workflows_running(self) -> int:
        return sum(1 for run in self.scheduler.workflows.values() if run.unfinished)

    def jobs_running(self) -> int:
        return self.scheduler.running_count()

    async def list_workflows(self) -> list[WorkflowRecord]:
        return await self.store.list_workflows()

    async def attempts(self, workflow_id: str, job: str) -> list[AttemptRecord]:
        """A job's attempts, each with what it used where known."""
        await self.store.get_workflow(workflow_id)  # NotFound for an unknown workflow
        records = await self.store.list_attempts(workflow_id, job)
        usage = await self.store.list_usage(workflow_id, job)
        return [dataclasses.replace(r, usage=usage.get((r.job, r.attempt))) for r in records]

    async def read_log(
        self, workflow_id: str, job: str, attempt: int | None, offset: int
    ) -> tuple[AttemptRecord, bytes]:
        """Bytes of an attempt's log from ``offset`` (the latest attempt if None)."""
        records = await self.attempts(workflow_id, job)
        if attempt is not None:
            records = [r for r in records if r.attempt == attempt]
        if not records:
            if not await self.store.has_job(workflow_id, job):
                raise NotFound(f"workflow '{workflow_id}' has no job '{job}'")
            if attempt is not None:
                raise NotFound(f"job '{job}' of workflow '{workflow_id}' has no attempt {attempt}")
            raise NotFound(f"job '{job}' of workflow '{workflow_id}' has not started yet")
        record = records[-1]
        executor = self._executors.get(record.host) or self._executors[LOCAL]
        handle = Handle(
            workflow_id, job, record.attempt, Path(record.run_dir), record.pid, record.host
        )
        return record, await executor.read_log(handle, offset)

    async def graph_dot(self, workflow_id: str) -> str:
        """The workflow's DAG in DOT, coloured by the jobs' current states."""
        await self.store.get_workflow(workflow_id)
        run = self.scheduler.workflows.get(workflow_id)
        jobs = await self.store.list_jobs(workflow_id)
        states = {j.name: j.state for j in jobs}
        progress = {j.name: j.progress for j in jobs if j.progress is not None}
        if run is not None:
            return dag.to_dot(run.spec, states, progress)
        return dag.to_dot(await self.scheduler.stored_spec(workflow_id), states, progress)

    async def usage_settled(self, timeout_s: float = USAGE_SETTLE_S) -> None:
        """Wait (at most ``timeout_s``) for batch systems to tell what the ended attempts
        used: their accounting comes after the end, and a run about to exit wants it."""
        waits = [
            e.usage_settled(timeout_s)
            for e in self._executors.values()
            if isinstance(e, ReportsUsage)
        ]
        await asyncio.gather(*waits)
        await self.scheduler.committed()

    def _maybe_notify(self, event: JobEvent) -> None:
        """A committed change a notifier may want to hear of: a workflow's end, a job's
        failure. Sent in the background: a notifier never holds up the scheduler."""
        if event.job is None and event.state in WORKFLOW_ENDS:
            self.notifier.tell(Occasion(event.workflow_id, event.state, at=event.at))
        elif event.job is not None and event.state == JobState.FAILED:
            self.notifier.tell(Occasion(event.workflow_id, JOB_FAILED, event.job, event.at))

    async def _notifiers_of(self, workflow_id: str) -> list[NotifySpec]:
        return [spec_of_json(data) for data in await self.store.get_notify(workflow_id)]

    async def _status_json(self, workflow_id: str) -> dict[str, Any]:
        return (await self.status(workflow_id)).to_json()

    async def close(self) -> None:
        await self.notifier.close()  # each one bounded by its timeout
        try:
            await self.scheduler.close()
            for executor in self._executors.values():
                await executor.close()
        finally:
            await self.store.close()  # else its thread keeps the process from exiting

    async def status(self, workflow_id: str) -> WorkflowStatus:
        wf = await self.store.get_workflow(workflow_id)
        jobs = await self.store.list_jobs(workflow_id)
        outputs = await self.store.list_outputs(workflow_id)
        usage = await self.store.list_usage(workflow_id)
        return WorkflowStatus(
            id=wf.id,
            name=wf.name,
            state=wf.state,
            created_at=wf.created_at,
            updated_at=wf.updated_at,
            jobs=[
                _job_status(j, outputs.get(j.name, {}), usage.get((j.name, j.attempts)))
                for j in jobs
            ],
            hosts={host: self.host_health(host) for host in sorted({j.host for j in jobs})},
        )

    # -- reads for live views: the event streams and the dashboard ----------------------

    async def event_cursor(self, workflow_id: str | None) -> tuple[int, str | None]:
        """The last event id, and the workflow's state as of it (NotFound if unknown)."""
        return await self.store.read(reads.cursor, workflow_id)

    async def events_after(
        self, workflow_id: str | None, after: int, limit: int, *, job: str | None = None
    ) -> list[tuple[EventRecord, JobStatus | None]]:
        """Events after id ``after`` (oldest first), each with its job as it is now."""
        rows = await self.store.read(reads.events_after, workflow_id, after, limit, job)
        return [(event, None if row is None else _row_status(row)) for event, row in rows]

    async def snapshot(self, workflow_id: str) -> WorkflowSnapshot:
        snap = await self.store.read(reads.snapshot, workflow_id)
        jobs = [_row_status(row) for row in snap.jobs]
        return WorkflowSnapshot(snap.last_event_id, snap.workflow, jobs, snap.edges)

    async def jobs_now(
        self, workflow_id: str, *, names: Sequence[str] | None = None, running: bool = False
    ) -> list[JobStatus]:
        rows = await self.store.read(reads.job_rows, workflow_id, names, running)
        return [_row_status(row) for row in rows]

    async def workflows_page(self, offset: int, limit: int) -> tuple[int, list[WorkflowRecord]]:
        """How many workflows there are, and one page of them, newest first."""
        return await self.store.read(reads.workflows_page, offset, limit)

    async def workflows_by_id(self, ids: Sequence[str]) -> list[WorkflowRecord]:
        return await self.store.read(reads.workflows_by_id, ids)

    async def state_counts(self, ids: Sequence[str]) -> dict[str, dict[str, int]]:
        return await self.store.read(reads.state_counts, ids)

    async def workflows_touched(self, after: int) -> tuple[list[str], int]:
        """Workflows with events after id ``after``, and the last event id."""
        return await self.store.read(reads.workflows_touched, after)

    def host_health(self, host: str) -> HostHealth:
        executor = self._executors.get(host)
        if executor is None:
            return HostHealth("unknown", "no such host in this daemon's config")
        return executor.health()


def _batch_hosts(hosts: Mapping[str, HostSpec]) -> set[str]:
    return {name for name, host in hosts.items() if host.type == "slurm"}


def _host_max_jobs(hosts: Mapping[str, HostSpec]) -> dict[str, int]:
    return {name: cap for name, host in hosts.items() if (cap := _in_flight_cap(host)) is not None}


def _in_flight_cap(host: HostSpec) -> int | None:
    """How many of a host's jobs may be in flight at once: its max_jobs; but on a Slurm host
    with arrays, max_jobs is each array's %N (how many of its elements run at once) and
    max_queued caps how many are in Slurm."""
    if isinstance(host.options, SlurmOptions) and host.options.arrays:
        return host.options.max_queued
    return host.max_jobs


def make_executors(
    hosts: Mapping[str, HostSpec], existing: Mapping[str, Executor] | None = None
) -> dict[str, Executor]:
    """One executor per host; Slurm hosts last, as they may run through an ssh host's."""
    built: dict[str, Executor] = dict(existing or {})
    for name, host in sorted(hosts.items(), key=lambda item: item[1].type == "slurm"):
        built[name] = backend_class(host.type).create(host, built)
    return {name: built[name] for name in hosts}


_STATES = {state.value: state for state in JobState}  # 10x faster than JobState(value)


def _row_status(row: reads.JobRow) -> JobStatus:
    return JobStatus(row.name, _STATES[row.state], *row[2:])


def _job_status(j: JobRecord, outputs: Mapping[str, str], usage: UsageRecord | None) -> JobStatus:
    return JobStatus(
        name=j.name,
        state=j.state,
        host=j.host,
        attempts=j.attempts,
        exit_code=j.exit_code,
        signal=j.signal,
        reason=j.reason,
        progress=j.progress,
        message=j.message,
        started_at=j.started_at,
        ended_at=j.ended_at,
        outputs=outputs,
        usage=usage,
    )


async def stored_states(db: Path, source: Path) -> tuple[dict[str, JobState], dict[str, int]]:
    """Job states and progress of the newest run stored in ``db`` of the workflow file
    ``source`` (empty if none): what `ccctl graph FILE` colours the graph with."""
    store = await Store.open(db)
    try:
        runs = [w for w in await store.list_workflows() if w.source == str(source)]
        if not runs:
            return {}, {}
        jobs = await store.list_jobs(runs[-1].id)
    finally:
        await store.close()
    states = {j.name: j.state for j in jobs}
    progress = {j.name: j.progress for j in jobs if j.progress is not None}
    return states, progress
