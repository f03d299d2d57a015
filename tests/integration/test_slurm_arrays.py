"""Job arrays, accounting figures and submit limits against real Slurm (the shared test
cluster; the limits on a private controller of their own: slurm_limits_fixture.py).

Each test checks Slurm's side too (squeue, sacct): one sbatch for many jobs, elements that
fail, are cancelled and are retried on their own, a workflow cancelled with one scancel, a
restarted engine that finds its arrays again and submits nothing twice."""

from __future__ import annotations

import asyncio
import secrets
import subprocess
from collections.abc import AsyncIterator, Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from ccd.engine import Engine
from ccd.engine.runs import JobEvent
from ccd.executors import slurm_submit
from ccd.executors.base import Launch
from ccd.executors.shell import LocalShell
from ccd.executors.slurm import SlurmExecutor
from ccd.executors.slurm_arrays import MARKER_NAME, parse_marker
from ccd.models import Limits
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources, SlurmOptions
from tests.conftest import FAST
from tests.helpers import eventually
from tests.integration import slurm_fixture, slurm_limits_fixture
from tests.integration.slurm_fixture import SlurmCluster
from tests.integration.slurm_limits_fixture import LimitedCluster

slurm = slurm_fixture.slurm  # the session fixture, seen by pytest in this module
# Quick on an idle cluster; on the shared one, other tests' jobs may queue ahead of ours.
pytestmark = pytest.mark.timeout(480)
limited_slurm = slurm_limits_fixture.limited_slurm

DEADLINE_S = 240.0  # a shared cluster: other tests' jobs may queue ahead of ours
OPTIONS = SlurmOptions(poll_interval_s=1.0, poll_interval_min_s=0.2)
SMALL = Resources(cpus=1, time_s=600, mem_kib=100 * 1024)


def hosts(max_jobs: int | None = None, **options: Any) -> dict[str, HostSpec]:
    opts = replace(OPTIONS, **options)
    return {"local": HostSpec("local", "local"), "hpc": HostSpec("hpc", "slurm", max_jobs, opts)}


def workflow(root: Path, host_specs: dict[str, HostSpec], jobs: dict[str, str]) -> WorkflowSpec:
    specs = {
        name: JobSpec(name, "shell", run=run, host="hpc", resources=SMALL)
        for name, run in jobs.items()
    }
    return WorkflowSpec("arrays", root / "wf.yaml", root, specs, host_specs)


def slurm_of(engine: Engine) -> SlurmExecutor:
    executor = engine._executors["hpc"]
    assert isinstance(executor, SlurmExecutor)
    return executor


def run(*argv: str) -> str:
    return subprocess.run(argv, capture_output=True, text=True, check=True, timeout=60).stdout


def slurm_rows(name_prefix: str) -> list[tuple[str, str, str]]:
    """(job name, job id, state) of every job and array element named with this prefix."""
    out = run("squeue", "-h", "-r", "-t", "all", "-o", "%j|%i|%T")
    rows = [tuple(line.split("|")) for line in out.split()]
    return [(n, i, s) for n, i, s in rows if n.startswith(name_prefix)]


async def until(check: Callable[[], object], what: str) -> None:
    await eventually(check, what, timeout_s=DEADLINE_S)


@pytest.fixture
async def engines(tmp_path: Path) -> AsyncIterator[Callable[..., Any]]:
    """Engines over one state dir; afterwards, whatever their workflows left in Slurm (a
    failed test's jobs) is cancelled: the cluster is shared."""
    opened: list[Engine] = []

    async def open_engine(host_specs: dict[str, HostSpec], limits: Limits = FAST) -> Engine:
        engine = await Engine.open(tmp_path / "state", host_specs, limits)
        opened.append(engine)
        return engine

    yield open_engine
    for engine in opened:
        await engine.close()
    runs = tmp_path / "state" / "runs"
    workflows = [d.name for d in runs.iterdir() if d.is_dir()] if runs.exists() else []
    leftovers = [i for wf in workflows for _, i, s in slurm_rows(f"ccd:{wf}:") if s in LIVE]
    if leftovers:
        run("scancel", *{i.split("_")[0] for i in leftovers})


LIVE = ("PENDING", "RUNNING", "SUSPENDED", "CONFIGURING", "COMPLETING")


