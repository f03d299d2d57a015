"""The scheduler's dynamic half: outputs handed from parents to children, matrix groups
that expand and complete, and jobs added to a workflow while it runs.

A mixin of `ccd.engine.scheduler.Scheduler`, kept apart because it is a concern of its own.
Every change it makes goes into the scheduler's current batch like any other: a job's
outputs are committed with its success; a sweep decided at run time is committed in the
transaction that makes its members ready (a crash before it leaves the group waiting, and the
restarted daemon expands it again from the same committed outputs: never lost, never twice);
jobs a job emits are committed with that job's success.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from types import MappingProxyType
from typing import Any

from ccd.engine.attempts import Attempt
from ccd.engine.commit import Committer
from ccd.engine.launch import new_job, snapshot_files, with_snapshot
from ccd.engine.runs import JobRun, WorkflowRun
from ccd.engine.store import Store
from ccd.errors import CcdError, Conflict, SpecError
from ccd.executors.base import NEW_JOBS_NAME
from ccd.models import TERMINAL, ExitStatus, JobState, WorkflowState
from ccd.spec import JobSpec, WorkflowSpec
from ccd.spec.refs import RefError
from ccd.spec.templates import expand, group_outputs, needs_resolving, resolve, runtime_values

# (fragment text, its file (for messages), base dir of its scripts, the workflow's jobs)
FragmentParser = Callable[[str, Path, Path, Mapping[str, JobSpec]], WorkflowSpec]


class DynamicJobs:
    """What `Scheduler` defines and this half uses (declared here for the type checker)."""

    workflows: dict[str, WorkflowRun]
    _commit: Committer
    _store: Store
    _runs_root: Path
    # Reads fragments of jobs ($CCD_NEW_JOBS) against the engine's hosts: set by the engine.
    parse_fragment: FragmentParser | None = None

    def _transition(
        self,
        job: JobRun,
        new: JobState,
        reason: str | None = None,
        *,
        exit: ExitStatus | None = None,
    ) -> None:
        raise NotImplementedError

    def _skip_descendants(self, job: JobRun) -> None:
        raise NotImplementedError

    def _make_ready(self, jobs: Iterable[JobRun]) -> None:
        raise NotImplementedError

    def _release_children(self, job: JobRun) -> None:
        raise NotImplementedError

    def _set_workflow_state(
        self, run: WorkflowRun, new: WorkflowState, reason: str | None = None
    ) -> None:
        raise NotImplementedError

    def _kick(self) -> None:
        raise NotImplementedError

    def _note(self, job: JobRun, reason: str) -> None:
        raise NotImplementedError

    async def _load_stored_id(self, workflow_id: str) -> WorkflowRun:
        raise NotImplementedError

    async def stored_spec(self, workflow_id: str) -> WorkflowSpec:
        raise NotImplementedError

    def _forget(self, run: WorkflowRun) -> None:
        raise NotImplementedError

    # -- a job's turn to become ready ---------------------------------------------------

    def _prepare(self, job: JobRun) -> bool:
        """A waiting job whose parents have all succeeded: a matrix group expands (or, its
        members done, succeeds) instead of running; a job with references gets its parents'
        values, or fails saying which it cannot have. True if it is to become ready."""
        if job.spec.matrix is not None:
            self._group_due(job)
            return False
        if needs_resolving(job.spec):
            try:
                job.spec = resolve(job.spec, outputs_of(job))
            except RefError as err:
                self._fail_unstarted(job, str(err))
                return False
        return True

    def _fail_unstarted(self, job: JobRun, reason: str) -> None:
        self._transition(job, JobState.FAILED, reason)
        self._skip_descendants(job)

    def _group_due(self, group: JobRun) -> None:
        if group.members:  # all have succeeded
            outputs = group_outputs([m.outputs or {} for m in group.members])
            self._keep_outputs(group, 0, outputs)
            self._transition(group, JobState.SUCCEEDED, f"{len(group.members)} members succeeded")
            self._release_children(group)
            return
        assert group.spec.matrix is not None
        try:
            values = runtime_values(group.spec.matrix, outputs_of(group))
            members = expand(group.spec, values)
        except (ValueError, RefError) as err:
            self._fail_unstarted(group, f"matrix: {err}")
            return
        clash = next((m.name for m in members if m.name in group.wf.jobs), None)
        if clash is not None:
            self._fail_unstarted(group, f"matrix: member '{clash}' clashes with a job")
        elif not members:
            self._keep_outputs(group, 0, {})
            self._transition(group, JobState.SUCCEEDED, "the matrix has no combinations")
            self._release_children(group)
        else:
            self._grow(group.wf, members)

    def _keep_outputs(self, job: JobRun, attempt: int, outputs: Mapping[str, str]) -> None:
        job.outputs = outputs
        if outputs:
            row = (job.wf.id, job.name, attempt, dict(outputs))
            self._commit.batch.growth.outputs.append(row)

    # -- an attempt's results -----------------------------------------------------------

    def _take_results(
        self, job: JobRun, attempt: Attempt | None, status: ExitStatus
    ) -> tuple[ExitStatus, list[JobSpec]]:
        """A succeeded attempt's outputs (kept for its children) and the jobs it asks to add;
        a fragment that cannot be added fails the attempt instead, with the reason."""
        if not status.ok or attempt is None or attempt.results is None:
            return status, []
        results = attempt.results
        emitted: list[JobSpec] = []
        if results.new_jobs is not None:
            try:
                emitted = self._emitted(job, results.new_jobs, attempt.launch.run_dir)
            except CcdError as err:
                problems = err.problems if isinstance(err, SpecError) else [err]
                reason = "$CCD_NEW_JOBS: " + "; ".join(map(str, problems))
                return replace(status, reason=reason), []
        self._keep_outputs(job, job.attempts, results.outputs)
        return status, emitted

    def _emitted(self, job: JobRun, text: str, run_dir: Path) -> list[JobSpec]:
        if self.parse_fragment is None:
            raise CcdError("this engine takes no jobs from jobs")
        existing = {name: j.spec for name, j in job.wf.jobs.items()}
        spec = self.parse_fragment(text, run_dir / NEW_JOBS_NAME, run_dir, existing)
        new = self._new_jobs(job.wf, spec)
        snapshots = snapshot_files(
            self._runs_root / job.wf.id, _only(spec, new), prefix=f"{job.name}.{job.attempts}-"
        )
        return [with_snapshot(s, snapshots.get(s.name)) for s in new]

    # -- adding jobs --------------------------------------------------------------------

    async def add_jobs(self, workflow_id: str, spec: WorkflowSpec) -> dict[str, list[str]]:
        """Add the jobs of a validated fragment to a workflow (running, or finished: it then
        runs again); they wait for their parents as any job does, and are skipped if one has
        failed. A job that already exists exactly so is left alone (a repeated request adds
        nothing); one that exists otherwise is a Conflict. Returns once committed."""
        run = await self._loaded(workflow_id)
        new = self._new_jobs(run, spec)  # a Conflict here leaves a finished one unloaded
        snapshots = await asyncio.to_thread(
            snapshot_files, self._runs_root / workflow_id, _only(spec, new), f"add{len(run.jobs)}-"
        )
        run = await self._loaded(workflow_id)  # it may have grown, or finished, meanwhile
        new = self._new_jobs(run, spec)
        self._grow(run, [with_snapshot(s, snapshots.get(s.name)) for s in new], "added by request")
        committed: asyncio.Future[None] = asyncio.get_running_loop().create_future()

        def settle() -> None:
            if not committed.done():
                committed.set_result(None)

        self._commit.after(settle)
        self._kick()
        await committed
        names = {s.name for s in new}
        return {
            "added": [n for n in spec.jobs if n in names],
            "existing": [n for n in spec.jobs if n not in names],
        }

    async def job_specs(self, workflow_id: str) -> Mapping[str, JobSpec]:
        """A workflow's jobs as written (what a fragment to add is checked against)."""
        run = self.workflows.get(workflow_id)
        if run is not None:
            return run.spec.jobs
        return (await self.stored_spec(workflow_id)).jobs

    async def _loaded(self, workflow_id: str) -> WorkflowRun:
        """The workflow in memory, loaded from the store if it has finished; a finished one
        is dropped again once it has settled (by `_forget`) unless it grew meanwhile."""
        run = self.workflows.get(workflow_id)
        if run is None:
            run = await self._load_stored_id(workflow_id)
            self._commit.after(lambda: self._forget(run))
            self._kick()
        return run

    @staticmethod
    def _new_jobs(run: WorkflowRun, spec: WorkflowSpec) -> list[JobSpec]:
        """The fragment's jobs that the workflow does not have yet; Conflict for one it has
        with a different definition."""
        new: list[JobSpec] = []
        for job in spec.jobs.values():
            have = run.spec.jobs.get(job.name)
            if have is None:
                new.append(job)
            elif _comparable(have) != _comparable(job):
                raise Conflict(
                    f"job '{job.name}' already exists in workflow '{run.id}' (defined otherwise)"
                )
        return new

    def _grow(self, run: WorkflowRun, specs: list[JobSpec], reason: str = "added") -> None:
        """Add jobs to a loaded workflow, in memory and (this turn's batch) in the store:
        they are linked to their parents (a matrix member also to its group), then skipped,
        made ready or left waiting as their parents' states say. Each change is announced;
        a job left waiting is announced with ``reason``, so live views show it at once."""
        if not specs:
            return
        if run.state is not WorkflowState.RUNNING:
            self._set_workflow_state(run, WorkflowState.RUNNING, "jobs added")
            run.done = asyncio.Event()
        growth = self._commit.batch.growth
        added = [JobRun(run, spec, JobState.WAITING) for spec in specs]
        for job in added:
            growth.jobs.append((run.id, len(run.jobs), new_job(job.spec)))
            run.jobs[job.name] = job
            run.unfinished += 1
        for job in added:
            for parent, child in _links(run, job):
                _link(parent, child)
                growth.edges.append((run.id, parent.name, child.name))
        run.spec = replace(
            run.spec, jobs=MappingProxyType({**run.spec.jobs, **{s.name: s for s in specs}})
        )
        for job in added:
            blocked = next((p for p in job.parents if p.state in _BLOCKING), None)
            if blocked is not None and job.state is JobState.WAITING:
                self._transition(
                    job, JobState.SKIPPED, f"ancestor '{blocked.name}' {blocked.state}"
                )
                self._skip_descendants(job)
        self._make_ready(added)
        for job in added:
            if job.state is JobState.WAITING:
                self._note(job, reason)

    # -- loading ------------------------------------------------------------------------

    @staticmethod
    def _link_members(run: WorkflowRun) -> None:
        """Each matrix member is a parent of its group (the group waits for all of them)."""
        for job in run.jobs.values():
            if job.spec.group is not None:
                _link(job, run.jobs[job.spec.group])

    async def _load_outputs(self, run: WorkflowRun) -> None:
        """The stored outputs, and the values of jobs that had been resolved (ready or
        running when the previous daemon stopped)."""
        for name, outputs in (await self._store.list_outputs(run.id)).items():
            if name in run.jobs:
                run.jobs[name].outputs = outputs
        for job in run.jobs.values():
            unfinished = job.state is not JobState.WAITING and job.state not in TERMINAL
            if unfinished and needs_resolving(job.spec):
                # It resolved once, from the same committed outputs.
                with contextlib.suppress(RefError):
                    job.spec = resolve(job.spec, outputs_of(job))


