"""A job's command line and escalated resources per attempt (pure)."""

from __future__ import annotations

from pathlib import Path

from ccd.hosts import Resources
from ccd.jobs import argv, launch_for
from ccd.spec import JobSpec


def test_on_retry_escalates_each_retry() -> None:
    job = JobSpec("train", "shell", run="true", host="hpc",
                  resources=Resources(cpus=2, mem_kib=4 * 1024**2, time_s=3600),
                  on_retry={"mem": 2.0, "time": 1.5})  # fmt: skip
    first = launch_for(job, "wf", 1, Path("/runs"))
    third = launch_for(job, "wf", 3, Path("/runs"), retries_so_far=2)
    assert first.resources == job.resources
    assert third.resources is not None
    assert (third.resources.mem_kib, third.resources.time_s) == (16 * 1024**2, 8100)
    assert third.resources.cpus == 2  # only what on_retry names grows
    assert third.run_dir == Path("/runs/wf/train/3")


def test_command_lines_keep_names_from_reading_as_options(tmp_path: Path) -> None:
    script = tmp_path / "-x.sh"
    script.write_text("#!/bin/bash\necho hi\n")
    sh_job = JobSpec("a", "sh", script=script, args=("--flag",))
    assert argv(sh_job, script.name) == ("bash", "./-x.sh", "--flag")
    assert argv(JobSpec("b", "shell", run="true"), "run.sh") == (".", "./run.sh")
    assert argv(JobSpec("c", "py", script=tmp_path / "c.py", python="python3.11"), "c.py") == (
        "python3.11", "./c.py")  # fmt: skip
