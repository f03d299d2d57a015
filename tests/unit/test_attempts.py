"""Timeouts and kill requests of one attempt, against a scripted executor (the real backends'
kills are tested in the integration tests; this covers what they cannot stage: a signal that
fails, a job that ignores SIGTERM)."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from ccd.engine.attempts import Attempt, AttemptRunner
from ccd.errors import ExecutorError
from ccd.executors.base import Executor, Handle, Launch
from ccd.models import ExitStatus


class ScriptedExecutor:
    """An attempt that ends when it gets one of ``dies_on``; ``signal`` fails
    ``fail_signals`` times first."""

    def __init__(self, dies_on: set[int], fail_signals: int = 0) -> None:
        self.dies_on = dies_on
        self.fail_signals = fail_signals
        self.signals: list[int] = []
        self.attempted: list[int] = []
        self.tried_twice = asyncio.Event()
        self.ended: asyncio.Future[ExitStatus] = asyncio.get_running_loop().create_future()

    async def start(self, launch: Launch) -> Handle:
        return Handle(launch.workflow_id, launch.job, launch.attempt, launch.run_dir, 1, "x")

    async def wait(self, handle: Handle) -> ExitStatus:
        return await asyncio.shield(self.ended)

    async def signal(self, handle: Handle, signum: int) -> None:
        self.attempted.append(signum)
        if len(self.attempted) == 2:
            self.tried_twice.set()
        if self.fail_signals:
            self.fail_signals -= 1
            raise ExecutorError("host unreachable")
        self.signals.append(signum)
        if signum in self.dies_on and not self.ended.done():
            self.ended.set_result(ExitStatus(128 + signum))

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        return b""


def _attempt(timeout_s: float | None) -> Attempt:
    launch = Launch("wf", "job", 1, Path("/nonexistent"), Path("job.sh"), ("sh", "job.sh"), {})
    return Attempt(launch, "x", timeout_s, lambda marker, offset: None)


def _runner(executor: ScriptedExecutor, grace_s: float = 0.05) -> AttemptRunner:
    executors: dict[str, Executor] = {"x": executor}  # type: ignore[dict-item]
    return AttemptRunner(executors, kill_grace_s=grace_s, progress_interval_s=60)


async def test_timeout_sends_sigkill_after_the_grace_period_to_a_job_ignoring_sigterm() -> None:
    executor = ScriptedExecutor(dies_on={signal.SIGKILL})
    status = await asyncio.wait_for(_runner(executor).run(_attempt(timeout_s=0.01)), 10)
    assert executor.signals == [signal.SIGTERM, signal.SIGKILL]
    assert (status.code, status.reason) == (128 + signal.SIGKILL, "timeout")


async def test_kill_request_names_its_reason() -> None:
    executor = ScriptedExecutor(dies_on={signal.SIGTERM})
    attempt = _attempt(timeout_s=None)
    running = asyncio.create_task(_runner(executor).run(attempt))
    attempt.request_kill("cancelled")
    status = await asyncio.wait_for(running, 10)
    assert executor.signals == [signal.SIGTERM]
    assert status.reason == "cancelled"


async def test_a_failing_signal_leaves_the_attempt_waiting_for_its_real_end() -> None:
    executor = ScriptedExecutor(dies_on=set(), fail_signals=2)
    running = asyncio.create_task(_runner(executor).run(_attempt(timeout_s=0.01)))
    await asyncio.wait_for(executor.tried_twice.wait(), 10)
    assert executor.attempted == [signal.SIGTERM, signal.SIGKILL]  # both tried, both failed
    assert not running.done()
    executor.ended.set_result(ExitStatus(0))
    status = await asyncio.wait_for(running, 10)
    assert (status.code, status.reason) == (0, "timeout")


@pytest.mark.parametrize("timeout_s", [None, 30.0])
async def test_an_attempt_that_just_ends_is_never_signalled(timeout_s: float | None) -> None:
    executor = ScriptedExecutor(dies_on=set())
    executor.ended.set_result(ExitStatus(3))
    status = await _runner(executor).run(_attempt(timeout_s))
    assert executor.attempted == []
    assert (status.code, status.reason) == (3, None)


async def test_a_queued_attempts_timeout_counts_from_when_it_runs() -> None:
    """A batch job waiting in the queue longer than its timeout is not killed for it; once
    the batch system starts it, the timeout runs."""
    executor = ScriptedExecutor(dies_on={signal.SIGTERM})
    attempt = _attempt(timeout_s=0.05)
    attempt.queued = True
    running = asyncio.create_task(_runner(executor).run(attempt))
    await asyncio.sleep(0.3)  # queued for six times its timeout: a span, not a state to await
    assert executor.attempted == [] and not running.done()
    attempt.mark_running()
    status = await asyncio.wait_for(running, 10)
    assert executor.signals == [signal.SIGTERM]
    assert status.reason == "timeout"