_BLOCKING = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED})


def _links(run: WorkflowRun, job: JobRun) -> Iterator[tuple[JobRun, JobRun]]:
    """(parent, child) pairs that make ``job`` part of the graph."""
    for name in job.spec.needs:
        yield run.jobs[name], job
    if job.spec.group is not None:
        yield job, run.jobs[job.spec.group]


def _link(parent: JobRun, child: JobRun) -> None:
    parent.children.append(child)
    child.parents.append(parent)
    child.waiting_on += parent.state is not JobState.SUCCEEDED
    if child.spec.matrix is not None and parent.spec.group == child.name:
        child.members.append(parent)


def _only(spec: WorkflowSpec, jobs: list[JobSpec]) -> WorkflowSpec:
    return replace(spec, jobs={job.name: job for job in jobs})


def _comparable(job: JobSpec) -> str:
    """A job's stored definition, with files by name (the stored ones are snapshots)."""
    data: dict[str, Any] = dict(new_job(job).spec)
    if "script" in data:
        data["script"] = Path(data["script"]).name
    if "inputs" in data:
        data["inputs"] = [Path(p).name for p in data["inputs"]]
    return json.dumps(data, sort_keys=True)


class _EmptyGroupOutputs(Mapping[str, str]):
    """A group that expanded into nothing: every key it could have is an empty list."""

    def __getitem__(self, key: str) -> str:
        return "[]"

    def __contains__(self, key: object) -> bool:
        return True

    def __iter__(self) -> Iterator[str]:
        return iter(())

    def __len__(self) -> int:
        return 0


def outputs_of(job: JobRun) -> Callable[[str], Mapping[str, str]]:
    """Looks up the outputs of one of ``job``'s parents by name."""
    parents = {p.name: p for p in job.parents}

    def outputs(name: str) -> Mapping[str, str]:
        parent = parents.get(name)
        if parent is None:
            raise RefError(f"'{name}' is not a parent of '{job.name}'")
        if parent.spec.matrix is not None and not parent.members:
            return _EmptyGroupOutputs()
        return parent.outputs or {}

    return outputs
