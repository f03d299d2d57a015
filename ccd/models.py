"""Job and workflow states, the one transition table, and the records passed between layers."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from ccd.errors import TransitionError
from ccd.usage import Usage


class JobState(StrEnum):
    WAITING = "waiting"  # some parent has not succeeded yet
    READY = "ready"  # every parent succeeded; waiting for a slot (or a retry's backoff)
    SUBMITTED = "submitted"  # handed to a batch system (Slurm); queued there
    RUNNING = "running"  # an attempt was committed as started
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"
    SKIPPED = "skipped"  # an ancestor failed or was cancelled


TERMINAL: frozenset[JobState] = frozenset(
    {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED}
)
# An attempt is in flight: it holds a slot and may be re-attached to after a restart.
IN_FLIGHT: frozenset[JobState] = frozenset({JobState.SUBMITTED, JobState.RUNNING})
RETRYABLE: frozenset[JobState] = frozenset({JobState.FAILED, JobState.CANCELLED, JobState.SKIPPED})

# Every allowed change of a job's state. READY -> SUBMITTED (batch hosts) or RUNNING starts an
# attempt; back to READY is an automatic retry (the attempt failed and the job has retries
# left); FAILED/CANCELLED/SKIPPED -> WAITING is a user's retry. WAITING -> FAILED is a job
# whose `${{ }}` references cannot be resolved; WAITING -> SUCCEEDED a matrix group whose
# members have all succeeded (neither runs an attempt).
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    JobState.WAITING: frozenset(
        {
            JobState.READY,
            JobState.SKIPPED,
            JobState.CANCELLED,
            JobState.FAILED,
            JobState.SUCCEEDED,
        }
    ),
    JobState.READY: frozenset({JobState.SUBMITTED, JobState.RUNNING, JobState.CANCELLED}),
    JobState.SUBMITTED: frozenset(
        {JobState.RUNNING, JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.READY}
    ),
    JobState.RUNNING: frozenset(
        {JobState.SUCCEEDED, JobState.FAILED, JobState.CANCELLED, JobState.READY}
    ),
    JobState.SUCCEEDED: frozenset(),
    JobState.FAILED: frozenset({JobState.WAITING}),
    JobState.CANCELLED: frozenset({JobState.WAITING}),
    JobState.SKIPPED: frozenset({JobState.WAITING}),
}


def check_transition(job: str, old: JobState, new: JobState) -> None:
    """Raise TransitionError unless the table allows ``old -> new``."""
    if new not in TRANSITIONS[old]:
        raise TransitionError(f"job '{job}': cannot go from {old} to {new}")


class WorkflowState(StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"


def workflow_state(job_states: list[JobState]) -> WorkflowState:
    """A workflow is running while any job is not terminal; then failed if any job did not
    succeed (cancelled if the only non-successes are cancellations and skips after them)."""
    if any(s not in TERMINAL for s in job_states):
        return WorkflowState.RUNNING
    if all(s is JobState.SUCCEEDED for s in job_states):
        return WorkflowState.SUCCEEDED
    if any(s is JobState.FAILED for s in job_states):
        return WorkflowState.FAILED
    return WorkflowState.CANCELLED


@dataclass(frozen=True, slots=True)
class ExitStatus:
    """How an attempt ended: ``code`` for a normal exit, ``signal`` if a signal killed it.

    ``reason`` explains the cases where neither tells the whole story (``timeout``,
    ``cancelled``, ``lost``: the process vanished without an exit record)."""

    code: int | None
    signal: int | None = None
    reason: str | None = None
    # When it ended, where a record says (one read after a restart); else when we learnt it.
    # Not part of what the status is: equal statuses may have ended at different times.
    ended_at: float | None = field(default=None, compare=False)
    # What the attempt used, where its backend could tell (None: nothing known).
    usage: Usage | None = field(default=None, compare=False)

    @property
    def ok(self) -> bool:
        return self.code == 0 and self.signal is None and self.reason is None

    def describe(self) -> str:
        if self.reason is not None:
            return self.reason
        if self.signal is not None:
            return f"killed by signal {self.signal}"
        return f"exit code {self.code}"


def failure_class(status: ExitStatus) -> str:
    """The class a failed attempt belongs to, as `retry_on` names them."""
    if status.reason in _REASON_CLASSES:
        return status.reason
    return "signal" if status.signal is not None else "exit"


# Reasons an executor or the scheduler may give that are failure classes of their own.
_REASON_CLASSES = frozenset(
    {"timeout", "out_of_memory", "node_fail", "preempted", "cancelled", "lost"}
)


@dataclass(frozen=True, slots=True)
class Limits:
    """How much runs at once, and how retries and kills are paced: the daemon config's
    ``limits:`` section, and what `ccctl run` sets from its options. Each host's own cap is
    its ``max_jobs``."""

    max_jobs: int | None = None  # across every host and workflow; None: no global cap
    retry_backoff_s: float = 1.0  # first retry's delay; doubles per attempt
    retry_backoff_max_s: float = 300.0
    kill_grace_s: float = 5.0  # SIGTERM, then SIGKILL after this long
    progress_interval_s: float = 1.0  # how often running jobs' logs are read


@dataclass(frozen=True, slots=True)
class Progress:
    """The latest progress marker seen in a job's log."""

    percent: int
    message: str | None = None
