"""What jobs used, measured by the real backends: local jobs from the kernel's accounting of
their process tree (the shepherd's wait4), ssh jobs from the wrapper's ``times`` on the real
sshd; shown in the status JSON and by ccctl. (Slurm's sacct figures: test_slurm_arrays.py.)"""

from __future__ import annotations

import json
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from click.testing import CliRunner

from ccd.engine import Engine
from ccd.engine.scheduler import Scheduler
from ccd.engine.store import Store
from ccd.executors.base import Executor, Handle, HostHealth, Launch
from ccd.models import ExitStatus
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources
from ccd.usage import Usage
from cli.main import main
from tests.conftest import FAST, load_text
from tests.helpers import eventually
from tests.integration.conftest import Sshd
from tests.integration.daemon_fixture import DaemonProcess

MIB = 1 << 20
# Burns CPU_S of CPU time (process time: whatever else runs on the machine) holding MEM_MIB.
BURN = textwrap.dedent(
    """\
    import sys, time
    mem = bytearray(int(sys.argv[2]) << 20)
    for i in range(0, len(mem), 4096):
        mem[i] = 1
    start = time.process_time()
    while time.process_time() - start < float(sys.argv[1]):
        pass
    """
)


def jobs_of(status: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {j["name"]: j for j in status["jobs"]}


async def test_a_local_jobs_whole_process_tree_is_counted(
    write_workflow: Callable[..., Path], engine_for: Callable[..., Any]
) -> None:
    # Two children at once, each 0.4 s of CPU and 120 MiB; the shell waits for both.
    spec = load_text(
        write_workflow,
        """
        jobs:
          pair:
            run: python3 burn.py 0.4 120 & python3 burn.py 0.4 120 & wait
            inputs: [burn.py]
            timeout: 10m
          idle: {run: sleep 0.2}
        """,
        **{"burn.py": BURN},
    )
    engine: Engine = await engine_for(spec)
    wf_id = await engine.scheduler.submit(spec)
    await engine.scheduler.wait(wf_id)
    jobs = jobs_of((await engine.status(wf_id)).to_json())
    pair = jobs["pair"]
    assert pair["usage"]["cpu_s"] >= 0.8  # both children, through the shell that reaped them
    assert 120 * MIB <= pair["usage"]["max_rss_bytes"] < 200 * MIB  # the larger, not the sum
    assert pair["usage"]["wall_s"] > 0.4
    assert pair["request"] == {"cpus": None, "mem_bytes": None, "time_s": 600.0}
    assert pair["efficiency"]["time"] == pair["usage"]["wall_s"] / 600
    assert pair["efficiency"]["cpu"] == pair["usage"]["cpu_s"] / pair["usage"]["wall_s"]
    idle = jobs["idle"]
    # From just after the spawn to the reap: a little under the sleep's own 0.2 s at times.
    assert idle["usage"]["cpu_s"] < 0.1 and 0.15 <= idle["usage"]["wall_s"] < 5
    assert idle["request"] is None and idle["efficiency"]["mem"] is None


async def test_usage_of_a_job_that_ended_while_no_engine_ran_comes_from_its_status_file(
    tmp_path: Path, write_workflow: Callable[..., Path], engine_for: Callable[..., Any]
) -> None:
    gate = tmp_path / "gate"
    spec = load_text(
        write_workflow,
        f"""
        jobs:
          a:
            run: while [ ! -e {gate} ]; do sleep 0.02; done; python3 burn.py 0.3 60
            inputs: [burn.py]
        """,
        **{"burn.py": BURN},
    )
    first: Engine = await engine_for(spec)
    wf_id = await first.scheduler.submit(spec)
    status_file = tmp_path / "state" / "runs" / wf_id / "a" / "1" / "status"
    await eventually(status_file.exists, "the job to start")
    await first.close()  # the job runs on, under its shepherd
    gate.touch()
    await eventually(lambda: "\nexit " in status_file.read_text(), "the job to end")
    second: Engine = await engine_for(spec)
    await second.scheduler.recover()
    await second.scheduler.wait(wf_id)
    usage = jobs_of((await second.status(wf_id)).to_json())["a"]["usage"]
    assert usage["cpu_s"] >= 0.3 and usage["max_rss_bytes"] >= 60 * MIB


async def test_an_ssh_jobs_cpu_comes_from_the_wrapper_and_its_peak_is_unknown(
    tmp_path: Path, sshd: Sshd
) -> None:
    hosts = {
        "local": HostSpec("local", "local"),
        "lab": HostSpec("lab", "ssh", 4, sshd.options(root=f"{sshd.runs}/usage-{time.time_ns()}")),
    }
    script = tmp_path / "burn.py"
    script.write_text(BURN)
    job = JobSpec("burn", "py", script=script, args=("0.4", "40"), host="lab", inputs=())
    spec = WorkflowSpec("t", tmp_path / "wf.yaml", tmp_path, {"burn": job}, hosts)
    engine = await Engine.open(tmp_path / "state", hosts)
    try:
        wf_id = await engine.scheduler.submit(spec)
        await engine.scheduler.wait(wf_id)
        burn = jobs_of((await engine.status(wf_id)).to_json())["burn"]
    finally:
        await engine.close()
    assert burn["state"] == "succeeded"
    assert burn["usage"]["cpu_s"] >= 0.35  # sh's `times`: 1/100 s ticks
    assert burn["usage"]["wall_s"] >= burn["usage"]["cpu_s"] - 0.05
    assert burn["usage"]["max_rss_bytes"] is None


def test_ccctl_shows_usage_and_sums_it_up(write_workflow: Callable[..., Path], tmp_path: Path):
    wf = write_workflow(
        """
        jobs:
          burn: {run: python3 burn.py 0.3 50, timeout: 1h, inputs: [burn.py]}
        """,
        **{"burn.py": BURN},
    )
    state = str(tmp_path / "state")
    result = CliRunner().invoke(main, ["run", str(wf), "--state-dir", state])
    assert result.exit_code == 0, result.output
    last = result.output.strip().splitlines()[-1]
    assert last.startswith("used ") and "CPU hours over 1 jobs" in last
    assert "asked for far more" not in last  # a local timeout is no reservation
    status = json.loads(
        CliRunner().invoke(main, ["run", str(wf), "--state-dir", state, "--json"]).output
    )
    assert status["jobs"][0]["usage"]["cpu_s"] >= 0.3


def test_ccctl_status_usage_through_the_daemon(tmp_path: Path) -> None:
    workflow = tmp_path / "wf.yaml"
    (tmp_path / "burn.py").write_text(BURN)
    workflow.write_text(
        "jobs:\n"
        "  burn: {run: python3 burn.py 0.3 80, inputs: [burn.py], timeout: 1h}\n"
        "  quick: {run: 'true'}\n"
    )
    daemon = DaemonProcess(tmp_path).start()
    try:
        wf_id = daemon.client.submit(workflow)
        daemon.client.wait(wf_id)
        shown = daemon.ccctl("status", wf_id, "--usage", check=True).stdout
        as_json = json.loads(daemon.ccctl("status", wf_id, "--json", check=True).stdout)
        [attempt] = daemon.client.attempts(wf_id, "burn")
    finally:
        daemon.stop()
    header, burn, quick = shown.splitlines()[:3]
    columns = ["JOB", "STATE", "WALL", "CPU", "CPU%", "MAXRSS", "MEM%", "TIME%", "ASKED"]
    assert header.split() == columns
    assert burn.split()[:2] == ["burn", "succeeded"] and burn.split()[-1] == "1h00m"
    assert quick.split()[0] == "quick" and quick.split()[-1] == "-"  # asked for nothing
    assert shown.rstrip().splitlines()[-1].startswith("used ")
    usage = {j["name"]: j["usage"] for j in as_json["jobs"]}
    assert usage["burn"]["cpu_s"] >= 0.3 and usage["burn"]["max_rss_bytes"] >= 80 * MIB
    assert attempt["usage"] == usage["burn"]  # the API's attempts carry theirs too
    assert attempt["request"]["time_s"] == 3600.0 and attempt["efficiency"]["time"] > 0


class OutOfMemoryOnce:
    """A batch host (scripted: no test node can run out of memory) whose first attempt dies
    of OUT_OF_MEMORY having peaked at 3 GiB; it records every attempt's request."""

    def __init__(self) -> None:
        self.asked: list[Resources | None] = []

    async def start(self, launch: Launch) -> Handle:
        self.asked.append(launch.resources)
        return Handle(launch.workflow_id, launch.job, launch.attempt, launch.run_dir, None, "hpc")

    async def wait(self, handle: Handle) -> ExitStatus:
        if handle.attempt == 1:
            return ExitStatus(None, reason="out_of_memory", usage=Usage(max_rss_bytes=3 << 30))
        return ExitStatus(0, usage=Usage(10.0, 9.0, 5 << 30))

    async def signal(self, handle: Handle, signum: int) -> None:
        pass

    async def read_log(self, handle: Handle, offset: int) -> bytes:
        return b""

    async def read_file(self, handle: Handle, name: str, limit: int) -> bytes:
        return b""  # no outputs

    async def reattach(self, launch: Launch) -> Handle | None:
        return None

    def health(self) -> HostHealth:
        return HostHealth()

    def listen(self, on_state: Any, on_health: Any) -> None:
        pass

    async def close(self) -> None:
        pass


async def test_a_retry_after_out_of_memory_asks_twice_the_measured_peak(tmp_path: Path) -> None:
    hpc = OutOfMemoryOnce()
    store = await Store.open(tmp_path / "ccd.db")
    executors: dict[str, Executor] = {"hpc": hpc}  # type: ignore[dict-item]
    scheduler = Scheduler(store, executors, tmp_path / "runs", FAST)
    job = JobSpec("big", "shell", run="true", host="hpc", retries=1, on_retry={"mem": 2.0})
    spec = WorkflowSpec("oom", tmp_path / "wf.yaml", tmp_path, {"big": job}, {})
    try:
        wf = await scheduler.submit(spec)
        assert await scheduler.wait(wf) == "succeeded"
        await scheduler.committed()
        usage = await store.list_usage(wf)
    finally:
        await scheduler.close()
        await store.close()
    assert hpc.asked == [None, Resources(mem_kib=6 << 20)]  # no request of its own: 2 x 3 GiB
    assert usage[("big", 1)].usage.max_rss_bytes == 3 << 30
    assert usage[("big", 2)].usage == Usage(10.0, 9.0, 5 << 30)
