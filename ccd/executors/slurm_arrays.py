"""Slurm job arrays, as text: one batch script for many attempts, and how to find them again.

Attempts that go to the same cluster in the same moment, of the same workflow and with the
same batch options (``#SBATCH`` lines), are submitted as one ``sbatch --array=0-N[%T]``.
Each attempt keeps its own run dir with its own ``job.sbatch`` (environment, then the wrapper)
and status file; the array's script, in ``<workflow>/.arrays/<token>/``, looks up its
element's run dir by ``SLURM_ARRAY_TASK_ID`` and runs that ``job.sbatch`` there.

Before the ``sbatch``, every element's run dir gets a marker file (``slurm-array``: the
array's tag and the element's index). The tag, ``ccd:<workflow>:@<token>``, is the array's
job name ("@" is outside the name rule, so it never collides with an attempt's tag): a
restarted daemon reads an attempt's marker and finds its array by name, as it finds single
jobs by theirs, so an array submitted just before a crash is re-attached to, never
submitted twice. Element ids are Slurm's ``ARRAYID_INDEX``, which squeue, sacct and scancel
all take.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Sequence

from ccd.executors.base import Launch
from ccd.executors.slurm_parse import BATCH_NAME, SBATCH, effective_resources, sbatch_lines
from ccd.spec.hosts import SlurmOptions

ARRAYS_DIR = ".arrays"  # in a workflow's dir: job names cannot start with "."
MARKER_NAME = "slurm-array"
ARRAY_OUT = "%a.out"  # Slurm's own messages per element, in the array's dir
_MARKER_RE = re.compile(r"^(ccd:\S+:@\S+) (\d+)\n")
_MAX_ARRAY_RE = re.compile(r"^MaxArraySize\s*=\s*(\d+)\s*$", re.MULTILINE)


def array_tag(workflow_id: str, token: str) -> str:
    """The job name of an array: unique, and how a restarted daemon finds it."""
    return f"ccd:{workflow_id}:@{token}"


def element_id(array_job_id: str, index: int) -> str:
    return f"{array_job_id}_{index}"


def array_job_id(job_id: str) -> str:
    """The array's own id of an element id (``81_3`` -> ``81``); a single job's id as is."""
    return job_id.split("_", 1)[0]


def marker_text(tag: str, index: int) -> str:
    return f"{tag} {index}\n"


def parse_marker(text: str) -> tuple[str, int] | None:
    """(array tag, element index) from a marker file; None if there is none (or half of one)."""
    match = _MARKER_RE.match(text)
    return (match.group(1), int(match.group(2))) if match else None


def group_key(launch: Launch, options: SlurmOptions) -> tuple[str, ...]:
    """What attempts must share to go in one array: their workflow and their batch options."""
    return (launch.workflow_id, *sbatch_lines(effective_resources(launch, options)))


def arrays_dir(run_dir: str) -> str:
    """``<root>/<workflow>/.arrays`` of an attempt's ``<root>/<workflow>/<job>/<attempt>``."""
    return f"{run_dir.rsplit('/', 2)[0]}/{ARRAYS_DIR}"


def render_array(
    tag: str, run_dirs: Sequence[str], options: Sequence[str], throttle: int | None, home: str
) -> tuple[str, list[str]]:
    """The array's batch script (in ``home``, its own dir) and the sbatch line submitting it.
    Element i runs ``job.sbatch`` in ``run_dirs[i]``; ``throttle`` caps how many run at once
    (``%T``); ``options`` are the group's ``#SBATCH`` options."""
    spec = f"0-{len(run_dirs) - 1}" + (f"%{throttle}" if throttle else "")
    header = [
        f"--job-name={tag}",
        f"--array={spec}",
        f"--chdir={home}",
        f"--output={home}/{ARRAY_OUT}",
        "--no-requeue",  # ccd retries by its own policy; a requeued element must not rerun
        *options,
    ]
    lines = ["#!/bin/sh", *(f"#SBATCH {shlex.quote(opt)}" for opt in header)]
    lines.append('case "$SLURM_ARRAY_TASK_ID" in')
    lines += [f"{i}) d={shlex.quote(d)} ;;" for i, d in enumerate(run_dirs)]
    lines.append('*) echo "ccd: no element $SLURM_ARRAY_TASK_ID in this array" >&2; exit 125 ;;')
    lines.append("esac")
    lines.append(f'cd -- "$d" || exit 125\nexec sh ./{BATCH_NAME}')
    return "\n".join(lines) + "\n", [*SBATCH, f"{home}/{BATCH_NAME}"]


def parse_max_array_size(text: str) -> int | None:
    """``MaxArraySize`` from ``scontrol show config``: elements get indices below it (0: the
    cluster takes no arrays)."""
    match = _MAX_ARRAY_RE.search(text)
    return int(match.group(1)) if match else None
