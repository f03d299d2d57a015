"""What the dashboard's pages compute: summaries, ETA, the job table's page, text."""

from __future__ import annotations

import pytest

from ccd.engine.core import JobStatus
from ccd.engine.store import UsageRecord, WorkflowRecord
from ccd.models import JobState, WorkflowState
from ccd.server.web import views
from ccd.usage import Request, Usage


def record(state: WorkflowState, created: float = 100.0, updated: float = 160.0) -> WorkflowRecord:
    return WorkflowRecord("w1", "demo", "/wf.yaml", "/", state, False, None, created, updated)


def job(name: str, state: JobState = JobState.WAITING, **fields: object) -> JobStatus:
    values: dict[str, object] = {
        "host": "local",
        "attempts": 0,
        "exit_code": None,
        "signal": None,
        "reason": None,
        "progress": None,
        "message": None,
        "started_at": None,
        "ended_at": None,
    }
    values.update(fields)
    return JobStatus(name, state, **values)  # type: ignore[arg-type]


def test_a_running_workflow_has_an_eta_at_the_pace_so_far() -> None:
    s = views.summarize(
        record(WorkflowState.RUNNING), {"succeeded": 25, "running": 5, "waiting": 70}
    )
    assert (s.total, s.done, s.percent) == (100, 25, 25)
    assert s.ended_at is None
    assert s.elapsed_s(now=130.0) == 30.0
    assert s.eta_s(now=130.0) == pytest.approx(90.0)  # 25 done in 30 s: 75 more in 90 s


def test_no_eta_before_the_first_job_ends_nor_after_the_workflow() -> None:
    running = views.summarize(record(WorkflowState.RUNNING), {"running": 2})
    assert running.eta_s(now=200.0) is None
    done = views.summarize(record(WorkflowState.FAILED), {"succeeded": 1, "failed": 1})
    assert done.eta_s(now=500.0) is None
    assert done.elapsed_s(now=500.0) == 60.0  # until it ended, not until now


def test_counts_come_in_ccctls_order() -> None:
    s = views.summarize(record(WorkflowState.RUNNING), {"failed": 1, "running": 2, "waiting": 3})
    assert s.counted() == [("running", 2), ("waiting", 3), ("failed", 1)]


def test_the_job_table_filters_then_pages() -> None:
    jobs = [
        job(f"train-{i:03d}", JobState.SUCCEEDED if i % 2 else JobState.FAILED) for i in range(250)
    ]
    first = views.job_table(jobs)
    assert (len(first.rows), first.matching, first.page, first.pages) == (100, 250, 1, 3)
    failed = views.job_table(jobs, state="failed", page=2)
    assert failed.matching == 125 and failed.page == 2 and len(failed.rows) == 25
    assert all(j.state is JobState.FAILED for j in failed.rows)
    picked = views.job_table(jobs, text="-01", only=frozenset({"train-010", "train-011", "x"}))
    assert [j.name for j in picked.rows] == ["train-010", "train-011"]
    assert views.job_table(jobs, page=99).page == 3  # past the end: the last page


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (None, views.NO_VALUE),
        (4.25, "4.2s"),
        (187, "3m 07s"),
        (7500, "2h 05m"),
        (3 * 86400 + 4 * 3600, "3d 4h"),
    ],
)
def test_durations(seconds: float | None, text: str) -> None:
    assert views.duration(seconds) == text


def test_exit_text() -> None:
    assert views.exit_text(job("a", JobState.SUCCEEDED, exit_code=0)) == "exit 0"
    failed = job("a", JobState.FAILED, exit_code=3, reason="exit code 3")
    assert views.exit_text(failed) == "exit 3"
    assert views.exit_text(job("a", JobState.FAILED, signal=9, reason="timeout")) == (
        "signal 9 · timeout"
    )
    assert views.exit_text(job("a", JobState.SUBMITTED, reason="Priority\n(queued)")) == (
        "Priority (queued)"
    )
    # a running job's reason only names its attempt, which has a column of its own
    assert views.exit_text(job("a", JobState.RUNNING, reason="attempt 2")) == views.NO_VALUE


def test_a_job_duration_runs_while_it_runs() -> None:
    assert views.job_duration(job("a", JobState.RUNNING, started_at=10.0), now=25.0) == 15.0
    ended = job("a", JobState.SUCCEEDED, started_at=10.0, ended_at=12.5)
    assert views.job_duration(ended, now=99.0) == 2.5
    # waiting to be retried: its last attempt's times no longer describe it
    assert views.job_duration(job("a", JobState.READY, started_at=10.0), now=99.0) is None


def test_usage_text_gives_the_figures_and_their_shares() -> None:
    record = UsageRecord(
        "w",
        "j",
        1,
        Usage(wall_s=100.0, cpu_s=45.0, max_rss_bytes=300 << 20),
        Request(cpus=1, mem_bytes=4 << 30, time_s=3600.0),
    )
    assert views.usage_text(record) == "CPU 45.0s (45%) · peak 300M (7%) · 3% of the time limit"
    assert views.usage_text(UsageRecord("w", "j", 1, Usage(wall_s=1.0))) == views.NO_VALUE
    assert views.usage_text(None) == views.NO_VALUE
