"""Workflows across every backend at once, and --dry-run against the real cluster."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

from ccd.engine import Engine, Limits
from ccd.spec import HostSpec, JobSpec, WorkflowSpec
from ccd.spec.hosts import Resources, SlurmOptions
from tests.conftest import run_spec
from tests.integration import slurm_fixture
from tests.integration.conftest import Sshd
from tests.integration.slurm_fixture import REPO, SlurmCluster

slurm = slurm_fixture.slurm  # the session fixture, seen by pytest in this module


async def test_local_slurm_ssh_local_chain(sshd: Sshd, slurm: SlurmCluster, tmp_path: Path) -> None:
    """prepare (local) -> compute (Slurm) -> post (ssh) -> report (local); each job sees
    where it ran, and the chain's order holds across backends."""
    out = tmp_path / "report.txt"
    hosts = {
        "local": HostSpec("local", "local"),
        "lab": HostSpec("lab", "ssh", max_jobs=2, options=sshd.options(root=sshd.runs)),
        "hpc": HostSpec(
            "hpc",
            "slurm",
            max_jobs=2,
            options=SlurmOptions(poll_interval_s=1.0, poll_interval_min_s=0.1),
        ),
    }
    jobs = {
        "prepare": JobSpec("prepare", "shell", run="echo local:$CCD_JOB"),
        "compute": JobSpec(
            "compute",
            "shell",
            run='echo "slurm:$SLURM_JOB_ID"',
            needs=("prepare",),
            host="hpc",
            resources=Resources(cpus=1, time_s=300),
        ),
        "post": JobSpec("post", "shell", run="echo ssh:$(id -un)", needs=("compute",), host="lab"),
        "report": JobSpec("report", "shell", run=f"echo done > {out}", needs=("post",)),
    }
    spec = WorkflowSpec("mixed", tmp_path / "mixed.yaml", tmp_path, jobs, hosts)
    engine = await Engine.open(tmp_path / "state", hosts, Limits(progress_interval_s=0.2))
    try:
        result = await run_spec(engine, spec)
        wf_id = result[""]["id"]
        assert result[""]["state"] == "succeeded", result
        logs = {n: (await engine.read_log(wf_id, n, None, 0))[1] for n in jobs}
    finally:
        await engine.close()
    assert logs["prepare"] == b"local:prepare\n"
    assert logs["compute"].startswith(b"slurm:") and logs["compute"].strip() != b"slurm:"
    assert logs["post"] == f"ssh:{sshd.user}\n".encode()
    assert out.read_text() == "done\n"


def test_dry_run_renders_batch_scripts_and_checks_limits(
    slurm: SlurmCluster, tmp_path: Path
) -> None:
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        textwrap.dedent(f"""
        hosts:
          hpc: {{type: slurm, partition: {slurm.partition}}}
        jobs:
          fits: {{host: hpc, run: 'echo hi', resources: {{cpus: 1, mem: 64M, time: 5m}}}}
    """)
    )
    state = tmp_path / "state"
    ok = _ccctl("run", str(wf), "--dry-run", "--state-dir", str(state))
    assert ok.returncode == 0, ok.stderr
    assert "$ sbatch --parsable" in ok.stdout
    for line in (
        "#SBATCH --cpus-per-task=1",
        "#SBATCH --time=00:05:00",
        f"#SBATCH --partition={slurm.partition}",
        "#SBATCH --job-name=ccd:",
    ):
        assert line in ok.stdout, line
    assert "!!" not in ok.stdout and not (state / "ccd.db").exists()

    too_big = slurm.cpus + 1
    wf.write_text(wf.read_text().replace("cpus: 1,", f"cpus: {too_big},"))
    refused = _ccctl("run", str(wf), "--dry-run", "--state-dir", str(state))
    assert refused.returncode == 1
    assert f"!! cpus {too_big}" in refused.stdout
    squeue = subprocess.run(["squeue", "-h", "-o", "%j"], capture_output=True, text=True)
    assert "DRYRUN" not in squeue.stdout  # nothing was submitted


def test_dry_run_json_through_ssh_is_json_only(
    sshd: Sshd, slurm: SlurmCluster, tmp_path: Path
) -> None:
    """Planning a Slurm job behind an ssh host connects (and logs that it did): the log lines
    must stay off stdout, which is the plans'."""
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        textwrap.dedent(f"""
        hosts:
          lab: {{type: ssh, hostname: {sshd.host}, port: {sshd.port}, user: {sshd.user},
                identity: {sshd.key}, known_hosts: {sshd.known_hosts}, root: {sshd.runs}}}
          hpc: {{type: slurm, via: lab, partition: {slurm.partition}}}
        jobs:
          fits: {{host: hpc, run: 'echo hi', resources: {{cpus: 1, mem: 64M, time: 5m}}}}
    """)
    )
    done = _ccctl("run", str(wf), "--dry-run", "--json", "--state-dir", str(tmp_path / "state"))
    assert done.returncode == 0, done.stderr
    [plan] = json.loads(done.stdout)
    assert (plan["job"], plan["host"], plan["problems"]) == ("fits", "hpc", [])
    assert plan["sbatch"].startswith("sbatch --parsable")


def _ccctl(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "cli", *args], capture_output=True, text=True, cwd=REPO, timeout=120
    )
