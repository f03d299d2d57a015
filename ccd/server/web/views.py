"""What the dashboard's pages show, computed from the engine's records: workflow summaries
(counts, progress, elapsed, ETA), the job table's filtered page, and text formats. Pure."""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from ccd.engine.core import JobStatus
from ccd.engine.store import UsageRecord, WorkflowRecord
from ccd.models import TERMINAL, JobState
from ccd.usage import efficiency, format_bytes, format_seconds, format_share

# The order states are counted and filtered in, as ccctl lists them.
STATE_ORDER: tuple[str, ...] = (
    "running", "submitted", "ready", "waiting", "succeeded", "failed", "cancelled", "skipped",
)  # fmt: skip
TERMINAL_NAMES = frozenset(s.value for s in TERMINAL)
NO_VALUE = "\u2013"  # an en dash: what a cell shows when it has nothing to show
JOBS_PER_PAGE = 100
WORKFLOWS_PER_PAGE = 50


@dataclass(frozen=True, slots=True)
class WorkflowSummary:
    """One row of the workflows page."""

    id: str
    name: str
    state: str
    created_at: float
    ended_at: float | None  # None while it runs
    counts: Mapping[str, int]

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    @property
    def done(self) -> int:
        return sum(n for state, n in self.counts.items() if state in TERMINAL_NAMES)

    @property
    def percent(self) -> int:
        return math.floor(100 * self.done / self.total) if self.total else 100

    def elapsed_s(self, now: float) -> float:
        return max(0.0, (self.ended_at or now) - self.created_at)

    def eta_s(self, now: float) -> float | None:
        """Time left at the pace so far; None when finished or nothing has finished yet."""
        if self.ended_at is not None or not self.done or self.done >= self.total:
            return None
        return self.elapsed_s(now) * (self.total - self.done) / self.done

    def counted(self) -> list[tuple[str, int]]:
        return [(s, self.counts[s]) for s in STATE_ORDER if self.counts.get(s)]


def summarize(wf: WorkflowRecord, counts: Mapping[str, int]) -> WorkflowSummary:
    finished = wf.state != "running"
    return WorkflowSummary(
        wf.id, wf.name, wf.state, wf.created_at, wf.updated_at if finished else None, counts
    )


def count_states(jobs: Sequence[JobStatus]) -> dict[str, int]:
    counts: dict[str, int] = {}
    for job in jobs:
        counts[job.state] = counts.get(job.state, 0) + 1
    return counts


@dataclass(frozen=True, slots=True)
class JobTable:
    """One page of a workflow's job table, after its filters."""

    rows: list[JobStatus]
    matching: int  # jobs that pass the filters
    page: int
    pages: int


def job_table(
    jobs: Sequence[JobStatus],
    *,
    state: str | None = None,
    text: str | None = None,
    only: frozenset[str] | None = None,
    page: int = 1,
    per_page: int = JOBS_PER_PAGE,
) -> JobTable:
    """Jobs in file order that are in ``state``, contain ``text`` in their name and are
    among ``only`` (a box of the picture), cut to one page."""
    picked = [
        job
        for job in jobs
        if (state is None or job.state == state)
        and (not text or text in job.name)
        and (only is None or job.name in only)
    ]
    pages = max(1, math.ceil(len(picked) / per_page))
    page = min(max(1, page), pages)
    start = (page - 1) * per_page
    return JobTable(picked[start : start + per_page], len(picked), page, pages)


# -- text ----------------------------------------------------------------------------------------


def duration(seconds: float | None) -> str:
    """``4.2s``, ``3m 07s``, ``2h 05m``, ``3d 4h``; `NO_VALUE` when unknown."""
    if seconds is None:
        return NO_VALUE
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days}d {hours}h"
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s"


def clock(at: float | None) -> str:
    """A time of day, with the date unless it is today (the daemon's local time)."""
    if at is None:
        return NO_VALUE
    stamp = time.localtime(at)
    if time.strftime("%Y-%m-%d", stamp) == time.strftime("%Y-%m-%d"):
        return time.strftime("%H:%M:%S", stamp)
    return time.strftime("%Y-%m-%d %H:%M", stamp)


def exit_text(job: JobStatus) -> str:
    """How the latest attempt ended: the exit code or signal, or the reason it did not (or,
    while queued, why it waits). A running job's reason only names its attempt: not shown."""
    if job.state is JobState.RUNNING:
        return NO_VALUE
    if job.signal is not None:
        text = f"signal {job.signal}"
    elif job.exit_code is not None:
        text = f"exit {job.exit_code}"
    else:
        text = ""
    if job.reason and job.reason != f"exit code {job.exit_code}":  # said once is enough
        reason = " ".join(job.reason.split())
        text = f"{text} · {reason}" if text else reason
    return text or NO_VALUE


def job_duration(job: JobStatus, now: float) -> float | None:
    """How long the latest attempt ran (runs, while it runs)."""
    if job.started_at is None:
        return None
    end = job.ended_at if job.ended_at is not None else now
    if job.state not in (JobState.RUNNING, JobState.SUBMITTED) and job.ended_at is None:
        return None
    return max(0.0, end - job.started_at)


def usage_text(record: UsageRecord | None) -> str:
    """What an attempt used, with the shares of its request: ``CPU 1.2s (45%) · peak 300M
    (7%) · 2m05s (3% of the limit)``; a dash if nothing is known."""
    if record is None:
        return NO_VALUE
    use, eff = record.usage, efficiency(record.usage, record.request)
    parts = []
    if use.cpu_s is not None:
        parts.append(f"CPU {format_seconds(use.cpu_s)}" + _share(eff.cpu))
    if use.max_rss_bytes is not None:
        parts.append(f"peak {format_bytes(use.max_rss_bytes)}" + _share(eff.mem))
    if eff.time is not None:
        parts.append(f"{format_share(eff.time)} of the time limit")
    return " · ".join(parts) or NO_VALUE


def _share(share: float | None) -> str:
    return f" ({format_share(share)})" if share is not None else ""
