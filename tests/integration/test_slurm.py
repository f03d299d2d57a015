"""The Slurm backend against a real single-node Slurm (scripts/infra/slurm-up.sh), through
the executor and through the engine. The walltime test alone takes ~90 s (Slurm enforces a
1-minute limit at ~1:24); with pytest-xdist (-n 2) the others run beside it."""

from __future__ import annotations

import asyncio
import dataclasses
import os
import secrets
import shlex
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path

import pytest

from ccd.engine import Engine, JobEvent
from ccd.executors.base import STATUS_NAME, Handle, Launch, parse_status
from ccd.executors.shell import LocalShell
from ccd.executors.slurm import SlurmExecutor, check_limits, job_tag, render_batch
from ccd.executors.ssh import SshExecutor
from ccd.models import ExitStatus
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources, SlurmOptions
from tests.conftest import FAST
from tests.helpers import eventually, inline_launch
from tests.integration import slurm_fixture
from tests.integration.conftest import Sshd
from tests.integration.slurm_fixture import REPO, SlurmCluster

slurm = slurm_fixture.slurm  # the session fixture, seen by pytest in this module

OPTIONS = SlurmOptions(poll_interval_s=2.0, poll_interval_min_s=0.2)
DEADLINE_S = 60.0
RUN_ID = f"t{secrets.token_hex(5)}"  # the workflow id of this run's attempts

MakeLaunch = Callable[..., Launch]


