"""The engine assembled: store + executors + scheduler over one state directory.

`ccctl run` uses it in-process; the daemon wraps the same object in an API.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from ccd import paths
from ccd.executors.base import Executor, backend_class
from ccd.models import JobState
from ccd.scheduler import Limits, Scheduler
from ccd.spec import HostSpec
from ccd.store import Store


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

    def to_json(self) -> dict[str, Any]:
        """The documented ``--json`` shape of a workflow's status."""
        return {
            "workflow": {"id": self.id, "name": self.name, "state": self.state},
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
                }
                for j in self.jobs
            ],
        }


class Engine:
    """Owns the store and the executors; hands the scheduler to callers."""

    def __init__(self, store: Store, scheduler: Scheduler, executors: dict[str, Executor]):
        self.store = store
        self.scheduler = scheduler
        self._executors = executors

    @classmethod
    async def open(
        cls, state_dir: Path, hosts: Mapping[str, HostSpec], limits: Limits | None = None
    ) -> Engine:
        paths.prepare_state_dir(state_dir)
        store = await Store.open(state_dir / paths.DB_NAME)
        executors = {name: _make_executor(host) for name, host in hosts.items()}
        limits = limits or Limits()
        host_limits = {n: h.max_jobs for n, h in hosts.items() if h.max_jobs is not None}
        limits = replace(limits, host_max_jobs={**host_limits, **limits.host_max_jobs})
        scheduler = Scheduler(store, executors, state_dir / paths.RUNS_NAME, limits)
        return cls(store, scheduler, executors)

    async def close(self) -> None:
        await self.scheduler.close()
        for executor in self._executors.values():
            await executor.close()
        await self.store.close()

    async def status(self, workflow_id: str) -> WorkflowStatus:
        wf = await self.store.get_workflow(workflow_id)
        jobs = await self.store.list_jobs(workflow_id)
        order = {name: i for i, name in enumerate(self._job_order(workflow_id))}
        jobs.sort(key=lambda j: order.get(j.name, len(order)))
        return WorkflowStatus(
            wf.id, wf.name, wf.state, wf.created_at, wf.updated_at,
            [
                JobStatus(j.name, j.state, j.host, j.attempts, j.exit_code, j.signal, j.reason,
                          j.progress, j.message, j.started_at, j.ended_at)
                for j in jobs
            ],
        )  # fmt: skip

    def _job_order(self, workflow_id: str) -> list[str]:
        run = self.scheduler.workflows.get(workflow_id)
        return list(run.jobs) if run is not None else []


def _make_executor(host: HostSpec) -> Executor:
    executor: Executor = backend_class(host.type)(host.name)
    return executor
