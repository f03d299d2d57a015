"""A private Slurm controller that enforces submit limits, for the tests of sbatch refusals.

The shared test cluster (scripts/infra/slurm-up.sh) runs with ``AccountingStorageEnforce=none``
(no association or QOS limits), and other workers use it at the same time: a limit set there
would not apply, and one that did could refuse their jobs. So this fixture starts a second
``slurmctld`` of its own: its own config (``SLURM_CONF``), ports, state dir and cluster name,
registered in the shared slurmdbd, with ``AccountingStorageEnforce=associations,limits,qos``,
a QOS of its own with ``MaxSubmitJobsPerUser``, and no slurmd (a submit limit is checked by
the controller alone; jobs it takes stay pending). Everything is removed afterwards: the
controller stopped, the QOS, association and cluster deleted from slurmdbd.

Needs root, the shared cluster's slurmdbd (the ``slurm`` fixture) and ``slurmctld``; skipped
(failed under ``CI=true``) otherwise.
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

SLURMCTLD = "/usr/sbin/slurmctld"
START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0


@dataclass(frozen=True)
class LimitedCluster:
    conf: Path  # SLURM_CONF for every Slurm command aimed at it
    partition: str
    qos: str  # MaxSubmitJobsPerUser=max_submit
    max_submit: int

    def env(self) -> dict[str, str]:
        return {**os.environ, "SLURM_CONF": str(self.conf)}


def _run(argv: list[str], env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False, env=env)


def _sacctmgr(*args: str) -> None:
    result = _run(["sacctmgr", "-i", *args])
    if result.returncode != 0:
        raise RuntimeError(f"sacctmgr {' '.join(args)}: {result.stderr.strip()}")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _config(name: str, home: Path, partition: str) -> str:
    return f"""ClusterName={name}
SlurmctldHost={socket.gethostname()}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={home}/state
SlurmdSpoolDir={home}/d
SlurmctldPidFile={home}/slurmctld.pid
SlurmdPidFile={home}/slurmd.pid
SlurmctldLogFile={home}/slurmctld.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
AccountingStorageEnforce=associations,limits,qos
JobAcctGatherType=jobacct_gather/none
MailProg=/bin/true
NodeName={name}n NodeAddr=127.0.0.1 NodeHostname={socket.gethostname()} CPUs=1 RealMemory=100
PartitionName={partition} Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


def _why_not() -> str | None:
    if os.geteuid() != 0:
        return "a private slurmctld needs root"
    if not Path(SLURMCTLD).exists() or shutil.which("sacctmgr") is None:
        return "slurmctld or sacctmgr is not installed"
    if _run(["sacctmgr", "-n", "show", "cluster"]).returncode != 0:
        return "slurmdbd does not answer"
    return None


def _wait_up(env: dict[str, str], pid_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if pid_file.exists() and "UP" in _run(["scontrol", "ping"], env).stdout:
            return
        time.sleep(0.1)
    raise RuntimeError("the private slurmctld did not come up")


def _stop(pid_file: Path) -> None:
    try:
        pid = int(pid_file.read_text())
    except (OSError, ValueError):
        return
    for signum, wait_s in ((signal.SIGTERM, STOP_TIMEOUT_S), (signal.SIGKILL, 5.0)):
        try:
            os.kill(pid, signum)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + wait_s
        while Path(f"/proc/{pid}").exists() and time.monotonic() < deadline:
            time.sleep(0.1)


@pytest.fixture
def limited_slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LimitedCluster]:
    why = _why_not()
    if why is not None:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(why)
        pytest.skip(why)
    token = secrets.token_hex(3)
    name, account, qos, partition = f"ccdlim{token}", f"ccdlim{token}", f"ccdq{token}", "lim"
    home = tmp_path_factory.mktemp("slurm-limits")
    (home / "state").mkdir()
    conf = home / "slurm.conf"
    conf.write_text(_config(name, home, partition))
    cluster = LimitedCluster(conf, partition, qos, max_submit=2)
    env = cluster.env()
    cleanup: list[tuple[str, ...]] = []
    try:
        _sacctmgr("add", "cluster", name)
        cleanup.append(("delete", "cluster", name))
        _sacctmgr("add", "account", account, f"cluster={name}")
        cleanup.append(("delete", "account", account, f"cluster={name}"))
        _sacctmgr("add", "user", "root", f"account={account}", f"cluster={name}")
        cleanup.append(("delete", "user", "root", f"account={account}", f"cluster={name}"))
        _sacctmgr("add", "qos", qos, f"MaxSubmitJobsPerUser={cluster.max_submit}")
        cleanup.append(("delete", "qos", qos))
        _sacctmgr("modify", "user", "root", "where", f"cluster={name}", "set", f"qos+={qos}")
        result = subprocess.run([SLURMCTLD, "-f", str(conf)], env=env, capture_output=True,
                                timeout=60, check=False)  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"slurmctld: {result.stderr.decode().strip()}")
        _wait_up(env, home / "slurmctld.pid")
        yield cluster
    finally:
        _run(["scancel", "--user=root"], env)
        _stop(home / "slurmctld.pid")
        for args in reversed(cleanup):
            _run(["sacctmgr", "-i", *args])
