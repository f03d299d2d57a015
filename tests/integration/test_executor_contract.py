"""The Executor protocol, held to the same contract by every backend: the local one, ssh on
the loopback sshd, and Slurm on the single-node cluster. Each backend is built through the
registry (`backend_class`), as the engine builds it."""

from __future__ import annotations

import asyncio
import secrets
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path

import pytest

from ccd.executors.base import Executor, Launch, backend_class
from ccd.models import ExitStatus
from ccd.spec import HostSpec
from ccd.spec.hosts import SlurmOptions
from tests.helpers import eventually, inline_launch
from tests.integration import slurm_fixture

slurm = slurm_fixture.slurm  # the session fixture, seen by pytest in this module

DEADLINE_S = 60.0
MakeExecutor = Callable[[], Executor]


@pytest.fixture(params=["local", "ssh", "slurm"])
async def make_executor(request: pytest.FixtureRequest) -> AsyncIterator[MakeExecutor]:
    """Builds executors of one backend (a second one plays a restarted daemon); closes them."""
    if request.param == "ssh":
        sshd = request.getfixturevalue("sshd")
        host = HostSpec("lab", "ssh", options=sshd.options(root=sshd.runs))
    elif request.param == "slurm":
        request.getfixturevalue("slurm")
        options = SlurmOptions(poll_interval_s=1.0, poll_interval_min_s=0.2)
        host = HostSpec("hpc", "slurm", options=options)
    else:
        host = HostSpec("local", "local")
    made: list[Executor] = []

    def make() -> Executor:
        executor = backend_class(host.type).create(host, {})
        made.append(executor)
        return executor

    yield make
    for executor in made:
        await executor.close()


def launch(tmp_path: Path, job: str, command: str) -> Launch:
    # A fresh workflow id per attempt: Slurm and the ssh host's run root outlive test runs.
    return inline_launch(tmp_path, job, command, workflow_id=f"c{secrets.token_hex(5)}")


async def finished(executor: Executor, launch: Launch) -> ExitStatus:
    async with asyncio.timeout(DEADLINE_S):
        return await executor.wait(await executor.start(launch))


async def test_a_job_runs_and_its_log_reads_from_an_offset(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    executor = make_executor()
    attempt = launch(tmp_path, "hello", "echo hello; echo world")
    handle = await executor.start(attempt)
    async with asyncio.timeout(DEADLINE_S):
        assert await executor.wait(handle) == ExitStatus(0)
    assert await executor.read_log(handle, 0) == b"hello\nworld\n"
    assert await executor.read_log(handle, 6) == b"world\n"
    assert await executor.read_log(handle, 12) == b""


async def test_an_exit_code_is_the_status(make_executor: MakeExecutor, tmp_path: Path) -> None:
    assert await finished(make_executor(), launch(tmp_path, "three", "exit 3")) == ExitStatus(3)


async def test_a_signal_stops_a_running_job(make_executor: MakeExecutor, tmp_path: Path) -> None:
    executor = make_executor()
    handle = await executor.start(launch(tmp_path, "sleeper", "echo started; exec sleep 120"))
    try:
        await eventually(
            lambda: executor.read_log(handle, 0), "the job to run", timeout_s=DEADLINE_S
        )
        await executor.signal(handle, signal.SIGTERM)
        async with asyncio.timeout(DEADLINE_S):
            status = await executor.wait(handle)
    finally:  # never leave it holding a slot of a shared cluster
        await executor.signal(handle, signal.SIGKILL)
    assert not status.ok, status


async def test_a_restarted_daemon_finds_a_finished_attempt(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    attempt = launch(tmp_path, "five", "exit 5")
    assert await finished(make_executor(), attempt) == ExitStatus(5)
    again = make_executor()
    handle = await again.reattach(attempt)
    assert handle is not None
    async with asyncio.timeout(DEADLINE_S):
        assert await again.wait(handle) == ExitStatus(5)


async def test_an_attempt_never_started_is_not_found(
    make_executor: MakeExecutor, tmp_path: Path
) -> None:
    executor = make_executor()
    async with asyncio.timeout(DEADLINE_S):
        assert await executor.reattach(launch(tmp_path, "never", "true")) is None


async def test_the_host_takes_work(make_executor: MakeExecutor) -> None:
    executor = make_executor()
    health = await eventually(lambda: executor.health().state == "ok", "the host to be up")
    assert health