async def test_ready_jobs_go_as_one_throttled_array_each_element_its_own_job(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    jobs = {f"ok{i}": 'echo "# ccd progress=50"; echo element $CCD_JOB; sleep 1' for i in range(24)}
    jobs["bad"] = "exit 3"
    spec = workflow(tmp_path, hosts(max_jobs=3), jobs)
    engine: Engine = await engines(spec.hosts)
    wf = await engine.scheduler.submit(spec)
    most_running = 0

    def watch_slurm() -> bool:
        nonlocal most_running
        states = [s for _, _, s in slurm_rows(f"ccd:{wf}:")]
        most_running = max(most_running, states.count("RUNNING"))
        return engine.scheduler.workflows.get(wf) is None

    await until(watch_slurm, "the workflow to end")
    status = (await engine.status(wf)).to_json()
    executor = slurm_of(engine)
    assert executor.command_counts["sbatch"] == 1 and executor.submit_queue.arrays == 1
    [name] = {n for n, _, _ in slurm_rows(f"ccd:{wf}:")}
    assert name.startswith(f"ccd:{wf}:@")  # the array's tag, on all 25 elements
    assert most_running <= 3  # %3, as the array's script asks
    [script] = (tmp_path / "state" / "runs" / wf / ".arrays").glob("*/job.sbatch")
    assert "#SBATCH --array=0-24%3\n" in script.read_text()
    by_name = {j["name"]: j for j in status["jobs"]}
    assert by_name["bad"]["state"] == "failed" and by_name["bad"]["exit_code"] == 3
    for i in range(24):
        job = by_name[f"ok{i}"]
        assert (job["state"], job["progress"]) == ("succeeded", 50)
        run_dir = tmp_path / "state" / "runs" / wf / f"ok{i}" / "1"
        assert (run_dir / "log").read_text() == f"# ccd progress=50\nelement ok{i}\n"
        marker = parse_marker((run_dir / MARKER_NAME).read_text())
        assert marker is not None and marker[0] == name
    # One squeue (and at most one sacct) per round, the array's 25 elements included.
    assert max(executor.round_commands) <= 2


async def test_one_element_cancelled_failed_and_retried_alone(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    spec = workflow(
        tmp_path,
        hosts(),
        {
            "a": "true",
            "b": "sleep 300",  # cancelled alone
            "c": 'test -e "$CCD_RUN_DIR/../retried" || exit 7',
        },
    )
    engine: Engine = await engines(spec.hosts)
    events: list[JobEvent] = []
    engine.scheduler.subscribe(events.append)
    wf = await engine.scheduler.submit(spec)
    await until(lambda: len(slurm_rows(f"ccd:{wf}:")) == 3, "the array queued")
    rows = slurm_rows(f"ccd:{wf}:")
    assert len({n for n, _, _ in rows}) == 1 and all("_" in i for _, i, _ in rows)  # one array
    engine.scheduler.cancel(wf, ["b"])
    async with asyncio.timeout(DEADLINE_S):
        await engine.scheduler.wait(wf)
    jobs = {j.name: j for j in (await engine.status(wf)).jobs}
    assert {n: j.state.value for n, j in jobs.items()} == {
        "a": "succeeded",
        "b": "cancelled",
        "c": "failed",
    }
    assert jobs["c"].exit_code == 7
    assert slurm_of(engine).command_counts["scancel"] >= 1
    # b's element alone was cancelled (a cancelled pending element leaves squeue at once).
    states = sorted(s for _, _, s in slurm_rows(f"ccd:{wf}:"))
    assert states in (["CANCELLED", "COMPLETED", "FAILED"], ["COMPLETED", "FAILED"])
    (tmp_path / "state" / "runs" / wf / "c" / "retried").touch()
    sbatches = slurm_of(engine).command_counts["sbatch"]
    await engine.scheduler.retry(wf, ["c"])
    async with asyncio.timeout(DEADLINE_S):
        await engine.scheduler.wait(wf)
    [c] = [j for j in (await engine.status(wf)).jobs if j.name == "c"]
    assert (c.state.value, c.attempts) == ("succeeded", 2)
    assert slurm_of(engine).command_counts["sbatch"] == sbatches + 1
    resubmitted = [(n, i) for n, i, _ in slurm_rows(f"ccd:{wf}:c:2")]
    assert len(resubmitted) == 1 and "_" not in resubmitted[0][1]  # alone, not an array


async def test_a_cancelled_workflow_is_one_scancel_of_its_array(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    spec = workflow(tmp_path, hosts(max_jobs=2), {f"j{i}": "sleep 300" for i in range(8)})
    engine: Engine = await engines(spec.hosts, replace(FAST, kill_grace_s=60.0))
    wf = await engine.scheduler.submit(spec)
    await until(lambda: len(slurm_rows(f"ccd:{wf}:")) == 8, "the array queued")
    engine.scheduler.cancel(wf)
    await until(lambda: engine.scheduler.workflows.get(wf) is None, "all cancelled")
    assert slurm_of(engine).command_counts["scancel"] == 1
    states = [s for _, _, s in slurm_rows(f"ccd:{wf}:")]
    assert "RUNNING" not in states and "PENDING" not in states
    jobs = (await engine.status(wf)).jobs
    assert {j.state.value for j in jobs} == {"cancelled"}


async def test_a_restarted_engine_reattaches_to_its_array_and_submits_nothing(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    held = hosts(resources=Resources(sbatch_args=("--hold",)))
    spec = workflow(tmp_path, held, {f"j{i}": "echo $CCD_JOB" for i in range(6)})
    first = await Engine.open(tmp_path / "state", spec.hosts, FAST)
    try:
        wf = await first.scheduler.submit(spec)
        await until(lambda: len(slurm_rows(f"ccd:{wf}:")) == 6, "six elements queued")
    finally:
        await first.close()  # as if the daemon stopped: the array stays queued
    second: Engine = await engines(spec.hosts)
    await second.scheduler.recover()
    [array] = {i.split("_")[0] for _, i, _ in slurm_rows(f"ccd:{wf}:")}
    run("scontrol", "release", array)
    async with asyncio.timeout(DEADLINE_S):
        await second.scheduler.wait(wf)
    jobs = (await second.status(wf)).jobs
    assert {(j.state.value, j.attempts) for j in jobs} == {("succeeded", 1)}
    assert slurm_of(second).command_counts["sbatch"] == 0
    assert len(slurm_rows(f"ccd:{wf}:")) == 6


async def test_an_array_sbatch_cut_off_by_a_crash_is_found_not_repeated(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    """The daemon dies just after sbatch took an array, before its reply was read: a new
    executor finds each element by the array's tag (named by the markers written before
    the sbatch), and the array ran once. One that dies just before its sbatch: each element
    is claimed by the new executor, to be launched afresh."""
    root = tmp_path / "runs"
    ran = root / "ran"

    async def crash(launches: list[Launch], *, after_sbatch: bool) -> SlurmExecutor:
        first = SlurmExecutor("hpc", LocalShell(), OPTIONS)
        dead = asyncio.Event()

        async def sbatch(argv: Any) -> Any:
            if after_sbatch:
                await SlurmExecutor._slurm(first, argv)
            dead.set()
            await asyncio.Event().wait()  # the daemon is gone: nothing more happens

        queue = first.submit_queue
        queue._cluster = replace(queue._cluster, sbatch=sbatch)  # type: ignore[misc]
        starts = [asyncio.ensure_future(first.start(launch)) for launch in launches]
        await dead.wait()
        await first.close()
        await asyncio.gather(*starts, return_exceptions=True)
        return SlurmExecutor("hpc", LocalShell(), OPTIONS)

    taken = [launch_of(root, f"j{i}", f"echo $CCD_JOB >> {ran}") for i in range(3)]
    again = await crash(taken, after_sbatch=True)
    try:
        handles = [await again.reattach(launch) for launch in taken]
        assert all(h is not None and "_" in (h.job_id or "") for h in handles)
        results = [await again.wait(h) for h in handles if h is not None]
        assert all(r.ok for r in results) and again.command_counts["sbatch"] == 0
    finally:
        await again.close()
    assert sorted(ran.read_text().split()) == ["j0", "j1", "j2"]
    assert len(slurm_rows(f"ccd:{RUN}:@")) == 3  # one array of three: submitted once

    lost = [launch_of(root, f"k{i}", "true", wf=f"{RUN}k") for i in range(2)]
    again = await crash(lost, after_sbatch=False)
    try:
        assert [await again.reattach(launch) for launch in lost] == [None, None]
    finally:
        await again.close()
    assert all((launch.run_dir / "status").read_text() == "claimed\n" for launch in lost)


RUN = f"a{secrets.token_hex(4)}"


def launch_of(root: Path, job: str, command: str, wf: str = RUN) -> Launch:
    run_dir = root / wf / job / "1"
    return Launch(
        wf,
        job,
        1,
        run_dir,
        run_dir / "run.sh",
        (".", "./run.sh"),
        {},
        inline=command,
        resources=SMALL,
    )


async def test_arrays_can_be_switched_off(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    spec = workflow(tmp_path, hosts(max_jobs=8, arrays=False), {f"j{i}": "true" for i in range(4)})
    engine: Engine = await engines(spec.hosts)
    wf = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf)
    assert slurm_of(engine).command_counts["sbatch"] == 4
    assert slurm_of(engine).submit_queue.arrays == 0
    assert all("_" not in i for _, i, _ in slurm_rows(f"ccd:{wf}:"))


async def test_sacct_figures_and_the_allocation_come_back(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    burn = (
        'python3 -c \'import time; m = bytearray(120 << 20); m[::4096] = b"x" * len(m[::4096]);'
        " t = time.process_time()\nwhile time.process_time() - t < 2.5: pass'"
    )
    cpus = min(2, slurm.cpus)
    sampled = Resources(
        cpus=cpus, time_s=600, mem_kib=1 << 20, sbatch_args=("--acctg-freq=task=1",)
    )
    specs = {
        "burn": JobSpec("burn", "shell", run=burn, host="hpc", resources=sampled),
        "quick": JobSpec("quick", "shell", run="true", host="hpc", resources=sampled),
    }
    spec = WorkflowSpec("usage", tmp_path / "wf.yaml", tmp_path, specs, hosts())
    engine: Engine = await engines(spec.hosts)
    wf = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf)
    await engine.usage_settled()
    jobs = {j["name"]: j for j in (await engine.status(wf)).to_json()["jobs"]}
    burn_job = jobs["burn"]
    assert burn_job["usage"]["cpu_s"] >= 2.0  # TotalCPU
    assert burn_job["usage"]["max_rss_bytes"] >= 120 << 20  # MaxRSS of the batch step
    assert burn_job["usage"]["wall_s"] >= 2.0  # Elapsed
    assert burn_job["request"] == {"cpus": cpus, "mem_bytes": 1 << 30, "time_s": 600.0}
    assert 0 < burn_job["efficiency"]["mem"] < 0.5
    quick = jobs["quick"]["usage"]
    assert quick["cpu_s"] is not None and quick["cpu_s"] < 0.5


@pytest.fixture
def fast_holds(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(slurm_submit, "HOLD_BACKOFF_S", (0.5, 1.0))


async def test_a_submit_limit_holds_jobs_then_submits_them_later(
    slurm: SlurmCluster,
    limited_slurm: LimitedCluster,
    monkeypatch: pytest.MonkeyPatch,
    fast_holds: None,
    tmp_path: Path,
    engines: Callable[..., Any],
) -> None:
    monkeypatch.setenv("SLURM_CONF", str(limited_slurm.conf))
    limited = hosts(partition=limited_slurm.partition, qos=limited_slurm.qos)
    spec = workflow(tmp_path, limited, {f"j{i}": "true" for i in range(5)})
    engine: Engine = await engines(spec.hosts)
    events: list[JobEvent] = []
    engine.scheduler.subscribe(events.append)
    wf = await engine.scheduler.submit(spec)

    def held() -> set[str]:
        return {
            e.job for e in events if e.job and "QOSMaxSubmitJobPerUserLimit" in (e.reason or "")
        }

    await until(lambda: len(held()) == 3, "three held, saying why")
    reason = next(e.reason for e in events if e.job and "QOSMax" in (e.reason or ""))
    assert reason is not None and reason.startswith("held: sbatch said not now (")
    rows = slurm_rows(f"ccd:{wf}:")
    assert len(rows) == 2  # the limit: two queued (no node runs them on this controller)
    jobs = {j.name: j for j in (await engine.status(wf)).jobs}
    assert {j.state.value for j in jobs.values()} == {"submitted"}  # none failed
    # The two leave the queue (a cancelled pending element leaves no trace): the held ones
    # are taken as room frees up, as many as the limit lets in.
    for _, job_id, _ in rows:
        run("scancel", job_id)
    first = {name for name, _, _ in rows}

    def taken_later() -> set[str]:
        return {name for name, _, _ in slurm_rows(f"ccd:{wf}:")} - first

    await until(lambda: len(taken_later()) == 2, "two held jobs submitted")

    def still_held() -> list[str]:
        latest = {e.job: e.reason or "" for e in events if e.job}
        return [job for job, reason in latest.items() if reason.startswith("held")]

    await until(lambda: len(still_held()) == 1, "one left held (the limit is two)")
    engine.scheduler.cancel(wf)
    await until(lambda: engine.scheduler.workflows.get(wf) is None, "workflow cancelled")


async def test_a_never_refusal_fails_the_job_with_slurms_words(
    slurm: SlurmCluster, tmp_path: Path, engines: Callable[..., Any]
) -> None:
    spec = workflow(tmp_path, hosts(partition="no-such-partition"), {"a": "true", "b": "true"})
    engine: Engine = await engines(spec.hosts)
    wf = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf)
    jobs = (await engine.status(wf)).jobs
    assert {j.state.value for j in jobs} == {"failed"}
    assert all("Invalid partition name specified" in (j.reason or "") for j in jobs)
    assert slurm_of(engine).command_counts["sbatch"] == 1  # an array, refused once
