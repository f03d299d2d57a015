"""A job's command line, escalated resources per attempt, and stored form (pure)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ccd.engine.launch import argv, job_spec, launch_for, new_job
from ccd.engine.store import JobRecord
from ccd.executors.local import plain_words
from ccd.models import JobState
from ccd.spec import JobSpec
from ccd.spec.hosts import Resources


def test_on_retry_escalates_each_retry() -> None:
    job = JobSpec(
        "train",
        "shell",
        run="true",
        host="hpc",
        resources=Resources(cpus=2, mem_kib=4 * 1024**2, time_s=3600),
        on_retry={"mem": 2.0, "time": 1.5},
    )
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
        "python3.11",
        "./c.py",
    )


@pytest.mark.parametrize(
    "job",
    [
        JobSpec("plain", "shell", run="true"),
        JobSpec("nothing_retried", "shell", run="true", retry_on=frozenset()),
        JobSpec(
            "full",
            "py",
            script=Path("/s/x.py"),
            args=("-v",),
            env={"A": "1"},
            needs=("a", "b"),
            host="hpc",
            retries=2,
            timeout_s=90.0,
            python="python3.11",
            inputs=("/s/in.txt",),
            outputs=("*.out",),
            resources=Resources(cpus=2, mem_kib=1024, sbatch_args=("--exclusive",)),
            retry_on=frozenset({"timeout", "node_fail"}),
            on_retry={"mem": 2.0},
        ),
    ],
    ids=lambda job: job.name,
)
def test_a_stored_job_reads_back_as_it_was(job: JobSpec) -> None:
    row = new_job(job)
    stored = json.loads(json.dumps(row.spec))  # what the jobs table keeps
    assert job_spec(JobRecord("wf", row.name, JobState.WAITING, row.host, stored)) == job


def test_a_stored_job_keeps_only_what_differs_from_the_defaults() -> None:
    job = JobSpec("j", "shell", run="true", needs=("a",))
    assert new_job(job).spec == {"run": "true", "needs": ("a",)}


def test_a_row_with_every_field_and_unknown_keys_reads_back() -> None:
    # As rows were written before schema v2: every field, nulls included, plus the line.
    row = {
        "kind": "shell",
        "run": "true",
        "script": None,
        "timeout_s": None,
        "needs": ["a"],
        "retries": 0,
        "line": 7,
        "added_by_a_later_version": 1,
    }
    job = job_spec(JobRecord("wf", "j", JobState.WAITING, "local", row))
    assert job == JobSpec("j", "shell", run="true", needs=("a",))


@pytest.mark.parametrize(
    ("command", "words"),
    [
        ("true", ["true"]),
        ("python3 train.py\n", ["python3", "train.py"]),  # a YAML block's last newline
        ("  python3 train.py --epochs 3\t", ["python3", "train.py", "--epochs", "3"]),
        ("/usr/bin/env -i make -j4 all", ["/usr/bin/env", "-i", "make", "-j4", "all"]),
        ("grep -r key=value,x:y@z+1%", ["grep", "-r", "key=value,x:y@z+1%"]),
        # a shell is needed to read these
        ("echo hi", None),  # a builtin, which may print otherwise than /bin/echo
        ("exit 3", None),
        ("cd /tmp", None),
        (". ./env.sh", None),
        ("if", None),
        ("SEED=1 python3 x.py", None),  # an assignment
        ("ls *.txt", None),
        ("echo $HOME", None),
        ("cat < in", None),
        ("a && b", None),
        ("a; b", None),
        ("a | b", None),
        ("sleep 1 &", None),
        ("python3 'my file.py'", None),
        ("a\nb", None),
        ("~/bin/tool", None),
        ("tool # comment", None),
        ("caf\u00e9", None),
        ("", None),
        ("   ", None),
    ],
)
def test_only_commands_that_need_no_shell_run_without_one(
    command: str, words: list[str] | None
) -> None:
    assert plain_words(command) == words