async def run(*argv: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        *argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    out, err = await proc.communicate()
    assert proc.returncode == 0, f"{argv}: {err.decode()}"
    return out.decode()


async def jobs_named(tag: str) -> list[str]:
    """Slurm job ids (any state, within MinJobAge) whose name is ``tag``."""
    out = await run("squeue", "-h", "-t", "all", f"--name={tag}", "-o", "%i")
    return out.split()


def launch_in(
    root: Path,
    job: str,
    command: str,
    attempt: int = 1,
    wf: str = RUN_ID,
    resources: Resources | None = None,
) -> Launch:
    """An attempt of an inline command; job names are unique within the module, and tags
    across test runs (Slurm remembers finished jobs' names for MinJobAge)."""
    return inline_launch(
        root,
        job,
        command,
        workflow_id=wf,
        attempt=attempt,
        script_name="inline.sh",
        resources=resources,
    )


class States:
    """A StateListener that remembers what it was told."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, str, str | None]] = []

    def __call__(self, handle: Handle, state: str, reason: str | None) -> None:
        self.seen.append((handle.job, state, reason))

    def has(self, job: str, state: str, reason: str | None = None) -> bool:
        return any(
            j == job and s == state and (reason is None or (r or "").startswith(reason))
            for j, s, r in self.seen
        )


@pytest.fixture
async def executor(slurm: SlurmCluster) -> AsyncIterator[SlurmExecutor]:
    ex = SlurmExecutor("hpc", LocalShell(), OPTIONS)
    yield ex
    await ex.close()


async def test_outcomes_exit_cancel_pending(executor: SlurmExecutor, tmp_path: Path) -> None:
    states = States()
    executor.listen(states, lambda: None)
    hold = Resources(sbatch_args=("--hold",))
    later = Resources(sbatch_args=("--begin=now+600",))
    launches = {
        "ok": launch_in(tmp_path, "ok", "echo hello from slurm"),
        "exit3": launch_in(tmp_path, "exit3", "exit 3"),
        "outside": launch_in(tmp_path, "outside", "sleep 120"),
        "ours": launch_in(tmp_path, "ours", "sleep 120"),
        "held": launch_in(tmp_path, "held", "echo released", resources=hold),
        "later": launch_in(tmp_path, "later", "true", resources=later),
    }
    handles = {name: await executor.start(launch) for name, launch in launches.items()}
    waits = {name: asyncio.ensure_future(executor.wait(h)) for name, h in handles.items()}

    await eventually(lambda: states.has("held", "pending", "JobHeldUser"), "held shown pending")
    await run("scontrol", "release", str(handles["held"].job_id))
    await eventually(lambda: states.has("outside", "running"), "outside running")
    await run("scancel", str(handles["outside"].job_id))  # someone else's scancel
    await eventually(lambda: states.has("ours", "running"), "ours running")
    await executor.signal(handles["ours"], signal.SIGTERM)
    await eventually(lambda: states.has("later", "pending", "BeginTime"), "later pending")
    await run("scontrol", "hold", str(handles["later"].job_id))  # JobHeldAdmin as root
    await eventually(lambda: states.has("later", "pending", "JobHeld"), "the new reason shown")
    await executor.signal(handles["later"], signal.SIGTERM)  # cancel while pending

    async with asyncio.timeout(DEADLINE_S):
        results = {name: await w for name, w in waits.items()}
    assert results["ok"] == ExitStatus(0)
    assert results["exit3"] == ExitStatus(3)
    assert results["outside"].reason == "cancelled"
    assert results["ours"].reason == "cancelled"
    assert results["held"] == ExitStatus(0)
    assert results["later"] == ExitStatus(None, None, "cancelled")
    log = await executor.read_log(handles["ok"], 0)
    assert log == b"hello from slurm\n"
    assert (launches["held"].run_dir / "log").read_text() == "released\n"
    # One squeue (plus, rarely, one sacct) per round, whatever the number of jobs.
    assert executor.round_commands and max(executor.round_commands) <= 2
    assert executor.command_counts["sbatch"] == 6


async def test_crash_between_sbatch_and_record_submits_once(
    executor: SlurmExecutor, tmp_path: Path
) -> None:
    launch = launch_in(tmp_path, "once", "echo ran >> ../../ran.txt")
    first = await executor.start(launch)  # ... and the daemon dies before recording the id
    restarted = SlurmExecutor("hpc", LocalShell(), OPTIONS)
    try:
        found = await restarted.reattach(launch)
        assert found is not None and found.job_id == first.job_id
        assert await restarted.wait(found) == ExitStatus(0)
    finally:
        await restarted.close()
    assert await jobs_named(job_tag(RUN_ID, "once", 1)) == [first.job_id]
    assert (tmp_path / RUN_ID / "ran.txt").read_text() == "ran\n"


async def test_reattach_to_a_never_submitted_attempt_claims_it(
    executor: SlurmExecutor, tmp_path: Path
) -> None:
    launch = launch_in(tmp_path, "late", "echo ran > ../../late.txt")
    assert await executor.reattach(launch) is None
    status = launch.run_dir / STATUS_NAME
    assert status.read_text() == "claimed\n"
    # An sbatch that was still in flight arrives after all: its wrapper refuses to run.
    script, argv = render_batch(launch, OPTIONS)
    await LocalShell().write_files({argv[-1]: script.encode()})
    (launch.run_dir / "wrapper.sh").symlink_to(REPO / "ccd/executors/wrapper.sh")
    job_id = (await run(*argv)).split(";")[0].strip()
    rows: dict[str, object] = {}

    async def finished() -> bool:
        rows.update(await executor.squeue_rows([job_id]))
        return job_id in rows and getattr(rows[job_id], "finished", False)

    async with asyncio.timeout(DEADLINE_S):
        while not await finished():  # noqa: ASYNC110 (Slurm's state: nothing to await)
            await asyncio.sleep(0.2)
    assert not (tmp_path / RUN_ID / "late.txt").exists()
    assert parse_status(status.read_text()).claimed


async def test_check_limits_against_the_real_partition(slurm: SlurmCluster) -> None:
    if os.geteuid() != 0:
        pytest.skip("creating a partition needs root")
    shell = LocalShell()
    name = f"ccdlim{os.getpid()}"
    await run(
        "scontrol",
        "create",
        f"PartitionName={name}",
        "Nodes=ALL",
        "MaxTime=10",
        "MaxNodes=1",
        "State=UP",
    )
    try:
        assert await check_limits(shell, Resources(cpus=1, time_s=600), name) == []
        too_long = await check_limits(shell, Resources(time_s=3600), name)
        assert len(too_long) == 1 and "MaxTime 00:10:00" in too_long[0]
        too_big = Resources(mem_kib=(slurm.mem_mib + 1024) * 1024, cpus=slurm.cpus + 1, nodes=2)
        problems = await check_limits(shell, too_big, None)
        assert [p.split()[0] for p in problems] == ["nodes", "cpus", "mem"], problems
        assert "does not exist" in (await check_limits(shell, Resources(), "nope"))[0]
    finally:
        await run("scontrol", "delete", f"PartitionName={name}")


def engine_hosts() -> dict[str, HostSpec]:
    held = SlurmOptions(
        poll_interval_s=2.0, poll_interval_min_s=0.2, resources=Resources(sbatch_args=("--hold",))
    )
    return {
        "local": HostSpec("local", "local"),
        "hpc": HostSpec("hpc", "slurm", max_jobs=8, options=OPTIONS),
        "hpc_held": HostSpec("hpc_held", "slurm", max_jobs=8, options=held),
        # Its arrays run two elements at a time (%2): some pending, some running.
        "hpc_two": HostSpec("hpc_two", "slurm", max_jobs=2, options=OPTIONS),
    }


def workflow(root: Path, jobs: list[JobSpec]) -> WorkflowSpec:
    return WorkflowSpec(
        "slurm-test", root / "wf.yaml", root, {j.name: j for j in jobs}, engine_hosts()
    )


def shell_job(name: str, run: str, host: str = "hpc", needs: tuple[str, ...] = ()) -> JobSpec:
    return JobSpec(
        name, "shell", run=run, host=host, needs=needs, resources=Resources(cpus=1, time_s=300)
    )


async def test_engine_runs_a_slurm_workflow(slurm: SlurmCluster, tmp_path: Path) -> None:
    spec = workflow(
        tmp_path,
        [
            shell_job("a", "echo A"),
            shell_job("b", 'test "$CCD_JOB" = b', needs=("a",)),
            shell_job("c", "exit 3"),
            shell_job("h", "echo released", host="hpc_held"),
        ],
    )
    engine = await Engine.open(tmp_path / "state", spec.hosts, FAST)
    events: list[JobEvent] = []
    engine.scheduler.subscribe(events.append)
    try:
        wf = await engine.scheduler.submit(spec)
        await eventually(
            lambda: any(e.job == "h" and e.reason == "JobHeldUser" for e in events),
            "h shown pending, held",
        )
        await run("scontrol", "release", f"jobname={job_tag(wf, 'h', 1)}")
        async with asyncio.timeout(DEADLINE_S):
            await engine.scheduler.wait(wf)
        jobs = {j.name: j for j in (await engine.status(wf)).jobs}
    finally:
        await engine.close()
    assert {n: j.state.value for n, j in jobs.items()} == {
        "a": "succeeded",
        "b": "succeeded",
        "c": "failed",
        "h": "succeeded",
    }
    assert jobs["c"].exit_code == 3 and jobs["c"].signal is None


async def test_a_timeout_does_not_count_the_time_in_the_queue(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """Held in the queue for longer than its 2 s timeout, then released: it runs and
    succeeds; the timeout starts with the job."""
    job = dataclasses.replace(shell_job("h", "echo ran", host="hpc_held"), timeout_s=2.0)
    spec = workflow(tmp_path, [job])
    engine = await Engine.open(tmp_path / "state", spec.hosts, FAST)
    events: list[JobEvent] = []
    engine.scheduler.subscribe(events.append)
    try:
        wf = await engine.scheduler.submit(spec)
        await eventually(lambda: any(e.reason == "JobHeldUser" for e in events), "h held")
        await asyncio.sleep(3.0)  # queued past its timeout: a span of time, not a state
        await run("scontrol", "release", f"jobname={job_tag(wf, 'h', 1)}")
        async with asyncio.timeout(DEADLINE_S):
            await engine.scheduler.wait(wf)
        [status] = (await engine.status(wf)).jobs
    finally:
        await engine.close()
    assert (status.state.value, status.reason) == ("succeeded", None)


async def test_a_job_slurm_can_never_start_fails_and_frees_its_slot(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """More CPUs than any node has: Slurm queues it for ever (PartitionConfig). It is
    cancelled and fails, and the host's one slot goes to the next job."""
    too_big = JobSpec(
        "too_big",
        "shell",
        run="true",
        host="hpc",
        resources=Resources(cpus=slurm.cpus + 1, time_s=300),
    )
    hosts = {**engine_hosts(), "hpc": HostSpec("hpc", "slurm", max_jobs=1, options=OPTIONS)}
    specs = {"too_big": too_big, "fits": shell_job("fits", "echo ok")}
    spec = WorkflowSpec("slurm-test", tmp_path / "wf.yaml", tmp_path, specs, hosts)
    engine = await Engine.open(tmp_path / "state", spec.hosts, FAST)
    try:
        wf = await engine.scheduler.submit(spec)
        async with asyncio.timeout(DEADLINE_S):
            await engine.scheduler.wait(wf)
        jobs = {j.name: j for j in (await engine.status(wf)).jobs}
    finally:
        await engine.close()
    assert (jobs["too_big"].state.value, jobs["too_big"].reason) == (
        "failed",
        "Slurm can never start it (PartitionConfig)",
    )
    assert jobs["fits"].state.value == "succeeded"
    left = await squeue_states(job_tag(wf, "too_big", 1))
    assert set(left.values()) <= {"CANCELLED"}, left  # not still queued


CHILD = """
import asyncio, sys
from pathlib import Path
from ccd.engine import Engine
from tests.conftest import FAST
from tests.integration.test_slurm import engine_hosts, kill9_workflow

async def main() -> None:
    root = Path(sys.argv[1])
    engine = await Engine.open(root / "state", engine_hosts(), FAST)
    print("WF", await engine.scheduler.submit(kill9_workflow(root)), flush=True)
    await asyncio.Event().wait()

asyncio.run(main())
"""
KILL9_JOBS = ("k1", "k2", "k3", "k4")


def kill9_workflow(root: Path) -> WorkflowSpec:
    ran = shlex.quote(str(root / "ran.txt"))
    run = f"sleep 2; echo $CCD_JOB >> {ran}"
    return workflow(root, [shell_job(n, run, host="hpc_two") for n in KILL9_JOBS])


async def squeue_states(prefix: str) -> dict[str, str]:
    """{"NAME|ID": state} of the jobs (array elements apart) whose name starts with prefix."""
    out = await run("squeue", "-h", "-r", "-t", "all", "-o", "%j|%i|%T")
    rows = (line.rpartition("|") for line in out.split())
    return {name_id: state for name_id, _, state in rows if name_id.startswith(prefix)}


async def test_engine_kill9_while_pending_and_running_reattaches(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        textwrap.dedent(CHILD),
        str(tmp_path),
        cwd=REPO,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
    )
    try:
        assert child.stdout is not None
        async with asyncio.timeout(DEADLINE_S):  # its log lines come first
            while not (line := await child.stdout.readline()).startswith(b"WF "):
                assert line, "the child engine exited without printing a workflow id"
        wf = line.decode().split()[1]
        states: dict[str, str] = {}
        async with asyncio.timeout(DEADLINE_S):
            while not (len(states) == 4 and {"PENDING", "RUNNING"} <= set(states.values())):
                states = await squeue_states(f"ccd:{wf}:")
    finally:
        child.kill()  # SIGKILL: no cleanup at all
        await child.wait()
    engine = await Engine.open(tmp_path / "state", engine_hosts(), FAST)
    try:
        await engine.scheduler.recover()
        async with asyncio.timeout(DEADLINE_S):
            await engine.scheduler.wait(wf)
        status = await engine.status(wf)
    finally:
        await engine.close()
    assert {j.name: j.state.value for j in status.jobs} == dict.fromkeys(KILL9_JOBS, "succeeded")
    assert {j.attempts for j in status.jobs} == {1}  # re-attached, never launched again
    assert sorted((tmp_path / "ran.txt").read_text().split()) == list(KILL9_JOBS)
    # Submitted once: as one array of four (its elements re-attached by its tag).
    submitted = await squeue_states(f"ccd:{wf}:")
    assert len(submitted) == 4 and len({key.split("|")[0] for key in submitted}) == 1


async def test_via_ssh_host(slurm: SlurmCluster, sshd: Sshd, tmp_path: Path) -> None:
    """sbatch/squeue through an ssh host's connection, run dirs under its root, inputs sent
    and outputs fetched back; then a fresh executor finds a job by its tag."""
    login = SshExecutor.create(HostSpec("login", "ssh", options=sshd.options(root=sshd.runs)), {})
    options = SlurmOptions(
        via="login", root=f"{sshd.runs}/slurm", poll_interval_s=2.0, poll_interval_min_s=0.2
    )
    host = HostSpec("hpc", "slurm", options=options)
    ex = SlurmExecutor.create(host, {"login": login})
    source = tmp_path / "input.txt"
    source.write_text("data\n")
    ok = replace(
        launch_in(tmp_path, "ssh_ok", "cat input.txt > out.txt; whoami"),
        inputs=(source,),
        outputs=("out.txt",),
    )
    no_output = replace(launch_in(tmp_path, "ssh_none", "true"), outputs=("out.txt", "n*.csv"))
    try:
        handles = [
            await ex.start(ok),
            await ex.start(launch_in(tmp_path, "ssh_bad", "exit 4")),
            await ex.start(no_output),
        ]
        found = None
        again = SlurmExecutor.create(host, {"login": login})
        try:
            found = await again.reattach(ok)
        finally:
            await again.close()
        async with asyncio.timeout(DEADLINE_S):
            results = [await ex.wait(h) for h in handles]
        log = await ex.read_log(handles[0], 0)
    finally:
        await ex.close()
        await login.close()
    missing = "outputs not fetched from hpc: no file matches 'out.txt'"
    assert results == [ExitStatus(0), ExitStatus(4), ExitStatus(0, reason=missing)]
    assert found is not None and found.job_id == handles[0].job_id
    assert log.decode().strip() == sshd.user  # the job ran as the ssh login user
    assert (ok.run_dir / "out.txt").read_text() == "data\n"


@pytest.mark.slow
async def test_walltime_exceeded_is_a_timeout_after_reattach(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """A 1-minute limit, a job that sleeps 300 s: Slurm kills it at ~1:24 (~90 s of test).
    Waited for by a fresh executor (a restarted daemon) that finds the job by its tag."""
    launch = launch_in(tmp_path, "slow", "echo started; sleep 300", resources=Resources(time_s=60))
    first = SlurmExecutor("hpc", LocalShell(), OPTIONS)
    try:
        submitted = await first.start(launch)
    finally:
        await first.close()
    restarted = SlurmExecutor("hpc", LocalShell(), OPTIONS)
    try:
        handle = await restarted.reattach(launch)
        assert handle is not None and handle.job_id == submitted.job_id
        async with asyncio.timeout(180):
            status = await restarted.wait(handle)
    finally:
        await restarted.close()
        cleanup = await asyncio.create_subprocess_exec(
            "scancel", str(submitted.job_id), stderr=subprocess.DEVNULL
        )
        await cleanup.wait()
    assert status.reason == "timeout"
    # sh reports its killed child: "Terminated"
    assert (launch.run_dir / "log").read_text().startswith("started\n")
