"""A real single-node Slurm for the tests: brought up once per machine, shared by all workers.

Use it by importing the fixture into a test module (pytest then sees it there)::

    from tests.integration.slurm_fixture import slurm  # noqa: F401

``slurm`` (session scope) makes sure the cluster answers: if ``sinfo``/``squeue`` already
work, nothing is touched (so a cluster started by CI, by another pytest-xdist worker or with
other knobs such as SLURM_UP_CPUS=32 is left as it is); otherwise it runs
``scripts/infra/slurm-up.sh`` under an exclusive ``flock`` on a file in /tmp, so that of several
workers only one brings it up and the others wait and then find it up. It never stops the
cluster: other workers may still use it; CI's run script (or the developer) calls
``scripts/infra/slurm-down.sh``. If Slurm cannot be brought up, tests fail under ``CI=true`` and
are skipped otherwise, with the reason.
"""

from __future__ import annotations

import fcntl
import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
UP_SCRIPT = REPO / "scripts" / "infra" / "slurm-up.sh"
LOCK_PATH = Path("/tmp/ccd-slurm-up.lock")
UP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class SlurmCluster:
    partition: str  # the default partition
    node: str
    cpus: int  # of the (first) node
    mem_mib: int


def _run(argv: list[str], timeout_s: float = 30.0) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)


def probe() -> SlurmCluster | None:
    """The cluster if it takes jobs now: a partition that is up and a usable node."""
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return None
    try:
        out = _run(["sinfo", "-h", "-N", "-o", "%N|%c|%m|%P|%T"], timeout_s=15)
        queue = _run(["squeue", "-h", "-o", "%i"], timeout_s=15)
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or queue.returncode != 0:
        return None
    for line in out.stdout.splitlines():
        node, cpus, mem, partition, state = line.split("|")
        if partition.endswith("*") and state.rstrip("*~#") in ("idle", "mixed", "allocated"):
            return SlurmCluster(partition.rstrip("*"), node, int(cpus), int(mem))
    return None


def _bring_up() -> tuple[SlurmCluster | None, str]:
    """Probe, and run slurm-up.sh if needed, holding the machine-wide lock."""
    with LOCK_PATH.open("a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        cluster = probe()
        if cluster is not None:
            return cluster, ""
        if os.geteuid() != 0:
            return None, "Slurm is not running and slurm-up.sh needs root"
        try:
            result = _run(["bash", str(UP_SCRIPT)], timeout_s=UP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            return None, f"slurm-up.sh took longer than {UP_TIMEOUT_S:.0f} s"
        cluster = probe()
        if cluster is None:
            tail = "\n".join((result.stdout + result.stderr).splitlines()[-15:])
            return None, f"slurm-up.sh exited {result.returncode}:\n{tail}"
        return cluster, ""


@pytest.fixture(scope="session")
def slurm() -> Iterator[SlurmCluster]:
    cluster, why = _bring_up()
    if cluster is None:
        message = f"no Slurm cluster for the tests: {why}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    yield cluster
