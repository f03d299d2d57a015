"""The scheduler's in-memory records of workflows and jobs, and the events it announces.
Plain data: the scheduler changes them, everyone else reads them."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from dataclasses import dataclass, field

from ccd.engine.attempts import Attempt
from ccd.models import JobState, WorkflowState
from ccd.spec import JobSpec, WorkflowSpec


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
    waiting_on: int = 0  # parents that have not succeeded yet
    children: list[JobRun] = field(default_factory=list)
    parents: list[JobRun] = field(default_factory=list)
    attempts: int = 0
    budget_start: int = 0  # attempts made before the current retry budget began
    attempt: Attempt | None = None  # the attempt in flight
    progress: int | None = None
    pending_reason: str | None = None  # why a batch system keeps it queued
    cancel_reason: str | None = None  # why its running attempt was asked to stop
    outputs: Mapping[str, str] | None = None  # what it handed on when it succeeded
    members: list[JobRun] = field(default_factory=list)  # a matrix group's
    oom_mem_kib: int | None = None  # memory its last attempt had when it ran out of it

    @property
    def name(self) -> str:
        return self.spec.name


@dataclass(eq=False, slots=True)
class WorkflowRun:
    id: str
    spec: WorkflowSpec
    fail_fast: bool
    jobs: dict[str, JobRun] = field(default_factory=dict)
    unfinished: int = 0
    state: WorkflowState = WorkflowState.RUNNING
    done: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def name(self) -> str:
        return self.spec.name
