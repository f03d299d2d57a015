"""Outputs and a run-time sweep across backends: a job on the ssh host decides the sweep,
its members run on Slurm and hand their outputs back, a local job reads them all."""

from __future__ import annotations

import json
from pathlib import Path

from ccd.engine import Engine, Limits
from ccd.spec import HostSpec, load
from ccd.spec.hosts import SlurmOptions
from tests.conftest import run_spec
from tests.integration import slurm_fixture
from tests.integration.conftest import Sshd
from tests.integration.slurm_fixture import SlurmCluster

slurm = slurm_fixture.slurm  # the session fixture, seen by pytest in this module


async def test_outputs_and_a_runtime_sweep_across_ssh_and_slurm(
    sshd: Sshd, slurm: SlurmCluster, tmp_path: Path
) -> None:
    hosts = {
        "local": HostSpec("local", "local"),
        "lab": HostSpec("lab", "ssh", max_jobs=2, options=sshd.options(root=sshd.runs)),
        "hpc": HostSpec(
            "hpc",
            "slurm",
            max_jobs=3,
            options=SlurmOptions(poll_interval_s=1.0, poll_interval_min_s=0.1),
        ),
    }
    wf = tmp_path / "wf.yaml"
    wf.write_text(
        """
        jobs:
          split:
            host: lab
            run: |
              echo "where=$(id -un)" >> "$CCD_OUTPUTS"
              echo 'chunks=["x", "y y", "z"]' >> "$CCD_OUTPUTS"
          work:
            host: hpc
            needs: [split]
            resources: {cpus: 1, time: 5m}
            matrix: {chunk: "${{ jobs.split.outputs.chunks }}"}
            run: |
              echo "from=${{ jobs.split.outputs.where }}" >> "$CCD_OUTPUTS"
              echo "got=${{ matrix.chunk }}:${SLURM_JOB_ID:+slurm}" >> "$CCD_OUTPUTS"
          gather:
            needs: [work]
            args: ["${{ jobs.work.outputs.got }}", "${{ jobs.work.outputs.from }}"]
            run: printf '%s\\n' "$1" "$2"
        """.replace("\n        ", "\n")
    )
    spec = load(wf, extra_hosts=hosts)
    engine = await Engine.open(tmp_path / "state", hosts, Limits(progress_interval_s=0.2))
    try:
        jobs = await run_spec(engine, spec)
        assert jobs[""]["state"] == "succeeded", jobs
        log = (await engine.read_log(jobs[""]["id"], "gather", None, 0))[1].decode()
    finally:
        await engine.close()
    assert jobs["split"]["outputs"]["where"] == sshd.user
    assert jobs["work.chunk-y_y"]["host"] == "hpc"
    assert jobs["work.chunk-y_y"]["outputs"] == {"from": sshd.user, "got": "y y:slurm"}
    got, where = log.splitlines()
    assert json.loads(got) == ["x:slurm", "y y:slurm", "z:slurm"]
    assert json.loads(where) == [sshd.user] * 3
